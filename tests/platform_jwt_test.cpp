#include <boost/test/unit_test.hpp>

#include <openssl/err.h>

#include "platform/encoding.hpp"
#include "platform/jwt.hpp"
#include "platform/keys.hpp"
#include "tests/support/test_keys.hpp"

using namespace msiv2::platform;

namespace {

using msiv2::test::contains;
using msiv2::test::error_text;
using msiv2::test::other_key;
using msiv2::test::test_key;

std::string claims_error(std::string_view payload) {
  auto r = parse_jwt_claims(payload);
  BOOST_REQUIRE_MESSAGE(!r.ok(), "payload was accepted: " << payload);
  return r.error();
}

// A token with a hand-written header, signed for real with RS256.
std::string token_with_header(std::string_view header, std::string_view payload) {
  auto input = base64url_encode(header) + "." + base64url_encode(payload);
  auto sig = sign_rs256(test_key(), input);
  BOOST_REQUIRE(sig.ok());
  return input + "." + base64url_encode(*sig);
}

} // namespace

BOOST_AUTO_TEST_SUITE(platform_jwt_test)

BOOST_AUTO_TEST_CASE(signed_token_has_rs256_header_and_verifies) {
  std::string payload = R"({"iss":"https://sim.test","exp":1700003600,"iat":1700000000})";
  auto token = sign_jwt_rs256(test_key(), payload, "key-1");
  BOOST_REQUIRE_MESSAGE(token.ok(), error_text(token));
  auto parts = split_jwt(*token);
  BOOST_REQUIRE_MESSAGE(parts.ok(), error_text(parts));
  BOOST_TEST(parts->header_json == R"({"alg":"RS256","typ":"JWT","kid":"key-1"})");
  BOOST_TEST(parts->payload_json == payload);
  BOOST_TEST(parts->signing_input == token->substr(0, token->rfind('.')));
  BOOST_TEST(parts->signature.size() == 256u);
  BOOST_TEST(token->find('=') == std::string::npos);
  auto verified = verify_jwt_rs256(*parts, test_key());
  BOOST_TEST(verified.ok(), error_text(verified));
  BOOST_TEST(verify_rs256(test_key(), parts->signing_input, parts->signature));
}

BOOST_AUTO_TEST_CASE(header_leaves_out_an_empty_kid) {
  auto token = sign_jwt_rs256(test_key(), "{}");
  BOOST_REQUIRE(token.ok());
  auto parts = split_jwt(*token);
  BOOST_REQUIRE(parts.ok());
  BOOST_TEST(parts->header_json == R"({"alg":"RS256","typ":"JWT"})");
}

BOOST_AUTO_TEST_CASE(kid_is_json_escaped_in_the_header) {
  auto token = sign_jwt_rs256(test_key(), "{}", "a\"b");
  BOOST_REQUIRE(token.ok());
  auto parts = split_jwt(*token);
  BOOST_REQUIRE(parts.ok());
  BOOST_TEST(parts->header_json == R"({"alg":"RS256","typ":"JWT","kid":"a\"b"})");
  BOOST_TEST(verify_jwt_rs256(*parts, test_key()).ok());
}

BOOST_AUTO_TEST_CASE(verification_fails_with_another_key_or_changed_payload) {
  auto token = sign_jwt_rs256(test_key(), R"({"exp":1})");
  BOOST_REQUIRE(token.ok());
  auto parts = split_jwt(*token);
  BOOST_REQUIRE(parts.ok());
  BOOST_TEST(verify_jwt_rs256(*parts, other_key()).error() == "JWT signature does not verify");
  auto forged = *token;
  auto dot = forged.find('.');
  forged.replace(dot + 1, forged.find('.', dot + 1) - dot - 1, base64url_encode(R"({"exp":2})"));
  auto forged_parts = split_jwt(forged);
  BOOST_REQUIRE(forged_parts.ok());
  BOOST_TEST(verify_jwt_rs256(*forged_parts, test_key()).error() == "JWT signature does not verify");
  BOOST_TEST(ERR_peek_error() == 0ul);
}

BOOST_AUTO_TEST_CASE(verification_requires_alg_rs256) {
  auto none = split_jwt(token_with_header(R"({"alg":"none"})", "{}"));
  BOOST_REQUIRE(none.ok());
  BOOST_TEST(verify_jwt_rs256(*none, test_key()).error()
             == "JWT header alg must be RS256, found 'none'");
  auto ps256 = split_jwt(token_with_header(R"({"alg":"PS256","typ":"JWT"})", "{}"));
  BOOST_REQUIRE(ps256.ok());
  BOOST_TEST(contains(verify_jwt_rs256(*ps256, test_key()).error(), "alg must be RS256"));
  auto missing = split_jwt(token_with_header(R"({"typ":"JWT"})", "{}"));
  BOOST_REQUIRE(missing.ok());
  BOOST_TEST(verify_jwt_rs256(*missing, test_key()).error() == "JWT header has no alg");
  auto twice = split_jwt(token_with_header(R"({"alg":"RS256","alg":"none"})", "{}"));
  BOOST_REQUIRE(twice.ok());
  BOOST_TEST(verify_jwt_rs256(*twice, test_key()).error() == "JWT header has alg twice");
  auto number = split_jwt(token_with_header(R"({"alg":256})", "{}"));
  BOOST_REQUIRE(number.ok());
  BOOST_TEST(verify_jwt_rs256(*number, test_key()).error() == "JWT header alg must be a string");
  auto broken = split_jwt(token_with_header(R"({"alg":"RS256")", "{}"));
  BOOST_REQUIRE(broken.ok());
  BOOST_TEST(contains(verify_jwt_rs256(*broken, test_key()).error(), "JWT header"));
}

BOOST_AUTO_TEST_CASE(split_rejects_malformed_tokens) {
  BOOST_TEST(contains(split_jwt("abc").error(), "found one"));
  BOOST_TEST(contains(split_jwt("abc.def").error(), "found two"));
  BOOST_TEST(contains(split_jwt("a.b.c.d.e").error(), "found more"));
  BOOST_TEST(split_jwt(".e30.sig").error() == "JWT header part is empty");
  BOOST_TEST(split_jwt("e30..sig").error() == "JWT payload part is empty");
  BOOST_TEST(contains(split_jwt("e30.e3+.c2ln").error(), "JWT payload: base64url"));
  BOOST_TEST(contains(split_jwt("e30.e30.c2l*").error(), "JWT signature: base64url"));
  BOOST_TEST(contains(split_jwt("e3 .e30.c2ln").error(), "JWT header: base64url"));
  auto unsigned_token = split_jwt("e30.e30.");
  BOOST_REQUIRE(unsigned_token.ok());
  BOOST_TEST(unsigned_token->signature.empty());
  BOOST_TEST(!verify_jwt_rs256(*unsigned_token, test_key()).ok());
}

BOOST_AUTO_TEST_CASE(parses_the_claims_this_project_reads) {
  auto claims = parse_jwt_claims(R"({
    "aud": "https://management.azure.com",
    "iss": "https:\/\/sts.sim.test\/t\/",
    "iat": 1700000000, "nbf": 1699999990, "exp": 1700003600,
    "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "appid": "6d9f2c1a-0b7e-4c52-9a3d-1f2e3d4c5b6a",
    "key_id": "ab12",
    "cnf": {"kid": "x", "x5t#S256": "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA"},
    "extra": {"nested": [1, 2.5, "three", null, true]}
  })");
  BOOST_REQUIRE_MESSAGE(claims.ok(), error_text(claims));
  BOOST_TEST(claims->aud == "https://management.azure.com");
  BOOST_TEST(claims->iss == "https://sts.sim.test/t/");
  BOOST_TEST(*claims->iat == 1700000000);
  BOOST_TEST(*claims->nbf == 1699999990);
  BOOST_TEST(*claims->exp == 1700003600);
  BOOST_TEST(claims->tid == "72f988bf-86f1-41af-91ab-2d7cd011db47");
  BOOST_TEST(claims->appid == "6d9f2c1a-0b7e-4c52-9a3d-1f2e3d4c5b6a");
  BOOST_TEST(claims->key_id == "ab12");
  BOOST_TEST(claims->cnf_x5t_s256 == "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA");
}

BOOST_AUTO_TEST_CASE(absent_claims_stay_empty) {
  auto claims = parse_jwt_claims(R"({"sub":"x"})");
  BOOST_REQUIRE_MESSAGE(claims.ok(), error_text(claims));
  BOOST_TEST(!claims->exp.has_value());
  BOOST_TEST(!claims->iat.has_value());
  BOOST_TEST(!claims->nbf.has_value());
  BOOST_TEST(claims->cnf_x5t_s256.empty());
  BOOST_TEST(claims->aud.empty());
  auto cnf_without_thumbprint = parse_jwt_claims(R"({"cnf":{"jwk":{"kty":"RSA"}}})");
  BOOST_REQUIRE_MESSAGE(cnf_without_thumbprint.ok(), error_text(cnf_without_thumbprint));
  BOOST_TEST(cnf_without_thumbprint->cnf_x5t_s256.empty());
}

BOOST_AUTO_TEST_CASE(audience_array_is_read_as_empty) {
  auto claims = parse_jwt_claims(R"({"aud":["a","b"],"exp":5})");
  BOOST_REQUIRE_MESSAGE(claims.ok(), error_text(claims));
  BOOST_TEST(claims->aud.empty());
  BOOST_TEST(*claims->exp == 5);
}

BOOST_AUTO_TEST_CASE(time_claims_must_be_integers) {
  BOOST_TEST(claims_error(R"({"exp":1700000000.5})") == "JWT claim exp must be an integer");
  BOOST_TEST(claims_error(R"({"exp":1.7e9})") == "JWT claim exp must be an integer");
  BOOST_TEST(claims_error(R"({"exp":1700000000.0})") == "JWT claim exp must be an integer");
  BOOST_TEST(claims_error(R"({"iat":"1700000000"})") == "JWT claim iat must be an integer");
  BOOST_TEST(claims_error(R"({"nbf":null})") == "JWT claim nbf must be an integer");
  BOOST_TEST(contains(claims_error(R"({"exp":18446744073709551615})"), "out of range"));
  auto negative = parse_jwt_claims(R"({"nbf":-5})");
  BOOST_REQUIRE(negative.ok());
  BOOST_TEST(*negative->nbf == -5);
}

BOOST_AUTO_TEST_CASE(claims_of_the_wrong_type_are_refused) {
  BOOST_TEST(claims_error(R"({"iss":5})") == "JWT claim iss must be a string");
  BOOST_TEST(claims_error(R"({"key_id":["a"]})") == "JWT claim key_id must be a string");
  BOOST_TEST(claims_error(R"({"cnf":"x"})") == "JWT claim cnf must be an object");
  BOOST_TEST(claims_error(R"({"cnf":{"x5t#S256":7}})")
             == "JWT claim cnf.x5t#S256 must be a string");
}

BOOST_AUTO_TEST_CASE(duplicate_claims_are_refused) {
  BOOST_TEST(claims_error(R"({"exp":1,"exp":2})") == "JWT claim exp appears twice");
  BOOST_TEST(claims_error(R"({"cnf":{"x5t#S256":"a","x5t#S256":"b"}})")
             == "JWT claim cnf has x5t#S256 twice");
}

BOOST_AUTO_TEST_CASE(malformed_payloads_are_refused) {
  BOOST_TEST(contains(claims_error(""), "JWT payload is not valid JSON"));
  BOOST_TEST(claims_error("[1,2]") == "JWT payload is not a JSON object");
  BOOST_TEST(claims_error("42") == "JWT payload is not a JSON object");
  BOOST_TEST(claims_error(R"({"exp":1} {"exp":2})") == "JWT payload has content after the JSON value");
  BOOST_TEST(claims_error(R"({"exp":1}x)") == "JWT payload has content after the JSON value");
  BOOST_TEST(contains(claims_error(R"({"exp":1)"), "JWT payload"));
  BOOST_TEST(contains(claims_error(R"({"exp" 1})"), "JWT payload"));
  auto spaced = parse_jwt_claims(" {\"exp\":3} \n");
  BOOST_REQUIRE_MESSAGE(spaced.ok(), error_text(spaced));
  BOOST_TEST(*spaced->exp == 3);
}

BOOST_AUTO_TEST_CASE(read_jwt_claims_reads_without_verifying) {
  auto token = sign_jwt_rs256(other_key(), R"({"exp":1700003600,"cnf":{"x5t#S256":"abc"}})");
  BOOST_REQUIRE(token.ok());
  auto claims = read_jwt_claims(*token);
  BOOST_REQUIRE_MESSAGE(claims.ok(), error_text(claims));
  BOOST_TEST(*claims->exp == 1700003600);
  BOOST_TEST(claims->cnf_x5t_s256 == "abc");
  BOOST_TEST(contains(read_jwt_claims("nope").error(), "three dot-separated parts"));
}

BOOST_AUTO_TEST_SUITE_END()
