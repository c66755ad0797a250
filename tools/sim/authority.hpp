#pragma once

// The simulator's authorities: the TLS root and server certificate, the binding-certificate
// issuer (CN managedidentitysnissuer.login.microsoft.com), the attestation service, the
// token endpoint with its JWKS, and the resource server. Thread-safe: every method may be
// called from any of the server's I/O threads.
//
// The HTTP layer (server.cpp, imds.cpp) routes, applies faults, counts, and does the IMDS
// header/selector checks; these methods do the rest of protocol.md §5–§7 and §10.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "platform/result.hpp"
#include "tools/sim/config.hpp"
#include "tools/sim/http.hpp"

namespace msiv2::sim {

/// Unix seconds as the simulator sees them (real time plus an admin-set offset).
using unix_clock = std::function<std::int64_t()>;

/// The public URLs the authority puts into what it issues.
struct authority_urls {
  std::string attestation; ///< https://127.0.0.1:P  (metadata attestationEndpoint; JWT iss)
  std::string token;       ///< https://127.0.0.1:P  (issuecredential mtls_authentication_endpoint)
};

/// One binding certificate the simulator issued.
struct issued_cert {
  std::string serial_hex;
  std::string x5t_s256;
  std::string client_id;
  std::int64_t not_after = 0;
  bool attested = false;
  /// The attestation_type claim of the attestation token ("keyguard", "tpm"); empty when
  /// the request carried none.
  std::string attestation_type;
  bool revoked = false;
};

class authority {
public:
  /// Generates the keys and certificates (or loads the issuing CA from cfg.ca_cert_file /
  /// cfg.ca_key_file) and writes `<state_dir>/ca.pem` (the TLS root clients must trust).
  static result<std::unique_ptr<authority>> create(const config& cfg, std::string state_dir,
                                                   unix_clock now);
  virtual ~authority() = default;

  /// Path of the PEM file clients use as their CA bundle.
  virtual const std::string& ca_file() const = 0;
  /// PEM of the TLS server certificate (SAN 127.0.0.1, localhost) followed by the root.
  virtual const std::string& server_chain_pem() const = 0;
  /// PEM of the TLS server private key.
  virtual const std::string& server_key_pem() const = 0;
  /// Called once the listeners are bound, before any request.
  virtual void set_urls(authority_urls urls) = 0;

  /// POST issuecredential for `who`, after the IMDS layer checked headers and selector.
  /// Body {"csr","attestation_token"}; every CSR rule, the cuId, the attestation policy.
  virtual response issue_credential(const request& req, const identity& who) = 0;
  /// POST /attest/keyguard (protocol.md §5).
  virtual response attest(const request& req) = 0;
  /// POST /attest/tpm/challenge (README "TPM attestation"): the EK, AK and binding key
  /// checks and the MakeCredential challenge. 404 when no tpm_ek_ca is configured.
  virtual response attest_tpm_challenge(const request& req) = 0;
  /// POST /attest/tpm/proof: the activated secret and the certification checked, then the
  /// attestation JWT of a TPM-attested, non-exportable key ({"token":JWT}, as keyguard).
  virtual response attest_tpm_proof(const request& req) = 0;
  /// POST /{tenant}/oauth2/v2.0/token over mTLS (protocol.md §7 and §10).
  virtual response token(const request& req) = 0;
  /// GET /{tenant}/discovery/v2.0/keys: the token signing key as a JWKS.
  virtual response jwks(const request& req) = 0;
  /// Any request on the resource listener: checks Authorization (mtls_pop bound to the
  /// presented certificate, or Bearer); 200 JSON or 401 with WWW-Authenticate.
  virtual response resource(const request& req) = 0;
  /// Mints the v1 bearer token for `who` and `resource`; returns the whole v1 JSON answer
  /// body (all values strings, protocol.md §8).
  virtual result<std::string> v1_token_response(const identity& who, std::string_view resource) = 0;

  /// Revokes an issued certificate by serial (hex) or x5t#S256; an error when unknown.
  virtual result<void> revoke(std::string_view serial_or_thumbprint) = 0;
  /// The certificates issued so far.
  virtual std::vector<issued_cert> issued() const = 0;
  /// Forgets issued certificates, revocations and pending TPM challenges (keys and CAs stay).
  virtual void reset() = 0;
};

} // namespace msiv2::sim
