#pragma once

// The binding key inside the TPM: an RSA-2048 signing key (sign only; fixedTPM, fixedParent,
// sensitiveDataOrigin, userWithAuth, noDA; scheme NULL so it signs RSASSA and RSAPSS) created
// under a storage root key (SRK) and kept outside the TPM as a wrapped blob: its public area
// and its private area encrypted by the SRK. The blob is useless without this TPM and its owner
// seed; it lives in the user's private cache directory (per-user, unlike TPM persistent handles,
// which every user of the machine shares and which are few).
//
// The SRK is the TCG template's ECC P-256 storage primary, re-created from the owner seed by
// TPM2_CreatePrimary when needed: the same seed gives the same SRK, so a blob loads after a
// reboot, and a cleared owner seed (tpm2_clear, a new TPM) makes it fail to load. Nothing is
// made persistent, so the owner hierarchy's auth is only needed to be empty for CreatePrimary.
//
// Every function here is one run_tpm operation (one connection, flushed objects, retries).

#include <cstdint>
#include <string>
#include <string_view>

#include "platform/result.hpp"
#include "platform/tpm.hpp"

namespace msiv2::platform {

/// A TPM-wrapped key: the marshalled TPM2B_PUBLIC and TPM2B_PRIVATE (Tss2_MU).
struct tpm_key_blob {
  std::string public_area;
  std::string private_area;
};

/// The public half of a TPM RSA key.
struct tpm_rsa_public {
  std::string modulus;        ///< big-endian bytes of n
  std::uint32_t exponent = 0; ///< e (65537)
  std::uint32_t attributes = 0; ///< TPMA_OBJECT of the key
  std::string name;           ///< the TPM Name: nameAlg (0x000b) || SHA-256(TPMT_PUBLIC)
};

/// Signature schemes the TPM key signs with.
enum class tpm_sig_scheme { rsassa_pkcs1, rsapss };

/// The object attributes of a binding key (what create_tpm_binding_key asks for).
std::uint32_t tpm_binding_key_attributes() noexcept;

/// Creates a new RSA-2048 binding key under the SRK; the TPM generates it (a few hundred ms to
/// seconds on hardware).
result<tpm_key_blob> create_tpm_binding_key(const tpm_config& cfg);

/// Parses a blob's public area (no TPM needed). Fails on a malformed blob, or a key that is
/// not an RSA-2048 binding key with the attributes above.
result<tpm_rsa_public> tpm_key_public(const tpm_key_blob& blob);

/// Loads the blob under the SRK to prove the TPM still has it (and flushes it). Fails when the
/// TPM cannot load it (a cleared owner seed, another TPM, a damaged blob: `*refused_by_tpm`
/// is then set when given) or cannot be reached (`*refused_by_tpm` stays false: the key may
/// well still be good).
result<void> check_tpm_key_loads(const tpm_config& cfg, const tpm_key_blob& blob,
                                 bool* refused_by_tpm = nullptr);

/// The storage key and the binding key loaded into the TPM, both flushed when this goes.
struct tpm_loaded_key {
  tpm_object srk;
  tpm_object key;
};

/// Inside a run_tpm operation: creates the storage key and loads `blob` under it, for further
/// commands on the binding key in the same operation (TPM2_Certify by the attestation code).
/// `*refused_by_tpm` (when given) is set when the TPM answered that it cannot load the key.
result<tpm_loaded_key> load_tpm_key(tpm_connection& tpm, const tpm_key_blob& blob,
                                    bool* refused_by_tpm = nullptr);

/// Signs `digest` (SHA-256, -384 or -512 by its length) with the key: loads it, TPM2_Sign,
/// flushes. PSS uses the TPM's salt (digest length on a conforming TPM: see the self-test in
/// tpm_key_store). `*refused_by_tpm` (when given) is set as by check_tpm_key_loads: the TPM
/// answered that it cannot load the key, so no later signature can succeed either.
result<std::string> tpm_sign_digest(const tpm_config& cfg, const tpm_key_blob& blob,
                                    tpm_sig_scheme scheme, std::string_view digest,
                                    bool* refused_by_tpm = nullptr);

/// Blob file format: "msiv2-tpm-key-v1\n" + base64 of each area on its own line.
std::string encode_tpm_key_blob(const tpm_key_blob& blob);
/// Parses encode_tpm_key_blob's output; the error says what is malformed.
result<tpm_key_blob> decode_tpm_key_blob(std::string_view text);

} // namespace msiv2::platform
