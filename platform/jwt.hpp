#pragma once

// Compact JWS (RS256): signing and verification for the simulator, payload reading for the
// client (which only reads exp, iat, nbf and cnf; it never trusts a JWT it did not verify
// for anything but its own scheduling).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "platform/openssl.hpp"
#include "platform/result.hpp"

namespace msiv2::platform {

/// Signs `payload_json` as a compact RS256 JWS with header {"alg":"RS256","typ":"JWT","kid":kid}
/// ("kid" left out when empty).
result<std::string> sign_jwt_rs256(EVP_PKEY* key, std::string_view payload_json,
                                   std::string_view kid = {});

/// The three parts of a compact JWS, decoded.
struct jwt_parts {
  std::string header_json;
  std::string payload_json;
  std::string signing_input; ///< base64url(header) "." base64url(payload)
  std::string signature;     ///< raw signature bytes
};

/// Splits and base64url-decodes a compact JWS; a clear error on a malformed token.
result<jwt_parts> split_jwt(std::string_view token);
/// Verifies the header says alg RS256 and the signature verifies with `key`.
result<void> verify_jwt_rs256(const jwt_parts& parts, EVP_PKEY* key);

/// The claims this project reads.
struct jwt_claims {
  std::optional<std::int64_t> exp;
  std::optional<std::int64_t> iat;
  std::optional<std::int64_t> nbf;
  std::string cnf_x5t_s256; ///< cnf."x5t#S256", empty when absent
  std::string key_id;       ///< "key_id" claim (attestation JWTs), empty when absent
  std::string aud;          ///< "aud" when a string, empty otherwise
  std::string iss;
  std::string tid;
  std::string appid;
  /// "attestation_type" (attestation JWTs of the simulator: "keyguard" or "tpm"), empty when absent
  std::string attestation_type;
};

/// Reads jwt_claims from a payload JSON object; a clear error on malformed JSON or a claim
/// of the wrong type (exp, iat, nbf must be integers).
result<jwt_claims> parse_jwt_claims(std::string_view payload_json);
/// split_jwt + parse_jwt_claims, without verifying the signature.
result<jwt_claims> read_jwt_claims(std::string_view token);

} // namespace msiv2::platform
