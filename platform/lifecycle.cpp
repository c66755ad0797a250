#include "platform/lifecycle.hpp"

#include <algorithm>
#include <limits>

namespace msiv2::platform {

namespace {

constexpr std::int64_t five_minutes_ms = 5 * 60 * 1000;

} // namespace

std::optional<std::int64_t> unix_seconds_to_ms(std::int64_t seconds) noexcept {
  if (seconds < 0 || seconds > max_unix_seconds)
    return std::nullopt;
  return seconds * 1000;
}

std::int64_t clamp_seconds_to_ms(std::int64_t seconds, std::int64_t max_ms) noexcept {
  if (seconds <= 0)
    return 0;
  if (max_ms < 0)
    max_ms = 0;
  if (seconds > max_ms / 1000)
    return max_ms;
  return std::min(seconds * 1000, max_ms);
}

std::int64_t saturating_add(std::int64_t a, std::int64_t b) noexcept {
  std::int64_t out = 0;
  if (__builtin_add_overflow(a, b, &out))
    return b > 0 ? std::numeric_limits<std::int64_t>::max()
                 : std::numeric_limits<std::int64_t>::min();
  return out;
}

freshness lifecycle::at(std::int64_t now_ms) const noexcept {
  // An empty plan (its lifetime was not positive) is expired at every time, also at a time
  // before its t0: a clock behind the issuer's does not make it usable.
  if (usable_until_ms <= valid_from_ms || now_ms >= usable_until_ms)
    return freshness::expired;
  if (now_ms >= renew_at_ms)
    return freshness::due;
  return freshness::fresh;
}

lifecycle plan_lifecycle(std::int64_t t0_ms, std::int64_t t1_ms,
                         std::optional<std::int64_t> refresh_in_ms, const jitter_source& draw) {
  lifecycle out;
  out.valid_from_ms = t0_ms;
  out.valid_until_ms = t1_ms;
  std::int64_t life = 0;
  if (__builtin_sub_overflow(t1_ms, t0_ms, &life))
    life = t1_ms > t0_ms ? std::numeric_limits<std::int64_t>::max() : -1;
  if (life <= 0) {
    out.renew_at_ms = t0_ms;
    out.usable_until_ms = t0_ms;
    return out;
  }
  auto margin = std::min(five_minutes_ms, life / 10);
  out.usable_until_ms = t1_ms - margin;
  auto base = refresh_in_ms && *refresh_in_ms > 0 ? std::min(*refresh_in_ms, life) : life / 2;
  auto jitter = margin > 0 ? draw(-margin, margin) : 0;
  out.renew_at_ms =
    std::clamp(saturating_add(saturating_add(t0_ms, base), jitter), t0_ms, out.usable_until_ms);
  return out;
}

} // namespace msiv2::platform
