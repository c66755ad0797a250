#pragma once

// The module's rules that msiv2-fleet applies, in one place: each is the module's own function
// where the module has one (the lifecycle rule, the retry schedules), so a change to those
// changes the simulation. The two renewal backoffs are written inline in the actors today
// (token_service's retry_renewal, cert_issuer's failed-renewal reschedule); they are mirrored
// here with the function that holds them; the module check (module_check.hpp: the token-outage
// scenario's calls against the real modules') catches a copy that drifted.

#include <chrono>
#include <cstdint>
#include <optional>

#include "io/http.hpp"
#include "io/retry.hpp"
#include "platform/lifecycle.hpp"

namespace msiv2::fleet::rules {

/// The schedule of an artifact valid from t0 to t1 (platform::plan_lifecycle).
inline platform::lifecycle plan(std::int64_t t0, std::int64_t t1,
                                std::optional<std::int64_t> refresh_in,
                                const platform::jitter_source& draw) {
  return platform::plan_lifecycle(t0, t1, refresh_in, draw);
}

/// The delay before retrying an upstream call that answered `status` (0: connection reset),
/// or nullopt when the module gives up (io::next_retry_delay).
inline std::optional<std::int64_t> retry_delay_ms(io::retry_leg leg, io::retry_state& state,
                                                  int status,
                                                  const platform::jitter_source& draw) {
  static const io::http_response reset =
    io::http_response::failure(io::transport_error::reset, "reset");
  static const io::http_response s503 = io::http_response::with_status(503);
  static const io::http_response s500 = io::http_response::with_status(500);
  const io::http_response& r = status == 0 ? reset : status == 503 ? s503 : s500;
  auto d = io::next_retry_delay(leg, state, r, draw, 0);
  if (!d)
    return std::nullopt;
  return d->count();
}

/// token_service: the wait before the next attempt of a failed background token renewal,
/// after `failures` failed attempts (actors/token_service.cpp, retry_renewal: 1 s doubling to
/// 60 s, no jitter).
inline std::int64_t token_renewal_backoff_ms(int failures) {
  std::int64_t delay_ms = 1000;
  for (int n = 1; n < failures && delay_ms < 60000; ++n)
    delay_ms *= 2;
  return delay_ms < 60000 ? delay_ms : 60000;
}

/// cert_issuer: the wait before retrying a failed background certificate renewal
/// (actors/cert_issuer.cpp: 30 s << (n - 1), n capped at 6, no jitter).
inline std::int64_t cert_renewal_backoff_ms(int failures) {
  int n = failures < 6 ? failures : 6;
  return std::int64_t{30'000} << (n - 1);
}

} // namespace msiv2::fleet::rules
