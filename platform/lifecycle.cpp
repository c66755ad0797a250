#include "platform/lifecycle.hpp"

#include <algorithm>

namespace msiv2::platform {

namespace {

constexpr std::int64_t five_minutes_ms = 5 * 60 * 1000;

} // namespace

freshness lifecycle::at(std::int64_t now_ms) const noexcept {
  if (now_ms >= usable_until_ms)
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
  auto life = t1_ms - t0_ms;
  if (life <= 0) {
    out.renew_at_ms = t0_ms;
    out.usable_until_ms = t0_ms;
    return out;
  }
  auto margin = std::min(five_minutes_ms, life / 10);
  out.usable_until_ms = t1_ms - margin;
  auto base = refresh_in_ms && *refresh_in_ms > 0 ? std::min(*refresh_in_ms, life) : life / 2;
  auto jitter = margin > 0 ? draw(-margin, margin) : 0;
  out.renew_at_ms = std::clamp(t0_ms + base + jitter, t0_ms, out.usable_until_ms);
  return out;
}

} // namespace msiv2::platform
