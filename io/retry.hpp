#pragma once

// The retry schedules of protocol.md §9 as one pure function. Actors drive their own retries
// (delayed messages on the actor clock); this decides whether and after how long. Callers
// also refuse a delay that would end past their deadline.

#include <chrono>
#include <optional>

#include "io/http.hpp"
#include "platform/lifecycle.hpp"

namespace msiv2::io {

/// Which upstream leg a call is on.
enum class retry_leg {
  imds_probe,     ///< header-less probe: 404 and 400 are answers, not retried
  imds,           ///< getplatformmetadata, issuecredential, v1 token
  attestation,    ///< the attestation service
  token_endpoint, ///< the mTLS token endpoint
};

/// What a retry loop remembers between attempts.
struct retry_state {
  int attempts = 0;        ///< attempts made so far (the first call counts)
  int first_status = 0;    ///< status of the first HTTP answer (0 until one came)
};

/// The delay before the next attempt, or nullopt when `last` must not be retried (success,
/// a non-retryable answer, or the schedule is used up). Updates `state`.
///
/// - imds: 404, 408, 410, 429, 5xx, timeouts and connection failures; when the first answer
///   was 410, every 10 s up to 7 retries, else 3 retries at 1, 2, 4 s.
/// - imds_probe: as imds but 404 is an answer (v1-only host), and a refused connection
///   means no IMDS (not retried).
/// - attestation: 5xx, 429, timeouts; exponential from 1 s, x2, cap 30 s, full jitter, up to 6
///   retries.
/// - token_endpoint: 5xx without Retry-After, or a connection closed before a complete
///   answer (transport_error::reset: reset, truncated body), once after 1 s; 429 or any
///   Retry-After: the Retry-After value (see retry_after()), once. Other transport failures
///   (connect, TLS, timeout) are not retried.
/// Every delay but Retry-After gets jitter from `draw` (+-20 % unless full jitter).
std::optional<std::chrono::milliseconds> next_retry_delay(retry_leg leg, retry_state& state,
                                                          const http_response& last,
                                                          const platform::jitter_source& draw,
                                                          std::int64_t now_unix_s);

/// The Retry-After header as a delay (delta-seconds or HTTP-date against `now_unix_s`);
/// nullopt when absent or malformed.
std::optional<std::chrono::milliseconds> retry_after(const http_response& r,
                                                     std::int64_t now_unix_s);

} // namespace msiv2::io
