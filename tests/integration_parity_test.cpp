// What MSAL .NET learned in production, against the simulator over real HTTP/TLS, judged by
// its counters and its request log (GET /requests): no probe on the mtls_pop path, one
// correlation id across every leg of a request, telemetry headers, token_not_after, the
// re-mint codes (AADSTS1000901, a refused client certificate) and AADSTS500181, binding
// strength and the capability query.

#include <boost/test/unit_test.hpp>

#include <chrono>
#include <string>
#include <thread>

#include "tests/support/sim_runtime_rig.hpp"

namespace {

using namespace std::chrono_literals;
using msiv2::binding_strength;
using msiv2::error_code;
using msiv2::imds_availability;
using msiv2::token_source;
using msiv2::sim::fault_spec;
using msiv2::test::code_of;
using msiv2::test::pop_request;
using msiv2::test::rig_options;
using msiv2::test::runtime_rig;
using msiv2::test::set_fault;
using msiv2::test::warm_up;
using msiv2::test::why;

const std::string arm = "https://management.azure.com";
const std::string vault = "https://vault.azure.net";

/// A fault of the token endpoint answering AADSTS `code` once.
fault_spec aadsts_once(int code) {
  fault_spec f;
  f.aadsts = code;
  f.count = 1;
  return f;
}

} // namespace

BOOST_AUTO_TEST_SUITE(integration_parity_test)

BOOST_AUTO_TEST_CASE(cold_start_legs_share_one_request_id_in_the_simulator_log_without_a_probe) {
  runtime_rig r([](msiv2::sim::config& c) { c.attestation = msiv2::sim::attestation_policy::required; },
                rig_options{true, {}});
  auto t = r.get(pop_request(arm));
  BOOST_REQUIRE_MESSAGE(t, why(t));
  const auto id = t->correlation_id;
  BOOST_TEST(id.size() == 36u);
  auto log = r.sim().recent_requests();
  // getplatformmetadata, attestation, issuecredential, token: nothing else, no probe.
  BOOST_REQUIRE_EQUAL(log.size(), 4u);
  const char* legs[] = {"imds_metadata", "attestation", "imds_issue", "token"};
  for (std::size_t i = 0; i < log.size(); ++i) {
    BOOST_TEST(log[i].endpoint == legs[i]);
    BOOST_TEST(log[i].status == 200);
    BOOST_TEST(log[i].request_id == id, log[i].endpoint << ": " << log[i].request_id);
  }
  // Telemetry on IMDS and the token endpoint (not on attestation, MSAL's native library leg).
  BOOST_TEST(log[0].sku == msiv2::client_sku);
  BOOST_TEST(log[2].sku == msiv2::client_sku);
  BOOST_TEST(log[3].sku == msiv2::client_sku);
  BOOST_TEST(r.sim().count_sku(msiv2::client_sku) == 3u);
  BOOST_TEST(r.sim().count("imds_metadata", 400) == 0u);
  // The admin API shows the same log.
  auto admin = r.fixture().admin("GET", "/requests");
  BOOST_TEST(admin.status == 200);
  BOOST_TEST(admin.body.find("\"request_id\":\"" + id + "\"") != std::string::npos, admin.body);
  BOOST_TEST(r.fixture().admin("GET", "/counters").body.find("\"by_sku\":{\"msiv2.cpp\":3}") !=
             std::string::npos);
}

BOOST_AUTO_TEST_CASE(embedder_correlation_id_is_sent_on_every_leg_and_named_in_errors) {
  runtime_rig r;
  auto req = pop_request(arm);
  req.correlation_id = "embedder-request-0001";
  auto t = r.get(req);
  BOOST_REQUIRE_MESSAGE(t, why(t));
  BOOST_TEST(t->correlation_id == "embedder-request-0001");
  for (auto& l : r.sim().recent_requests())
    BOOST_TEST(l.request_id == "embedder-request-0001", l.endpoint);
  // A refusal names the id (Entra echoes client-request-id as its correlation_id).
  fault_spec refuse;
  refuse.statuses = {400};
  set_fault(r, "token", refuse);
  auto again = pop_request(vault);
  again.correlation_id = "embedder-request-0002";
  auto failed = r.get(again);
  BOOST_TEST((code_of(failed) == error_code::token_refused), why(failed));
  BOOST_TEST(msiv2::describe(failed.error()).correlation_id.size() > 0u);
  BOOST_TEST(r.sim().recent_requests().back().request_id == "embedder-request-0002");
}

BOOST_AUTO_TEST_CASE(aadsts_1000901_leads_to_exactly_one_remint) {
  runtime_rig r;
  warm_up(r);
  set_fault(r, "token", aadsts_once(1000901));
  auto req = pop_request(vault);
  auto t = r.get(req);
  BOOST_REQUIRE_MESSAGE(t, why(t));
  BOOST_TEST(r.sim().count("token", 401) == 1u);
  BOOST_TEST(r.sim().count("imds_issue", 200) == 2u); // warm-up + the one re-mint
  BOOST_TEST(r.sim().count("token", 200) == 2u);
}

BOOST_AUTO_TEST_CASE(aadsts_500181_drops_the_bound_tokens_and_retries_exactly_once) {
  runtime_rig r;
  auto first = warm_up(r, arm);
  set_fault(r, "token", aadsts_once(500181));
  auto t = r.get(pop_request(vault));
  BOOST_REQUIRE_MESSAGE(t, why(t));
  BOOST_TEST(r.sim().count("token", 400) == 1u);
  BOOST_TEST(r.sim().count("token", 200) == 2u);
  BOOST_TEST(r.sim().count("imds_issue") == 1u); // no re-mint: the same certificate
  BOOST_TEST(t->binding->x5t_s256 == first.binding->x5t_s256);
  // The token cached for that certificate was dropped: the next ask goes to the network.
  auto again = r.get(pop_request(arm));
  BOOST_REQUIRE_MESSAGE(again, why(again));
  BOOST_TEST((again->source == token_source::network));
}

BOOST_AUTO_TEST_CASE(certificate_is_renewed_at_its_token_not_after_not_its_not_after) {
  // Certificates live an hour but get tokens for 3 s only: the client renews within the 3 s.
  runtime_rig r([](msiv2::sim::config& c) { c.token_not_after = 3s; });
  auto t = r.get(pop_request(arm));
  BOOST_REQUIRE_MESSAGE(t, why(t));
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (r.sim().count("imds_issue", 200) < 2u && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(50ms);
  BOOST_TEST(r.sim().count("imds_issue", 200) >= 2u, "no renewal before token_not_after");
  // The renewed certificate gets tokens.
  auto next = r.get(pop_request(vault));
  BOOST_REQUIRE_MESSAGE(next, why(next));
  BOOST_TEST(next->binding->x5t_s256 != t->binding->x5t_s256);
}

BOOST_AUTO_TEST_CASE(refused_client_certificate_in_the_handshake_leads_to_exactly_one_remint) {
  runtime_rig r;
  fault_spec reject;
  reject.reject_client_cert = true;
  reject.count = 1;
  set_fault(r, "token_tls", reject);
  auto t = r.get(pop_request(arm));
  BOOST_REQUIRE_MESSAGE(t, why(t));
  BOOST_TEST(r.sim().count("token_tls", -2) == 1u); // counted as "rejected"
  BOOST_TEST(r.sim().count("imds_issue", 200) == 2u);
  BOOST_TEST(r.sim().count("token", 200) == 1u);
}

BOOST_AUTO_TEST_CASE(software_key_host_refuses_hardware_binding_without_any_upstream_call) {
  runtime_rig r;
  auto req = pop_request(arm);
  req.min_binding = binding_strength::hardware_key;
  auto t = r.get(req);
  BOOST_TEST((code_of(t) == error_code::binding_too_weak), why(t));
  BOOST_TEST(msiv2::describe(t.error()).description.find("hardware key store") !=
             std::string::npos);
  BOOST_TEST(r.sim().recent_requests().empty());
}

BOOST_AUTO_TEST_CASE(no_imds_listening_fails_mtls_pop_with_imds_unavailable_without_a_probe) {
  // Nothing listens on the discard port of loopback: the connection is refused.
  msiv2::client_options o;
  o.config = msiv2::module_config{};
  o.config.imds_base_url = "http://127.0.0.1:9";
  auto c = msiv2::client::create(std::move(o));
  BOOST_REQUIRE_MESSAGE(c.ok(), (c.ok() ? "" : c.error()));
  auto t0 = std::chrono::steady_clock::now();
  auto t = (*c)->get_token_blocking(pop_request(arm, msiv2::managed_identity::system(), 20s));
  BOOST_TEST((code_of(t) == error_code::imds_unavailable), why(t));
  BOOST_TEST(msiv2::test::seconds_since(t0) < 5.0); // a refused connection is not retried
  // Remembered: the next request fails at once.
  auto again = (*c)->get_token_blocking(pop_request(vault, msiv2::managed_identity::system(), 20s));
  BOOST_TEST((code_of(again) == error_code::imds_unavailable), why(again));
}

BOOST_AUTO_TEST_CASE(capability_query_probes_once_and_mints_nothing) {
  runtime_rig r;
  auto caps = r.client().capabilities();
  BOOST_REQUIRE_MESSAGE(caps, (caps ? std::string() : msiv2::render(caps.error())));
  BOOST_TEST((caps->imds == imds_availability::v2));
  BOOST_TEST((caps->strongest == binding_strength::software_key));
  BOOST_TEST(r.sim().count("imds_metadata", 400) == 1u); // the header-less probe
  BOOST_TEST(r.sim().count("imds_metadata", 200) == 0u);
  BOOST_TEST(r.sim().count("imds_issue") == 0u);

  runtime_rig v1([](msiv2::sim::config& c) { c.v1_only = true; });
  auto v1_caps = v1.client().capabilities();
  BOOST_REQUIRE_MESSAGE(v1_caps, (v1_caps ? std::string() : msiv2::render(v1_caps.error())));
  BOOST_TEST((v1_caps->imds == imds_availability::v1_only));
  BOOST_TEST((v1_caps->strongest == binding_strength::bearer));
}

BOOST_AUTO_TEST_SUITE_END()
