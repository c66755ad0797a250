#include <boost/test/unit_test.hpp>

#include <chrono>

#include "platform/clock.hpp"

using namespace msiv2::platform;
using namespace std::chrono;

BOOST_AUTO_TEST_SUITE(platform_clock_test)

BOOST_AUTO_TEST_CASE(derived_clock_moves_with_its_monotonic_source) {
  auto mono = steady_clock::time_point{} + hours(5);
  derived_wall_clock clock(1'700'000'000'000, [&] { return mono; });
  BOOST_CHECK_EQUAL(clock.now_ms(), 1'700'000'000'000);
  mono += minutes(30);
  BOOST_CHECK_EQUAL(clock.now_ms(), 1'700'000'000'000 + 30 * 60 * 1000);
  BOOST_CHECK_EQUAL(clock.now_s(), 1'700'000'000 + 30 * 60);
}

BOOST_AUTO_TEST_CASE(derived_clock_jump_models_a_wall_clock_correction) {
  auto mono = steady_clock::time_point{};
  derived_wall_clock clock(1'000'000, [&] { return mono; });
  clock.jump(-500'000);
  BOOST_CHECK_EQUAL(clock.now_ms(), 500'000);
  mono += seconds(1);
  BOOST_CHECK_EQUAL(clock.now_ms(), 501'000);
}

BOOST_AUTO_TEST_CASE(system_clock_reads_plausible_unix_time) {
  // 2020-01-01 .. 2100-01-01: catches a seconds/milliseconds mix-up.
  auto now = system_wall_clock()->now_ms();
  BOOST_CHECK_GT(now, 1'577'836'800'000);
  BOOST_CHECK_LT(now, 4'102'444'800'000);
}

BOOST_AUTO_TEST_SUITE_END()
