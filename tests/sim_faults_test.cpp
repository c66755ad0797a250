// Fault injection over real HTTP(S): each fault kind, its counters, its interplay with normal
// service, thread safety; and the fault table itself with a fixed seed.

#include <boost/test/unit_test.hpp>

#include <curl/curl.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <simdjson.h>

#include "platform/encoding.hpp"
#include "platform/keys.hpp"
#include "platform/x509.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/sim_fixture.hpp"
#include "tools/sim/faults.hpp"

namespace {

using msiv2::test::http_result;
using msiv2::test::sim_fixture;
namespace platform = msiv2::platform;
namespace sim = msiv2::sim;

std::optional<std::string> json_string(const std::string& body, std::string_view key) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view s;
  if (parser.parse(body).get(doc) != simdjson::SUCCESS || doc[key].get(s) != simdjson::SUCCESS)
    return std::nullopt;
  return std::string(s);
}

sim::fault_spec statuses(std::vector<int> s) {
  sim::fault_spec f;
  f.statuses = std::move(s);
  return f;
}

long elapsed_ms(std::chrono::steady_clock::time_point since) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::steady_clock::now() - since)
                             .count());
}

void set_fault(sim_fixture& f, std::string_view endpoint, sim::fault_spec spec) {
  auto r = f.sim().set_fault(endpoint, std::move(spec));
  BOOST_TEST_REQUIRE(r.ok(), (r.ok() ? "" : r.error()));
}

/// A self-signed client certificate: enough to pass the token listener's TLS layer.
struct client_cert {
  platform::pkey_ptr key;
  std::string der;
};

client_cert self_signed(const std::string& cn) {
  auto key = platform::generate_rsa_key();
  BOOST_TEST_REQUIRE(key.ok());
  auto now = std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
               .count();
  platform::issue_params p;
  p.subject_key = key->get();
  p.subject_cn = cn;
  p.not_before = now - 60;
  p.not_after = now + 3600;
  p.client_auth = true;
  auto der = platform::issue_certificate(p, nullptr, key->get());
  BOOST_TEST_REQUIRE(der.ok());
  return {std::move(*key), *der};
}

} // namespace

BOOST_AUTO_TEST_SUITE(sim_faults_test)

BOOST_AUTO_TEST_CASE(status_sequence_is_answered_in_order_then_normal_service_resumes) {
  sim_fixture f;
  set_fault(f, "imds_metadata", statuses({503, 0, 500, 429}));
  std::vector<long> seen;
  for (int i = 0; i < 6; ++i) {
    auto r = f.metadata();
    seen.push_back(r.status);
    BOOST_TEST(r.header("Server").has_value(), "request " << i);
    BOOST_TEST(r.header("Retry-After").has_value() == false);
    if (r.status != 200) {
      // IMDS-shaped error body.
      BOOST_TEST(json_string(r.body, "error").has_value(), r.body);
      BOOST_TEST(json_string(r.body, "error_description").value_or("").find(std::to_string(r.status)) !=
                 std::string::npos, r.body);
    }
  }
  BOOST_TEST(seen == (std::vector<long>{503, 200, 500, 429, 200, 200}), boost::test_tools::per_element());
  BOOST_TEST(f.sim().count("imds_metadata", 503) == 1);
  BOOST_TEST(f.sim().count("imds_metadata", 500) == 1);
  BOOST_TEST(f.sim().count("imds_metadata", 429) == 1);
  BOOST_TEST(f.sim().count("imds_metadata", 200) == 3);
  // A used-up sequence leaves no fault behind; other endpoints were never affected.
  BOOST_TEST(f.sim().current_config().faults.empty());
  BOOST_TEST(f.v1_token("https://management.azure.com/").status == 200);
}

BOOST_AUTO_TEST_CASE(probability_one_answers_the_probability_status_for_count_requests) {
  sim_fixture f;
  sim::fault_spec spec;
  spec.probability = 1.0;
  spec.probability_status = 429;
  spec.count = 2;
  set_fault(f, "imds_token", spec);
  BOOST_TEST(f.v1_token("x").status == 429);
  BOOST_TEST(f.v1_token("x").status == 429);
  BOOST_TEST(f.v1_token("x").status == 200);
  BOOST_TEST(f.sim().count("imds_token", 429) == 2);
  BOOST_TEST(f.sim().count("imds_token", 200) == 1);
}

BOOST_AUTO_TEST_CASE(latency_delays_the_answer_by_at_least_the_injected_time) {
  sim_fixture f;
  sim::fault_spec spec;
  spec.latency = std::chrono::milliseconds(300);
  spec.count = 1;
  set_fault(f, "imds_metadata", spec);
  auto t0 = std::chrono::steady_clock::now();
  auto r = f.metadata();
  BOOST_TEST(elapsed_ms(t0) >= 300);
  BOOST_TEST(r.status == 200, r.body);
  BOOST_TEST(f.sim().current_config().faults.empty());  // count used up
  BOOST_TEST(f.sim().count("imds_metadata", 200) == 1);
}

BOOST_AUTO_TEST_CASE(latency_never_blocks_an_io_thread) {
  // One I/O thread: a blocking delay would hold up the second request as well.
  sim_fixture f([](sim::config& c) { c.threads = 1; });
  sim::fault_spec spec;
  spec.latency = std::chrono::milliseconds(1500);
  spec.count = 1;
  set_fault(f, "imds_metadata", spec);
  std::atomic<long> slow_status{0};
  std::thread slow([&] { slow_status = f.metadata().status; });
  // The spec disappears when the slow request draws it: from then on it is being delayed.
  auto wait_start = std::chrono::steady_clock::now();
  while (!f.sim().current_config().faults.empty() && elapsed_ms(wait_start) < 5000)
    std::this_thread::yield();
  auto t0 = std::chrono::steady_clock::now();
  auto fast = f.v1_token("https://management.azure.com/");
  const long fast_ms = elapsed_ms(t0);
  slow.join();
  BOOST_TEST(fast.status == 200);
  BOOST_TEST(slow_status.load() == 200);
  BOOST_TEST(fast_ms < 1000, "the unfaulted request took " << fast_ms << " ms");
}

BOOST_AUTO_TEST_CASE(reset_closes_the_connection_without_an_answer) {
  sim_fixture f;
  sim::fault_spec spec;
  spec.reset = true;
  spec.count = 1;
  set_fault(f, "imds_metadata", spec);
  auto r = f.metadata();
  BOOST_TEST(!r.completed());
  BOOST_TEST(r.status == 0);
  BOOST_TEST((r.curl_code == CURLE_RECV_ERROR || r.curl_code == CURLE_GOT_NOTHING), r.error);
  BOOST_TEST(f.sim().count("imds_metadata", -1) == 1);  // counted as "reset"
  BOOST_TEST(f.sim().counters_json().find("\"imds_metadata\":{\"reset\":1}") != std::string::npos,
             f.sim().counters_json());
  BOOST_TEST(f.metadata().status == 200);
}

BOOST_AUTO_TEST_CASE(malformed_body_keeps_the_status_and_spoils_the_json) {
  sim_fixture f;
  sim::fault_spec spec;
  spec.body = sim::body_fault::malformed;
  spec.count = 1;
  set_fault(f, "imds_metadata", spec);
  auto r = f.metadata();
  BOOST_TEST(r.status == 200);
  BOOST_TEST(r.body == std::string(sim::malformed_body));
  BOOST_TEST(!json_string(r.body, "clientId").has_value());
  BOOST_TEST(f.metadata().body.find("clientId") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(truncated_body_declares_the_full_length_and_sends_half) {
  sim_fixture f;
  sim::fault_spec spec;
  spec.body = sim::body_fault::truncated;
  spec.count = 1;
  set_fault(f, "imds_metadata", spec);
  auto r = f.metadata();
  BOOST_TEST(r.curl_code == CURLE_PARTIAL_FILE, r.error);
  BOOST_TEST(r.status == 200);
  BOOST_TEST(!r.body.empty());
  BOOST_TEST(r.body.size() < 150u);
  BOOST_TEST(r.body.rfind("{\"cuId\"", 0) == 0, r.body);
  BOOST_TEST(f.sim().count("imds_metadata", 200) == 1);
  BOOST_TEST(f.metadata().completed());
}

BOOST_AUTO_TEST_CASE(empty_body_answers_with_no_content) {
  sim_fixture f;
  sim::fault_spec spec;
  spec.body = sim::body_fault::empty;
  spec.count = 1;
  set_fault(f, "imds_token", spec);
  auto r = f.v1_token("x");
  BOOST_TEST(r.completed());
  BOOST_TEST(r.status == 200);
  BOOST_TEST(r.body.empty());
  BOOST_TEST(r.header("Content-Length").value_or("") == "0");
}

BOOST_AUTO_TEST_CASE(drop_server_header_leaves_out_server_for_count_answers) {
  sim_fixture f;
  sim::fault_spec spec;
  spec.drop_server_header = true;
  spec.count = 2;
  set_fault(f, "imds_metadata", spec);
  auto a = f.metadata();
  auto b = f.imds_get("/metadata/identity/getplatformmetadata?cred-api-version=2.0", {});
  BOOST_TEST(a.status == 200);
  BOOST_TEST(!a.header("Server").has_value());
  BOOST_TEST(b.status == 400);  // the probe answer without Server: "not IMDS"
  BOOST_TEST(!b.header("Server").has_value());
  BOOST_TEST(f.metadata().header("Server").value_or("") == f.cfg().imds_server_header);
}

BOOST_AUTO_TEST_CASE(retry_after_goes_on_faulted_answers_only) {
  sim_fixture f;
  auto spec = statuses({429, 503});
  spec.retry_after = 7;
  set_fault(f, "imds_metadata", spec);
  auto a = f.metadata();
  auto b = f.metadata();
  auto c = f.metadata();
  BOOST_TEST(a.status == 429);
  BOOST_TEST(a.header("Retry-After").value_or("") == "7");
  BOOST_TEST(b.status == 503);
  BOOST_TEST(b.header("Retry-After").value_or("") == "7");
  BOOST_TEST(c.status == 200);
  BOOST_TEST(!c.header("Retry-After").has_value());
}

BOOST_AUTO_TEST_CASE(retry_after_alone_decorates_count_normal_answers) {
  sim_fixture f;
  sim::fault_spec spec;
  spec.retry_after = 3;
  spec.count = 1;
  set_fault(f, "imds_metadata", spec);
  auto a = f.metadata();
  BOOST_TEST(a.status == 200);
  BOOST_TEST(a.header("Retry-After").value_or("") == "3");
  BOOST_TEST(!f.metadata().header("Retry-After").has_value());
}

BOOST_AUTO_TEST_CASE(faults_from_the_config_apply_from_the_first_request) {
  sim_fixture f([](sim::config& c) { c.faults["imds_token"] = statuses({500, 410}); });
  BOOST_TEST(f.v1_token("x").status == 500);
  BOOST_TEST(f.v1_token("x").status == 410);
  BOOST_TEST(f.v1_token("x").status == 200);
}

BOOST_AUTO_TEST_CASE(faults_via_the_admin_api_use_the_config_parser) {
  sim_fixture f;
  auto r = f.admin("POST", "/faults/imds_compute",
                   "{\"statuses\":[0,502],\"retry_after\":1,\"drop_server_header\":true,\"count\":1}");
  BOOST_TEST_REQUIRE(r.status == 200, r.body);
  auto compute = [&] {
    return f.imds_get("/metadata/instance/compute?api-version=2021-02-01", {{"Metadata", "true"}});
  };
  auto a = compute();
  BOOST_TEST(a.status == 200);
  BOOST_TEST(!a.header("Server").has_value());
  auto b = compute();
  BOOST_TEST(b.status == 502);
  BOOST_TEST(b.header("Retry-After").value_or("") == "1");
  BOOST_TEST(b.header("Server").has_value());  // count 1: the drop applied to the first only
  BOOST_TEST(compute().status == 200);
}

BOOST_AUTO_TEST_CASE(token_endpoint_faults_answer_in_oauth_shape_over_mtls) {
  sim_fixture f;
  set_fault(f, "token", [] {
    auto s = statuses({503});
    s.retry_after = 2;
    return s;
  }());
  auto cert = self_signed(f.cfg().system_identity.client_id);
  auto tls = f.tls();
  tls.client_cert_der = cert.der;
  tls.client_key = cert.key.get();
  auto r = msiv2::test::http_post(f.urls().token + "/" + f.cfg().tenant_id + "/oauth2/v2.0/token",
                                  {{"Content-Type", "application/x-www-form-urlencoded"}},
                                  "grant_type=client_credentials", tls);
  BOOST_TEST_REQUIRE(r.completed(), r.error);
  BOOST_TEST(r.status == 503);
  BOOST_TEST(r.header("Retry-After").value_or("") == "2");
  BOOST_TEST(json_string(r.body, "error").value_or("") == "temporarily_unavailable", r.body);
  BOOST_TEST(json_string(r.body, "correlation_id").has_value(), r.body);
  BOOST_TEST(r.body.find("\"error_codes\":[") != std::string::npos, r.body);
  BOOST_TEST(!r.header("Server").has_value());  // only IMDS sends Server: IMDS/...
  BOOST_TEST(f.sim().count("token", 503) == 1);
}

BOOST_AUTO_TEST_CASE(attestation_and_resource_faults_over_tls) {
  sim_fixture f;
  set_fault(f, "attestation", statuses({500}));
  auto a = msiv2::test::http_post(f.urls().attestation + "/attest/keyguard",
                                  {{"Content-Type", "application/json"}}, "{}", f.tls());
  BOOST_TEST_REQUIRE(a.completed(), a.error);
  BOOST_TEST(a.status == 500);
  BOOST_TEST(a.body.find("\"code\":\"InternalServerError\"") != std::string::npos, a.body);

  sim::fault_spec reset;
  reset.reset = true;
  reset.count = 1;
  set_fault(f, "resource", reset);
  auto r = msiv2::test::http_get(f.urls().resource + "/anything", {}, f.tls());
  BOOST_TEST(!r.completed());
  BOOST_TEST(f.sim().count("resource", -1) == 1);
  BOOST_TEST(msiv2::test::http_get(f.urls().resource + "/anything", {}, f.tls()).status == 401);
}

BOOST_AUTO_TEST_CASE(a_status_sequence_is_consumed_exactly_once_under_concurrency) {
  sim_fixture f;
  set_fault(f, "imds_metadata", statuses(std::vector<int>(40, 503)));
  std::atomic<int> faulted{0}, normal{0}, other{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t)
    clients.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        long s = f.metadata().status;
        (s == 503 ? faulted : s == 200 ? normal : other)++;
      }
    });
  for (auto& c : clients)
    c.join();
  BOOST_TEST(faulted.load() == 40);
  BOOST_TEST(normal.load() == 40);
  BOOST_TEST(other.load() == 0);
  BOOST_TEST(f.sim().count("imds_metadata", 503) == 40);
}

// --- the fault table itself ---

BOOST_AUTO_TEST_CASE(fault_table_probability_follows_the_seeded_draws) {
  sim::fault_table table(42);
  sim::fault_spec spec;
  spec.probability = 0.25;
  spec.probability_status = 500;
  BOOST_TEST_REQUIRE(table.set("imds_metadata", spec).ok());
  int hits = 0;
  for (int i = 0; i < 4000; ++i)
    hits += table.next("imds_metadata").status == 500 ? 1 : 0;
  BOOST_TEST(hits > 850);
  BOOST_TEST(hits < 1150);
  // The same seed gives the same draws.
  sim::fault_table again(42);
  BOOST_TEST_REQUIRE(again.set("imds_metadata", spec).ok());
  int again_hits = 0;
  for (int i = 0; i < 4000; ++i)
    again_hits += again.next("imds_metadata").status == 500 ? 1 : 0;
  BOOST_TEST(again_hits == hits);
}

BOOST_AUTO_TEST_CASE(fault_table_applies_sequence_and_side_faults_independently) {
  sim::fault_table table(1);
  auto spec = statuses({503});
  spec.latency = std::chrono::milliseconds(20);
  spec.count = 3;
  spec.retry_after = 5;
  BOOST_TEST_REQUIRE(table.set("imds_issue", spec).ok());
  auto d1 = table.next("imds_issue");
  BOOST_TEST(d1.status == 503);
  BOOST_TEST(d1.latency.count() == 20);
  BOOST_TEST(d1.retry_after.value_or(-1) == 5);
  auto d2 = table.next("imds_issue");
  BOOST_TEST(d2.status == 0);
  BOOST_TEST(d2.latency.count() == 20);
  BOOST_TEST(!d2.retry_after.has_value());  // belongs to injected statuses only
  auto d3 = table.next("imds_issue");
  BOOST_TEST(d3.latency.count() == 20);
  BOOST_TEST(table.snapshot().empty());
  BOOST_TEST(!table.next("imds_issue").any());
  BOOST_TEST(!table.next("imds_metadata").any());
}

BOOST_AUTO_TEST_CASE(fault_table_refuses_unknown_endpoints_and_bad_values) {
  sim::fault_table table;
  auto unknown = table.set("metadata", statuses({503}));
  BOOST_TEST_REQUIRE(!unknown.ok());
  BOOST_TEST(unknown.error().find("'metadata'") != std::string::npos, unknown.error());
  auto bad = table.set("token", statuses({503, 99}));
  BOOST_TEST_REQUIRE(!bad.ok());
  BOOST_TEST(bad.error().find("faults.token.statuses[1]") != std::string::npos, bad.error());
  sim::fault_spec p;
  p.probability = 1.5;
  auto bad_p = table.set("token", p);
  BOOST_TEST_REQUIRE(!bad_p.ok());
  BOOST_TEST(bad_p.error().find("probability") != std::string::npos, bad_p.error());
  BOOST_TEST(table.snapshot().empty());
  // An empty spec clears.
  BOOST_TEST(table.set("token", statuses({500})).ok());
  BOOST_TEST(table.set("token", sim::fault_spec{}).ok());
  BOOST_TEST(table.snapshot().empty());
}

BOOST_AUTO_TEST_CASE(fault_table_is_consistent_across_threads) {
  sim::fault_table table(7);
  auto spec = statuses(std::vector<int>(1000, 500));
  spec.body = sim::body_fault::empty;
  spec.count = 500;
  BOOST_TEST_REQUIRE(table.set("jwks", spec).ok());
  std::atomic<int> statuses_seen{0}, bodies_seen{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 400; ++i) {
        auto d = table.next("jwks");
        statuses_seen += d.status == 500 ? 1 : 0;
        bodies_seen += d.body == sim::body_fault::empty ? 1 : 0;
      }
    });
  for (auto& t : threads)
    t.join();
  BOOST_TEST(statuses_seen.load() == 1000);
  BOOST_TEST(bodies_seen.load() == 500);
}

BOOST_AUTO_TEST_CASE(fault_response_uses_each_service_error_shape) {
  auto imds = sim::fault_response("imds_issue", 503);
  BOOST_TEST(imds.status == 503);
  BOOST_TEST(json_string(imds.body, "error").value_or("") == "service_unavailable");
  auto token = sim::fault_response("token", 401);
  BOOST_TEST(json_string(token.body, "error").value_or("") == "invalid_client");
  auto attestation = sim::fault_response("attestation", 429);
  BOOST_TEST(attestation.body.find("\"code\":\"TooManyRequests\"") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
