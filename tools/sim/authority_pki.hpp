#pragma once

// The simulator's keys and certificates, made once when the authority is created:
// the TLS root and server leaf, the binding-certificate issuing CA (generated or loaded),
// the attestation signing key and the token signing key. Private to tools/sim.

#include <cstdint>
#include <string>

#include "platform/openssl.hpp"
#include "platform/result.hpp"
#include "tools/sim/config.hpp"

namespace msiv2::sim::detail {

/// Subject CN of the generated binding-certificate issuer (protocol.md §6).
inline constexpr const char* issuer_cn = "managedidentitysnissuer.login.microsoft.com";
/// Subject CN of the TLS root written to ca.pem.
inline constexpr const char* tls_root_cn = "msiv2-sim TLS root";

/// Everything authority_pki_create() makes. Immutable afterwards (safe to share between
/// threads: OpenSSL 3 keys and certificates may be used concurrently once built).
struct authority_pki {
  std::string state_dir;
  std::string ca_file;          ///< <state_dir>/ca.pem, the TLS root
  std::string server_chain_pem; ///< leaf then root
  std::string server_key_pem;
  platform::x509_ptr issuer_cert; ///< binding-certificate issuing CA
  platform::pkey_ptr issuer_key;
  platform::pkey_ptr attestation_key;
  platform::pkey_ptr token_key;
  std::string token_kid;        ///< key id (protocol.md §3) of token_key
  std::string jwks_json;        ///< {"keys":[...]} of token_key
};

/// Makes the keys and certificates and writes ca.pem. `state_dir` empty = a fresh
/// directory under $TMPDIR (or /tmp); a missing directory is created with mode 0700.
/// Errors name the file or step that failed.
result<authority_pki> authority_pki_create(const config& cfg, std::string state_dir,
                                           std::int64_t now_unix);

} // namespace msiv2::sim::detail
