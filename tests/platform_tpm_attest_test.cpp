// The attestation client's TPM side (platform/tpm_attest) against a real software TPM (swtpm on
// loopback, tests/support/swtpm), with the service's checks run in process by the simulator's
// verifier functions (tools/sim/tpm_verifier: no HTTP, no simulator): the binding key of the
// TPM key store found through tpm_binding_of, the EK certificate and the AK of
// begin_tpm_attestation, ActivateCredential and Certify of answer_tpm_challenge, and the
// refusal paths (a key that is not a TPM key, malformed service answers, a nonce too long, a
// challenge for another AK, a certification over another nonce, a loader that fails, a TPM
// that cannot be reached). Short and not labelled heavy, so the ASan pass covers this code
// (integration_tpm_attestation_test runs the HTTP protocol with processes, in the normal pass).

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <optional>
#include <string>

#include <tss2/tss2_mu.h>

#include "platform/encoding.hpp"
#include "platform/keys.hpp"
#include "platform/tpm_attest.hpp"
#include "platform/tpm_key.hpp"
#include "platform/tpm_provider.hpp"
#include "tests/support/swtpm.hpp"
#include "tests/support/test_keys.hpp"
#include "tools/sim/tpm_verifier.hpp"

namespace {

namespace platform = msiv2::platform;
namespace verifier = msiv2::sim::tpm;
using msiv2::result;
using msiv2::test::contains;
using msiv2::test::error_text;
using msiv2::test::swtpm;

// The suite's binding key: made once by the TPM key store's code (key generation costs time).
const platform::tpm_key_blob& suite_blob() {
  static std::optional<platform::tpm_key_blob> blob;
  if (!blob) {
    auto made = platform::create_tpm_binding_key(swtpm::shared().config());
    BOOST_REQUIRE_MESSAGE(made.ok(), error_text(made));
    blob = *made;
  }
  return *blob;
}

platform::pkey_ptr suite_pkey() {
  auto key = platform::tpm_pkey(swtpm::shared().config(), suite_blob());
  BOOST_REQUIRE_MESSAGE(key.ok(), error_text(key));
  return std::move(*key);
}

// The suite's first attestation material (EK certificate, an AK): one AK generation.
const platform::tpm_attestation_material& suite_material() {
  static std::optional<platform::tpm_attestation_material> m;
  if (!m) {
    auto made = platform::begin_tpm_attestation(swtpm::shared().config());
    BOOST_REQUIRE_MESSAGE(made.ok(), error_text(made));
    m = *made;
  }
  return *m;
}

verifier::public_area parse_area(const std::string& tpm2b_public, const char* what) {
  auto area = verifier::parse_public(tpm2b_public, what);
  BOOST_REQUIRE_MESSAGE(area.ok(), error_text(area));
  return std::move(*area);
}

// The EK public key as the service takes it: from the EK certificate, checked against swtpm's
// local CA.
platform::pkey_ptr ek_public_from_certificate(const std::string& ek_der) {
  auto trust = verifier::load_ek_ca(swtpm::shared().ek_ca());
  BOOST_REQUIRE_MESSAGE(trust.ok(), error_text(trust));
  auto ek = verifier::verify_ek_certificate(ek_der, trust->get(),
                                            static_cast<std::int64_t>(std::time(nullptr)));
  BOOST_REQUIRE_MESSAGE(ek.ok(), error_text(ek));
  return std::move(*ek);
}

// The service's challenge for `material`'s AK: MakeCredential of `secret` to the EK of the
// certificate, for the AK's name.
verifier::credential_challenge challenge_for(const platform::tpm_attestation_material& material,
                                            const std::string& secret) {
  auto ek = ek_public_from_certificate(material.ek_certificate);
  auto ak = parse_area(material.ak.public_area, "ak_public");
  auto c = verifier::make_credential(ek.get(), secret, ak.name);
  BOOST_REQUIRE_MESSAGE(c.ok(), error_text(c));
  return std::move(*c);
}

std::string tpm_name_of(const platform::tpm_key_loader& load) {
  auto name = platform::run_tpm<std::string>(
    swtpm::shared().config(), "read the loaded key's name",
    [&](platform::tpm_connection& tpm) -> result<std::string> {
      auto key = load(tpm);
      if (!key)
        return key.fail();
      TPM2B_NAME* raw = nullptr;
      if (auto rc = Esys_TR_GetName(tpm.esys(), key->get(), &raw); rc != TSS2_RC_SUCCESS)
        return tpm.failed(rc, "Esys_TR_GetName");
      platform::esys_ptr<TPM2B_NAME> owned(raw);
      return std::string(reinterpret_cast<const char*>(raw->name), raw->size);
    });
  BOOST_REQUIRE_MESSAGE(name.ok(), error_text(name));
  return *name;
}

} // namespace

BOOST_AUTO_TEST_SUITE(platform_tpm_attest_test)

BOOST_AUTO_TEST_CASE(tpm_binding_of_gives_the_key_stores_public_area_and_a_loader_and_refuses_other_keys) {
  auto key = suite_pkey();
  auto binding = platform::tpm_binding_of(key.get());
  BOOST_REQUIRE_MESSAGE(binding.ok(), error_text(binding));
  BOOST_TEST(binding->public_area == suite_blob().public_area);
  // What the loader puts in the TPM is the key of the blob: the same TPM Name.
  auto pub = platform::tpm_key_public(suite_blob());
  BOOST_REQUIRE_MESSAGE(pub.ok(), error_text(pub));
  BOOST_TEST(platform::hex_lower(tpm_name_of(binding->load)) == platform::hex_lower(pub->name));
  // The service's view of that area: a non-exportable signing key.
  auto area = parse_area(binding->public_area, "binding_public");
  BOOST_TEST(area.name == pub->name);
  auto checked = verifier::check_binding_key(area);
  BOOST_TEST(checked.ok(), error_text(checked));

  auto none = platform::tpm_binding_of(nullptr);
  BOOST_TEST(!none.ok());
  BOOST_TEST(contains(error_text(none), "the binding key handle is empty"), error_text(none));
  auto software = platform::tpm_binding_of(msiv2::test::test_key());
  BOOST_TEST(!software.ok());
  BOOST_TEST(contains(error_text(software), "the binding key is not a TPM key"),
             error_text(software));
  BOOST_TEST(contains(error_text(software), "TPM attestation proves keys held in a TPM"),
             error_text(software));
}

BOOST_AUTO_TEST_CASE(begin_reads_the_ek_certificate_of_the_endorsement_key_and_makes_an_ak_under_it) {
  const auto& m = suite_material();
  // The certificate chains to swtpm's local EK CA, and certifies the EK this TPM uses.
  auto from_cert = ek_public_from_certificate(m.ek_certificate);
  auto ek_public = platform::run_tpm<std::string>(
    swtpm::shared().config(), "read the EK",
    [](platform::tpm_connection& tpm) -> result<std::string> {
      platform::tpm_object made;
      auto ek = platform::tpm_endorsement_key(tpm, made);
      if (!ek)
        return ek.fail();
      TPM2B_PUBLIC* pub = nullptr;
      if (auto rc = Esys_ReadPublic(tpm.esys(), *ek, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                    &pub, nullptr, nullptr);
          rc != TSS2_RC_SUCCESS)
        return tpm.failed(rc, "Esys_ReadPublic(EK)");
      platform::esys_ptr<TPM2B_PUBLIC> owned(pub);
      return std::string(reinterpret_cast<const char*>(pub->publicArea.unique.rsa.buffer),
                         pub->publicArea.unique.rsa.size);
    });
  BOOST_REQUIRE_MESSAGE(ek_public.ok(), error_text(ek_public));
  auto n = verifier::rsa_key_of(
    [&] {
      TPMT_PUBLIC p{};
      p.type = TPM2_ALG_RSA;
      p.nameAlg = TPM2_ALG_SHA256;
      p.parameters.rsaDetail.keyBits = 2048;
      p.unique.rsa.size = static_cast<UINT16>(ek_public->size());
      std::copy(ek_public->begin(), ek_public->end(), p.unique.rsa.buffer);
      return p;
    }(),
    "EK");
  BOOST_REQUIRE_MESSAGE(n.ok(), error_text(n));
  BOOST_TEST(platform::same_public_key(n->get(), from_cert.get()));
  // The AK: a restricted RSA signing key that cannot leave the TPM, as the service demands.
  auto ak = parse_area(m.ak.public_area, "ak_public");
  auto checked = verifier::check_attestation_key(ak);
  BOOST_TEST(checked.ok(), error_text(checked));
  BOOST_TEST(!m.ak.private_area.empty());
}

BOOST_AUTO_TEST_CASE(answer_activates_the_credential_and_certifies_the_binding_key_over_the_nonce) {
  const auto& m = suite_material();
  auto key = suite_pkey();
  auto binding = platform::tpm_binding_of(key.get());
  BOOST_REQUIRE_MESSAGE(binding.ok(), error_text(binding));
  const std::string secret = platform::random_bytes(32);
  const std::string nonce = platform::random_bytes(32);
  auto c = challenge_for(m, secret);
  auto a = platform::answer_tpm_challenge(swtpm::shared().config(), m, binding->load,
                                          c.credential_blob, c.encrypted_secret, nonce);
  BOOST_REQUIRE_MESSAGE(a.ok(), error_text(a));
  // Only this TPM, with this AK loaded under its EK, recovers the secret.
  BOOST_TEST(a->secret == secret);
  // The service's checks of the certification: signature by the AK, magic, type, nonce, and
  // the certified name is the binding key's.
  auto ak = parse_area(m.ak.public_area, "ak_public");
  auto bound = parse_area(binding->public_area, "binding_public");
  auto verified = verifier::verify_certify(ak, a->certify_info, a->signature, nonce, bound);
  BOOST_REQUIRE_MESSAGE(verified.ok(), error_text(verified));
  BOOST_TEST(verified->certified_name == bound.name);
  // Over another nonce the same structures are refused.
  auto other = verifier::verify_certify(ak, a->certify_info, a->signature,
                                        platform::random_bytes(32), bound);
  BOOST_TEST(!other.ok());
  BOOST_TEST(contains(error_text(other), "extraData"), error_text(other));
  // And as a certification of another key (the AK's own area in the binding key's place).
  auto not_this = verifier::verify_certify(ak, a->certify_info, a->signature, nonce, ak);
  BOOST_TEST(!not_this.ok());
  BOOST_TEST(contains(error_text(not_this), "the AK certified another key"), error_text(not_this));
}

BOOST_AUTO_TEST_CASE(a_challenge_for_another_ak_fails_activate_credential_in_the_tpm) {
  const auto& m = suite_material();
  auto key = suite_pkey();
  auto binding = platform::tpm_binding_of(key.get());
  BOOST_REQUIRE_MESSAGE(binding.ok(), error_text(binding));
  // MakeCredential for the binding key's name instead of the AK's: the TPM's integrity check
  // fails, nothing is certified.
  auto ek = ek_public_from_certificate(m.ek_certificate);
  auto wrong_name = parse_area(binding->public_area, "binding_public").name;
  auto c = verifier::make_credential(ek.get(), platform::random_bytes(32), wrong_name);
  BOOST_REQUIRE_MESSAGE(c.ok(), error_text(c));
  auto a = platform::answer_tpm_challenge(swtpm::shared().config(), m, binding->load,
                                          c->credential_blob, c->encrypted_secret,
                                          platform::random_bytes(32));
  BOOST_TEST(!a.ok());
  BOOST_TEST(contains(error_text(a), "Esys_ActivateCredential"), error_text(a));
  BOOST_TEST(contains(error_text(a), "the challenge was not made for this TPM's EK and this AK"),
             error_text(a));
}

BOOST_AUTO_TEST_CASE(malformed_service_answers_a_long_nonce_and_a_bad_ak_are_refused_before_the_tpm) {
  const auto& m = suite_material();
  auto key = suite_pkey();
  auto binding = platform::tpm_binding_of(key.get());
  BOOST_REQUIRE_MESSAGE(binding.ok(), error_text(binding));
  auto c = challenge_for(m, platform::random_bytes(32));
  const auto& cfg = swtpm::shared().config();
  const std::string nonce = platform::random_bytes(32);

  const std::string short_blob{'\x00', '\x05', 'a', 'b'}; // says 5 bytes, holds 2
  auto blob = platform::answer_tpm_challenge(cfg, m, binding->load, short_blob,
                                             c.encrypted_secret, nonce);
  BOOST_TEST(contains(error_text(blob), "the attestation service's credential_blob is malformed"),
             error_text(blob));
  auto trailing = platform::answer_tpm_challenge(cfg, m, binding->load, c.credential_blob + "x",
                                                 c.encrypted_secret, nonce);
  BOOST_TEST(contains(error_text(trailing), "credential_blob is malformed"), error_text(trailing));
  auto secret = platform::answer_tpm_challenge(cfg, m, binding->load, c.credential_blob, "",
                                               nonce);
  BOOST_TEST(contains(error_text(secret), "encrypted_secret is malformed"), error_text(secret));
  auto long_nonce = platform::answer_tpm_challenge(cfg, m, binding->load, c.credential_blob,
                                                   c.encrypted_secret, std::string(200, 'n'));
  BOOST_TEST(contains(error_text(long_nonce), "nonce is longer than the TPM accepts"),
             error_text(long_nonce));
  platform::tpm_attestation_material bad = m;
  bad.ak.private_area = "\x01";
  auto bad_ak = platform::answer_tpm_challenge(cfg, bad, binding->load, c.credential_blob,
                                               c.encrypted_secret, nonce);
  BOOST_TEST(contains(error_text(bad_ak), "the attestation key blob is malformed"),
             error_text(bad_ak));
}

BOOST_AUTO_TEST_CASE(a_binding_key_that_does_not_load_fails_the_answer_with_the_loaders_reason) {
  const auto& m = suite_material();
  const std::string secret = platform::random_bytes(32);
  auto c = challenge_for(m, secret);
  int loads = 0;
  platform::tpm_key_loader refuse = [&](platform::tpm_connection&) -> result<platform::tpm_object> {
    ++loads;
    return msiv2::fail("the binding key's blob does not load (test)");
  };
  auto a = platform::answer_tpm_challenge(swtpm::shared().config(), m, refuse, c.credential_blob,
                                          c.encrypted_secret, platform::random_bytes(32));
  BOOST_TEST(!a.ok());
  BOOST_TEST(contains(error_text(a), "the binding key's blob does not load (test)"), error_text(a));
  BOOST_TEST(loads == 1); // a loader's failure is not a TPM error to retry
  // The TPM is left clean: the same challenge is still answered with the real loader.
  auto key = suite_pkey();
  auto binding = platform::tpm_binding_of(key.get());
  BOOST_REQUIRE_MESSAGE(binding.ok(), error_text(binding));
  auto again = platform::answer_tpm_challenge(swtpm::shared().config(), m, binding->load,
                                              c.credential_blob, c.encrypted_secret,
                                              platform::random_bytes(32));
  BOOST_REQUIRE_MESSAGE(again.ok(), error_text(again));
  BOOST_TEST(again->secret == secret);
}

BOOST_AUTO_TEST_CASE(an_unreachable_tpm_fails_begin_naming_the_tcti) {
  swtpm::shared(); // skips (77) without swtpm, as the rest of the suite
  platform::tpm_config cfg;
  // A port nobody listens on: swtpm's port range starts at 20000, this one is reserved.
  cfg.tcti = "swtpm:host=127.0.0.1,port=9";
  cfg.attempts = 2;
  cfg.backoff = std::chrono::milliseconds(1);
  auto m = platform::begin_tpm_attestation(cfg);
  BOOST_TEST(!m.ok());
  BOOST_TEST(contains(error_text(m), "prepare TPM attestation (EK certificate, new AK)"),
             error_text(m));
  BOOST_TEST(contains(error_text(m), "swtpm:host=127.0.0.1,port=9"), error_text(m));
}

BOOST_AUTO_TEST_SUITE_END()
