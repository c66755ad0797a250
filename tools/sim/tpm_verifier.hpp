#pragma once

// The verifier side of TPM key attestation, in software (OpenSSL + tss2-mu, no TPM): the
// structures a TPM 2.0 hands out (TPM2B_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE), object names,
// the EK certificate check, MakeCredential (TPM 2.0 Part 1 §24: KDFa, AES-128-CFB, HMAC,
// RSA-OAEP with label "IDENTITY\0") and the check of a TPM2_Certify result. Pure functions;
// the stateful challenge protocol built on them is tools/sim/tpm_attestation.hpp.
//
// Every failing check returns an error that names the check ("AK is not a restricted key").

#include <cstdint>
#include <string>
#include <string_view>

#include <tss2/tss2_tpm2_types.h>

#include "platform/openssl.hpp"
#include "platform/result.hpp"

namespace msiv2::sim::tpm {

/// fixedTPM|fixedParent|sensitiveDataOrigin: the key was made in this TPM and cannot leave it.
inline constexpr TPMA_OBJECT non_exportable_attributes =
  TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN;

/// A TPM object's public area as received (a marshalled TPM2B_PUBLIC), parsed.
struct public_area {
  TPMT_PUBLIC pub{};
  std::string tpmt_bytes; ///< the marshalled TPMT_PUBLIC (what the Name hashes)
  std::string name;       ///< TPM2B_NAME contents: nameAlg (2 bytes, big endian) || H(tpmt_bytes)
};

/// Parses a marshalled TPM2B_PUBLIC (size + TPMT_PUBLIC, nothing after it). `what` names the
/// field in errors ("ak_public"). Only SHA-256 names are supported.
result<public_area> parse_public(std::string_view tpm2b_public, std::string_view what);

/// Marshals `pub` as a TPM2B_PUBLIC (for clients and tests that build areas in software).
result<std::string> marshal_public(const TPMT_PUBLIC& pub);

/// The RSA public key of an RSA public area (exponent 0 = 65537).
result<platform::pkey_ptr> rsa_key_of(const TPMT_PUBLIC& pub, std::string_view what);

/// Checks an attestation key: RSA-2048, nameAlg SHA-256, restricted|sign, not decrypt,
/// fixedTPM|fixedParent|sensitiveDataOrigin, scheme RSASSA or RSAPSS with SHA-256 (or NULL).
result<void> check_attestation_key(const public_area& ak);

/// Checks a binding key: RSA-2048, nameAlg SHA-256, sign, not decrypt, not restricted,
/// fixedTPM|fixedParent|sensitiveDataOrigin.
result<void> check_binding_key(const public_area& key);

/// An X.509 store of the CA certificates trusted to issue EK certificates: every certificate
/// of the PEM file `path` is a trust anchor (a root and its intermediates, or only the
/// issuing CA). Errors name the file.
result<platform::x509_store_ptr> load_ek_ca(const std::string& path);

/// Verifies the EK certificate (DER) against `trust` at `now_unix` and returns its public
/// key (RSA-2048 required: the standard RSA EK template). TPM EK certificates have critical
/// extensions (subjectAltName with the TPM manufacturer, basicConstraints, keyUsage) that
/// OpenSSL handles; any critical extension it does not know is refused with its name.
result<platform::pkey_ptr> verify_ek_certificate(std::string_view der, X509_STORE* trust,
                                                 std::int64_t now_unix);

/// KDFa of TPM 2.0 Part 1 §11.4.10.2 with HMAC-SHA-256 (SP 800-108 counter mode):
/// `bits` of HMAC(key, [i]32 || label || 0x00 || context_u || context_v || [bits]32).
result<std::string> kdfa_sha256(std::string_view key, std::string_view label,
                                std::string_view context_u, std::string_view context_v,
                                unsigned bits);

/// What MakeCredential hands the TPM: both marshalled, ready for TPM2_ActivateCredential.
struct credential_challenge {
  std::string credential_blob;  ///< TPM2B_ID_OBJECT
  std::string encrypted_secret; ///< TPM2B_ENCRYPTED_SECRET
};

/// TPM2_MakeCredential in software for an RSA EK with the standard template (nameAlg
/// SHA-256, AES-128-CFB): a random seed, encrypted to `ek_public` with RSA-OAEP SHA-256 and
/// label "IDENTITY\0"; `credential` (1 to 32 bytes) encrypted with the key KDFa(seed,
/// "STORAGE", object_name) and integrity-protected with HMAC(KDFa(seed, "INTEGRITY")) over
/// the ciphertext and `object_name`. Only the TPM holding the EK's private key, with the
/// object of that name loaded, can recover `credential`.
result<credential_challenge> make_credential(EVP_PKEY* ek_public, std::string_view credential,
                                             std::string_view object_name);

/// The parts of a verified TPM2_Certify result.
struct certify_result {
  std::string certified_name;
  std::string qualified_name;
};

/// Checks a TPM2_Certify result: `signature` (marshalled TPMT_SIGNATURE, RSASSA or RSAPSS
/// with SHA-256) verifies over `attest` (marshalled TPMS_ATTEST) with the AK's key; magic is
/// TPM_GENERATED_VALUE; type is TPM_ST_ATTEST_CERTIFY; extraData equals `nonce`; the
/// certified name equals `certified.name`. The first failing check is the error.
result<certify_result> verify_certify(const public_area& ak, std::string_view attest,
                                      std::string_view signature, std::string_view nonce,
                                      const public_area& certified);

} // namespace msiv2::sim::tpm
