// The simulator's config file and fault-spec parser: every member, and errors that name the
// member and what is wrong with it.

#include <boost/test/unit_test.hpp>

#include "tools/sim/admin.hpp"
#include "tools/sim/config.hpp"

namespace {

namespace sim = msiv2::sim;

/// The error of parsing `json` (fails the test when it parses).
std::string config_error(const std::string& json) {
  auto r = sim::parse_config(json);
  BOOST_TEST(!r.ok(), "expected an error for " << json);
  return r.ok() ? std::string() : r.error();
}

std::string validate_error(const sim::config& c) {
  auto r = sim::validate_config(c);
  BOOST_TEST(!r.ok(), "expected a validation error");
  return r.ok() ? std::string() : r.error();
}

} // namespace

BOOST_AUTO_TEST_SUITE(sim_config_test)

BOOST_AUTO_TEST_CASE(defaults_are_valid) {
  BOOST_TEST(sim::validate_config(sim::config{}).ok());
  auto empty = sim::parse_config("{}");
  BOOST_TEST_REQUIRE(empty.ok());
  BOOST_TEST(empty->threads == 2);
  BOOST_TEST(empty->user_identities.size() == 2u);
}

BOOST_AUTO_TEST_CASE(parses_every_member_over_the_defaults) {
  auto r = sim::parse_config(R"({
    "bind_address": "127.0.0.2", "imds_port": 8080, "attestation_port": 8443,
    "token_port": 8444, "resource_port": 8445, "admin_port": 8081, "threads": 8,
    "ready_file": "/tmp/r.json", "state_dir": "/tmp/s", "ca_cert_file": "/c.pem", "ca_key_file": "/k.pem",
    "tenant_id": "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", "vm_id": "11111111-1111-4111-8111-111111111111",
    "vmss_id": "22222222-2222-4222-8222-222222222222", "system_assigned_enabled": false,
    "system_identity": {"client_id": "33333333-3333-4333-8333-333333333333",
                        "object_id": "44444444-4444-4444-8444-444444444444", "resource_id": ""},
    "user_identities": [{"client_id": "55555555-5555-4555-8555-555555555555",
                         "object_id": "66666666-6666-4666-8666-666666666666",
                         "resource_id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u"}],
    "v1_only": true, "imds_server_header": "IMDS/1.2.3", "region": "westus3",
    "cert_lifetime": 120, "attestation_lifetime": 60, "token_lifetime": 90, "refresh_in": 30,
    "v1_token_lifetime": 45, "attestation": "required",
    "faults": {"imds_metadata": {"statuses": [503, 0], "probability": 0.5, "probability_status": 429,
                                 "latency_ms": 10, "reset": false, "body": "truncated",
                                 "drop_server_header": true, "retry_after": 4, "count": 2}}
  })");
  BOOST_TEST_REQUIRE(r.ok(), (r.ok() ? "" : r.error()));
  const auto& c = *r;
  BOOST_TEST(c.bind_address == "127.0.0.2");
  BOOST_TEST(c.imds_port == 8080);
  BOOST_TEST(c.attestation_port == 8443);
  BOOST_TEST(c.token_port == 8444);
  BOOST_TEST(c.resource_port == 8445);
  BOOST_TEST(c.admin_port == 8081);
  BOOST_TEST(c.threads == 8);
  BOOST_TEST(c.ready_file == "/tmp/r.json");
  BOOST_TEST(c.state_dir == "/tmp/s");
  BOOST_TEST(c.ca_cert_file == "/c.pem");
  BOOST_TEST(c.ca_key_file == "/k.pem");
  BOOST_TEST(c.tenant_id == "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
  BOOST_TEST(c.vmss_id == "22222222-2222-4222-8222-222222222222");
  BOOST_TEST(!c.system_assigned_enabled);
  BOOST_TEST(c.system_identity.system_assigned);
  BOOST_TEST(c.system_identity.client_id == "33333333-3333-4333-8333-333333333333");
  BOOST_TEST_REQUIRE(c.user_identities.size() == 1u);
  BOOST_TEST(!c.user_identities[0].system_assigned);
  BOOST_TEST(c.v1_only);
  BOOST_TEST(c.imds_server_header == "IMDS/1.2.3");
  BOOST_TEST(c.region == "westus3");
  BOOST_TEST(c.cert_lifetime.count() == 120);
  BOOST_TEST(c.attestation_lifetime.count() == 60);
  BOOST_TEST(c.token_lifetime.count() == 90);
  BOOST_TEST(c.refresh_in.value_or(std::chrono::seconds(0)).count() == 30);
  BOOST_TEST(c.v1_token_lifetime.count() == 45);
  BOOST_TEST((c.attestation == sim::attestation_policy::required));
  const auto& f = c.faults.at("imds_metadata");
  BOOST_TEST(f.statuses == (std::vector<int>{503, 0}), boost::test_tools::per_element());
  BOOST_TEST(f.probability == 0.5);
  BOOST_TEST(f.probability_status == 429);
  BOOST_TEST(f.latency.count() == 10);
  BOOST_TEST((f.body == sim::body_fault::truncated));
  BOOST_TEST(f.drop_server_header);
  BOOST_TEST(f.retry_after.value_or(0) == 4);
  BOOST_TEST(f.count == 2);
  BOOST_TEST(sim::validate_config(c).ok());
}

BOOST_AUTO_TEST_CASE(errors_name_the_member_and_the_rule) {
  BOOST_TEST(config_error(R"({"threads": 0})") == "threads: must be an integer from 1 to 64");
  BOOST_TEST(config_error(R"({"threads": "2"})") == "threads: must be an integer from 1 to 64");
  BOOST_TEST(config_error(R"({"imds_port": 70000})") == "imds_port: must be an integer from 0 to 65535");
  BOOST_TEST(config_error(R"({"v1_only": 1})") == "v1_only: must be true or false");
  BOOST_TEST(config_error(R"({"tenant_id": 5})") == "tenant_id: must be a string");
  BOOST_TEST(config_error(R"({"attestation": "sometimes"})").find("attestation: must be one of") == 0);
  BOOST_TEST(config_error(R"({"cert_lifetime": 0})").find("cert_lifetime: must be an integer from 1") == 0);
  BOOST_TEST(config_error(R"({"refresh_in": -1})").find("refresh_in: must be null or") == 0);
  BOOST_TEST(config_error(R"({"user_identities": [{"client_id": "x", "nickname": "y"}]})") ==
             "user_identities[0].nickname: unknown member");
  BOOST_TEST(config_error(R"({"system_identity": []})") == "system_identity: must be a JSON object");
  BOOST_TEST(config_error(R"({"faults": {"imds_metadata": {"statuses": [503, 600]}}})") ==
             "faults.imds_metadata.statuses[1]: must be 0 or an HTTP status from 400 to 599");
  BOOST_TEST(config_error(R"({"faults": {"imds_metadata": {"body": "garbled"}}})").find(
               "faults.imds_metadata.body: must be one of") == 0);
  BOOST_TEST(config_error(R"({"faults": {"imds_metadata": {"probability": 2}}})") ==
             "faults.imds_metadata.probability: must be a number from 0 to 1");
  BOOST_TEST(config_error(R"({"faults": {"metadata": {}}})").find("faults.metadata: unknown endpoint") == 0);
}

BOOST_AUTO_TEST_CASE(parity_members_parse_and_bad_values_name_the_member) {
  auto c = msiv2::sim::parse_config(
    R"({"token_not_after": 60, "csr_profile": "lenient", "request_log_size": 10,
        "faults": {"token": {"aadsts": 1000901, "count": 1},
                   "token_tls": {"reject_client_cert": true, "count": 2}}})");
  BOOST_REQUIRE_MESSAGE(c.ok(), (c.ok() ? "" : c.error()));
  BOOST_TEST(c->token_not_after->count() == 60);
  BOOST_TEST((c->csr_profile == msiv2::platform::csr_profile::lenient));
  BOOST_TEST(c->request_log_size == 10u);
  BOOST_TEST(c->faults.at("token").aadsts == 1000901);
  BOOST_TEST(c->faults.at("token_tls").reject_client_cert);
  BOOST_TEST(config_error(R"({"csr_profile": "loose"})") ==
             "csr_profile: must be \"strict\" or \"lenient\"");
  auto invalid = [](const std::string& json) {
    auto parsed = msiv2::sim::parse_config(json);
    BOOST_REQUIRE_MESSAGE(parsed.ok(), json);
    return validate_error(*parsed);
  };
  BOOST_TEST(invalid(R"({"cert_lifetime": 60, "token_not_after": 60})").find(
               "token_not_after: must be null or an integer from 1 to less than cert_lifetime") == 0);
  BOOST_TEST(invalid(R"({"faults": {"token": {"aadsts": 12345}}})") ==
             "faults.token.aadsts: must be 0, 500181, 1000901 or 1000610 to 1000614");
  BOOST_TEST(invalid(R"({"faults": {"imds_issue": {"aadsts": 1000901}}})") ==
             "faults.imds_issue.aadsts: is a fault of the token endpoint only (faults.token)");
  BOOST_TEST(invalid(R"({"faults": {"token": {"reject_client_cert": true}}})").find(
               "faults.token.reject_client_cert: is a fault of the token listener") == 0);
}

BOOST_AUTO_TEST_CASE(unknown_members_are_errors_naming_them) {
  BOOST_TEST(config_error(R"({"thread": 4})") == "thread: unknown member");
  BOOST_TEST(config_error(R"({"faults": {"token": {"latency": 4}}})") ==
             "faults.token.latency: unknown member");
}

BOOST_AUTO_TEST_CASE(malformed_documents_are_refused) {
  BOOST_TEST(config_error("") == "config: not valid JSON");
  BOOST_TEST(config_error("[1]") == "config: must be a JSON object");
  BOOST_TEST(config_error(R"({"threads": 4)").find("config") != std::string::npos);
  BOOST_TEST(config_error(R"({"threads": 4} {})") == "config: unexpected content after the JSON object");
  BOOST_TEST(config_error(R"({"threads": 4,})").find("not valid JSON") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(fault_spec_parser_is_the_one_the_admin_api_uses) {
  auto f = sim::parse_fault_spec(R"({"reset": true, "count": 1, "retry_after": null})");
  BOOST_TEST_REQUIRE(f.ok());
  BOOST_TEST(f->reset);
  BOOST_TEST(f->count == 1);
  BOOST_TEST(!f->retry_after.has_value());
  auto bad = sim::parse_fault_spec(R"({"count": -2})");
  BOOST_TEST_REQUIRE(!bad.ok());
  BOOST_TEST(bad.error() == "count: must be an integer from -1 to 1000000000");
  // Serialising and parsing again gives the same spec.
  sim::fault_spec s;
  s.statuses = {500, 0, 429};
  s.probability = 0.125;
  s.latency = std::chrono::milliseconds(250);
  s.body = sim::body_fault::malformed;
  s.retry_after = 9;
  auto again = sim::parse_fault_spec(sim::fault_spec_json(s));
  BOOST_TEST_REQUIRE(again.ok());
  BOOST_TEST(again->statuses == s.statuses, boost::test_tools::per_element());
  BOOST_TEST(again->probability == 0.125);
  BOOST_TEST(again->latency.count() == 250);
  BOOST_TEST((again->body == sim::body_fault::malformed));
  BOOST_TEST(again->retry_after.value_or(0) == 9);
}

BOOST_AUTO_TEST_CASE(validation_checks_cross_field_rules) {
  sim::config c;
  c.bind_address = "10.0.0.1";
  BOOST_TEST(validate_error(c).find("bind_address: must be a loopback IP address") == 0);
  c = {};
  c.bind_address = "::1";
  BOOST_TEST(sim::validate_config(c).ok());
  c = {};
  c.bind_address = "localhost";
  BOOST_TEST(validate_error(c).find("bind_address") == 0);
  c = {};
  c.tenant_id = "not-a-guid";
  BOOST_TEST(validate_error(c) == "tenant_id: must be a GUID");
  c = {};
  c.user_identities[1].client_id = c.user_identities[0].client_id;
  BOOST_TEST(validate_error(c) == "user_identities[1].client_id: is used by another identity");
  c = {};
  c.user_identities[0].resource_id = "uami-one";
  BOOST_TEST(validate_error(c).find("user_identities[0].resource_id: must be an ARM id") == 0);
  c = {};
  c.admin_port = 9000;
  c.imds_port = 9000;
  BOOST_TEST(validate_error(c).find("admin_port: 9000 is also imds_port") == 0);
  c = {};
  c.system_assigned_enabled = false;
  c.user_identities.clear();
  BOOST_TEST(validate_error(c).find("user_identities: must not be empty") == 0);
  c = {};
  c.ca_cert_file = "/ca.pem";
  BOOST_TEST(validate_error(c).find("ca_key_file") == 0);
  c = {};
  c.token_lifetime = std::chrono::seconds(0);
  BOOST_TEST(validate_error(c).find("token_lifetime") == 0);
  c = {};
  c.faults["nope"] = {};
  BOOST_TEST(validate_error(c) == "faults.nope: unknown endpoint");
}

BOOST_AUTO_TEST_CASE(config_json_round_trips) {
  sim::config c;
  c.threads = 5;
  c.v1_only = true;
  c.refresh_in = std::chrono::seconds(77);
  c.attestation = sim::attestation_policy::off;
  c.faults["jwks"].statuses = {500};
  auto back = sim::parse_config(sim::config_json(c));
  BOOST_TEST_REQUIRE(back.ok(), (back.ok() ? "" : back.error()));
  BOOST_TEST(back->threads == 5);
  BOOST_TEST(back->v1_only);
  BOOST_TEST(back->refresh_in.value_or(std::chrono::seconds(0)).count() == 77);
  BOOST_TEST((back->attestation == sim::attestation_policy::off));
  BOOST_TEST(back->faults.at("jwks").statuses.size() == 1u);
  BOOST_TEST(sim::config_json(*back) == sim::config_json(c));
}

BOOST_AUTO_TEST_SUITE_END()
