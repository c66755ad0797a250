#pragma once

// The simulator's TPM key attestation service: a two-step challenge protocol on the
// attestation listener (README "TPM attestation" has the wire format).
//
//   POST /attest/tpm/challenge  {"client_id","ek_certificate","ak_public","binding_public",
//                                "public_key"}   (base64: EK cert DER, TPM2B_PUBLIC x2, SPKI DER)
//     checks the EK certificate against the EK CA, the AK (restricted RSA signing key,
//     fixedTPM|fixedParent|sensitiveDataOrigin), the binding key (signing only, non-exportable,
//     RSA-2048, the same key as public_key), then answers MakeCredential to the EK for the AK's
//     name and a fresh nonce:
//     -> 200 {"challenge_id","credential_blob","encrypted_secret","nonce","expires_in"}
//   POST /attest/tpm/proof      {"challenge_id","secret","certify_info","signature"}
//     checks the activated secret (only the TPM holding that EK, with that AK loaded, can
//     recover it) and TPM2_Certify(binding key, AK, nonce); the authority then signs the JWT.
//
// Challenges are single-use, expire after the configured lifetime and are capped in number.
// Thread-safe.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <variant>

#include "platform/openssl.hpp"
#include "platform/result.hpp"
#include "tools/sim/http.hpp"
#include "tools/sim/tpm_verifier.hpp"

namespace msiv2::sim {

/// What a successful proof established about the binding key.
struct tpm_attested_key {
  std::string client_id;
  std::string key_id;          ///< hex SHA-256 of the binding key's SPKI DER (protocol.md §3)
  std::string ek_cert_sha256;  ///< hex SHA-256 of the EK certificate DER
  std::string ak_name;         ///< hex TPM name of the AK
};

class tpm_attestation {
public:
  /// Loads the EK CA (every certificate of the PEM file is trusted to issue EK certificates).
  static result<std::unique_ptr<tpm_attestation>> create(const std::string& ek_ca_file,
                                                         std::chrono::seconds challenge_lifetime,
                                                         std::size_t max_challenges);

  /// POST /attest/tpm/challenge at `now_unix`: 200 with the challenge, 400 naming the check
  /// that failed, 503 when max_challenges are pending.
  response challenge(const request& req, std::int64_t now_unix);

  /// POST /attest/tpm/proof at `now_unix`: the attested key, or a 400 naming the check that
  /// failed. The challenge is consumed either way.
  std::variant<tpm_attested_key, response> proof(const request& req, std::int64_t now_unix);

  /// Challenges issued and not yet answered or expired.
  std::size_t pending() const;
  /// Forgets every pending challenge.
  void reset();

private:
  struct pending_challenge {
    std::int64_t expires_at = 0;
    std::string nonce;
    std::string secret;
    tpm::public_area ak;
    tpm::public_area binding;
    tpm_attested_key key;
  };

  tpm_attestation(platform::x509_store_ptr trust, std::chrono::seconds lifetime,
                  std::size_t max_challenges);
  void drop_expired(std::int64_t now_unix); // caller holds mutex_

  const platform::x509_store_ptr trust_;
  const std::chrono::seconds lifetime_;
  const std::size_t max_challenges_;
  mutable std::mutex mutex_;
  std::map<std::string, pending_challenge> challenges_;
};

} // namespace msiv2::sim
