#pragma once

// The module's error codes. Every failure a caller sees is a caf::error in category
// "msiv2" whose context carries (description, upstream HTTP status, correlation id): see
// make_msiv2_error() and describe().
//
// A malformed upstream answer (not JSON, a member missing or of the wrong type, a value that
// cannot be used) keeps the code of the leg it came from, so that the code tells which leg
// failed; the description reads "malformed <leg> response: <what>", naming the member:
//
//   leg (protocol.md)               code                 description starts with
//   getplatformmetadata (§2)        metadata_failed      malformed getplatformmetadata response:
//   attestation (§5)                attestation_failed   malformed attestation response:
//   issuecredential (§6)            issuance_refused     malformed issuecredential response:
//   mTLS token endpoint (§7)        invalid_response     malformed token endpoint response:
//   IMDS v1 token (§8)              invalid_response     malformed IMDS v1 token response:
//
// A malformed body is not retried on a schedule (it is no outage); attestation alone gets one
// fresh attempt first (architecture.md "Failure handling"). A body cut short (connection
// closed before Content-Length) is a network failure, retried per §9, then transport_failed.

#include <cstdint>
#include <string>

#include <caf/error.hpp>
#include <caf/make_message.hpp>

namespace msiv2 {

/// What went wrong, by class. Stable numbers: msiv2-token maps them to exit codes.
enum class error_code : std::uint8_t {
  none = 0,
  /// The request itself is malformed (empty resource, bad identity id, past deadline).
  invalid_request = 1,
  /// The request's deadline passed before an answer could be had.
  deadline_exceeded = 2,
  /// No IMDS answered the probe (not on Azure, or the metadata service is down).
  imds_unavailable = 3,
  /// The host only has IMDS v1: mTLS PoP tokens cannot be had here (never downgraded).
  v1_only_host = 4,
  /// IMDS v2 is turned off by the kill switch; mTLS PoP requests fail closed.
  v2_disabled = 5,
  /// getplatformmetadata failed or answered something that is not IMDS.
  metadata_failed = 6,
  /// IMDS does not know the requested identity.
  identity_not_found = 7,
  /// The binding key could not be created, opened or proven.
  key_failed = 8,
  /// Attestation of the binding key failed.
  attestation_failed = 9,
  /// issuecredential refused or answered an unusable certificate.
  issuance_refused = 10,
  /// The token endpoint refused the request.
  token_refused = 11,
  /// An upstream asked us to back off (429 / Retry-After); identical requests are refused
  /// until then.
  throttled = 12,
  /// The network failed (connect, TLS, reset) after the retries allowed.
  transport_failed = 13,
  /// The token endpoint or IMDS v1 answered a malformed token response (the other legs'
  /// malformed answers carry their own codes: see the table at the top).
  invalid_response = 14,
  /// An actor of the module failed while serving the request.
  internal_failure = 15,
  /// The module is shutting down.
  shutting_down = 16,
  /// The request asked for a stronger binding (token_request::min_binding) than this host
  /// can give; the description says what is missing. Never downgraded.
  binding_too_weak = 17,
  /// Too many requests are waiting already (module_config::max_pending_requests, or the
  /// transport's bound): refused at once instead of queued; retry with backoff or raise the
  /// bound.
  overloaded = 18,
};

/// Human-readable name of a code ("v1_only_host").
const char* to_string(error_code code) noexcept;

/// A caf::error in the msiv2 category: `description` says what happened and what to do,
/// `http_status` is the upstream status (0 when none), `correlation_id` the upstream's or
/// our request id (empty when none). Never put a token, JWT or key into the description.
caf::error make_msiv2_error(error_code code, std::string description, int http_status = 0,
                            std::string correlation_id = {});

/// The parts of an msiv2 error (any other caf::error maps to internal_failure with CAF's
/// rendering as the description).
struct error_info {
  error_code code = error_code::none;
  std::string description;
  int http_status = 0;
  std::string correlation_id;
};

/// Reads the parts back from a caf::error made by make_msiv2_error.
error_info describe(const caf::error& err);

/// One line for people: "v1_only_host: <description> (HTTP 404, correlation id ...)".
std::string render(const caf::error& err);

} // namespace msiv2

CAF_ERROR_CODE_ENUM(msiv2::error_code, "msiv2")
