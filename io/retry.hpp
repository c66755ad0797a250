#pragma once

// The retry schedules of protocol.md §9 as one pure function. Actors drive their own retries
// (delayed messages on the actor clock); this decides whether and after how long. Callers
// also refuse a delay that would end past their deadline.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "msiv2/io/http.hpp"
#include "msiv2/platform/lifecycle.hpp"

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
  /// Longest Retry-After honoured: a longer one (up to 31 years, or any HTTP date) is cut to
  /// this (module_config::max_retry_after). Callers still refuse a delay past their deadline.
  std::chrono::milliseconds max_retry_after{60'000};
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

/// The delay before the next background renewal attempt after `failures` (>= 1) failed ones:
/// full jitter, uniform in [0, min(cap, base * 2^(failures-1))] and at least 1 ms, so renewals
/// that failed together (an outage) do not retry together.
std::chrono::milliseconds renewal_retry_delay(int failures, std::chrono::milliseconds base,
                                              std::chrono::milliseconds cap,
                                              const platform::jitter_source& draw);

/// What a retry_governor allows.
struct retry_governor_settings {
  /// Retries that may be made back to back (the bucket's size).
  double budget = 20;
  /// Retries earned back per minute (continuous refill).
  double refill_per_minute = 30;
  /// Consecutive failures (5xx, timeouts, connection failures) of one upstream that open its
  /// circuit.
  int circuit_failures = 5;
  /// How long an open circuit refuses calls before it lets one probe call through (drawn
  /// uniformly in [open/2, open] each time it opens).
  std::chrono::milliseconds circuit_open{10'000};
  /// Upstreams tracked at once (only failing ones are tracked; beyond it, a new one is treated
  /// as healthy).
  std::size_t max_upstreams = 256;
};

/// The per-process retry budget (a token bucket, as the AWS SDKs' retry quota) and one circuit
/// per upstream (H3). Shared by every actor of one module (runtime_deps::retries) and
/// thread-safe. Time is the caller's monotonic (actor) clock, so it runs on virtual time in
/// tests.
///
/// - take_retry(): every retry (a repeated call, a background renewal retry) takes one unit;
///   none left: the retry is not made (the caller fails, or a renewal waits for its next
///   backoff step). The bucket refills continuously and a success gives one unit back.
/// - admit()/record(): after circuit_failures consecutive failures an upstream's circuit opens
///   and admit() refuses every call to it until the open time passed; then one probe call is
///   admitted (half-open): its success closes the circuit, its failure opens it again.
class retry_governor {
public:
  using time_point = std::chrono::steady_clock::time_point;

  explicit retry_governor(retry_governor_settings settings, platform::jitter_source draw);

  /// Takes one retry from the budget; false when it is empty.
  bool take_retry(time_point now);
  /// Whether a call to `upstream` may go out now.
  bool admit(const std::string& upstream, time_point now);
  /// Reports how a call to `upstream` ended: `failed` for 5xx, timeouts and connection
  /// failures (an upstream that answered anything else is up).
  void record(const std::string& upstream, bool failed, time_point now);
  /// While `upstream`'s circuit is open: when it admits its next probe call.
  std::optional<time_point> open_until(const std::string& upstream, time_point now) const;
  /// Retries refused because the budget was empty, and circuits opened, since the start.
  std::uint64_t retries_refused() const;
  std::uint64_t circuits_opened() const;

  const retry_governor_settings& settings() const noexcept { return settings_; }

private:
  struct circuit {
    int failures = 0;
    bool open = false;
    time_point reopen_at{};   ///< open: when the next probe may go
    bool probing = false;     ///< half-open: the probe call is out
    time_point probe_sent{};
  };

  void refill_locked(time_point now);

  retry_governor_settings settings_;
  platform::jitter_source draw_;
  mutable std::mutex mutex_;
  double tokens_;
  time_point refilled_at_{};
  bool started_ = false;
  std::map<std::string, circuit> circuits_;
  std::uint64_t retries_refused_ = 0;
  std::uint64_t circuits_opened_ = 0;
};

/// Whether an answer counts against an upstream's circuit: 5xx, or no answer (timeout,
/// connection failure, reset). 4xx, 429 included, means the upstream is up.
bool upstream_failed(const http_response& r) noexcept;

} // namespace msiv2::io
