#pragma once

// The TPM side of TPM key attestation (README "TPM attestation"): the endorsement key's
// certificate, an attestation key (AK) under the endorsement key (EK), TPM2_ActivateCredential
// of the service's MakeCredential challenge, and TPM2_Certify of the binding key by the AK over
// the service's nonce. Every function is one run_tpm operation (platform/tpm.hpp: one
// connection, objects flushed, bounded retries); everything blocks: call from worker threads.
//
// The AK is made fresh for each attestation (TPM2_Create under the EK) and kept in memory,
// TPM-wrapped, between the two steps of the protocol; nothing about it is persisted. So
// nothing is shared between the machine's users (a persistent AK handle would be, and needs the
// owner's authorization to make), nothing is left behind, and an attestation costs one RSA key
// generation in the TPM; attestations are rare (at key creation, then at half the JWT's
// lifetime).
//
//   auto m = platform::begin_tpm_attestation(cfg);               // EK cert, new AK
//   ... send m->ek_certificate, m->ak.public_area, binding.public_area; get the challenge ...
//   auto a = platform::answer_tpm_challenge(cfg, *m, load_binding, blob, secret, nonce);
//   ... send a->secret, a->certify_info, a->signature ...

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "platform/openssl.hpp"
#include "platform/result.hpp"
#include "platform/tpm.hpp"

namespace msiv2::platform {

/// NV index of the RSA-2048 EK certificate (TCG EK Credential Profile).
inline constexpr std::uint32_t tpm_ek_certificate_index = 0x01c00002;
/// Persistent handle of the RSA EK (TCG provisioning guidance); when it is empty the EK is
/// re-created from the endorsement seed with the standard template, which gives the same key.
inline constexpr std::uint32_t tpm_ek_handle = 0x81010001;

/// A TPM-wrapped key: marshalled TPM2B_PUBLIC and TPM2B_PRIVATE.
struct tpm_wrapped_key {
  std::string public_area;
  std::string private_area;
};

/// What the first step gathers from the TPM.
struct tpm_attestation_material {
  std::string ek_certificate; ///< DER, as read from tpm_ek_certificate_index
  tpm_wrapped_key ak;         ///< the AK made for this attestation (TPM-wrapped; memory only)
};

/// Loads the key to be certified into the TPM of a connection (the key store knows how: its
/// blob under its parent); the returned object flushes it.
using tpm_key_loader = std::function<result<tpm_object>(tpm_connection&)>;

/// The binding key as attestation needs it: its marshalled TPM2B_PUBLIC and how to load it.
struct tpm_binding {
  std::string public_area;
  tpm_key_loader load;
};

/// The binding key behind `key` (an EVP_PKEY of our provider, platform/tpm_provider) as
/// attestation needs it: the public area from its wrapped blob, and a loader that creates the
/// storage key, loads the blob under it and flushes the storage key again (the loaded key stays
/// usable), so that Certify runs with two transient objects, the AK and the key. Fails for a
/// key that does not live in a TPM.
result<tpm_binding> tpm_binding_of(EVP_PKEY* key);

/// The EK's handle in this connection: the persistent one at tpm_ek_handle when the TPM has an
/// RSA key there (`made` stays empty), else the EK re-created from the TCG template into `made`
/// (flushed with it).
result<ESYS_TR> tpm_endorsement_key(tpm_connection& tpm, tpm_object& made);

/// A policy session satisfying the EK's policy, PolicySecret(TPM_RH_ENDORSEMENT) (the
/// endorsement hierarchy's authorization must be empty); flushed with the returned object.
/// Each command that uses the EK as a parent or decrypter needs a fresh one.
result<tpm_object> tpm_endorsement_session(tpm_connection& tpm);

/// Reads the EK certificate and creates an AK under the EK: an RSA-2048 restricted signing key
/// (RSASSA SHA-256; fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth). The EK is used
/// through a PolicySecret(endorsement) session, as its policy demands.
result<tpm_attestation_material> begin_tpm_attestation(const tpm_config& cfg);

/// What the second step hands the service.
struct tpm_attestation_answer {
  std::string secret;       ///< the credential ActivateCredential recovered
  std::string certify_info; ///< marshalled TPMS_ATTEST of TPM2_Certify
  std::string signature;    ///< marshalled TPMT_SIGNATURE by the AK over certify_info
};

/// Loads the AK under the EK, recovers the credential from `credential_blob`
/// (TPM2B_ID_OBJECT) and `encrypted_secret` (TPM2B_ENCRYPTED_SECRET) with
/// TPM2_ActivateCredential, then loads the binding key with `load_binding` and has the AK
/// certify it over `nonce` (at most three transient objects at once: EK, AK; then AK, key).
/// ActivateCredential fails (integrity check) when the challenge was made for another AK name
/// or another EK.
result<tpm_attestation_answer> answer_tpm_challenge(const tpm_config& cfg,
                                                    const tpm_attestation_material& material,
                                                    const tpm_key_loader& load_binding,
                                                    std::string_view credential_blob,
                                                    std::string_view encrypted_secret,
                                                    std::string_view nonce);

} // namespace msiv2::platform
