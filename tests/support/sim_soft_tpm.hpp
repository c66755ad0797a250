#pragma once

// A TPM played in software for the unit tests of the TPM attestation verifier
// (tools/sim/tpm_verifier.hpp): an EK with an EK certificate from a test CA (critical
// extensions as on swtpm's), an AK and a binding key with public areas built like a TPM's,
// TPM2_ActivateCredential done in software (the inverse of make_credential) and
// TPM2_Certify output (TPMS_ATTEST signed by the AK). The end-to-end tests against a real
// swtpm (integration_tpm_attestation_test) prove the same wire bytes work with a real TPM.

#include <string>
#include <string_view>

#include <tss2/tss2_tpm2_types.h>

#include "platform/openssl.hpp"
#include "platform/result.hpp"

namespace msiv2::test {

/// The attributes of a TPM-made key that cannot leave it.
inline constexpr TPMA_OBJECT tpm_fixed = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                         TPMA_OBJECT_SENSITIVEDATAORIGIN |
                                         TPMA_OBJECT_USERWITHAUTH;
/// An attestation key's attributes (as tpm2_createak makes them).
inline constexpr TPMA_OBJECT ak_attributes =
  tpm_fixed | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT;
/// A binding key's attributes (sign only; tpm.md §4.2: 0x00040472).
inline constexpr TPMA_OBJECT binding_attributes =
  tpm_fixed | TPMA_OBJECT_NODA | TPMA_OBJECT_SIGN_ENCRYPT;

/// An RSA public area for `key` with `attributes`, nameAlg SHA-256, scheme `scheme`
/// (TPM2_ALG_RSASSA with SHA-256, or TPM2_ALG_NULL).
TPMT_PUBLIC rsa_public_area(EVP_PKEY* key, TPMA_OBJECT attributes, TPM2_ALG_ID scheme);
/// The same, marshalled as a TPM2B_PUBLIC.
std::string marshalled_public(EVP_PKEY* key, TPMA_OBJECT attributes, TPM2_ALG_ID scheme);

/// A software TPM: EK (with its certificate), AK, binding key. Keys are made once per test
/// run and shared (key generation costs real time); `second()` is another TPM with its own.
struct soft_tpm {
  EVP_PKEY* ek = nullptr;
  EVP_PKEY* ak = nullptr;
  EVP_PKEY* binding = nullptr;
  std::string ek_cert_der;

  /// The first TPM, its EK certified by ca_pem().
  static const soft_tpm& first();
  /// A second TPM (other EK, AK, binding key), its EK also certified by ca_pem().
  static const soft_tpm& second();
  /// PEM of the test EK CA: a root and the issuing intermediate (as swtpm's local CA).
  static const std::string& ca_pem();
  /// PEM of another CA, which certified nothing of the above.
  static const std::string& other_ca_pem();
  /// An EK certificate for first().ek issued by other_ca_pem()'s CA.
  static const std::string& ek_cert_from_other_ca();

  /// ActivateCredential: decrypts the seed with the EK, checks the HMAC over the blob and
  /// `object_name`, returns the credential. Fails as the TPM does (integrity check) when the
  /// name or the EK is not the one MakeCredential used.
  result<std::string> activate(std::string_view credential_blob,
                               std::string_view encrypted_secret,
                               std::string_view object_name) const;

  /// TPM2_Certify output: a marshalled TPMS_ATTEST (magic, type CERTIFY, extraData
  /// `nonce`, certified name `certified_name`) and the AK's RSASSA-SHA-256 TPMT_SIGNATURE.
  struct certify_output {
    std::string attest;
    std::string signature;
  };
  certify_output certify(std::string_view certified_name, std::string_view nonce,
                         std::uint32_t magic = TPM2_GENERATED_VALUE,
                         TPM2_ST type = TPM2_ST_ATTEST_CERTIFY) const;
};

/// The name the TPM gives an object with this marshalled TPM2B_PUBLIC (0x000b || SHA-256).
std::string tpm_name(std::string_view tpm2b_public);

} // namespace msiv2::test
