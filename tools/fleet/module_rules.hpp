#pragma once

// The module's rules that msiv2-fleet applies, in one place: each is the module's own function
// where the module has one (the lifecycle rule, the retry schedules, the renewal backoffs, the
// retry budget) with the module's defaults (module_config), so a change to those changes the
// simulation; the module check (module_check.hpp: the token-outage scenario's calls against
// the real modules') catches a rule that drifted.

#include <chrono>
#include <cstdint>
#include <optional>

#include "actors/runtime.hpp"
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

/// The module's defaults (module_config) for the rules below.
inline const module_config& defaults() {
  static const module_config config;
  return config;
}

/// token_service: the wait before the next attempt of a failed background token renewal,
/// after `failures` failed attempts (actors/token_service.cpp, retry_renewal:
/// io::renewal_retry_delay, full jitter up to renewal_retry_base doubling to renewal_retry_cap).
inline std::int64_t token_renewal_backoff_ms(int failures, const platform::jitter_source& draw) {
  return io::renewal_retry_delay(failures, defaults().renewal_retry_base,
                                 defaults().renewal_retry_cap, draw)
    .count();
}

/// cert_issuer: the wait before retrying a failed background certificate renewal
/// (actors/cert_issuer.cpp, fail_flight: io::renewal_retry_delay, full jitter up to
/// 30 s << (n - 1), n capped at 6).
inline std::int64_t cert_renewal_backoff_ms(int failures, const platform::jitter_source& draw) {
  int n = failures < 6 ? failures : 6;
  return io::renewal_retry_delay(n, std::chrono::milliseconds(30'000),
                                 std::chrono::milliseconds(std::int64_t{30'000} << 5), draw)
    .count();
}

/// token_service's idle window (module_config::token_idle_window, review H1): a token nobody
/// asked for within it is not renewed and lapses. The model does not apply it: every token of
/// its processes is asked at least every params::request_interval_ms, which must be shorter
/// (module_check refuses a longer one), so no token is ever idle there.
inline std::int64_t token_idle_window_ms() {
  return defaults().token_idle_window.count();
}

/// One process's retry budget (io::retry_governor from module_config::retry_policy, as
/// module::start makes it), on the model's clock (ms since the run's start, >= 0). The module
/// takes from it for each retry of a failed background token renewal (token_service, renew).
class governor {
public:
  explicit governor(const platform::jitter_source& draw) : g_(defaults().retry_policy, draw) {}
  bool take_retry(std::int64_t t) { return g_.take_retry(at(t)); }

private:
  static std::chrono::steady_clock::time_point at(std::int64_t t) {
    return std::chrono::steady_clock::time_point{} + std::chrono::milliseconds(t);
  }
  io::retry_governor g_;
};

} // namespace msiv2::fleet::rules
