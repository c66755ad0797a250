// TPM key attestation against a real software TPM (swtpm on loopback, tests/support/swtpm) and
// the simulator's service over HTTPS: the TPM side (platform/tpm_attest: EK certificate, AK
// under the EK, ActivateCredential, Certify), the tpm_attestation provider (its worker thread
// and the real curl transport), and each refusal the issue asks for: wrong nonce, an AK not
// activated, a key with the decrypt attribute, a key certified by another TPM, an EK
// certificate from another CA. The binding key here is a sign-only RSA key that this test
// creates under the EK (the TPM key store's own keys live under its SRK: its loader is what
// the module passes to the provider).

#include <boost/test/unit_test.hpp>

#include <fstream>
#include <future>
#include <iterator>
#include <memory>
#include <optional>
#include <chrono>
#include <vector>
#include <string>

#include <simdjson.h>
#include <tss2/tss2_mu.h>

#include "actors/tpm_attestation.hpp"
#include "io/curl_transport.hpp"
#include "platform/binding.hpp"
#include "platform/clock.hpp"
#include "platform/encoding.hpp"
#include "platform/jwt.hpp"
#include "platform/keys.hpp"
#include "platform/tpm_attest.hpp"
#include "platform/tpm_key.hpp"
#include "platform/tpm_provider.hpp"
#include "tests/support/child_process.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/sim_fixture.hpp"
#include "tests/support/swtpm.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_keys.hpp"
#include "tools/sim/tpm_verifier.hpp"

namespace {

namespace platform = msiv2::platform;
namespace sim = msiv2::sim;
using msiv2::result;
using msiv2::test::contains;
using msiv2::test::error_text;

using msiv2::test::json_string;

constexpr TPMA_OBJECT sign_only = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                  TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                                  TPMA_OBJECT_NODA | TPMA_OBJECT_SIGN_ENCRYPT;

// A key made in the TPM under the EK: its wrapped areas, its SPKI, and a loader.
struct ek_child {
  platform::tpm_wrapped_key wrapped;
  std::string spki_der;

  platform::tpm_binding binding() const {
    auto w = wrapped;
    platform::tpm_binding b;
    b.public_area = wrapped.public_area;
    b.load = [w](platform::tpm_connection& tpm) -> result<platform::tpm_object> {
      TPM2B_PUBLIC pub{};
      TPM2B_PRIVATE priv{};
      std::size_t off = 0;
      Tss2_MU_TPM2B_PUBLIC_Unmarshal(reinterpret_cast<const std::uint8_t*>(w.public_area.data()),
                                     w.public_area.size(), &off, &pub);
      off = 0;
      Tss2_MU_TPM2B_PRIVATE_Unmarshal(reinterpret_cast<const std::uint8_t*>(w.private_area.data()),
                                      w.private_area.size(), &off, &priv);
      platform::tpm_object made_ek;
      auto ek = platform::tpm_endorsement_key(tpm, made_ek);
      if (!ek)
        return ek.fail();
      auto session = platform::tpm_endorsement_session(tpm);
      if (!session)
        return session.fail();
      ESYS_TR key = ESYS_TR_NONE;
      if (auto rc = Esys_Load(tpm.esys(), *ek, session->get(), ESYS_TR_NONE, ESYS_TR_NONE, &priv,
                              &pub, &key);
          rc != TSS2_RC_SUCCESS)
        return tpm.failed(rc, "Esys_Load(test key)");
      return platform::tpm_object(tpm, key);
    };
    return b;
  }
};

ek_child make_ek_child(const platform::tpm_config& cfg, TPMA_OBJECT attributes) {
  auto made = platform::run_tpm<ek_child>(
    cfg, "create a test key under the EK", [&](platform::tpm_connection& tpm) -> result<ek_child> {
      platform::tpm_object made_ek;
      auto ek = platform::tpm_endorsement_key(tpm, made_ek);
      if (!ek)
        return ek.fail();
      auto session = platform::tpm_endorsement_session(tpm);
      if (!session)
        return session.fail();
      TPM2B_SENSITIVE_CREATE sensitive{};
      TPM2B_PUBLIC in{};
      in.publicArea.type = TPM2_ALG_RSA;
      in.publicArea.nameAlg = TPM2_ALG_SHA256;
      in.publicArea.objectAttributes = attributes;
      in.publicArea.parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_NULL;
      in.publicArea.parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
      in.publicArea.parameters.rsaDetail.keyBits = 2048;
      TPM2B_DATA outside{};
      TPML_PCR_SELECTION pcrs{};
      TPM2B_PRIVATE* priv = nullptr;
      TPM2B_PUBLIC* pub = nullptr;
      if (auto rc = Esys_Create(tpm.esys(), *ek, session->get(), ESYS_TR_NONE, ESYS_TR_NONE,
                                &sensitive, &in, &outside, &pcrs, &priv, &pub, nullptr, nullptr,
                                nullptr);
          rc != TSS2_RC_SUCCESS)
        return tpm.failed(rc, "Esys_Create(test key)");
      platform::esys_ptr<TPM2B_PRIVATE> p1{priv};
      platform::esys_ptr<TPM2B_PUBLIC> p2{pub};
      ek_child out;
      std::uint8_t buf[sizeof(TPM2B_PUBLIC) + sizeof(TPM2B_PRIVATE)];
      std::size_t off = 0;
      Tss2_MU_TPM2B_PUBLIC_Marshal(pub, buf, sizeof buf, &off);
      out.wrapped.public_area.assign(reinterpret_cast<char*>(buf), off);
      off = 0;
      Tss2_MU_TPM2B_PRIVATE_Marshal(priv, buf, sizeof buf, &off);
      out.wrapped.private_area.assign(reinterpret_cast<char*>(buf), off);
      return out;
    });
  BOOST_REQUIRE_MESSAGE(made.ok(), error_text(made));
  auto area = sim::tpm::parse_public(made->wrapped.public_area, "test key");
  BOOST_REQUIRE_MESSAGE(area.ok(), error_text(area));
  auto key = sim::tpm::rsa_key_of(area->pub, "test key");
  BOOST_REQUIRE(key.ok());
  auto spki = platform::public_key_der(key->get());
  BOOST_REQUIRE(spki.ok());
  made->spki_der = *spki;
  return std::move(*made);
}

// The shared TPM's sign-only key (made once: key generation in swtpm costs real time).
const ek_child& binding_key() {
  static ek_child k = make_ek_child(msiv2::test::swtpm::shared().config(), sign_only);
  return k;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  BOOST_REQUIRE_MESSAGE(in.good(), "cannot read " << path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

const std::string client_id = sim::config{}.system_identity.client_id;

// A simulator trusting `ek_ca`.
std::unique_ptr<msiv2::test::sim_fixture> simulator(const std::string& ek_ca) {
  return std::make_unique<msiv2::test::sim_fixture>(
    [&](sim::config& c) { c.tpm_ek_ca = ek_ca; });
}

msiv2::test::http_result post(msiv2::test::sim_fixture& s, const std::string& path,
                              const std::string& body) {
  return msiv2::test::http_request("POST", s.urls().attestation + path,
                                   {{"Content-Type", "application/json"}}, body, s.tls());
}

// Step 1 by hand: material from `tpm`, the challenge from `s` for `key`.
struct started {
  platform::tpm_attestation_material material;
  msiv2::tpm_challenge challenge;
};

started start(msiv2::test::sim_fixture& s, const platform::tpm_config& tpm, const ek_child& key) {
  auto m = platform::begin_tpm_attestation(tpm);
  BOOST_REQUIRE_MESSAGE(m.ok(), error_text(m));
  auto r = post(s, "/attest/tpm/challenge",
                msiv2::tpm_challenge_request_body(client_id, *m, key.wrapped.public_area,
                                                  key.spki_der));
  BOOST_REQUIRE_MESSAGE(r.status == 200, r.status << " " << r.body);
  auto c = msiv2::read_tpm_challenge(r.body);
  BOOST_REQUIRE_MESSAGE(c.ok(), error_text(c));
  return {std::move(*m), std::move(*c)};
}

// msiv2-token against `s` on the TPM store of `tpm`, sharing `m`'s cache directory.
std::vector<std::string> token_cli(msiv2::test::sim_fixture& s, const msiv2::test::swtpm& tpm,
                                   const msiv2::test::machine_dir& m,
                                   std::vector<std::string> extra) {
  std::vector<std::string> args{MSIV2_TOKEN_BINARY, "--imds",      s.urls().imds, "--ca-file",
                                s.urls().ca_file,   "--timeout",   "120",         "--cache-dir",
                                m.cache,            "--boot-id-file", m.boot_id_file,
                                "--key-store",      "tpm",         "--tpm-tcti",  tpm.tcti(),
                                "--trust-host",     "127.0.0.1"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// Runs msiv2-token and returns its first output line (a JSON object); a failure fails the test.
std::string run_cli(std::vector<std::string> args) {
  msiv2::test::child_process p(std::move(args));
  const int code = p.wait(std::chrono::seconds(180));
  BOOST_TEST_REQUIRE(code == 0, "exit " << code << ", out: " << p.out() << ", err: " << p.err());
  return p.out().substr(0, p.out().find('\n'));
}

void expect_refused(const msiv2::test::http_result& r, std::string_view why) {
  BOOST_TEST(r.status == 400, r.body);
  const std::string desc = json_string(r.body, "error_description").value_or("");
  BOOST_TEST_MESSAGE("refusal: " << desc);
  BOOST_TEST(contains(desc, why), "'" << desc << "' should contain '" << why << "'");
}

} // namespace

BOOST_AUTO_TEST_SUITE(integration_tpm_attestation_test)

BOOST_AUTO_TEST_CASE(provider_attests_a_tpm_key_and_the_jwt_says_tpm_non_exportable) {
  auto& tpm = msiv2::test::swtpm::shared();
  auto s = simulator(tpm.ek_ca());
  auto transport = msiv2::io::curl_transport::create();
  BOOST_REQUIRE_MESSAGE(transport.ok(), error_text(transport));
  std::shared_ptr<msiv2::io::transport> shared_transport = std::move(*transport);
  const ek_child& key = binding_key();
  auto spki_key = platform::public_key_from_der(key.spki_der);
  BOOST_REQUIRE(spki_key.ok());
  msiv2::key_ref ref;
  ref.spki_der = key.spki_der;
  ref.key_id = *platform::key_id(spki_key->get());
  ref.key = std::make_shared<msiv2::binding_key>(std::move(*spki_key), ref.key_id);
  const platform::tpm_config cfg = tpm.config();
  msiv2::tpm_attestation provider(
    cfg, [&](const msiv2::key_ref&) -> result<platform::tpm_binding> { return key.binding(); },
    shared_transport, s->urls().ca_file, platform::system_wall_clock());

  std::promise<std::pair<result<msiv2::attestation_token>, int>> got;
  provider.attest(ref, s->urls().attestation + "/", client_id, std::chrono::seconds(60),
                  [&](result<msiv2::attestation_token> t, int status) {
                    got.set_value({std::move(t), status});
                  });
  auto [token, status] = got.get_future().get();
  BOOST_REQUIRE_MESSAGE(token.ok(), error_text(token));
  BOOST_TEST(status == 200);
  auto parts = platform::split_jwt(token->jwt);
  BOOST_REQUIRE(parts.ok());
  const std::string& claims = parts->payload_json;
  BOOST_TEST(json_string(claims, "attestation_type").value_or("") == "tpm");
  BOOST_TEST(json_string(claims, "key_storage").value_or("") == "tpm");
  BOOST_TEST(contains(claims, "\"key_exportable\":false"));
  BOOST_TEST(json_string(claims, "key_id").value_or("") == ref.key_id);
  BOOST_TEST(token->expires_at_ms > token->issued_at_ms);
  BOOST_TEST(s->sim().count("attestation", 200) == 2u);
}

BOOST_AUTO_TEST_CASE(msiv2_token_attest_on_the_tpm_store_gets_a_token_bound_to_the_attested_tpm_key) {
  auto& tpm = msiv2::test::swtpm::shared();
  // issuecredential refuses a CSR without an attestation JWT: the token proves it was attested.
  auto s = std::make_unique<msiv2::test::sim_fixture>([&](sim::config& c) {
    c.tpm_ek_ca = tpm.ek_ca();
    c.attestation = sim::attestation_policy::required;
  });
  msiv2::test::machine_dir m("tpm-attest", "5a0c4d6e-0000-4000-8000-000000000012");

  // What the host can give, before anything is minted: the TPM store's hardware key, attested
  // when --attest gives the module the TPM attestation provider.
  const std::string plain = run_cli(token_cli(*s, tpm, m, {"--capabilities"}));
  BOOST_TEST(json_string(plain, "strongest_binding").value_or("") == "hardware_key", plain);
  const std::string attested = run_cli(token_cli(*s, tpm, m, {"--capabilities", "--attest"}));
  BOOST_TEST(json_string(attested, "strongest_binding").value_or("") == "attested_hardware_key",
             attested);
  BOOST_TEST(s->sim().count("imds_issue") == 0u);

  const std::string line =
    run_cli(token_cli(*s, tpm, m,
                      {"--attest", "--json", "--resource", "https://management.azure.com",
                       "--call", s->urls().resource + "/api/whoami"}));
  BOOST_TEST(json_string(line, "binding_strength").value_or("") == "attested_hardware_key", line);
  BOOST_TEST(contains(line, "\"call\":{\"status\":200"), line); // the resource accepted it
  // Both steps of the TPM protocol, then one certificate whose CSR carried the TPM JWT.
  BOOST_TEST(s->sim().count("attestation", 200) == 2u);
  const auto issued = s->sim().pki().issued();
  BOOST_REQUIRE_EQUAL(issued.size(), 1u);
  BOOST_TEST(issued[0].attested);
  BOOST_TEST(issued[0].attestation_type == "tpm");
  BOOST_TEST(json_string(line, "x5t").value_or("") == issued[0].x5t_s256);

  // The JWT the module keeps: a non-exportable TPM key, and that key is the TPM key of the
  // cache directory (key_id: the SHA-256 thumbprint of its SubjectPublicKeyInfo).
  const auto blob_files = m.files("binding-key.tpm");
  BOOST_REQUIRE_EQUAL(blob_files.size(), 1u);
  auto blob = platform::decode_tpm_key_blob(read_text(m.cache + "/binding-key.tpm"));
  BOOST_REQUIRE_MESSAGE(blob.ok(), error_text(blob));
  auto pkey = platform::tpm_pkey(tpm.config(), *blob);
  BOOST_REQUIRE_MESSAGE(pkey.ok(), error_text(pkey));
  auto tpm_key_id = platform::key_id(pkey->get());
  BOOST_REQUIRE(tpm_key_id.ok());
  const auto att_files = m.files("attestation-");
  BOOST_REQUIRE_EQUAL(att_files.size(), 1u);
  const auto jwt = json_string(read_text(m.cache + "/" + att_files[0]), "jwt");
  BOOST_REQUIRE(jwt.has_value());
  auto parts = platform::split_jwt(*jwt);
  BOOST_REQUIRE(parts.ok());
  const std::string& claims = parts->payload_json;
  BOOST_TEST(json_string(claims, "attestation_type").value_or("") == "tpm", claims);
  BOOST_TEST(contains(claims, "\"key_exportable\":false"), claims);
  BOOST_TEST(json_string(claims, "key_id").value_or("") == *tpm_key_id, claims);
}

BOOST_AUTO_TEST_CASE(the_tpm_key_authenticates_to_the_token_endpoint_over_tls13_pss_and_tls12_pkcs1_and_pss) {
  auto& tpm = msiv2::test::swtpm::shared();
  msiv2::test::machine_dir m("tpm-tls", "5a0c4d6e-0000-4000-8000-000000000013");
  struct variant {
    const char* version;
    const char* sigalgs; // what the token listener accepts for the client's CertificateVerify
  };
  // TLS 1.3 signs CertificateVerify with RSA-PSS only; TLS 1.2 lets the server ask for either.
  for (const variant& v : {variant{"1.3", "rsa_pss_rsae_sha256"}, variant{"1.2", "rsa_pkcs1_sha256"},
                           variant{"1.2", "rsa_pss_rsae_sha256"}}) {
    BOOST_TEST_CONTEXT("TLS " << v.version << " " << v.sigalgs) {
      msiv2::test::sim_fixture s([&](sim::config& c) {
        c.token_tls_max_version = v.version;
        c.token_client_sigalgs = v.sigalgs;
      });
      const std::string line =
        run_cli(token_cli(s, tpm, m, {"--json", "--resource", "https://management.azure.com"}));
      BOOST_TEST(json_string(line, "binding_strength").value_or("") == "hardware_key", line);
      BOOST_TEST(s.sim().count("token", 200) == 1u);
    }
  }
}

BOOST_AUTO_TEST_CASE(certification_over_a_wrong_nonce_is_refused) {
  auto& tpm = msiv2::test::swtpm::shared();
  auto s = simulator(tpm.ek_ca());
  const ek_child& key = binding_key();
  auto st = start(*s, tpm.config(), key);
  auto a = platform::answer_tpm_challenge(tpm.config(), st.material, key.binding().load,
                                          st.challenge.credential_blob,
                                          st.challenge.encrypted_secret, platform::random_bytes(32));
  BOOST_REQUIRE_MESSAGE(a.ok(), error_text(a));
  expect_refused(post(*s, "/attest/tpm/proof", msiv2::tpm_proof_request_body(st.challenge.challenge_id, *a)),
                 "extraData is not the challenge nonce");
}

BOOST_AUTO_TEST_CASE(ak_not_activated_is_refused) {
  auto& tpm = msiv2::test::swtpm::shared();
  auto s = simulator(tpm.ek_ca());
  const ek_child& key = binding_key();
  auto st = start(*s, tpm.config(), key);
  auto a = platform::answer_tpm_challenge(tpm.config(), st.material, key.binding().load,
                                          st.challenge.credential_blob,
                                          st.challenge.encrypted_secret, st.challenge.nonce);
  BOOST_REQUIRE_MESSAGE(a.ok(), error_text(a));
  a->secret = platform::random_bytes(a->secret.size()); // what a client without that TPM sends
  expect_refused(post(*s, "/attest/tpm/proof", msiv2::tpm_proof_request_body(st.challenge.challenge_id, *a)),
                 "the AK was not activated");
}

BOOST_AUTO_TEST_CASE(challenge_for_another_ak_fails_activate_credential_in_the_tpm) {
  auto& tpm = msiv2::test::swtpm::shared();
  auto s = simulator(tpm.ek_ca());
  const ek_child& key = binding_key();
  auto st = start(*s, tpm.config(), key);
  auto other = platform::begin_tpm_attestation(tpm.config()); // another AK of the same TPM
  BOOST_REQUIRE(other.ok());
  auto a = platform::answer_tpm_challenge(tpm.config(), *other, key.binding().load,
                                          st.challenge.credential_blob,
                                          st.challenge.encrypted_secret, st.challenge.nonce);
  BOOST_TEST(!a.ok());
  BOOST_TEST(contains(error_text(a), "ActivateCredential"), error_text(a));
}

BOOST_AUTO_TEST_CASE(key_with_the_decrypt_attribute_is_refused) {
  auto& tpm = msiv2::test::swtpm::shared();
  auto s = simulator(tpm.ek_ca());
  const ek_child key = make_ek_child(tpm.config(), sign_only | TPMA_OBJECT_DECRYPT);
  auto m = platform::begin_tpm_attestation(tpm.config());
  BOOST_REQUIRE(m.ok());
  expect_refused(post(*s, "/attest/tpm/challenge",
                      msiv2::tpm_challenge_request_body(client_id, *m, key.wrapped.public_area,
                                                        key.spki_der)),
                 "binding key has the decrypt attribute");
}

BOOST_AUTO_TEST_CASE(key_certified_by_another_tpm_and_ek_certificate_from_another_ca_are_refused) {
  auto& tpm = msiv2::test::swtpm::shared();
  msiv2::test::swtpm other; // a second TPM with its own local CA
  const ek_child& key = binding_key();
  {
    // The first TPM passes the credential challenge; the second certifies (its AK, its key).
    // The service trusts both TPMs' EK CAs, so only the certification's origin is wrong.
    const std::string both = other.dir() + "/both-ek-cas.pem";
    {
      std::ofstream out(both, std::ios::binary);
      out << read_text(tpm.ek_ca()) << read_text(other.ek_ca());
      BOOST_REQUIRE(out.good());
    }
    auto s = simulator(both);
    auto st = start(*s, tpm.config(), key);
    auto a = platform::answer_tpm_challenge(tpm.config(), st.material,
                                            key.binding().load,
                                            st.challenge.credential_blob,
                                            st.challenge.encrypted_secret, st.challenge.nonce);
    BOOST_REQUIRE_MESSAGE(a.ok(), error_text(a));
    const ek_child other_key = make_ek_child(other.config(), sign_only);
    auto other_st = start(*s, other.config(), other_key);
    auto b = platform::answer_tpm_challenge(
      other.config(), other_st.material, other_key.binding().load,
      other_st.challenge.credential_blob, other_st.challenge.encrypted_secret,
      st.challenge.nonce);
    BOOST_REQUIRE_MESSAGE(b.ok(), error_text(b));
    a->certify_info = b->certify_info;
    a->signature = b->signature;
    expect_refused(post(*s, "/attest/tpm/proof",
                        msiv2::tpm_proof_request_body(st.challenge.challenge_id, *a)),
                   "AK signature over the certify structure does not verify");
  }
  {
    // A service that trusts only the second TPM's CA refuses the first TPM's EK certificate.
    auto s = simulator(other.ek_ca());
    auto m = platform::begin_tpm_attestation(tpm.config());
    BOOST_REQUIRE(m.ok());
    expect_refused(post(*s, "/attest/tpm/challenge",
                        msiv2::tpm_challenge_request_body(client_id, *m, key.wrapped.public_area,
                                                          key.spki_der)),
                   "EK certificate does not verify against the configured EK CA");
  }
}

BOOST_AUTO_TEST_SUITE_END()
