#pragma once

// Our OpenSSL 3 provider for TPM-held RSA keys (tpm.md "Route A"): key management and signature
// for "RSA" only, whose sign step is TPM2_Sign on the binding key (platform/tpm_key). It has no
// export function, so the private key can never leave as PEM, DER or OSSL_PARAMs; hashing,
// verification, randomness and everything else stay in OpenSSL's default provider. OpenSSL's
// sign-init first tries the default provider's RSA signature, whose export of our key fails,
// and then uses the key's own provider: TLS (1.2 and 1.3, PKCS#1 v1.5 and PSS), the CSR and
// any EVP_DigestSign* call sign in the TPM with one TPM operation per signature.
//
// Signatures: RSASSA-PKCS1-v1_5 and RSASSA-PSS with MGF1 on the same digest and a salt as long
// as the digest (what TLS 1.3 and protocol.md require; a TPM signs PSS with that salt), over
// SHA-256, SHA-384 or SHA-512. Another salt length or MGF1 digest is refused, never silently
// replaced.
//
// The provider sorts after "default" by name, and OpenSSL lists implementations in that order,
// so a fetch of "RSA" without a property query (software key generation, decoders) still gets
// the default provider; keys of ours are only made through tpm_pkey().

#include "platform/openssl.hpp"
#include "platform/result.hpp"
#include "platform/tpm.hpp"
#include "platform/tpm_key.hpp"

namespace msiv2::platform {

/// The provider's name in the default library context.
inline constexpr const char* tpm_provider_name = "msiv2-tpm";

/// Registers our provider and loads it, with the default provider, into the default library
/// context; once per process (later calls return the first outcome).
result<void> load_tpm_provider();

/// An EVP_PKEY for the binding key in `blob`: its public half (n, e) readable as usual, its
/// private operations run by the TPM of `cfg`. Export of the private key fails. Loads the
/// provider when needed. Does not talk to the TPM (check_tpm_key_loads does; so does its
/// first signature, which tpm_pkey_refused reports on).
result<pkey_ptr> tpm_pkey(const tpm_config& cfg, const tpm_key_blob& blob);

/// True when `key` belongs to our provider (signs in a TPM).
bool is_tpm_pkey(EVP_PKEY* key);

/// True once a signature with `key` failed because the TPM refused to load it (a cleared owner
/// seed, another TPM, a damaged blob): it will never sign again and must be replaced. False for
/// a key that has not been refused (a TPM that could not be reached refuses nothing) and for
/// keys that are not ours. Safe from any thread.
bool tpm_pkey_refused(EVP_PKEY* key);

/// Where a key of ours lives: its TPM and its wrapped blob (what the key file holds: useless
/// without that TPM), for further TPM operations on it (TPM2_Certify).
struct tpm_key_reference {
  tpm_config tpm;
  tpm_key_blob blob;
};
/// The reference behind a key of ours; fails for any other key.
result<tpm_key_reference> tpm_pkey_reference(EVP_PKEY* key);

/// A software copy of the key's public half (default provider): for DER SubjectPublicKeyInfo,
/// the CSR's public key, comparisons. Works for any RSA key.
result<pkey_ptr> software_public_key(EVP_PKEY* key);

} // namespace msiv2::platform
