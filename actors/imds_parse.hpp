#pragma once

// The readers of IMDS v2's answers (protocol.md §2, §6) and of upstream error bodies, as pure
// functions of the bytes that came in and of value inputs: cert_issuer calls them, the unit
// tests and the fuzz targets (tests/fuzz/) call them without an actor.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "io/http.hpp"
#include "messages/protocol.hpp"
#include "messages/token.hpp"
#include "platform/result.hpp"

namespace msiv2 {

/// getplatformmetadata's JSON body read and checked (protocol.md §2: clientId and tenantId
/// GUIDs, attestationEndpoint, cuId with vmId or vmssId), with cuId in its CSR form. The
/// demo's wire walkthrough and the bench's floor client use it too.
result<platform_metadata> parse_platform_metadata(std::string_view body);

/// A 200 answer of getplatformmetadata: it must carry a Server header naming IMDS (else
/// something other than IMDS answered), then its body is read by parse_platform_metadata.
result<platform_metadata> read_metadata_answer(const io::http_response& r);

/// What an issuecredential answer must agree with: the flight's identity, the metadata it
/// was asked with, the key its CSR certified, and whether an attestation went with it.
struct credential_expectation {
  managed_identity identity;
  platform_metadata metadata;
  key_ref key;
  bool attested = false;
  /// Hosts mtls_authentication_endpoint may name (module_config::token_endpoint_hosts); an
  /// empty list trusts none.
  std::vector<std::string> token_hosts;
};

/// issuecredential's 200 body checked against protocol.md §6 and `want` at `now_s` (Unix
/// seconds): every member present, client_id/tenant_id as the metadata's, a certificate that
/// certifies want.key and is valid now, an mtls_authentication_endpoint that passes
/// io::check_endpoint against want.token_hosts (kept in its canonical form). When the certificate certifies another key,
/// `*key_mismatch` (if given) is set: the caller rotates its key.
result<credential> read_credential_answer(std::string_view body,
                                          const credential_expectation& want,
                                          std::int64_t now_s, bool* key_mismatch = nullptr);

/// The upstream's own correlation id when the error body has one ("correlationId" or
/// "correlation_id", not empty; sanitized, at most 100 characters), else `fallback` (our
/// request id).
std::string correlation_of(std::string_view body, const std::string& fallback);

/// What the upstream said, for people: "HTTP <status>: <error_description, message or error
/// of its JSON body, sanitized, at most 300 characters>", or the transport failure.
std::string upstream_says(const io::http_response& r);

/// True when `hay` contains `needle`, ignoring ASCII case (how IMDS answers are classified:
/// a 400 naming "identity", a Server header naming "IMDS").
bool contains_ignoring_case(std::string_view hay, std::string_view needle);

} // namespace msiv2
