#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <limits>
#include <optional>

#include "platform/encoding.hpp"
#include "platform/lifecycle.hpp"

using namespace msiv2::platform;

namespace {

constexpr std::int64_t s = 1000;
constexpr std::int64_t min = 60 * s;
constexpr std::int64_t hour = 60 * min;

jitter_source fixed(std::int64_t v) {
  return [v](std::int64_t lo, std::int64_t hi) {
    BOOST_REQUIRE_LE(lo, v);
    BOOST_REQUIRE_GE(hi, v);
    return v;
  };
}

jitter_source lowest = [](std::int64_t lo, std::int64_t) { return lo; };
jitter_source highest = [](std::int64_t, std::int64_t hi) { return hi; };

} // namespace

BOOST_AUTO_TEST_SUITE(platform_lifecycle_test)

BOOST_AUTO_TEST_CASE(renews_at_half_life_without_jitter) {
  auto l = plan_lifecycle(0, 24 * hour, std::nullopt, fixed(0));
  BOOST_CHECK_EQUAL(l.renew_at_ms, 12 * hour);
  BOOST_CHECK_EQUAL(l.usable_until_ms, 24 * hour - 5 * min);
}

BOOST_AUTO_TEST_CASE(jitter_is_bounded_by_five_minutes_on_long_lifetimes) {
  auto lo = plan_lifecycle(0, 7 * 24 * hour, std::nullopt, lowest);
  auto hi = plan_lifecycle(0, 7 * 24 * hour, std::nullopt, highest);
  BOOST_CHECK_EQUAL(lo.renew_at_ms, 84 * hour - 5 * min);
  BOOST_CHECK_EQUAL(hi.renew_at_ms, 84 * hour + 5 * min);
}

BOOST_AUTO_TEST_CASE(jitter_is_bounded_by_a_tenth_of_short_lifetimes) {
  // L = 60 s: J = 6 s, r in [24 s, 36 s], u = 54 s.
  auto lo = plan_lifecycle(1000 * s, 1060 * s, std::nullopt, lowest);
  auto hi = plan_lifecycle(1000 * s, 1060 * s, std::nullopt, highest);
  BOOST_CHECK_EQUAL(lo.renew_at_ms, 1024 * s);
  BOOST_CHECK_EQUAL(hi.renew_at_ms, 1036 * s);
  BOOST_CHECK_EQUAL(lo.usable_until_ms, 1054 * s);
}

BOOST_AUTO_TEST_CASE(refresh_in_replaces_half_life) {
  auto l = plan_lifecycle(0, 24 * hour, 6 * hour, fixed(0));
  BOOST_CHECK_EQUAL(l.renew_at_ms, 6 * hour);
}

BOOST_AUTO_TEST_CASE(renewal_never_falls_after_usable_until) {
  // refresh_in beyond the lifetime is clamped: renew no later than u.
  auto l = plan_lifecycle(0, 10 * min, 20 * min, highest);
  BOOST_CHECK_EQUAL(l.renew_at_ms, l.usable_until_ms);
}

BOOST_AUTO_TEST_CASE(states_follow_fresh_due_expired) {
  auto l = plan_lifecycle(0, 100 * s, std::nullopt, fixed(0));
  BOOST_CHECK(l.at(0) == freshness::fresh);
  BOOST_CHECK(l.at(50 * s - 1) == freshness::fresh);
  BOOST_CHECK(l.at(50 * s) == freshness::due);
  BOOST_CHECK(l.at(90 * s - 1) == freshness::due);
  BOOST_CHECK(l.at(90 * s) == freshness::expired);
  BOOST_CHECK(l.at(200 * s) == freshness::expired);
}

BOOST_AUTO_TEST_CASE(empty_or_inverted_lifetime_is_expired_at_once) {
  auto l = plan_lifecycle(5 * s, 5 * s, std::nullopt, fixed(0));
  BOOST_CHECK(l.at(5 * s) == freshness::expired);
  auto inverted = plan_lifecycle(10 * s, 5 * s, std::nullopt, fixed(0));
  // Also before its t0 (our clock behind the issuer's): never usable.
  BOOST_CHECK(inverted.at(0) == freshness::expired);
  BOOST_CHECK(inverted.at(10 * s) == freshness::expired);
  BOOST_CHECK(l.at(0) == freshness::expired);
}

BOOST_AUTO_TEST_CASE(csprng_draws_spread_renewals_across_the_whole_window) {
  // 2,000 draws with the real CSPRNG over L = 1000 s (J = 100 s): every draw in bounds and
  // both tenths of the window reached (a constant or one-sided jitter fails this).
  jitter_source real = [](std::int64_t lo, std::int64_t hi) { return random_between(lo, hi); };
  bool low_seen = false;
  bool high_seen = false;
  for (int i = 0; i < 2000; ++i) {
    auto l = plan_lifecycle(0, 1000 * s, std::nullopt, real);
    BOOST_REQUIRE_GE(l.renew_at_ms, 400 * s);
    BOOST_REQUIRE_LE(l.renew_at_ms, 600 * s);
    low_seen = low_seen || l.renew_at_ms < 420 * s;
    high_seen = high_seen || l.renew_at_ms > 580 * s;
  }
  BOOST_CHECK(low_seen);
  BOOST_CHECK(high_seen);
}

BOOST_AUTO_TEST_CASE(extreme_times_plan_without_overflow) {
  auto zero = [](std::int64_t, std::int64_t) { return std::int64_t{0}; };
  const auto max = std::numeric_limits<std::int64_t>::max();
  const auto min = std::numeric_limits<std::int64_t>::min();
  // A hostile iat of -2^63 with an exp of 2^63-1 (L would be 2^64).
  auto huge = plan_lifecycle(min, max, std::nullopt, zero);
  BOOST_CHECK_LE(huge.renew_at_ms, huge.usable_until_ms);
  BOOST_CHECK_GE(huge.renew_at_ms, min);
  auto late = plan_lifecycle(max - 10, max, std::int64_t{max}, zero);
  BOOST_CHECK_LE(late.renew_at_ms, late.usable_until_ms);
  BOOST_CHECK(plan_lifecycle(max, min, std::nullopt, zero).at(0) == freshness::expired);
}

BOOST_AUTO_TEST_CASE(upstream_seconds_convert_with_clamps_not_overflow) {
  const auto max = std::numeric_limits<std::int64_t>::max();
  BOOST_CHECK(!unix_seconds_to_ms(max));
  BOOST_CHECK(!unix_seconds_to_ms(-1));
  BOOST_CHECK(!unix_seconds_to_ms(max_unix_seconds + 1));
  BOOST_CHECK_EQUAL(*unix_seconds_to_ms(1'800'000'000), 1'800'000'000'000);
  BOOST_CHECK_EQUAL(clamp_seconds_to_ms(max, 172'800'000), 172'800'000);
  BOOST_CHECK_EQUAL(clamp_seconds_to_ms(9'223'372'036'854'775, 172'800'000), 172'800'000);
  BOOST_CHECK_EQUAL(clamp_seconds_to_ms(-1, 172'800'000), 0);
  BOOST_CHECK_EQUAL(clamp_seconds_to_ms(3600, 172'800'000), 3'600'000);
  BOOST_CHECK_EQUAL(saturating_add(max, 1), max);
  BOOST_CHECK_EQUAL(saturating_add(std::numeric_limits<std::int64_t>::min(), -1),
                    std::numeric_limits<std::int64_t>::min());
}

BOOST_AUTO_TEST_SUITE_END()
