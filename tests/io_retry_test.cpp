#include <boost/test/unit_test.hpp>

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

BOOST_AUTO_TEST_SUITE_END()
