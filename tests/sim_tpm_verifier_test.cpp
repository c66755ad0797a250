// The simulator's TPM key attestation service (tools/sim/tpm_verifier, tpm_attestation and
// the authority's /attest/tpm/* endpoints) against a TPM played in software
// (tests/support/sim_soft_tpm): the whole protocol, every check that refuses, the bounded
// challenge state, and issuecredential's acceptance of the JWT. The same protocol against a
// real swtpm is integration_tpm_attestation_test.

#include <boost/test/unit_test.hpp>

#include <atomic>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include <simdjson.h>

#include "platform/csr.hpp"
#include "platform/encoding.hpp"
#include "platform/jwt.hpp"
#include "platform/keys.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/sim_fixture.hpp"
#include "tests/support/sim_soft_tpm.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_keys.hpp"
#include "tools/sim/authority.hpp"
#include "tools/sim/tpm_attestation.hpp"
#include "tools/sim/tpm_verifier.hpp"

namespace {

namespace platform = msiv2::platform;
namespace sim = msiv2::sim;
namespace tpm = msiv2::sim::tpm;
using msiv2::test::contains;
using msiv2::test::error_text;
using msiv2::test::soft_tpm;

// The soft TPM's certificates are valid from an hour ago for ten years.
const std::int64_t base_time = static_cast<std::int64_t>(std::time(nullptr));
const std::string attestation_url = "https://127.0.0.1:4431";

using msiv2::test::json_string;

std::string b64(std::string_view bytes) {
  return platform::base64_encode(bytes);
}

std::string spki_of(EVP_PKEY* key) {
  auto der = platform::public_key_der(key);
  BOOST_REQUIRE_MESSAGE(der.ok(), error_text(der));
  return *der;
}

std::string write_file(const msiv2::test::temp_dir& dir, const std::string& name,
                       const std::string& text) {
  const std::string path = dir / name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// An authority with TPM attestation on (EK CA = the soft TPMs' CA), attestation required.
struct world {
  msiv2::test::temp_dir dir{"tpm-verifier"};
  std::shared_ptr<std::atomic<std::int64_t>> clock =
    std::make_shared<std::atomic<std::int64_t>>(base_time);
  sim::config cfg;
  std::unique_ptr<sim::authority> auth;

  explicit world(int max_challenges = 1024) {
    cfg.attestation = sim::attestation_policy::required;
    cfg.tpm_ek_ca = write_file(dir, "ek-ca.pem", soft_tpm::ca_pem());
    cfg.tpm_challenge_lifetime = std::chrono::seconds(60);
    cfg.tpm_max_challenges = max_challenges;
    auto clk = clock;
    auto a = sim::authority::create(cfg, dir / "state", [clk] { return clk->load(); });
    BOOST_REQUIRE_MESSAGE(a.ok(), error_text(a));
    auth = std::move(*a);
    auth->set_urls({attestation_url, "https://127.0.0.1:4432"});
  }
  void advance(std::int64_t s) { clock->fetch_add(s); }
};

// What a client sends at the challenge step.
struct challenge_fields {
  std::string client_id = sim::config{}.system_identity.client_id;
  std::string ek_cert;
  std::string ak_public;
  std::string binding_public;
  std::string public_key;

  // A well-formed request from `t`.
  static challenge_fields of(const soft_tpm& t) {
    challenge_fields f;
    f.ek_cert = t.ek_cert_der;
    f.ak_public = msiv2::test::marshalled_public(t.ak, msiv2::test::ak_attributes, TPM2_ALG_RSASSA);
    f.binding_public =
      msiv2::test::marshalled_public(t.binding, msiv2::test::binding_attributes, TPM2_ALG_NULL);
    f.public_key = spki_of(t.binding);
    return f;
  }

  sim::request request() const {
    sim::request r;
    r.method = "POST";
    r.path = r.target = "/attest/tpm/challenge";
    r.body = "{\"client_id\":" + platform::json_quote(client_id) +
             ",\"ek_certificate\":" + platform::json_quote(b64(ek_cert)) +
             ",\"ak_public\":" + platform::json_quote(b64(ak_public)) +
             ",\"binding_public\":" + platform::json_quote(b64(binding_public)) +
             ",\"public_key\":" + platform::json_quote(b64(public_key)) + "}";
    return r;
  }
};

// A challenge the service answered, decoded.
struct challenge {
  std::string id;
  std::string credential_blob;
  std::string encrypted_secret;
  std::string nonce;
};

challenge ask(world& w, const challenge_fields& f) {
  const sim::response r = w.auth->attest_tpm_challenge(f.request());
  BOOST_REQUIRE_MESSAGE(r.status == 200, r.body);
  challenge c;
  c.id = json_string(r.body, "challenge_id").value_or("");
  for (auto [name, out] : {std::pair{"credential_blob", &c.credential_blob},
                           std::pair{"encrypted_secret", &c.encrypted_secret},
                           std::pair{"nonce", &c.nonce}}) {
    auto bytes = platform::base64_decode(json_string(r.body, name).value_or(""));
    BOOST_REQUIRE_MESSAGE(bytes.ok(), name << ": " << error_text(bytes));
    *out = *bytes;
  }
  BOOST_TEST(c.nonce.size() == 32u);
  return c;
}

sim::request proof_request(const std::string& challenge_id, const std::string& secret,
                           const soft_tpm::certify_output& certified) {
  sim::request r;
  r.method = "POST";
  r.path = r.target = "/attest/tpm/proof";
  r.body = "{\"challenge_id\":" + platform::json_quote(challenge_id) +
           ",\"secret\":" + platform::json_quote(b64(secret)) +
           ",\"certify_info\":" + platform::json_quote(b64(certified.attest)) +
           ",\"signature\":" + platform::json_quote(b64(certified.signature)) + "}";
  return r;
}

// The honest client: activates with its EK and certifies its binding key with its AK.
sim::request honest_proof(const soft_tpm& t, const challenge_fields& f, const challenge& c) {
  auto secret = t.activate(c.credential_blob, c.encrypted_secret, msiv2::test::tpm_name(f.ak_public));
  BOOST_REQUIRE_MESSAGE(secret.ok(), error_text(secret));
  return proof_request(c.id, *secret, t.certify(msiv2::test::tpm_name(f.binding_public), c.nonce));
}

void expect_refusal(const sim::response& r, std::string_view error, std::string_view part) {
  BOOST_TEST(r.status == 400, r.body);
  BOOST_TEST(json_string(r.body, "error").value_or("") == error, r.body);
  const std::string desc = json_string(r.body, "error_description").value_or("");
  BOOST_TEST_MESSAGE("refusal: " << desc);
  BOOST_TEST(contains(desc, part), "'" << desc << "' should contain '" << part << "'");
}

sim::request issue_request(const std::string& csr_der, const std::string& jwt) {
  sim::request r;
  r.method = "POST";
  r.path = "/metadata/identity/issuecredential";
  r.target = r.path + "?cred-api-version=2.0";
  r.query = {{"cred-api-version", "2.0"}};
  r.body = "{\"csr\":" + platform::json_quote(b64(csr_der)) +
           ",\"attestation_token\":" + platform::json_quote(jwt) + "}";
  return r;
}

std::string csr_for(const world& w, EVP_PKEY* key) {
  auto csr = platform::build_csr(key, w.cfg.system_identity.client_id, w.cfg.tenant_id,
                                 platform::cu_id_json({w.cfg.vm_id, w.cfg.vmss_id}));
  BOOST_REQUIRE_MESSAGE(csr.ok(), error_text(csr));
  return *csr;
}

} // namespace

BOOST_AUTO_TEST_SUITE(sim_tpm_verifier_test)

// --- the protocol accepted ---

BOOST_AUTO_TEST_CASE(attested_tpm_key_gets_a_jwt_saying_tpm_non_exportable_that_issuecredential_accepts) {
  world w;
  const soft_tpm& t = soft_tpm::first();
  const auto f = challenge_fields::of(t);
  const challenge c = ask(w, f);
  const sim::response r = w.auth->attest_tpm_proof(honest_proof(t, f, c));
  BOOST_REQUIRE_MESSAGE(r.status == 200, r.body);
  const std::string jwt = json_string(r.body, "token").value_or("");
  auto parts = platform::split_jwt(jwt);
  BOOST_REQUIRE_MESSAGE(parts.ok(), error_text(parts));
  const std::string& claims = parts->payload_json;
  BOOST_TEST_MESSAGE("claims: " << claims);
  auto key_id = platform::key_id(t.binding);
  BOOST_REQUIRE(key_id.ok());
  BOOST_TEST(json_string(claims, "key_id").value_or("") == *key_id);
  BOOST_TEST(json_string(claims, "attestation_type").value_or("") == "tpm");
  BOOST_TEST(json_string(claims, "key_storage").value_or("") == "tpm");
  BOOST_TEST(contains(claims, "\"key_exportable\":false"));
  BOOST_TEST(json_string(claims, "client_id").value_or("") == f.client_id);
  BOOST_TEST(json_string(claims, "iss").value_or("") == attestation_url);
  BOOST_TEST(json_string(claims, "tpm_ak_name").value_or("") ==
             platform::hex_lower(msiv2::test::tpm_name(f.ak_public)));
  BOOST_TEST(json_string(claims, "tpm_ek_certificate_sha256").value_or("") ==
             platform::hex_lower(platform::sha256(t.ek_cert_der)));

  // issuecredential (attestation required) takes it for a CSR with the same key...
  const sim::response issued = w.auth->issue_credential(issue_request(csr_for(w, t.binding), jwt),
                                                        w.cfg.system_identity);
  BOOST_TEST(issued.status == 200, issued.body);
  const auto records = w.auth->issued();
  BOOST_REQUIRE(records.size() == 1u);
  BOOST_TEST(records[0].attested);
  BOOST_TEST(records[0].attestation_type == "tpm");
  // ...and not for a CSR with another key.
  const sim::response other = w.auth->issue_credential(
    issue_request(csr_for(w, soft_tpm::second().binding), jwt), w.cfg.system_identity);
  BOOST_TEST(other.status == 400);
  BOOST_TEST(contains(other.body, "attestation token was issued for another key"), other.body);
}

BOOST_AUTO_TEST_CASE(keyguard_jwt_says_keyguard_and_the_issued_record_keeps_it) {
  world w;
  auto spki = spki_of(msiv2::test::test_key());
  const std::string nonce = "n-" + platform::uuid_v4();
  auto sig = platform::sign_pss_sha256(msiv2::test::test_key(), nonce);
  BOOST_REQUIRE(sig.ok());
  sim::request r;
  r.method = "POST";
  r.path = r.target = "/attest/keyguard";
  r.body = "{\"public_key\":" + platform::json_quote(b64(spki)) +
           ",\"client_id\":" + platform::json_quote(w.cfg.system_identity.client_id) +
           ",\"nonce\":" + platform::json_quote(nonce) +
           ",\"signature\":" + platform::json_quote(b64(*sig)) + "}";
  const sim::response a = w.auth->attest(r);
  BOOST_REQUIRE_MESSAGE(a.status == 200, a.body);
  const std::string jwt = json_string(a.body, "token").value_or("");
  auto claims = platform::read_jwt_claims(jwt);
  BOOST_REQUIRE(claims.ok());
  BOOST_TEST(claims->attestation_type == "keyguard");
  const sim::response issued = w.auth->issue_credential(
    issue_request(csr_for(w, msiv2::test::test_key()), jwt), w.cfg.system_identity);
  BOOST_TEST(issued.status == 200, issued.body);
  BOOST_REQUIRE(w.auth->issued().size() == 1u);
  BOOST_TEST(w.auth->issued()[0].attestation_type == "keyguard");
}

BOOST_AUTO_TEST_CASE(make_credential_is_recovered_only_by_the_ek_holder_for_the_named_object) {
  const soft_tpm& t = soft_tpm::first();
  auto ek = platform::public_key_from_der(spki_of(t.ek));
  BOOST_REQUIRE(ek.ok());
  const std::string name = msiv2::test::tpm_name(
    msiv2::test::marshalled_public(t.ak, msiv2::test::ak_attributes, TPM2_ALG_RSASSA));
  const std::string secret = platform::random_bytes(32);
  auto cred = tpm::make_credential(ek->get(), secret, name);
  BOOST_REQUIRE_MESSAGE(cred.ok(), error_text(cred));

  auto good = t.activate(cred->credential_blob, cred->encrypted_secret, name);
  BOOST_REQUIRE_MESSAGE(good.ok(), error_text(good));
  BOOST_TEST(*good == secret);
  std::string other_name = name;
  other_name.back() ^= 1;
  auto wrong_object = t.activate(cred->credential_blob, cred->encrypted_secret, other_name);
  BOOST_TEST(!wrong_object.ok());
  BOOST_TEST(contains(error_text(wrong_object), "integrity check failed"));
  auto wrong_tpm = soft_tpm::second().activate(cred->credential_blob, cred->encrypted_secret, name);
  BOOST_TEST(!wrong_tpm.ok());
}

BOOST_AUTO_TEST_CASE(kdfa_follows_the_counter_mode_layout_of_tpm2_part1) {
  // KDFa(key, label, u, v, bits) = HMAC(key, [1]32 || label || 00 || u || v || [bits]32) ||
  // HMAC(key, [2]32 || ...) ..., truncated: checked against HMAC computed directly.
  const std::string key = "0123456789abcdef0123456789abcdef";
  auto k = tpm::kdfa_sha256(key, "STORAGE", "uu", "v", 384);
  BOOST_REQUIRE(k.ok());
  BOOST_TEST(k->size() == 48u);
  auto block = [&](char i) {
    const std::string data = std::string("\0\0\0", 3) + i + "STORAGE" + std::string(1, '\0') +
                             "uuv" + std::string("\0\0\x01\x80", 4);
    unsigned char out[32];
    std::size_t n = 0;
    EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), key.size(),
              reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, sizeof out, &n);
    return std::string(reinterpret_cast<char*>(out), n);
  };
  BOOST_TEST(platform::hex_lower(*k) == platform::hex_lower((block(1) + block(2)).substr(0, 48)));
}

// --- refusals at the challenge ---

BOOST_AUTO_TEST_CASE(ek_certificate_from_another_ca_is_refused) {
  world w;
  auto f = challenge_fields::of(soft_tpm::first());
  f.ek_cert = soft_tpm::ek_cert_from_other_ca();
  expect_refusal(w.auth->attest_tpm_challenge(f.request()), "attestation_refused",
                 "EK certificate does not verify against the configured EK CA");
}

BOOST_AUTO_TEST_CASE(ek_certificate_with_critical_tpm_extensions_verifies_with_the_root_and_issuer) {
  msiv2::test::temp_dir dir("tpm-ekca");
  auto store = tpm::load_ek_ca(write_file(dir, "ca.pem", soft_tpm::ca_pem()));
  BOOST_REQUIRE_MESSAGE(store.ok(), error_text(store));
  auto key = tpm::verify_ek_certificate(soft_tpm::first().ek_cert_der, store->get(), base_time);
  BOOST_TEST(key.ok(), error_text(key));
  auto other = tpm::load_ek_ca(write_file(dir, "other.pem", soft_tpm::other_ca_pem()));
  BOOST_REQUIRE(other.ok());
  auto refused = tpm::verify_ek_certificate(soft_tpm::first().ek_cert_der, other->get(), base_time);
  BOOST_TEST(!refused.ok());
  BOOST_TEST(contains(error_text(refused), "unable to get local issuer certificate"),
             error_text(refused));
}

BOOST_AUTO_TEST_CASE(ek_ca_file_that_is_missing_or_holds_no_certificate_is_named_in_the_error) {
  msiv2::test::temp_dir dir("tpm-ekca");
  auto missing = tpm::load_ek_ca(dir / "absent.pem");
  BOOST_TEST(contains(error_text(missing), dir / "absent.pem"), error_text(missing));
  auto empty = tpm::load_ek_ca(write_file(dir, "empty.pem", "not a certificate\n"));
  BOOST_TEST(!empty.ok());
  BOOST_TEST(contains(error_text(empty), "EK CA file " + (dir / "empty.pem")), error_text(empty));
  sim::config cfg;
  cfg.tpm_ek_ca = dir / "absent.pem";
  auto a = sim::authority::create(cfg, dir / "state", [] { return base_time; });
  BOOST_TEST(contains(error_text(a), "tpm_ek_ca: EK CA file"), error_text(a));
}

BOOST_AUTO_TEST_CASE(ak_that_is_not_restricted_is_refused) {
  world w;
  const soft_tpm& t = soft_tpm::first();
  auto f = challenge_fields::of(t);
  f.ak_public = msiv2::test::marshalled_public(
    t.ak, msiv2::test::ak_attributes & ~TPMA_OBJECT_RESTRICTED, TPM2_ALG_RSASSA);
  expect_refusal(w.auth->attest_tpm_challenge(f.request()), "attestation_refused",
                 "AK is not a restricted key");
}

BOOST_AUTO_TEST_CASE(ak_without_fixed_tpm_is_refused) {
  world w;
  const soft_tpm& t = soft_tpm::first();
  auto f = challenge_fields::of(t);
  f.ak_public = msiv2::test::marshalled_public(
    t.ak, msiv2::test::ak_attributes & ~TPMA_OBJECT_FIXEDTPM, TPM2_ALG_RSASSA);
  expect_refusal(w.auth->attest_tpm_challenge(f.request()), "attestation_refused",
                 "AK attributes");
  expect_refusal(w.auth->attest_tpm_challenge(f.request()), "attestation_refused",
                 "lack fixedTPM|fixedParent|sensitiveDataOrigin");
}

BOOST_AUTO_TEST_CASE(binding_key_with_the_decrypt_attribute_is_refused) {
  world w;
  const soft_tpm& t = soft_tpm::first();
  auto f = challenge_fields::of(t);
  f.binding_public = msiv2::test::marshalled_public(
    t.binding, msiv2::test::binding_attributes | TPMA_OBJECT_DECRYPT, TPM2_ALG_NULL);
  expect_refusal(w.auth->attest_tpm_challenge(f.request()), "attestation_refused",
                 "binding key has the decrypt attribute");
}

BOOST_AUTO_TEST_CASE(binding_key_that_may_leave_the_tpm_is_refused) {
  world w;
  const soft_tpm& t = soft_tpm::first();
  auto f = challenge_fields::of(t);
  f.binding_public = msiv2::test::marshalled_public(
    t.binding, msiv2::test::binding_attributes & ~TPMA_OBJECT_FIXEDPARENT, TPM2_ALG_NULL);
  expect_refusal(w.auth->attest_tpm_challenge(f.request()), "attestation_refused",
                 "binding key attributes");
}

BOOST_AUTO_TEST_CASE(restricted_binding_key_is_refused) {
  world w;
  const soft_tpm& t = soft_tpm::first();
  auto f = challenge_fields::of(t);
  f.binding_public = msiv2::test::marshalled_public(
    t.binding, msiv2::test::binding_attributes | TPMA_OBJECT_RESTRICTED, TPM2_ALG_RSASSA);
  expect_refusal(w.auth->attest_tpm_challenge(f.request()), "attestation_refused",
                 "binding key is restricted");
}

BOOST_AUTO_TEST_CASE(public_key_other_than_the_binding_key_is_refused) {
  world w;
  auto f = challenge_fields::of(soft_tpm::first());
  f.public_key = spki_of(soft_tpm::second().binding);
  expect_refusal(w.auth->attest_tpm_challenge(f.request()), "attestation_refused",
                 "public_key is not the key of binding_public");
}

BOOST_AUTO_TEST_CASE(malformed_challenge_fields_are_named) {
  world w;
  auto f = challenge_fields::of(soft_tpm::first());
  auto bad = f;
  bad.ak_public = "\x01\x02garbage";
  expect_refusal(w.auth->attest_tpm_challenge(bad.request()), "invalid_request",
                 "ak_public is not a marshalled TPM2B_PUBLIC");
  bad = f;
  bad.binding_public += "x";
  expect_refusal(w.auth->attest_tpm_challenge(bad.request()), "invalid_request",
                 "binding_public has 1 bytes after the TPM2B_PUBLIC");
  bad = f;
  bad.client_id = "not-a-guid";
  expect_refusal(w.auth->attest_tpm_challenge(bad.request()), "invalid_request",
                 "client_id must be a GUID");
  sim::request r = f.request();
  r.body = "{\"client_id\":\"" + f.client_id + "\"}";
  expect_refusal(w.auth->attest_tpm_challenge(r), "invalid_request", "ek_certificate is missing");
  r.body = "{\"client_id\":\"" + f.client_id +
           "\",\"ek_certificate\":\"@@\",\"ak_public\":\"AA==\",\"binding_public\":\"AA==\","
           "\"public_key\":\"AA==\"}";
  expect_refusal(w.auth->attest_tpm_challenge(r), "invalid_request",
                 "ek_certificate is not valid base64");
}

// --- refusals at the proof ---

BOOST_AUTO_TEST_CASE(wrong_secret_means_the_ak_was_not_activated_and_is_refused) {
  world w;
  const soft_tpm& t = soft_tpm::first();
  const auto f = challenge_fields::of(t);
  const challenge c = ask(w, f);
  const auto certified = t.certify(msiv2::test::tpm_name(f.binding_public), c.nonce);
  expect_refusal(w.auth->attest_tpm_proof(proof_request(c.id, platform::random_bytes(32), certified)),
                 "attestation_refused", "the AK was not activated");
}

BOOST_AUTO_TEST_CASE(ek_certificate_of_another_tpm_cannot_be_activated_by_this_one) {
  // The client claims TPM 2's EK certificate but holds TPM 1: it cannot recover the secret.
  world w;
  const soft_tpm& t = soft_tpm::first();
  auto f = challenge_fields::of(t);
  f.ek_cert = soft_tpm::second().ek_cert_der;
  const challenge c = ask(w, f);
  auto secret = t.activate(c.credential_blob, c.encrypted_secret, msiv2::test::tpm_name(f.ak_public));
  BOOST_TEST(!secret.ok());
}

BOOST_AUTO_TEST_CASE(certification_over_a_wrong_nonce_is_refused) {
  world w;
  const soft_tpm& t = soft_tpm::first();
  const auto f = challenge_fields::of(t);
  const challenge c = ask(w, f);
  auto secret = t.activate(c.credential_blob, c.encrypted_secret, msiv2::test::tpm_name(f.ak_public));
  BOOST_REQUIRE(secret.ok());
  const auto certified =
    t.certify(msiv2::test::tpm_name(f.binding_public), platform::random_bytes(32));
  expect_refusal(w.auth->attest_tpm_proof(proof_request(c.id, *secret, certified)),
                 "attestation_refused", "extraData is not the challenge nonce");
}

BOOST_AUTO_TEST_CASE(key_certified_by_another_tpm_is_refused) {
  // TPM 1 passes the credential challenge, but the certification comes from TPM 2's AK.
  world w;
  const soft_tpm& t = soft_tpm::first();
  const auto f = challenge_fields::of(t);
  const challenge c = ask(w, f);
  auto secret = t.activate(c.credential_blob, c.encrypted_secret, msiv2::test::tpm_name(f.ak_public));
  BOOST_REQUIRE(secret.ok());
  const auto certified =
    soft_tpm::second().certify(msiv2::test::tpm_name(f.binding_public), c.nonce);
  expect_refusal(w.auth->attest_tpm_proof(proof_request(c.id, *secret, certified)),
                 "attestation_refused", "AK signature over the certify structure does not verify");
}

BOOST_AUTO_TEST_CASE(certification_of_another_key_is_refused) {
  world w;
  const soft_tpm& t = soft_tpm::first();
  const auto f = challenge_fields::of(t);
  const challenge c = ask(w, f);
  auto secret = t.activate(c.credential_blob, c.encrypted_secret, msiv2::test::tpm_name(f.ak_public));
  BOOST_REQUIRE(secret.ok());
  const std::string other = msiv2::test::tpm_name(msiv2::test::marshalled_public(
    soft_tpm::second().binding, msiv2::test::binding_attributes, TPM2_ALG_NULL));
  expect_refusal(w.auth->attest_tpm_proof(proof_request(c.id, *secret, t.certify(other, c.nonce))),
                 "attestation_refused", "the AK certified another key");
}

BOOST_AUTO_TEST_CASE(attest_structure_without_the_tpm_magic_or_of_another_type_is_refused) {
  world w;
  const soft_tpm& t = soft_tpm::first();
  const auto f = challenge_fields::of(t);
  const std::string name = msiv2::test::tpm_name(f.binding_public);
  for (const auto& [magic, type, why] :
       {std::tuple{0x12345678u, TPM2_ST{TPM2_ST_ATTEST_CERTIFY}, "magic"},
        std::tuple{TPM2_GENERATED_VALUE, TPM2_ST{TPM2_ST_ATTEST_TIME}, "not TPM_ST_ATTEST_CERTIFY"}}) {
    const challenge c = ask(w, f);
    auto secret =
      t.activate(c.credential_blob, c.encrypted_secret, msiv2::test::tpm_name(f.ak_public));
    BOOST_REQUIRE(secret.ok());
    const sim::response r =
      w.auth->attest_tpm_proof(proof_request(c.id, *secret, t.certify(name, c.nonce, magic, type)));
    BOOST_TEST(r.status == 400);
    BOOST_TEST(contains(r.body, why), r.body);
  }
}

BOOST_AUTO_TEST_CASE(challenge_answers_once_and_expires) {
  world w;
  const soft_tpm& t = soft_tpm::first();
  const auto f = challenge_fields::of(t);
  const challenge c = ask(w, f);
  BOOST_TEST(w.auth->attest_tpm_proof(honest_proof(t, f, c)).status == 200);
  expect_refusal(w.auth->attest_tpm_proof(honest_proof(t, f, c)), "attestation_refused",
                 "names no pending challenge");

  const challenge late = ask(w, f);
  w.advance(61);
  expect_refusal(w.auth->attest_tpm_proof(honest_proof(t, f, late)), "attestation_refused",
                 "the challenge has expired");
}

BOOST_AUTO_TEST_CASE(pending_challenges_are_capped_and_expired_ones_make_room) {
  world w(3);
  const auto f = challenge_fields::of(soft_tpm::first());
  for (int i = 0; i < 3; ++i)
    ask(w, f);
  const sim::response full = w.auth->attest_tpm_challenge(f.request());
  BOOST_TEST(full.status == 503);
  BOOST_TEST(contains(full.body, "too many TPM attestation challenges are pending (3)"), full.body);
  w.advance(61);
  ask(w, f);
  w.auth->reset();
}

BOOST_AUTO_TEST_CASE(tpm_endpoints_answer_404_when_no_ek_ca_is_configured) {
  msiv2::test::temp_dir dir("tpm-off");
  auto a = sim::authority::create(sim::config{}, dir / "state", [] { return base_time; });
  BOOST_REQUIRE(a.ok());
  const sim::response r =
    (*a)->attest_tpm_challenge(challenge_fields::of(soft_tpm::first()).request());
  BOOST_TEST(r.status == 404);
  BOOST_TEST(contains(r.body, "--tpm-ek-ca"), r.body);
}

BOOST_AUTO_TEST_CASE(simulator_serves_the_tpm_protocol_over_https_on_the_attestation_listener) {
  msiv2::test::temp_dir dir("tpm-https");
  const std::string ca = write_file(dir, "ek-ca.pem", soft_tpm::ca_pem());
  msiv2::test::sim_fixture s([&](sim::config& c) { c.tpm_ek_ca = ca; });
  const soft_tpm& t = soft_tpm::first();
  const auto f = challenge_fields::of(t);
  const msiv2::test::header_list json = {{"Content-Type", "application/json"}};
  auto r = msiv2::test::http_request("POST", s.urls().attestation + "/attest/tpm/challenge", json,
                                     f.request().body, s.tls());
  BOOST_REQUIRE_MESSAGE(r.status == 200, r.status << " " << r.error << " " << r.body);
  challenge c;
  c.id = json_string(r.body, "challenge_id").value_or("");
  c.credential_blob = *platform::base64_decode(json_string(r.body, "credential_blob").value_or(""));
  c.encrypted_secret = *platform::base64_decode(json_string(r.body, "encrypted_secret").value_or(""));
  c.nonce = *platform::base64_decode(json_string(r.body, "nonce").value_or(""));
  auto p = msiv2::test::http_request("POST", s.urls().attestation + "/attest/tpm/proof", json,
                                     honest_proof(t, f, c).body, s.tls());
  BOOST_TEST(p.status == 200, p.body);
  BOOST_TEST(json_string(p.body, "token").has_value());
  BOOST_TEST(s.sim().count("attestation", 200) == 2u);
  BOOST_TEST(contains(s.sim().counters_json(), "attestation"));
}

BOOST_AUTO_TEST_SUITE_END()
