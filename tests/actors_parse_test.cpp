// The readers of upstream answers as pure functions (review finding L13): each is called here
// with bytes and value inputs only, no actor, no transport.

#include <boost/test/unit_test.hpp>

#include <string>

#include "actors/imds_parse.hpp"
#include "actors/keyguard_attestation.hpp"
#include "actors/software_key_store.hpp"
#include "actors/token_parse.hpp"
#include "platform/encoding.hpp"
#include "platform/jwt.hpp"
#include "platform/x509.hpp"
#include "tests/support/test_keys.hpp"

using namespace msiv2;
using msiv2::test::contains;
using msiv2::test::error_text;

namespace {

constexpr const char* client = "9a2c7c3e-5e4b-4c55-9f3a-0d1f2e3a4b5c";
constexpr const char* tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
constexpr std::int64_t now_s = 1'767'225'600; // 2026-01-01

const char* metadata_body =
  R"({"clientId":"9a2c7c3e-5e4b-4c55-9f3a-0d1f2e3a4b5c",)"
  R"("tenantId":"72f988bf-86f1-41af-91ab-2d7cd011db47",)"
  R"("cuId":{"vmId":"5c8b3a7e-1f2d-4e6a-9b8c-7d6e5f4a3b2c"},)"
  R"("attestationEndpoint":"https://attest.test"})";

key_ref test_key_ref() {
  auto k = software_key_ref(platform::share_key(test::test_key()));
  BOOST_REQUIRE_MESSAGE(k, error_text(k));
  return *k;
}

/// A self-signed binding certificate of test_key() for `cn`, valid for a week from now_s.
std::string certificate(const std::string& cn, EVP_PKEY* key = test::test_key()) {
  platform::issue_params p;
  p.subject_key = key;
  p.subject_cn = cn;
  p.subject_dc = tenant;
  p.not_before = now_s - 60;
  p.not_after = now_s + 7 * 86400;
  p.client_auth = true;
  auto der = platform::issue_certificate(p, nullptr, key);
  BOOST_REQUIRE_MESSAGE(der, error_text(der));
  return *der;
}

credential_expectation expectation() {
  credential_expectation want;
  want.identity = managed_identity::system();
  auto meta = parse_platform_metadata(metadata_body);
  BOOST_REQUIRE_MESSAGE(meta, error_text(meta));
  want.metadata = *meta;
  want.key = test_key_ref();
  want.attested = true;
  want.token_hosts = {"mtlsauth.test"};
  return want;
}

std::string credential_body(const std::string& cert_der,
                            const std::string& endpoint = "https://westus.mtlsauth.test/") {
  return std::string(R"({"client_id":")") + client + R"(","tenant_id":")" + tenant +
         R"(","certificate":")" + platform::base64_encode(cert_der) +
         R"(","identity_type":"SystemAssigned","mtls_authentication_endpoint":")" + endpoint +
         R"("})";
}

std::string unsigned_jwt(const std::string& payload) {
  return platform::base64url_encode(R"({"alg":"none"})") + "." +
         platform::base64url_encode(payload) + ".c2ln";
}

} // namespace

BOOST_AUTO_TEST_SUITE(actors_parse_test)

BOOST_AUTO_TEST_CASE(metadata_answer_needs_a_server_header_naming_imds) {
  auto r = io::http_response::with_status(200, metadata_body);
  auto refused = read_metadata_answer(r);
  BOOST_REQUIRE(!refused);
  BOOST_TEST(contains(refused.error(), "no Server header naming IMDS"));
  r.headers.add("server", "Microsoft-IIS/10.0 imds/1.0");
  auto meta = read_metadata_answer(r);
  BOOST_REQUIRE_MESSAGE(meta, error_text(meta));
  BOOST_TEST(meta->client_id == client);
  BOOST_TEST(meta->cuid_json == R"({"vmId":"5c8b3a7e-1f2d-4e6a-9b8c-7d6e5f4a3b2c"})");
  BOOST_TEST(meta->attestation_endpoint == "https://attest.test");
}

BOOST_AUTO_TEST_CASE(metadata_body_names_the_member_at_fault) {
  auto bad_guid = parse_platform_metadata(
    R"({"clientId":"x","tenantId":"y","cuId":{"vmId":"v"},"attestationEndpoint":"e"})");
  BOOST_REQUIRE(!bad_guid);
  BOOST_TEST(contains(bad_guid.error(), "must be GUIDs"));
  auto no_cu = parse_platform_metadata(
    R"({"clientId":"9a2c7c3e-5e4b-4c55-9f3a-0d1f2e3a4b5c","tenantId":"72f988bf-86f1-41af-91ab-2d7cd011db47","cuId":{},"attestationEndpoint":"e"})");
  BOOST_REQUIRE(!no_cu);
  BOOST_TEST(contains(no_cu.error(), "neither vmId nor vmssId"));
  auto truncated = parse_platform_metadata(std::string(metadata_body).substr(0, 40));
  BOOST_REQUIRE(!truncated);
  BOOST_TEST(contains(truncated.error(), "malformed getplatformmetadata response"));
}

BOOST_AUTO_TEST_CASE(credential_answer_is_read_against_the_expected_key_and_metadata) {
  auto want = expectation();
  bool mismatch = false;
  const auto der = certificate(client);
  auto c = read_credential_answer(credential_body(der), want, now_s, &mismatch);
  BOOST_REQUIRE_MESSAGE(c, error_text(c));
  BOOST_TEST(!mismatch);
  BOOST_TEST(c->mtls_endpoint == "https://westus.mtlsauth.test");
  BOOST_TEST(c->identity_type == "SystemAssigned");
  BOOST_TEST(c->attested);
  BOOST_TEST(c->not_after_ms == (now_s + 7 * 86400) * 1000);
  BOOST_TEST(c->x5t_s256 == platform::x5t_s256(der));
  BOOST_TEST(c->certificate_der == der);
}

BOOST_AUTO_TEST_CASE(credential_answer_for_another_key_sets_key_mismatch) {
  bool mismatch = false;
  auto c = read_credential_answer(credential_body(certificate(client, test::other_key())),
                                  expectation(), now_s, &mismatch);
  BOOST_REQUIRE(!c);
  BOOST_TEST(mismatch);
  BOOST_TEST(contains(c.error(), "does not certify our binding key"));
}

BOOST_AUTO_TEST_CASE(credential_answer_refuses_plain_http_user_info_and_a_foreign_client) {
  auto want = expectation();
  for (const char* endpoint : {"http://westus.mtlsauth.test", "https://u:p@westus.mtlsauth.test",
                               "not a url", "https://westus.mtlsauth.test.evil.example"}) {
    auto c = read_credential_answer(credential_body(certificate(client), endpoint), want, now_s);
    BOOST_REQUIRE(!c);
    BOOST_TEST(contains(c.error(), "mtls_authentication_endpoint '"), endpoint);
    BOOST_TEST(contains(c.error(), "is not trusted"), endpoint);
  }
  // An empty allow-list trusts no host, even a well-formed https one.
  want.token_hosts.clear();
  auto no_list = read_credential_answer(credential_body(certificate(client)), want, now_s);
  BOOST_REQUIRE(!no_list);
  BOOST_TEST(contains(no_list.error(), "is not on the allow-list"));
  want = expectation();
  want.metadata.client_id = "00000000-0000-0000-0000-000000000001";
  auto other = read_credential_answer(credential_body(certificate(client)), want, now_s);
  BOOST_REQUIRE(!other);
  BOOST_TEST(contains(other.error(), "differ from getplatformmetadata's"));
  auto not_b64 = read_credential_answer(
    R"({"client_id":"a","tenant_id":"b","certificate":"!!","identity_type":"c","mtls_authentication_endpoint":"d"})",
    expectation(), now_s);
  BOOST_REQUIRE(!not_b64);
}

BOOST_AUTO_TEST_CASE(correlation_and_upstream_text_come_from_the_error_body) {
  BOOST_TEST(correlation_of(R"({"correlationId":"c-1"})", "ours") == "c-1");
  BOOST_TEST(correlation_of(R"({"correlation_id":"c-2"})", "ours") == "c-2");
  BOOST_TEST(correlation_of(R"({"correlation_id":""})", "ours") == "ours");
  BOOST_TEST(correlation_of("<html>", "ours") == "ours");
  auto r = io::http_response::with_status(
    503, R"({"error":"busy","error_description":")" + std::string(400, 'x') + "\"}");
  auto said = upstream_says(r);
  // Cut at 300 characters and says how long it was (review L2).
  BOOST_TEST(said == "HTTP 503: " + std::string(300, 'x') + "...(400 bytes)");
  // Control bytes cannot start a new log line or forge a field: they come out escaped.
  BOOST_TEST(upstream_says(io::http_response::with_status(
               400, R"({"error_description":"bad\nlevel=info msg=forged"})")) ==
             "HTTP 400: bad\\x0alevel=info msg=forged");
  BOOST_TEST(correlation_of(R"({"correlationId":"c\r\n-1"})", "ours") == "c\\x0d\\x0a-1");
  BOOST_TEST(correlation_of(R"({"correlationId":")" + std::string(150, 'c') + "\"}", "ours") ==
             std::string(100, 'c') + "...(150 bytes)");
  BOOST_TEST(upstream_says(io::http_response::with_status(500, "not json")) == "HTTP 500");
  BOOST_TEST(upstream_says(io::http_response::failure(io::transport_error::reset, "closed")) ==
             "reset (closed)");
}

BOOST_AUTO_TEST_CASE(oauth_error_reads_codes_and_falls_back_to_message_and_correlationId) {
  auto e = read_oauth_error(
    R"({"error":"invalid_client","message":"bad cert","correlationId":"c","error_codes":[1000611, 7]})");
  BOOST_TEST(e.error == "invalid_client");
  BOOST_TEST(e.description == "bad cert");
  BOOST_TEST(e.correlation_id == "c");
  BOOST_TEST(e.codes == (std::vector<std::int64_t>{1000611, 7}), boost::test_tools::per_element());
  BOOST_TEST(certificate_refused(e));
  auto code_only = read_oauth_error(R"({"error":"x","error_codes":[1000614]})");
  BOOST_TEST(certificate_refused(code_only));
  auto past_token_not_after = read_oauth_error(R"({"error":"x","error_codes":[1000901]})");
  BOOST_TEST(certificate_refused(past_token_not_after));
  BOOST_TEST(has_code(read_oauth_error(R"({"error_codes":[7,500181]})"), not_bound_code));
  auto other = read_oauth_error(R"({"error":"invalid_scope","error_codes":[70011]})");
  BOOST_TEST(!certificate_refused(other));
  auto escaped = read_oauth_error(
    R"({"error":"x\u001b[31m","error_description":")" + std::string(350, 'd') +
    R"(","correlation_id":"id\n2"})");
  BOOST_TEST(escaped.error == "x\\x1b[31m");
  BOOST_TEST(escaped.description == std::string(300, 'd') + "...(350 bytes)");
  BOOST_TEST(escaped.correlation_id == "id\\x0a2");
  auto garbage = read_oauth_error("\x01\x02");
  BOOST_TEST(garbage.error.empty());
  BOOST_TEST(garbage.codes.empty());
}

BOOST_AUTO_TEST_CASE(mtls_token_answer_must_be_bound_to_our_certificate) {
  const std::int64_t now_ms = now_s * 1000;
  token_answer_expectation want{true, token_type::mtls_pop, "our-x5t"};
  auto bound = unsigned_jwt(R"({"cnf":{"x5t#S256":"our-x5t"},"exp":1})");
  auto ok = read_token_answer(R"({"token_type":"MTLS_POP","access_token":")" + bound +
                                R"(","expires_in":"3600","refresh_in":1800})",
                              want, now_ms);
  BOOST_REQUIRE_MESSAGE(ok, error_text(ok));
  BOOST_TEST(ok->access_token == bound);
  BOOST_TEST(ok->expires_at_ms == now_ms + 3'600'000);
  BOOST_TEST(ok->refresh_in_ms.value_or(0) == 1'800'000);
  auto other = unsigned_jwt(R"({"cnf":{"x5t#S256":"their-x5t"}})");
  auto refused = read_token_answer(R"({"token_type":"mtls_pop","access_token":")" + other +
                                     R"(","expires_in":3600})",
                                   want, now_ms);
  BOOST_REQUIRE(!refused);
  BOOST_TEST(contains(refused.error(), "bound to another certificate"));
  auto bearer = read_token_answer(R"({"token_type":"Bearer","access_token":"a","expires_in":3600})",
                                  want, now_ms);
  BOOST_REQUIRE(!bearer);
  BOOST_TEST(contains(bearer.error(), "\"token_type\" is \"Bearer\""));
}

BOOST_AUTO_TEST_CASE(token_answer_refuses_lifetimes_that_are_not_ahead) {
  const std::int64_t now_ms = now_s * 1000;
  token_answer_expectation mtls{true, token_type::bearer, {}};
  for (const char* body : {R"({"token_type":"Bearer","access_token":"a","expires_in":0})",
                           R"({"token_type":"Bearer","access_token":"a","expires_in":"-5"})",
                           R"({"token_type":"Bearer","access_token":"a","expires_in":60,"refresh_in":0})",
                           R"({"token_type":"Bearer","access_token":"a","expires_in":1.5})",
                           R"({"token_type":"Bearer","access_token":"a"})"})
    BOOST_TEST(!read_token_answer(body, mtls, now_ms), body);
  token_answer_expectation v1{false, token_type::bearer, {}};
  auto past = read_token_answer(
    R"({"token_type":"Bearer","access_token":"a","expires_on":")" + std::to_string(now_s) + "\"}",
    v1, now_ms);
  BOOST_REQUIRE(!past);
  BOOST_TEST(contains(past.error(), "\"expires_on\" is not in the future"));
  auto future = read_token_answer(R"({"token_type":"Bearer","access_token":"a","expires_on":")" +
                                    std::to_string(now_s + 600) + "\"}",
                                  v1, now_ms);
  BOOST_REQUIRE_MESSAGE(future, error_text(future));
  BOOST_TEST(future->expires_at_ms == (now_s + 600) * 1000);
  BOOST_TEST(!future->refresh_in_ms);
}

BOOST_AUTO_TEST_CASE(lifetimes_whose_milliseconds_overflow_are_refused_not_wrapped) {
  // Found by tests/fuzz (fuzz_token_answer, fuzz_attestation under UBSan): seconds * 1000 and
  // now + expires_in were signed overflows for values near INT64_MAX.
  const std::int64_t now_ms = now_s * 1000;
  token_answer_expectation bearer{true, token_type::bearer, {}};
  for (const char* body :
       {R"({"token_type":"Bearer","access_token":"a","expires_in":9223372036854775807})",
        R"({"token_type":"Bearer","access_token":"a","expires_in":"9223372036854775"})",
        R"({"token_type":"Bearer","access_token":"a","expires_in":60,"refresh_in":9223372036854775807})"}) {
    auto r = read_token_answer(body, bearer, now_ms);
    BOOST_REQUIRE_MESSAGE(!r, body);
    BOOST_TEST(contains(r.error(), "out of range"), r.error());
  }
  token_answer_expectation v1{false, token_type::bearer, {}};
  auto far = read_token_answer(
    R"({"token_type":"Bearer","access_token":"a","expires_on":"9223372036854775807"})", v1, now_ms);
  BOOST_REQUIRE(!far);
  BOOST_TEST(contains(far.error(), "\"expires_on\" is out of range"), far.error());
  auto jwt = unsigned_jwt(R"({"exp":9223372036854775807,"key_id":"k1"})");
  auto att = read_keyguard_answer(R"({"token":")" + jwt + "\"}", "k1");
  BOOST_REQUIRE(!att);
  BOOST_TEST(contains(att.error(), "out of range"), att.error());
}

BOOST_AUTO_TEST_CASE(attestation_answer_and_error_body_are_read_without_a_transport) {
  auto jwt = unsigned_jwt(R"({"exp":2000,"iat":1000,"key_id":"k1"})");
  auto ok = read_keyguard_answer(R"({"token":")" + jwt + "\"}", "k1");
  BOOST_REQUIRE_MESSAGE(ok, error_text(ok));
  BOOST_TEST(ok->expires_at_ms == 2'000'000);
  BOOST_TEST(ok->issued_at_ms == 1'000'000);
  auto other_key = read_keyguard_answer(R"({"token":")" + jwt + "\"}", "k2");
  BOOST_REQUIRE(!other_key);
  BOOST_TEST(contains(other_key.error(), "not the attested key k2"));
  io::http_response refused;
  refused.status = 403;
  refused.body = R"({"error":"denied","message":"key unknown"})";
  BOOST_TEST(attestation_refusal("https://a.example", refused) ==
             "attestation service https://a.example refused the key (HTTP 403, denied: key "
             "unknown)");
  refused.body = "[1,2]";
  BOOST_TEST(attestation_refusal("https://a.example", refused, "TPM challenge") ==
             "attestation service https://a.example (TPM challenge) refused the key (HTTP 403)");
}

BOOST_AUTO_TEST_SUITE_END()
