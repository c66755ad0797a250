// The whole token runtime (msiv2::client: real actors on threads, curl_transport, software key
// store) against the in-process simulator over real HTTP/TLS on loopback. Every case is judged
// by the simulator's counters as well as by the answer.

#include <boost/test/unit_test.hpp>

#include <chrono>
#include <string>

#include "platform/binding.hpp"
#include "platform/jwt.hpp"
#include "tests/support/sim_runtime_rig.hpp"

namespace {

using namespace std::chrono_literals;
using msiv2::error_code;
using msiv2::managed_identity;
using msiv2::token_source;
using msiv2::test::code_of;
using msiv2::test::pop_request;
using msiv2::test::runtime_rig;
using msiv2::test::why;

const std::string arm = "https://management.azure.com";
const std::string vault = "https://vault.azure.net";

/// Checks the token's cnf against the result's binding and that the resource accepts it.
void check_bound_and_usable(runtime_rig& r, const msiv2::token_result& t) {
  BOOST_REQUIRE(t.binding);
  BOOST_REQUIRE(!t.binding->certificate_chain.empty());
  auto claims = msiv2::platform::read_jwt_claims(t.access_token);
  BOOST_REQUIRE_MESSAGE(claims.ok(), "access token claims: " << (claims ? "" : claims.error()));
  BOOST_TEST(claims->cnf_x5t_s256 == t.binding->x5t_s256);
  auto res = r.call_resource(t);
  BOOST_TEST(res.status == 200, "resource: " << res.status << " " << res.body << res.error);
}

} // namespace

BOOST_AUTO_TEST_SUITE(integration_runtime_test)

BOOST_AUTO_TEST_CASE(cold_start_mtls_pop_returns_a_bound_token_with_one_call_per_step) {
  runtime_rig r;
  auto t = r.get(pop_request(arm));
  BOOST_REQUIRE_MESSAGE(t, why(t));
  BOOST_TEST((t->source == token_source::network));
  BOOST_TEST(r.sim().count("imds_metadata", 400) == 0); // no probe on the mtls_pop path
  BOOST_TEST(r.sim().count("imds_metadata", 200) == 1);
  BOOST_TEST(r.sim().count("imds_metadata") == 1);
  BOOST_TEST(r.sim().count("imds_issue", 200) == 1);
  BOOST_TEST(r.sim().count("imds_issue") == 1);
  BOOST_TEST(r.sim().count("token", 200) == 1);
  BOOST_TEST(r.sim().count("token") == 1);
  BOOST_TEST(r.sim().count("attestation") == 0);
  BOOST_TEST(r.sim().count("imds_token") == 0);
  check_bound_and_usable(r, *t);
  BOOST_TEST(r.sim().count("resource", 200) == 1);
}

BOOST_AUTO_TEST_CASE(warm_path_serves_the_cached_token_without_upstream_calls) {
  runtime_rig r;
  auto first = r.get(pop_request(arm));
  BOOST_REQUIRE_MESSAGE(first, why(first));
  auto before = r.sim().counters_json();
  auto second = r.get(pop_request(arm));
  BOOST_REQUIRE_MESSAGE(second, why(second));
  BOOST_TEST((second->source == token_source::cache));
  BOOST_TEST(second->access_token == first->access_token);
  BOOST_TEST(r.sim().counters_json() == before);
}

BOOST_AUTO_TEST_CASE(second_resource_reuses_the_certificate_one_metadata_one_token) {
  runtime_rig r;
  auto first = r.get(pop_request(arm));
  BOOST_REQUIRE_MESSAGE(first, why(first));
  auto second = r.get(pop_request(vault));
  BOOST_REQUIRE_MESSAGE(second, why(second));
  BOOST_TEST((second->source == token_source::network));
  BOOST_TEST(second->binding->x5t_s256 == first->binding->x5t_s256);
  BOOST_TEST(r.sim().count("imds_metadata", 400) == 0);
  BOOST_TEST(r.sim().count("imds_metadata", 200) == 2);
  BOOST_TEST(r.sim().count("imds_issue") == 1);
  BOOST_TEST(r.sim().count("token", 200) == 2);
  check_bound_and_usable(r, *second);
}

BOOST_AUTO_TEST_CASE(attested_key_is_attested_once_for_two_identities) {
  runtime_rig r([](msiv2::sim::config& c) { c.attestation = msiv2::sim::attestation_policy::required; },
                {true, {}});
  auto sys = r.get(pop_request(arm));
  BOOST_REQUIRE_MESSAGE(sys, why(sys));
  BOOST_TEST(r.sim().count("attestation", 200) == 1);
  BOOST_TEST(r.sim().count("attestation") == 1);
  BOOST_TEST(r.sim().count("imds_issue", 200) == 1);
  check_bound_and_usable(r, *sys);

  auto uami = r.get(pop_request(arm, managed_identity::by_client_id(
                                       r.fixture().cfg().user_identities[0].client_id)));
  BOOST_REQUIRE_MESSAGE(uami, why(uami));
  BOOST_TEST(uami->binding->x5t_s256 != sys->binding->x5t_s256);
  BOOST_TEST(uami->binding->key->key_id() == sys->binding->key->key_id());
  BOOST_TEST(r.sim().count("attestation") == 1);
  BOOST_TEST(r.sim().count("imds_issue", 200) == 2);
  BOOST_TEST(r.sim().count("token", 200) == 2);
  check_bound_and_usable(r, *uami);
  auto issued = r.sim().pki().issued();
  BOOST_TEST(issued.size() == 2u);
  for (auto& c : issued)
    BOOST_TEST(c.attested);
}

BOOST_AUTO_TEST_CASE(user_assigned_selectors_get_tokens_for_those_identities) {
  runtime_rig r;
  const auto& one = r.fixture().cfg().user_identities[0];
  const auto& two = r.fixture().cfg().user_identities[1];
  auto by_client = r.get(pop_request(arm, managed_identity::by_client_id(one.client_id)));
  BOOST_REQUIRE_MESSAGE(by_client, why(by_client));
  auto by_object = r.get(pop_request(arm, managed_identity::by_object_id(two.object_id)));
  BOOST_REQUIRE_MESSAGE(by_object, why(by_object));
  auto by_res = r.get(pop_request(vault, managed_identity::by_resource_id(one.resource_id)));
  BOOST_REQUIRE_MESSAGE(by_res, why(by_res));

  auto appid = [](const msiv2::token_result& t) {
    auto c = msiv2::platform::read_jwt_claims(t.access_token);
    return c ? c->appid : std::string("unreadable");
  };
  BOOST_TEST(appid(*by_client) == one.client_id);
  BOOST_TEST(appid(*by_object) == two.client_id);
  BOOST_TEST(appid(*by_res) == one.client_id);
  BOOST_TEST(r.sim().count("imds_issue", 200) == 3);
  BOOST_TEST(r.sim().count("token", 200) == 3);
  BOOST_TEST(r.sim().count("imds_metadata", 400) == 0);
  check_bound_and_usable(r, *by_client);
  check_bound_and_usable(r, *by_object);
  check_bound_and_usable(r, *by_res);
}

BOOST_AUTO_TEST_CASE(bearer_request_goes_through_imds_v1) {
  runtime_rig r;
  auto req = pop_request(arm);
  req.type = msiv2::token_type::bearer;
  auto t = r.get(req);
  BOOST_REQUIRE_MESSAGE(t, why(t));
  BOOST_TEST(!t->binding);
  BOOST_TEST(r.sim().count("imds_token", 200) == 1);
  BOOST_TEST(r.sim().count("imds_issue") == 0);
  BOOST_TEST(r.sim().count("token") == 0);
  auto res = r.call_resource(*t);
  BOOST_TEST(res.status == 200, res.body);
}

BOOST_AUTO_TEST_CASE(mtls_pop_on_a_v1_only_host_fails_with_v1_only_host) {
  runtime_rig r([](msiv2::sim::config& c) { c.v1_only = true; });
  auto t = r.get(pop_request(arm, managed_identity::system(), 10s));
  BOOST_TEST((code_of(t) == error_code::v1_only_host), why(t));
  BOOST_TEST(r.sim().count("imds_issue") == 0);
  BOOST_TEST(r.sim().count("token") == 0);
  BOOST_TEST(r.sim().count("imds_metadata", 200) == 0);
  BOOST_TEST(r.sim().count("imds_metadata", 404) >= 1); // getplatformmetadata itself told
}

BOOST_AUTO_TEST_CASE(kill_switch_fails_mtls_pop_with_v2_disabled_without_calls) {
  runtime_rig r({}, {false, [](msiv2::module_config& m) { m.v2_enabled = false; }});
  auto t = r.get(pop_request(arm, managed_identity::system(), 5s));
  BOOST_TEST((code_of(t) == error_code::v2_disabled), why(t));
  BOOST_TEST(r.sim().count("imds_issue") == 0);
  BOOST_TEST(r.sim().count("imds_metadata", 200) == 0);
  BOOST_TEST(r.sim().count("token") == 0);
}

BOOST_AUTO_TEST_CASE(log_sink_never_sees_tokens_jwts_or_key_text) {
  runtime_rig r([](msiv2::sim::config& c) { c.attestation = msiv2::sim::attestation_policy::required; },
                {true, {}});
  auto t = r.get(pop_request(arm));
  BOOST_REQUIRE_MESSAGE(t, why(t));
  auto bearer_req = pop_request(vault);
  bearer_req.type = msiv2::token_type::bearer;
  auto b = r.get(bearer_req);
  BOOST_REQUIRE_MESSAGE(b, why(b));
  auto log = r.log().text();
  BOOST_TEST(!r.log().lines().empty());
  BOOST_TEST(log.find(t->access_token) == std::string::npos);
  BOOST_TEST(log.find(b->access_token) == std::string::npos);
  // Any JWT: its header starts with base64url of {"alg" / {"typ".
  BOOST_TEST(log.find("eyJ") == std::string::npos);
  BOOST_TEST(log.find("PRIVATE KEY") == std::string::npos);
  BOOST_TEST(log.find("BEGIN CERTIFICATE") == std::string::npos);
  // The signature part of the token alone must not leak either.
  auto sig = t->access_token.substr(t->access_token.rfind('.') + 1);
  BOOST_TEST(log.find(sig) == std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
