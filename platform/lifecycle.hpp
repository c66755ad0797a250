#pragma once

// The one lifecycle rule of architecture.md for every renewable artifact (attestation JWT,
// binding certificate, access token). Pure arithmetic on Unix milliseconds: callers bring the
// wall time and the random draw, so the rule is tested exactly.

#include <cstdint>
#include <functional>
#include <optional>

namespace msiv2::platform {

/// Where an artifact stands at a given time.
enum class freshness {
  fresh,   ///< now < renew_at: serve it
  due,     ///< renew_at <= now < usable_until: serve it and start one background renewal
  expired, ///< now >= usable_until: callers wait for the renewal
};

/// The schedule of one artifact version.
struct lifecycle {
  std::int64_t valid_from_ms = 0;   ///< t0: iat / notBefore / receipt
  std::int64_t valid_until_ms = 0;  ///< t1: exp / notAfter / receipt + expires_in
  std::int64_t renew_at_ms = 0;     ///< r = t0 + L/2 (or refresh_in) + j
  std::int64_t usable_until_ms = 0; ///< u = t1 - min(5 min, L/10)

  /// The state at `now_ms`. A plan whose lifetime was not positive (usable_until at or
  /// before valid_from) is expired whatever `now_ms` is.
  freshness at(std::int64_t now_ms) const noexcept;
};

/// The latest Unix time (seconds) taken from an upstream or a file: 9999-12-31T23:59:59Z. A
/// later one is refused: its milliseconds, or a duration from now to it on a nanosecond
/// clock, would overflow (review M1).
inline constexpr std::int64_t max_unix_seconds = 253402300799;

/// Unix seconds from outside as Unix milliseconds; nullopt outside [0, max_unix_seconds].
std::optional<std::int64_t> unix_seconds_to_ms(std::int64_t seconds) noexcept;

/// A relative lifetime in seconds from outside (expires_in, refresh_in) as milliseconds,
/// clamped into [0, max_ms] without overflow whatever the value.
std::int64_t clamp_seconds_to_ms(std::int64_t seconds, std::int64_t max_ms) noexcept;

/// a + b, saturating at the limits of int64 instead of overflowing.
std::int64_t saturating_add(std::int64_t a, std::int64_t b) noexcept;

/// Draws a uniform integer in [lo, hi]; the real one is platform::random_between (CSPRNG).
using jitter_source = std::function<std::int64_t(std::int64_t lo, std::int64_t hi)>;

/// Plans an artifact valid from `t0_ms` to `t1_ms`. With L = t1 - t0 and J = min(5 min, L/10):
/// renew_at = t0 + (refresh_in_ms when given, else L/2) + j with j uniform in [-J, +J],
/// clamped into [t0, usable_until]; usable_until = t1 - J. A non-positive L (t1 at or before
/// t0, or t1 - t0 below int64's range) gives an artifact that is expired at every time.
lifecycle plan_lifecycle(std::int64_t t0_ms, std::int64_t t1_ms,
                         std::optional<std::int64_t> refresh_in_ms, const jitter_source& draw);

} // namespace msiv2::platform
