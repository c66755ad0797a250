#include <boost/test/unit_test.hpp>

#include <chrono>
#include <string>

#include "actors/probe.hpp"
#include "platform/encoding.hpp"
#include "messages/errors.hpp"
#include "tests/support/actor_fixture.hpp"

using namespace msiv2;
using namespace std::chrono_literals;
using io::fake_transport;

namespace {

constexpr const char* v2_path = "/metadata/identity/getplatformmetadata";
constexpr const char* v1_path = "/metadata/identity/oauth2/token";

// The simulator's answer to a request without `Metadata: true`.
const char* no_metadata_body =
  R"({"error":"invalid_request","error_description":"Required metadata header not specified"})";
const char* not_found_body =
  R"({"error":"not_found","error_description":"The requested path is not found on this IMDS"})";

struct probe_fixture : test::actor_fixture {
  probe_fixture() { transport->set_delivery(fake_transport::delivery::immediate); }

  probe spawn() { return keep(sys.spawn(probe_impl, deps())); }

  std::shared_ptr<test::outcome<imds_source>> ask(const probe& p, std::chrono::nanoseconds d = 30s) {
    return request<imds_source>(p, probe_atom::value, due_in(d));
  }

  std::size_t count(const std::string& path) {
    std::size_t n = 0;
    for (auto& r : transport->requests())
      n += r.path() == path ? 1 : 0;
    return n;
  }
};

error_code code_of(const caf::error& e) {
  return describe(e).code;
}

} // namespace

BOOST_AUTO_TEST_SUITE(actors_probe_test)

BOOST_FIXTURE_TEST_CASE(v2_present_when_the_header_less_v2_probe_answers_400, probe_fixture) {
  transport->on("GET", v2_path).respond(400, no_metadata_body);
  auto p = spawn();
  auto got = ask(p);
  run();
  BOOST_REQUIRE(got->value);
  BOOST_CHECK(*got->value == imds_source::v2);
  BOOST_CHECK_EQUAL(count(v1_path), 0u);
  BOOST_CHECK_EQUAL(
    stats->snapshot().counters["msiv2_upstream_requests_total{upstream=\"imds_probe_v2\",status=\"400\"}"],
    1u);
}

BOOST_FIXTURE_TEST_CASE(v1_only_when_v2_answers_404_and_v1_answers_400, probe_fixture) {
  transport->on("GET", v2_path).respond(404, not_found_body);
  transport->on("GET", v1_path).respond(400, no_metadata_body);
  auto p = spawn();
  auto got = ask(p);
  run();
  BOOST_REQUIRE(got->value);
  BOOST_CHECK(*got->value == imds_source::v1_only);
  auto reqs = transport->requests();
  BOOST_REQUIRE_EQUAL(reqs.size(), 2u);
  BOOST_CHECK_EQUAL(reqs[0].query("cred-api-version").value_or(""), "2.0");
  BOOST_CHECK_EQUAL(reqs[1].query("api-version").value_or(""), "2018-02-01");
}

BOOST_FIXTURE_TEST_CASE(imds_unavailable_when_neither_probe_answers_400, probe_fixture) {
  transport->on("GET", v2_path).respond(404, not_found_body);
  transport->on("GET", v1_path).respond(404, not_found_body);
  auto p = spawn();
  auto got = ask(p);
  run();
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::imds_unavailable);
  BOOST_CHECK_EQUAL(describe(got->error).http_status, 404);
}

BOOST_FIXTURE_TEST_CASE(imds_unavailable_at_once_when_connection_is_refused, probe_fixture) {
  // protocol.md §1: connection refused = no IMDS; a process off Azure learns it fast.
  transport->on("GET", v2_path).fail(io::transport_error::connect_failed, "refused").repeat_last();
  auto p = spawn();
  auto got = ask(p);
  run();
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::imds_unavailable);
  BOOST_CHECK_EQUAL(count(v2_path), 1u);
  BOOST_CHECK_EQUAL(count(v1_path), 0u);
}

BOOST_FIXTURE_TEST_CASE(imds_unavailable_when_probe_times_out_after_retries, probe_fixture) {
  transport->on("GET", v2_path).fail(io::transport_error::connect_timeout, "no answer").repeat_last();
  auto p = spawn();
  auto got = ask(p);
  run();
  BOOST_CHECK(!got->answered());
  advance(1s);
  advance(2s);
  BOOST_CHECK(!got->answered());
  advance(4s);
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::imds_unavailable);
  BOOST_CHECK_EQUAL(count(v2_path), 4u);
  BOOST_CHECK_EQUAL(count(v1_path), 0u);
}

BOOST_FIXTURE_TEST_CASE(one_probe_for_n_concurrent_callers, probe_fixture) {
  transport->set_delivery(fake_transport::delivery::manual);
  transport->on("GET", v2_path).respond(400, no_metadata_body);
  auto p = spawn();
  std::vector<std::shared_ptr<test::outcome<imds_source>>> got;
  for (int i = 0; i < 5; ++i)
    got.push_back(ask(p));
  run();
  BOOST_CHECK_EQUAL(transport->requests().size(), 1u);
  transport->deliver_all();
  run();
  for (auto& g : got) {
    BOOST_REQUIRE(g->value);
    BOOST_CHECK(*g->value == imds_source::v2);
  }
  // Definite answers stay for the process lifetime.
  advance(24h);
  auto later = ask(p);
  run();
  BOOST_REQUIRE(later->value);
  BOOST_CHECK_EQUAL(transport->requests().size(), 1u);
}

BOOST_FIXTURE_TEST_CASE(retries_503_503_then_400_is_v2_after_1s_and_2s, probe_fixture) {
  transport->on("GET", v2_path).respond(503).respond(503).respond(400, no_metadata_body);
  auto p = spawn();
  auto got = ask(p);
  run();
  BOOST_CHECK_EQUAL(transport->requests().size(), 1u);
  advance(999ms);
  BOOST_CHECK_EQUAL(transport->requests().size(), 1u);
  advance(1ms);
  BOOST_CHECK_EQUAL(transport->requests().size(), 2u);
  advance(1999ms);
  BOOST_CHECK(!got->answered());
  advance(1ms);
  BOOST_REQUIRE(got->value);
  BOOST_CHECK(*got->value == imds_source::v2);
  BOOST_CHECK_EQUAL(transport->requests().size(), 3u);
  BOOST_CHECK_EQUAL(stats->snapshot().counters["msiv2_retries_total{upstream=\"imds_probe\"}"], 2u);
}

BOOST_FIXTURE_TEST_CASE(transient_failure_is_cached_30s_then_probed_again, probe_fixture) {
  // Four 503s use up the schedule (1 + 3 retries); IMDS is back afterwards.
  transport->on("GET", v2_path).respond(503).respond(503).respond(503).respond(503).respond(400,
                                                                                    no_metadata_body);
  auto p = spawn();
  auto got = ask(p, 60s);
  run();
  advance(1s);
  advance(2s);
  advance(4s);
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::imds_unavailable);
  BOOST_CHECK_EQUAL(describe(got->error).http_status, 503);
  BOOST_CHECK_EQUAL(transport->requests().size(), 4u);

  advance(29s);
  auto cached = ask(p);
  run();
  BOOST_REQUIRE(cached->error);
  BOOST_CHECK(code_of(cached->error) == error_code::imds_unavailable);
  BOOST_CHECK_EQUAL(transport->requests().size(), 4u);

  advance(1s);
  auto again = ask(p);
  run();
  BOOST_REQUIRE(again->value);
  BOOST_CHECK(*again->value == imds_source::v2);
  BOOST_CHECK_EQUAL(transport->requests().size(), 5u);
}

BOOST_FIXTURE_TEST_CASE(sends_a_request_id_and_never_the_metadata_header, probe_fixture) {
  config.probe_connect_timeout = 1000ms;
  transport->on("GET", v2_path).respond(404, not_found_body);
  transport->on("GET", v1_path).respond(400, no_metadata_body);
  auto p = spawn();
  auto got = ask(p);
  run();
  BOOST_REQUIRE(got->value);
  auto reqs = transport->requests();
  BOOST_REQUIRE_EQUAL(reqs.size(), 2u);
  for (auto& r : reqs) {
    BOOST_CHECK(!r.request.headers.contains("Metadata"));
    auto id = r.request.headers.get("x-ms-client-request-id");
    BOOST_REQUIRE(id);
    BOOST_CHECK(platform::is_guid(*id));
    BOOST_CHECK_EQUAL(r.request.headers.fields.size(), 1u);
    BOOST_CHECK(r.request.body.empty());
    BOOST_CHECK(!r.request.use_proxy);
    BOOST_CHECK_EQUAL(r.request.url.rfind("http://imds.test/metadata/identity/", 0), 0u);
  }
  // One correlation id for both legs of the probe (v2 then v1).
  BOOST_CHECK(reqs[0].request.headers.get("x-ms-client-request-id") ==
              reqs[1].request.headers.get("x-ms-client-request-id"));
  // Nothing answered before the first probe: short connect timeout.
  BOOST_CHECK_EQUAL(reqs[0].request.connect_timeout.count(), 1000);
  // IMDS answered the v2 probe: the v1 probe uses the normal timeouts.
  BOOST_CHECK_GT(reqs[1].request.connect_timeout.count(), 1000);
}

BOOST_FIXTURE_TEST_CASE(deadline_shorter_than_the_retry_schedule_fails_within_the_deadline,
                        probe_fixture) {
  transport->on("GET", v2_path).respond(503).repeat_last();
  auto p = spawn();
  auto got = ask(p, 2500ms);
  run();
  advance(1s); // second attempt at 1 s; the next one would be at 3 s, past the deadline
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::deadline_exceeded);
  BOOST_CHECK_EQUAL(transport->requests().size(), 2u);
  // A failure cut short by a deadline is not remembered: the next caller probes again.
  transport->set_delivery(fake_transport::delivery::manual);
  auto next = ask(p, 500ms);
  run();
  BOOST_CHECK_EQUAL(transport->requests().size(), 3u);
  advance(500ms); // no answer in time: the caller's own deadline answers it
  BOOST_REQUIRE(next->error);
  BOOST_CHECK(code_of(next->error) == error_code::deadline_exceeded);
}

BOOST_AUTO_TEST_SUITE_END()
