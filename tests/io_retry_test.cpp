#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "io/http_parse.hpp"
#include "io/retry.hpp"

using namespace msiv2::io;
using std::chrono::milliseconds;

namespace {

msiv2::platform::jitter_source no_jitter = [](std::int64_t lo, std::int64_t hi) {
  return lo <= 0 && hi >= 0 ? 0 : lo;
};
msiv2::platform::jitter_source max_jitter = [](std::int64_t, std::int64_t hi) { return hi; };

http_response status(int s) {
  return http_response::with_status(s);
}

/// Delays until the schedule gives up, answering every attempt with `r`.
std::vector<long> schedule(retry_leg leg, const http_response& r,
                           const msiv2::platform::jitter_source& draw = no_jitter) {
  retry_state st;
  std::vector<long> out;
  while (auto d = next_retry_delay(leg, st, r, draw, 0))
    out.push_back(static_cast<long>(d->count()));
  return out;
}

} // namespace

BOOST_AUTO_TEST_SUITE(io_retry_test)

BOOST_AUTO_TEST_CASE(imds_retries_three_times_at_one_two_four_seconds) {
  for (int s : {404, 408, 429, 500, 503}) {
    auto got = schedule(retry_leg::imds, status(s));
    BOOST_TEST(got == (std::vector<long>{1000, 2000, 4000}), boost::test_tools::per_element());
  }
}

BOOST_AUTO_TEST_CASE(imds_410_retries_every_ten_seconds_seven_times) {
  auto got = schedule(retry_leg::imds, status(410));
  BOOST_TEST(got == std::vector<long>(7, 10000), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(imds_410_schedule_holds_when_later_answers_differ) {
  retry_state st;
  BOOST_CHECK(next_retry_delay(retry_leg::imds, st, status(410), no_jitter, 0) == milliseconds(10000));
  BOOST_CHECK(next_retry_delay(retry_leg::imds, st, status(503), no_jitter, 0) == milliseconds(10000));
}

BOOST_AUTO_TEST_CASE(imds_does_not_retry_success_or_client_errors) {
  BOOST_CHECK(schedule(retry_leg::imds, status(200)).empty());
  BOOST_CHECK(schedule(retry_leg::imds, status(400)).empty());
  BOOST_CHECK(schedule(retry_leg::imds, status(403)).empty());
}

BOOST_AUTO_TEST_CASE(probe_treats_404_as_an_answer_but_retries_timeouts) {
  BOOST_CHECK(schedule(retry_leg::imds_probe, status(404)).empty());
  BOOST_CHECK(schedule(retry_leg::imds_probe, status(400)).empty());
  auto t = http_response::failure(transport_error::timeout, "timed out");
  BOOST_CHECK_EQUAL(schedule(retry_leg::imds_probe, t).size(), 3u);
}

BOOST_AUTO_TEST_CASE(probe_takes_a_refused_connection_as_no_imds_but_calls_retry_it) {
  auto refused = http_response::failure(transport_error::connect_failed, "connection refused");
  BOOST_CHECK(schedule(retry_leg::imds_probe, refused).empty());
  BOOST_CHECK_EQUAL(schedule(retry_leg::imds, refused).size(), 3u);
}

BOOST_AUTO_TEST_CASE(imds_delays_carry_bounded_jitter) {
  auto got = schedule(retry_leg::imds, status(503), max_jitter);
  BOOST_TEST(got == (std::vector<long>{1200, 2400, 4800}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(attestation_backs_off_exponentially_with_full_jitter_capped_at_30s) {
  auto got = schedule(retry_leg::attestation, status(503), max_jitter);
  BOOST_TEST(got == (std::vector<long>{1000, 2000, 4000, 8000, 16000, 30000}),
             boost::test_tools::per_element());
  BOOST_CHECK(schedule(retry_leg::attestation, status(400)).empty());
}

BOOST_AUTO_TEST_CASE(token_endpoint_retries_5xx_once_after_one_second) {
  auto got = schedule(retry_leg::token_endpoint, status(503));
  BOOST_TEST(got == (std::vector<long>{1000}), boost::test_tools::per_element());
  BOOST_CHECK(schedule(retry_leg::token_endpoint, status(401)).empty());
}

BOOST_AUTO_TEST_CASE(token_endpoint_retries_a_cut_off_answer_once_after_one_second) {
  auto cut = http_response::failure(transport_error::reset, "connection lost before a complete response");
  BOOST_TEST(schedule(retry_leg::token_endpoint, cut) == (std::vector<long>{1000}),
             boost::test_tools::per_element());
  BOOST_TEST(schedule(retry_leg::token_endpoint, cut, max_jitter) == (std::vector<long>{1200}),
             boost::test_tools::per_element());
  for (auto e : {transport_error::connect_failed, transport_error::timeout,
                 transport_error::tls_failed, transport_error::tls_client_cert_rejected})
    BOOST_CHECK(schedule(retry_leg::token_endpoint, http_response::failure(e, "x")).empty());
}

BOOST_AUTO_TEST_CASE(token_endpoint_honours_retry_after_seconds_and_dates) {
  auto r = status(429);
  r.headers.set("Retry-After", "7");
  BOOST_TEST(schedule(retry_leg::token_endpoint, r) == (std::vector<long>{7000}),
             boost::test_tools::per_element());
  auto d = status(503);
  d.headers.set("Retry-After", "Sun, 06 Nov 1994 08:49:37 GMT");
  retry_state st;
  // 784111777 is that date; 5 s before it.
  BOOST_CHECK(next_retry_delay(retry_leg::token_endpoint, st, d, no_jitter, 784111772)
              == milliseconds(5000));
}

BOOST_AUTO_TEST_CASE(malformed_retry_after_is_ignored) {
  auto r = status(503);
  r.headers.set("Retry-After", "soon");
  BOOST_CHECK(!retry_after(r, 0));
  BOOST_TEST(schedule(retry_leg::token_endpoint, r) == (std::vector<long>{1000}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(retry_after_values_parse_without_a_response) {
  BOOST_TEST(parse_retry_after(" 12 ", 0).value_or(milliseconds(-1)).count() == 12'000);
  BOOST_TEST(parse_retry_after("999999999", 0).value_or(milliseconds(-1)).count() ==
             999'999'999'000);
  BOOST_TEST(!parse_retry_after("1000000000", 0));
  BOOST_TEST(!parse_retry_after("-1", 0));
  BOOST_TEST(!parse_retry_after("", 0));
  const std::int64_t date = 784111777; // Sun, 06 Nov 1994 08:49:37 GMT
  BOOST_TEST(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").value_or(0) == date);
  BOOST_TEST(!parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT trailing"));
  BOOST_TEST(!parse_http_date(std::string(100, ' ') + "Sun, 06 Nov 1994 08:49:37 GMT"));
  BOOST_TEST(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", date - 5)
               .value_or(milliseconds(-1)).count() == 5000);
  BOOST_TEST(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", date + 5)
               .value_or(milliseconds(-1)).count() == 0);
}

// -- the retry governor and renewal backoff (review H3, M4) ------------------------------------

namespace {

/// Uniform draws from a seeded generator: the spread of delays is real, and reproducible.
msiv2::platform::jitter_source seeded(std::uint64_t seed) {
  auto rng = std::make_shared<std::mt19937_64>(seed);
  return [rng](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(*rng);
  };
}

} // namespace

BOOST_AUTO_TEST_CASE(retry_after_as_a_far_http_date_is_capped_and_does_not_overflow) {
  http_response r = http_response::with_status(503);
  r.headers.set("Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT");
  retry_state st;
  st.max_retry_after = milliseconds(60'000);
  auto d = next_retry_delay(retry_leg::token_endpoint, st, r, no_jitter, 1'800'000'000);
  BOOST_REQUIRE(d);
  BOOST_TEST(d->count() == 60'000);
}

BOOST_AUTO_TEST_CASE(renewal_retry_delays_have_full_jitter_up_to_the_cap) {
  auto draw = seeded(20261203);
  std::vector<std::int64_t> seen;
  for (int i = 0; i < 2000; ++i)
    seen.push_back(renewal_retry_delay(8, milliseconds(1000), milliseconds(60'000), draw).count());
  auto [lo, hi] = std::minmax_element(seen.begin(), seen.end());
  BOOST_TEST(*lo >= 1);
  BOOST_TEST(*hi <= 60'000);
  BOOST_TEST(*lo < 3'000); // spread over the whole range, not bunched at the cap
  BOOST_TEST(*hi > 57'000);
  BOOST_TEST(renewal_retry_delay(1, milliseconds(1000), milliseconds(60'000), draw).count() <= 1000);
}

BOOST_AUTO_TEST_CASE(circuit_opens_after_consecutive_failures_and_a_probe_closes_it) {
  retry_governor_settings s;
  s.circuit_failures = 3;
  s.circuit_open = milliseconds(10'000);
  retry_governor g(s, seeded(7));
  auto t = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  const std::string up = "token_endpoint https://x";
  for (int i = 0; i < 3; ++i) {
    BOOST_TEST(g.admit(up, t));
    g.record(up, true, t);
  }
  BOOST_TEST(!g.admit(up, t));
  BOOST_TEST(!g.admit(up, t + std::chrono::seconds(4))); // open for at least half of 10 s
  BOOST_TEST(g.admit("imds http://y", t));                // per upstream
  BOOST_TEST(g.admit(up, t + std::chrono::seconds(10)));  // the probe
  BOOST_TEST(!g.admit(up, t + std::chrono::seconds(10))); // one probe at a time
  g.record(up, false, t + std::chrono::seconds(10));
  BOOST_TEST(g.admit(up, t + std::chrono::seconds(10)));
  BOOST_TEST(g.circuits_opened() == 1u);
}

BOOST_AUTO_TEST_CASE(retry_budget_refuses_beyond_its_size_and_refills_over_time) {
  retry_governor_settings s;
  s.budget = 5;
  s.refill_per_minute = 60;
  retry_governor g(s, seeded(7));
  auto t = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  for (int i = 0; i < 5; ++i)
    BOOST_TEST(g.take_retry(t));
  BOOST_TEST(!g.take_retry(t));
  BOOST_TEST(g.take_retry(t + std::chrono::seconds(1)));
  BOOST_TEST(!g.take_retry(t + std::chrono::seconds(1)));
  g.record("x", false, t + std::chrono::seconds(1)); // a success gives one back
  BOOST_TEST(g.take_retry(t + std::chrono::seconds(1)));
  BOOST_TEST(g.retries_refused() == 2u);
}

BOOST_AUTO_TEST_SUITE_END()
