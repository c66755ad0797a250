#include <boost/test/unit_test.hpp>

#include <optional>
#include <string>
#include <vector>

#include "io/fake_transport.hpp"

using msiv2::io::fake_transport;
using msiv2::io::http_request;
using msiv2::io::http_response;
using msiv2::io::transport_error;

namespace {

http_request get(std::string url) {
  http_request r;
  r.url = std::move(url);
  return r;
}

http_request post(std::string url, std::string body) {
  http_request r;
  r.method = "POST";
  r.url = std::move(url);
  r.body = std::move(body);
  return r;
}

// Collects completions in the order they ran.
struct answers {
  std::vector<http_response> got;
  msiv2::io::completion sink() {
    return [this](http_response r) { got.push_back(std::move(r)); };
  }
};

constexpr const char* imds = "http://127.0.0.1:1";

} // namespace

BOOST_AUTO_TEST_SUITE(io_fake_transport_test)

BOOST_AUTO_TEST_CASE(answers_from_the_queue_of_the_matching_rule_in_order) {
  fake_transport net(fake_transport::delivery::immediate);
  net.on("GET", "/metadata/identity/getplatformmetadata").respond(400, "no").respond(200, "{}");
  net.on("POST", "/metadata/identity/issuecredential").fail(transport_error::timeout, "slow IMDS");
  answers a;
  net.send(get(std::string(imds) + "/metadata/identity/getplatformmetadata?cred-api-version=2.0"), a.sink());
  net.send(get(std::string(imds) + "/metadata/identity/getplatformmetadata"), a.sink());
  net.send(post(std::string(imds) + "/metadata/identity/issuecredential", "{\"csr\":\"x\"}"), a.sink());
  BOOST_REQUIRE_EQUAL(a.got.size(), 3u);
  BOOST_TEST(a.got[0].status == 400);
  BOOST_TEST(a.got[0].body == "no");
  BOOST_TEST(a.got[1].status == 200);
  BOOST_TEST((a.got[2].error == transport_error::timeout));
  BOOST_TEST(a.got[2].error_message == "slow IMDS");
  BOOST_TEST(net.unexpected().empty());
  BOOST_TEST(net.unused_rules().empty());
}

BOOST_AUTO_TEST_CASE(method_must_match_and_an_empty_method_matches_any) {
  fake_transport net(fake_transport::delivery::immediate);
  net.on("POST", "/token").respond(200, "post");
  net.on("", "/token").respond(201, "any");
  answers a;
  net.send(get(std::string(imds) + "/token"), a.sink());
  net.send(post(std::string(imds) + "/token", "b"), a.sink());
  BOOST_REQUIRE_EQUAL(a.got.size(), 2u);
  BOOST_TEST(a.got[0].status == 201);
  BOOST_TEST(a.got[1].status == 200);
}

BOOST_AUTO_TEST_CASE(an_exhausted_rule_falls_through_to_the_next_matching_rule) {
  fake_transport net(fake_transport::delivery::immediate);
  net.on("GET", "/a").respond(500);
  net.on("GET", "/").respond(200);
  answers a;
  net.send(get(std::string(imds) + "/a"), a.sink());
  net.send(get(std::string(imds) + "/a"), a.sink());
  BOOST_REQUIRE_EQUAL(a.got.size(), 2u);
  BOOST_TEST(a.got[0].status == 500);
  BOOST_TEST(a.got[1].status == 200);
  auto recs = net.requests();
  BOOST_TEST(recs[0].rule == "GET /a*");
  BOOST_TEST(recs[1].rule == "GET /*");
}

BOOST_AUTO_TEST_CASE(repeat_last_keeps_answering_with_the_final_answer) {
  fake_transport net(fake_transport::delivery::immediate);
  auto& rule = net.on("GET", "/probe").respond(503).respond(400).repeat_last();
  BOOST_TEST(net.unused_rules().size() == 1u);
  answers a;
  for (int i = 0; i < 4; ++i)
    net.send(get(std::string(imds) + "/probe"), a.sink());
  BOOST_REQUIRE_EQUAL(a.got.size(), 4u);
  BOOST_TEST(a.got[0].status == 503);
  BOOST_TEST(a.got[1].status == 400);
  BOOST_TEST(a.got[3].status == 400);
  BOOST_TEST(rule.remaining() == 1u);
  BOOST_TEST(net.unused_rules().empty());
}

BOOST_AUTO_TEST_CASE(predicate_rules_see_the_whole_request) {
  fake_transport net(fake_transport::delivery::immediate);
  net.on([](const http_request& r) { return r.headers.get("Metadata") == std::optional<std::string_view>("true"); },
         "with Metadata header")
      .respond(200);
  net.on([](const http_request&) { return true; }, "anything else").respond(400);
  answers a;
  auto with = get(std::string(imds) + "/x");
  with.headers.add("metadata", "true");
  net.send(get(std::string(imds) + "/x"), a.sink());
  net.send(with, a.sink());
  BOOST_REQUIRE_EQUAL(a.got.size(), 2u);
  BOOST_TEST(a.got[0].status == 400);
  BOOST_TEST(a.got[1].status == 200);
  BOOST_TEST(net.requests()[1].rule == "with Metadata header");
}

BOOST_AUTO_TEST_CASE(records_every_request_with_headers_body_and_query) {
  fake_transport net(fake_transport::delivery::immediate);
  net.on("POST", "/metadata/identity/issuecredential").respond(200);
  auto r = post(std::string(imds) + "/metadata/identity/issuecredential?cred-api-version=2.0&client_id=a%2Db",
                R"({"csr":"abc"})");
  r.headers.add("Metadata", "true");
  r.headers.add("x-ms-client-request-id", "id-1");
  net.send(r, nullptr);
  auto recs = net.requests();
  BOOST_REQUIRE_EQUAL(recs.size(), 1u);
  BOOST_TEST(recs[0].path() == "/metadata/identity/issuecredential");
  BOOST_TEST(recs[0].query("cred-api-version").value_or("-") == "2.0");
  BOOST_TEST(recs[0].query("client_id").value_or("-") == "a-b");
  BOOST_TEST(!recs[0].query("bypass_cache").has_value());
  BOOST_TEST(recs[0].request.headers.get("METADATA").value_or("-") == "true");
  BOOST_TEST(recs[0].request.body == R"({"csr":"abc"})");
  BOOST_TEST(!recs[0].unexpected);
}

BOOST_AUTO_TEST_CASE(unscripted_requests_get_a_clear_error_and_are_recorded_as_unexpected) {
  fake_transport net(fake_transport::delivery::immediate);
  net.on("GET", "/known").respond(200);
  answers a;
  net.send(get(std::string(imds) + "/unknown?x=1"), a.sink());
  BOOST_REQUIRE_EQUAL(a.got.size(), 1u);
  BOOST_TEST((a.got[0].error == transport_error::other));
  BOOST_TEST(a.got[0].error_message == "fake_transport: no scripted answer for GET http://127.0.0.1:1/unknown?x=1");
  auto u = net.unexpected();
  BOOST_REQUIRE_EQUAL(u.size(), 1u);
  BOOST_TEST(u[0].path() == "/unknown");
  BOOST_TEST(net.unused_rules() == std::vector<std::string>{"GET /known* (1 answers left)"});
}

BOOST_AUTO_TEST_CASE(manual_mode_holds_completions_until_delivered_in_order) {
  fake_transport net;  // manual by default
  net.on("GET", "/").respond(200, "first").respond(201, "second").respond(202, "third");
  answers a;
  for (int i = 0; i < 3; ++i)
    net.send(get(std::string(imds) + "/"), a.sink());
  BOOST_TEST(a.got.empty());
  BOOST_TEST(net.pending() == 3u);
  BOOST_TEST(net.deliver_one());
  BOOST_REQUIRE_EQUAL(a.got.size(), 1u);
  BOOST_TEST(a.got[0].body == "first");
  BOOST_TEST(net.deliver_all() == 2u);
  BOOST_REQUIRE_EQUAL(a.got.size(), 3u);
  BOOST_TEST(a.got[2].body == "third");
  BOOST_TEST(!net.deliver_one());
}

BOOST_AUTO_TEST_CASE(manual_mode_can_answer_requests_out_of_order) {
  fake_transport net;
  net.on("GET", "/a").respond(200, "a");
  net.on("GET", "/b").respond(200, "b");
  answers a;
  net.send(get(std::string(imds) + "/a"), a.sink());
  net.send(get(std::string(imds) + "/b"), a.sink());
  BOOST_TEST(!net.deliver(2));
  BOOST_TEST(net.deliver(1));
  BOOST_TEST(net.deliver(0));
  BOOST_REQUIRE_EQUAL(a.got.size(), 2u);
  BOOST_TEST(a.got[0].body == "b");
  BOOST_TEST(a.got[1].body == "a");
}

BOOST_AUTO_TEST_CASE(deliver_all_leaves_requests_made_by_completions_pending) {
  fake_transport net;
  net.on("GET", "/").respond(200, "1").respond(200, "2");
  answers a;
  net.send(get(std::string(imds) + "/"), [&](http_response r) {
    a.got.push_back(std::move(r));
    net.send(get(std::string(imds) + "/"), a.sink());  // a retry from inside a completion
  });
  BOOST_TEST(net.deliver_all() == 1u);
  BOOST_TEST(net.pending() == 1u);
  BOOST_TEST(net.deliver_all() == 1u);
  BOOST_REQUIRE_EQUAL(a.got.size(), 2u);
  BOOST_TEST(a.got[1].body == "2");
}

BOOST_AUTO_TEST_CASE(shutdown_cancels_pending_and_later_requests) {
  fake_transport net;
  net.on("GET", "/").respond(200).repeat_last();
  answers a;
  net.send(get(std::string(imds) + "/"), a.sink());
  net.shutdown();
  BOOST_REQUIRE_EQUAL(a.got.size(), 1u);
  BOOST_TEST((a.got[0].error == transport_error::cancelled));
  net.send(get(std::string(imds) + "/"), a.sink());
  BOOST_REQUIRE_EQUAL(a.got.size(), 2u);
  BOOST_TEST((a.got[1].error == transport_error::cancelled));
  BOOST_TEST(net.pending() == 0u);
  BOOST_TEST(net.requests().size() == 2u);
}

BOOST_AUTO_TEST_CASE(switching_to_immediate_keeps_pending_ones_pending) {
  fake_transport net;
  net.on("GET", "/").respond(200, "held").respond(200, "now");
  answers a;
  net.send(get(std::string(imds) + "/"), a.sink());
  net.set_delivery(fake_transport::delivery::immediate);
  net.send(get(std::string(imds) + "/"), a.sink());
  BOOST_REQUIRE_EQUAL(a.got.size(), 1u);
  BOOST_TEST(a.got[0].body == "now");
  BOOST_TEST(net.deliver_one());
  BOOST_TEST(a.got[1].body == "held");
}

BOOST_AUTO_TEST_SUITE_END()
