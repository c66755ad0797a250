#pragma once

// Small pieces the simulator's authority shares between its endpoints: reading flat JSON
// request bodies, form bodies, AADSTS-shaped OAuth errors and resource-server challenges.
// Private to tools/sim (authority*.cpp).

#include <cstdint>
#include <sys/types.h>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "platform/csr.hpp"
#include "platform/openssl.hpp"
#include "platform/result.hpp"
#include "tools/sim/http.hpp"

namespace msiv2::sim::detail {

/// String members of a JSON object, by name.
using string_members = std::map<std::string, std::string, std::less<>>;

/// Reads the members named in `wanted` from a JSON object body. Other members are skipped;
/// a wanted member that is not a string, appears twice, or a body that is not exactly one
/// JSON object is an error naming it ("csr must be a string").
result<string_members> read_string_members(std::string_view body,
                                           std::initializer_list<std::string_view> wanted);

/// What the CSR of an issuecredential request must name.
struct csr_expectation {
  std::string client_id; ///< the requested identity's client id (subject CN, any case)
  std::string tenant_id; ///< the tenant (subject DC, any case)
  std::string cuid_json; ///< getplatformmetadata's cuId in its CSR form (byte for byte)
  platform::csr_profile profile = platform::csr_profile::strict; ///< which CSR encodings pass
};

/// An issuecredential request body, read and checked.
struct issue_request {
  platform::pkey_ptr subject_key;  ///< the CSR's public key: RSA, at least 2048 bits
  std::string attestation_token;   ///< empty when absent or empty
};

/// Reads an issuecredential body (protocol.md §4): {"csr": base64 DER without PEM armour or
/// line breaks, "attestation_token"?}; the CSR must parse, carry a valid self-signature and
/// name `want`'s client id, tenant and cuId. The error is the description of the 400 answer.
result<issue_request> read_issue_request(std::string_view body, const csr_expectation& want);

/// Parameters of an application/x-www-form-urlencoded body, decoded, in order.
using form_fields = std::vector<std::pair<std::string, std::string>>;

/// Splits and decodes a form body; an error names a malformed escape.
result<form_fields> parse_form(std::string_view body);

/// "2024-05-01 12:34:56Z", the timestamp form of Entra ID error bodies.
std::string aad_timestamp(std::int64_t unix_seconds);

/// An Entra ID (ESTS) error answer: {"error","error_description":"AADSTS<code>: <message>
/// Trace ID: .. Correlation ID: .. Timestamp: ..","error_codes":[code],"timestamp",
/// "trace_id","correlation_id"}. `correlation_id` empty = a fresh one.
response aad_error(int status, std::string_view error, int code, std::string_view message,
                   std::string_view correlation_id, std::int64_t now_unix);

/// A resource-server refusal: 401, `WWW-Authenticate: <scheme> error="<error>",
/// error_description="<description>"` and the same as a JSON body. `description` must not
/// contain a double quote.
response resource_refusal(std::string_view scheme, std::string_view error,
                          std::string_view description);

/// ASCII case-insensitive equality.
bool iequals(std::string_view a, std::string_view b);

/// Replaces `path` with `content` (mode `mode`) through a temp file of a random name in the
/// same directory, created O_CREAT|O_EXCL|O_NOFOLLOW (a symlink or file planted at a
/// predictable name is never followed nor truncated; review L11), fsync-ed and renamed over
/// `path`. `what` names the file in errors ("ready file").
result<void> write_file_safely(const std::string& path, std::string_view content, mode_t mode,
                               std::string_view what);

/// Checks an existing directory the simulator keeps state in (its CA key among it): a real
/// directory, not a symlink, owned by this user and writable by nobody else.
result<void> check_state_dir(const std::string& dir);

/// ASCII lower case.
std::string to_lower(std::string_view s);

} // namespace msiv2::sim::detail
