// The token runtime against the simulator's fault injection and short lifetimes: each fault
// is judged by the answer, by the simulator's counters and by how long it took.

#include <boost/test/unit_test.hpp>

#include <chrono>
#include <string>
#include <thread>

#include "platform/binding.hpp"
#include "platform/jwt.hpp"
#include "tests/support/sim_runtime_rig.hpp"

namespace {

using namespace std::chrono_literals;
using msiv2::error_code;
using msiv2::managed_identity;
using msiv2::token_source;
using msiv2::sim::body_fault;
using msiv2::sim::fault_spec;
using msiv2::test::code_of;
using msiv2::test::pop_request;
using msiv2::test::runtime_rig;
using msiv2::test::why;
using msiv2::test::statuses;
using msiv2::test::set_fault;
using msiv2::test::seconds_since;
using msiv2::test::warm_up;
using steady = std::chrono::steady_clock;

const std::string arm = "https://management.azure.com";
const std::string vault = "https://vault.azure.net";



} // namespace

BOOST_AUTO_TEST_SUITE(integration_faults_test)

BOOST_AUTO_TEST_CASE(imds_503_burst_succeeds_after_retries) {
  runtime_rig r;
  warm_up(r);
  set_fault(r, "imds_metadata", statuses({503, 503}));
  auto t0 = steady::now();
  auto t = r.get(pop_request(vault));
  BOOST_REQUIRE_MESSAGE(t, why(t));
  BOOST_TEST(r.sim().count("imds_metadata", 503) == 2);
  BOOST_TEST(r.sim().count("imds_metadata", 200) == 2);
  BOOST_TEST(r.sim().count("token", 200) == 2);
  // 1 s then 2 s (with jitter) between the attempts.
  BOOST_TEST(seconds_since(t0) >= 1.5);
  BOOST_TEST(seconds_since(t0) < 8.0);
}

BOOST_AUTO_TEST_CASE(token_endpoint_429_retry_after_is_honoured) {
  runtime_rig r;
  warm_up(r);
  auto f = statuses({429});
  f.retry_after = 2;
  set_fault(r, "token", f);
  auto t0 = steady::now();
  auto t = r.get(pop_request(vault, managed_identity::system(), 10s));
  BOOST_REQUIRE_MESSAGE(t, why(t));
  BOOST_TEST(r.sim().count("token", 429) == 1);
  BOOST_TEST(r.sim().count("token", 200) == 2);
  BOOST_TEST(seconds_since(t0) >= 1.0); // Retry-After is whole seconds: at least ~1 s left
  BOOST_TEST(seconds_since(t0) < 6.0);
}

BOOST_AUTO_TEST_CASE(token_endpoint_429_beyond_the_deadline_fails_fast_as_throttled) {
  runtime_rig r;
  warm_up(r);
  auto f = statuses({429, 429});
  f.retry_after = 30;
  set_fault(r, "token", f);
  auto t0 = steady::now();
  auto t = r.get(pop_request(vault, managed_identity::system(), 3s));
  BOOST_TEST((code_of(t) == error_code::throttled), why(t));
  BOOST_TEST(seconds_since(t0) < 3.5);
  BOOST_TEST(r.sim().count("token", 429) == 1);
  // An identical request is refused until then without calling the endpoint.
  auto again = r.get(pop_request(vault, managed_identity::system(), 3s));
  BOOST_TEST((code_of(again) == error_code::throttled), why(again));
  BOOST_TEST(r.sim().count("token", 429) == 1);
}

BOOST_AUTO_TEST_CASE(attestation_outage_with_a_cached_certificate_does_not_affect_a_second_resource) {
  runtime_rig r([](msiv2::sim::config& c) { c.attestation = msiv2::sim::attestation_policy::required; },
                {true, {}});
  warm_up(r);
  BOOST_TEST(r.sim().count("attestation", 200) == 1);
  fault_spec outage;
  outage.probability = 1.0;
  outage.probability_status = 503;
  set_fault(r, "attestation", outage);
  auto t = r.get(pop_request(vault, managed_identity::system(), 10s));
  BOOST_REQUIRE_MESSAGE(t, why(t));
  BOOST_TEST(r.sim().count("attestation") == 1);
  BOOST_TEST(r.sim().count("imds_issue") == 1);
  BOOST_TEST(r.sim().count("token", 200) == 2);
}

BOOST_AUTO_TEST_CASE(revoked_certificate_is_re_minted_once_with_bypass_cache) {
  runtime_rig r;
  auto first = warm_up(r);
  auto revoked = r.sim().pki().revoke(first.binding->x5t_s256);
  BOOST_REQUIRE_MESSAGE(revoked.ok(), "revoke: " << (revoked ? "" : revoked.error()));
  auto req = pop_request(arm);
  req.force_refresh = true;
  auto t = r.get(req);
  BOOST_REQUIRE_MESSAGE(t, why(t));
  BOOST_TEST(t->binding->x5t_s256 != first.binding->x5t_s256);
  BOOST_TEST(r.sim().count("token", 200) == 2);
  BOOST_TEST(r.sim().count("token") == 3); // one invalid_client in between
  BOOST_TEST(r.sim().count("imds_issue", 200) == 2);
  auto issued = r.sim().pki().issued();
  BOOST_TEST(issued.size() == 2u);
  int issues = 0;
  int bypassing = 0;
  for (auto& s : r.sent())
    if (s.find("/metadata/identity/issuecredential") != std::string::npos) {
      ++issues;
      bypassing += s.find("bypass_cache=true") != std::string::npos ? 1 : 0;
    }
  BOOST_TEST(issues == 2);
  BOOST_TEST(bypassing == 1); // the re-mint, and only it
  auto res = r.call_resource(*t);
  BOOST_TEST(res.status == 200, res.body);
}

BOOST_AUTO_TEST_CASE(answers_slower_than_the_deadline_give_deadline_exceeded_in_time) {
  runtime_rig r;
  warm_up(r);
  fault_spec slow;
  slow.latency = 4s;
  set_fault(r, "imds_metadata", slow);
  auto t0 = steady::now();
  auto t = r.get(pop_request(vault, managed_identity::system(), 1500ms));
  BOOST_TEST((code_of(t) == error_code::deadline_exceeded), why(t));
  BOOST_TEST(seconds_since(t0) >= 1.3);
  BOOST_TEST(seconds_since(t0) < 2.5);
}

/// Outcome of one request after a body fault on `endpoint`, with the counters, for the log.
msiv2::token_outcome body_fault_run(runtime_rig& r, const std::string& endpoint,
                                          body_fault kind, bool warm) {
  if (warm)
    warm_up(r);
  fault_spec bad;
  bad.body = kind;
  bad.count = 1;
  set_fault(r, endpoint, bad);
  auto t = r.get(pop_request(vault, managed_identity::system(), 10s));
  BOOST_TEST_MESSAGE(endpoint << ": " << why(t) << " counters " << r.sim().counters_json());
  return t;
}

// Each leg names its own failure (messages/errors.hpp): a malformed getplatformmetadata answer
// is metadata_failed, a malformed issuecredential answer issuance_refused, a malformed token
// answer invalid_response, each described as "malformed <leg> response: <what>". None of them is retried; a truncated answer (connection closed before
// Content-Length) is a network failure on a request safe to repeat: retried on the IMDS legs
// (§9) and once after 1 s on the token leg (like a 5xx), then transport_failed.
BOOST_AUTO_TEST_CASE(malformed_metadata_body_is_metadata_failed_without_retry) {
  runtime_rig r;
  auto t = body_fault_run(r, "imds_metadata", body_fault::malformed, true);
  BOOST_TEST((code_of(t) == error_code::metadata_failed), why(t));
  BOOST_TEST(why(t).find("malformed getplatformmetadata response: not valid JSON") != std::string::npos, why(t));
  BOOST_TEST(r.sim().count("imds_metadata", 200) == 2u);
  BOOST_TEST(r.sim().count("token") == 1u);
}

BOOST_AUTO_TEST_CASE(malformed_issuecredential_body_is_issuance_refused_without_retry) {
  runtime_rig r;
  auto t = body_fault_run(r, "imds_issue", body_fault::malformed, false);
  BOOST_TEST((code_of(t) == error_code::issuance_refused), why(t));
  BOOST_TEST(why(t).find("malformed issuecredential response: not valid JSON") != std::string::npos, why(t));
  BOOST_TEST(r.sim().count("imds_issue") == 1u);
  BOOST_TEST(r.sim().count("token") == 0u);
}

BOOST_AUTO_TEST_CASE(malformed_token_body_is_invalid_response) {
  runtime_rig r;
  auto t = body_fault_run(r, "token", body_fault::malformed, true);
  BOOST_TEST((code_of(t) == error_code::invalid_response), why(t));
  BOOST_TEST(why(t).find("malformed token endpoint response: not valid JSON") != std::string::npos, why(t));
  BOOST_TEST(r.sim().count("token") == 2u);
}

BOOST_AUTO_TEST_CASE(malformed_v1_token_body_is_invalid_response) {
  runtime_rig r;
  fault_spec bad;
  bad.body = body_fault::malformed;
  bad.count = 1;
  set_fault(r, "imds_token", bad);
  auto req = pop_request(vault, managed_identity::system(), 10s);
  req.type = msiv2::token_type::bearer;
  auto t = r.get(req);
  BOOST_TEST((code_of(t) == error_code::invalid_response), why(t));
  BOOST_TEST(why(t).find("malformed IMDS v1 token response: not valid JSON") != std::string::npos, why(t));
  BOOST_TEST(r.sim().count("imds_token") == 1u);
  BOOST_TEST(r.sim().count("token") == 0u);
}

BOOST_AUTO_TEST_CASE(truncated_metadata_body_succeeds_after_a_retry) {
  runtime_rig r;
  auto t = body_fault_run(r, "imds_metadata", body_fault::truncated, true);
  BOOST_REQUIRE_MESSAGE(t, why(t));
  BOOST_TEST(r.sim().count("imds_metadata", 200) == 3u); // warm-up, truncated, retry
  BOOST_TEST(r.sim().count("token", 200) == 2u);
}

BOOST_AUTO_TEST_CASE(truncated_issuecredential_body_succeeds_after_a_retry) {
  runtime_rig r;
  auto t = body_fault_run(r, "imds_issue", body_fault::truncated, false);
  BOOST_REQUIRE_MESSAGE(t, why(t));
  BOOST_TEST(r.sim().count("imds_issue", 200) == 2u);
  BOOST_TEST(r.sim().count("token", 200) == 1u);
}

BOOST_AUTO_TEST_CASE(truncated_token_body_succeeds_after_one_retry) {
  runtime_rig r;
  auto t = body_fault_run(r, "token", body_fault::truncated, true);
  BOOST_REQUIRE_MESSAGE(t, why(t));
  BOOST_TEST(r.sim().count("token") == 3u); // warm-up, truncated, retry
  BOOST_TEST(r.sim().count("token", 200) == 3u);
  BOOST_TEST(r.sim().count("imds_issue") == 1u);
}

BOOST_AUTO_TEST_CASE(truncated_token_body_twice_is_transport_failed) {
  runtime_rig r;
  warm_up(r);
  fault_spec bad;
  bad.body = body_fault::truncated;
  bad.count = -1;
  set_fault(r, "token", bad);
  auto t0 = steady::now();
  auto t = r.get(pop_request(vault, managed_identity::system(), 10s));
  BOOST_TEST((code_of(t) == error_code::transport_failed), why(t));
  BOOST_TEST(seconds_since(t0) >= 0.7); // one retry after 1 s (+-20 %)
  BOOST_TEST(seconds_since(t0) < 5.0);
  BOOST_TEST(r.sim().count("token") == 3u); // warm-up, truncated, truncated retry
}

// Attestation refused or unusable (architecture.md "Failure handling"): the answer is dropped
// and exactly one fresh attestation follows; when that fails too, attestation_failed.
BOOST_AUTO_TEST_CASE(malformed_attestation_body_is_attested_once_more) {
  runtime_rig r([](msiv2::sim::config& c) { c.attestation = msiv2::sim::attestation_policy::required; },
                {true, {}});
  auto t = body_fault_run(r, "attestation", body_fault::malformed, false);
  BOOST_REQUIRE_MESSAGE(t, why(t));
  BOOST_TEST(r.sim().count("attestation") == 2u); // the malformed one, the fresh one
  BOOST_TEST(r.sim().count("imds_issue", 200) == 1u);
  BOOST_TEST(r.sim().count("token", 200) == 1u);
}

BOOST_AUTO_TEST_CASE(malformed_attestation_bodies_twice_are_attestation_failed) {
  runtime_rig r([](msiv2::sim::config& c) { c.attestation = msiv2::sim::attestation_policy::required; },
                {true, {}});
  fault_spec bad;
  bad.body = body_fault::malformed;
  bad.count = -1;
  set_fault(r, "attestation", bad);
  auto t0 = steady::now();
  auto t = r.get(pop_request(vault, managed_identity::system(), 10s));
  BOOST_TEST((code_of(t) == error_code::attestation_failed), why(t));
  BOOST_TEST(why(t).find("malformed attestation response: not valid JSON") != std::string::npos, why(t));
  BOOST_TEST(why(t).find("again after one fresh attestation attempt") != std::string::npos, why(t));
  BOOST_TEST(seconds_since(t0) < 5.0); // no retry schedule
  BOOST_TEST(r.sim().count("attestation") == 2u);
  BOOST_TEST(r.sim().count("imds_issue") == 0u);
  BOOST_TEST(r.sim().count("token") == 0u);
}

BOOST_AUTO_TEST_CASE(attestation_policy_refusal_is_attested_once_more_then_fails) {
  runtime_rig r([](msiv2::sim::config& c) { c.attestation = msiv2::sim::attestation_policy::required; },
                {true, {}});
  set_fault(r, "attestation", statuses({403, 403}));
  auto t = r.get(pop_request(vault, managed_identity::system(), 10s));
  BOOST_TEST((code_of(t) == error_code::attestation_failed), why(t));
  BOOST_TEST(r.sim().count("attestation", 403) == 2u);
  BOOST_TEST(r.sim().count("attestation") == 2u);
  BOOST_TEST(r.sim().count("imds_issue") == 0u);
  // The refusal was a passing one: the next request attests (once) and gets its token.
  auto again = r.get(pop_request(vault, managed_identity::system(), 10s));
  BOOST_REQUIRE_MESSAGE(again, why(again));
  BOOST_TEST(r.sim().count("attestation", 200) == 1u);
  BOOST_TEST(r.sim().count("imds_issue", 200) == 1u);
}

BOOST_AUTO_TEST_CASE(metadata_without_server_header_is_metadata_failed) {
  runtime_rig r;
  fault_spec f;
  f.drop_server_header = true;
  set_fault(r, "imds_metadata", f);
  auto t = r.get(pop_request(arm, managed_identity::system(), 10s));
  BOOST_TEST((code_of(t) == error_code::metadata_failed), why(t));
  BOOST_TEST(r.sim().count("imds_issue") == 0);
  BOOST_TEST(r.sim().count("token") == 0);
}

BOOST_AUTO_TEST_SUITE_END()
