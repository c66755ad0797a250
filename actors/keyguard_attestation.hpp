#pragma once

// keyguard_attestation: the attestation_provider that speaks the simulated attestation
// protocol of protocol.md §5 (the real one goes through a closed native library).
//
//   POST {endpoint}/attest/keyguard   (HTTPS, CA from module_config::ca_file)
//   {"public_key":"<base64 SPKI DER>","client_id":"<guid>","nonce":"<random>",
//    "signature":"<base64 RSA-PSS SHA-256 over the nonce bytes>"}
//   -> 200 {"token":"<JWT>"}

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "actors/runtime.hpp"
#include "io/http.hpp"

namespace msiv2 {

/// Builds the attestation request body for `key` and `client_id` with `nonce` (exposed for
/// tests). Fails when the key cannot sign.
result<std::string> keyguard_request_body(const key_ref& key, const std::string& client_id,
                                          const std::string& nonce);

/// Reads a keyguard answer body ({"token":JWT}) into an attestation_token (exp required, iat
/// when present; issued_at_ms is 0 without iat). With `expected_key_id`, a JWT whose key_id
/// claim names another key is refused (a JWT without key_id is accepted: only the simulated
/// protocol promises that claim).
result<attestation_token> read_keyguard_answer(std::string_view body,
                                               const std::string& expected_key_id = {});

/// Why an attestation call failed, for the error a person reads: "attestation service <endpoint>
/// could not be reached (...)" when no HTTP answer came, else "attestation service <endpoint>
/// refused the key (HTTP <status>, <error>: <error_description>)". `step` names the call when
/// the protocol has several ("TPM challenge"), empty otherwise.
std::string attestation_refusal(const std::string& endpoint, const io::http_response& resp,
                                const std::string& step = {});

/// The simulated-protocol attestation provider. Thread-safe; one attempt per attest() call
/// (attestation_cache drives retries and the one fresh attempt after a refusal). done() gets
/// the HTTP status, 0 when no HTTP answer came; an unusable 200 answer comes with 200.
class keyguard_attestation final : public attestation_provider {
public:
  /// Sends through `transport`, trusting the CAs in `ca_file` (empty: the system store).
  keyguard_attestation(std::shared_ptr<io::transport> transport, std::string ca_file);

  void attest(const key_ref& key, const std::string& endpoint, const std::string& client_id,
              std::chrono::milliseconds timeout,
              std::function<void(result<attestation_token>, int http_status)> done) override;
  /// Sends `correlation_id` as x-ms-client-request-id (a fresh UUID when empty).
  void attest(const key_ref& key, const std::string& endpoint, const std::string& client_id,
              const std::string& correlation_id, std::chrono::milliseconds timeout,
              std::function<void(result<attestation_token>, int http_status)> done) override;

private:
  std::shared_ptr<io::transport> transport_;
  std::string ca_file_;
};

} // namespace msiv2
