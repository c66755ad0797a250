// Admission control of the curl transport against a loopback server that never answers
// (review H2): a burst far beyond what one identity's pool can run ends at each request's
// own deadline, with easy handles only for the transfers that got a slot, bounded memory, and
// an immediate `overloaded` answer beyond max_pending_requests. Real transport, real sockets
// on 127.0.0.1; labelled heavy (50,000 requests), so it runs once, in the normal pass.

#include <boost/test/unit_test.hpp>

#include <boost/asio.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <string>
#include <unistd.h>

#include "io/curl_transport.hpp"
#include "platform/keys.hpp"
#include "platform/x509.hpp"

using namespace msiv2;
using namespace std::chrono_literals;
using io::http_request;
using io::http_response;
using io::transport_error;

namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;

/// How much more memory and time a sanitizer's build takes for the same work (shadow memory
/// and allocator metadata; instrumented code): ThreadSanitizer documents 5-10x memory and
/// 5-15x time, AddressSanitizer about 3x memory and 2x time. The RSS bound and the slack past
/// the deadline below are the normal build's (the figures of issue 13), scaled by the lower
/// ends under a sanitizer, whose pass is there for races and memory errors. Measured under TSan
/// on the shared 2-core machine: RSS +95 to +124 MiB, worst request 1.5 s past its deadline.
#if defined(__SANITIZE_THREAD__)
constexpr std::int64_t sanitizer_memory_factor = 5;
constexpr std::int64_t sanitizer_time_factor = 5;
#elif defined(__SANITIZE_ADDRESS__)
constexpr std::int64_t sanitizer_memory_factor = 3;
constexpr std::int64_t sanitizer_time_factor = 2;
#else
constexpr std::int64_t sanitizer_memory_factor = 1;
constexpr std::int64_t sanitizer_time_factor = 1;
#endif

/// Resident set size of this process, in bytes.
std::int64_t rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<std::int64_t>(sysconf(_SC_PAGESIZE));
}

/// A TLS client identity of a fresh self-signed certificate.
std::shared_ptr<const io::client_identity> make_identity() {
  auto key = platform::generate_rsa_key(2048);
  BOOST_REQUIRE(key.ok());
  platform::issue_params p;
  p.subject_key = key->get();
  p.subject_cn = "bounds-test";
  p.not_before = std::time(nullptr) - 60;
  p.not_after = std::time(nullptr) + 3600;
  p.client_auth = true;
  auto der = platform::issue_certificate(p, nullptr, key->get());
  BOOST_REQUIRE(der.ok());
  auto id = io::client_identity::create({*der}, platform::share_key(key->get()));
  BOOST_REQUIRE_MESSAGE(id.ok(), (id.ok() ? std::string() : id.error()));
  return *id;
}

/// Counts completions without keeping them (the burst must not measure our own bookkeeping).
struct tally {
  std::mutex mutex;
  std::condition_variable cv;
  std::size_t done = 0;
  std::size_t timeouts = 0;
  std::size_t overloaded = 0;
  std::size_t other = 0;
  std::chrono::microseconds worst_elapsed{0};
  std::string first_other;
  std::string first_overloaded;

  io::completion sink() {
    return [this](http_response r) {
      std::lock_guard<std::mutex> guard(mutex);
      ++done;
      if (r.error == transport_error::timeout || r.error == transport_error::connect_timeout)
        ++timeouts;
      else if (r.error == transport_error::other
               && r.error_message.find("overloaded:") != std::string::npos) {
        ++overloaded;
        if (first_overloaded.empty())
          first_overloaded = r.error_message;
      } else {
        ++other;
        if (first_other.empty())
          first_other = std::string(io::to_string(r.error)) + ": " + r.error_message;
      }
      worst_elapsed = std::max(worst_elapsed, r.elapsed);
      cv.notify_all();
    };
  }
  bool wait(std::size_t n, std::chrono::seconds within) {
    std::unique_lock<std::mutex> lock(mutex);
    return cv.wait_for(lock, within, [&] { return done >= n; });
  }
};

} // namespace

BOOST_AUTO_TEST_SUITE(io_transport_bounds_test)

BOOST_AUTO_TEST_CASE(fifty_thousand_requests_to_a_silent_server_end_at_their_deadlines_with_bounded_handles) {
  // The kernel completes TCP handshakes into the backlog; nobody ever answers TLS.
  net::io_context ioc;
  tcp::acceptor silent(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  const auto url = "https://127.0.0.1:" + std::to_string(silent.local_endpoint().port()) + "/token";
  auto identity = make_identity();
  io::curl_transport_options options;
  options.max_connections_per_identity = 2;
  options.max_pending_requests = 60000;
  auto created = io::curl_transport::create(options);
  BOOST_REQUIRE(created.ok());
  auto transport = std::move(*created);

  const std::size_t n = 50000;
  tally t;
  auto rss_before = rss_bytes();
  for (std::size_t i = 0; i < n; ++i) {
    http_request r;
    r.method = "POST";
    r.url = url;
    r.body = "grant_type=client_credentials";
    r.identity = identity;
    r.timeout = 200ms;
    r.connect_timeout = 200ms;
    transport->send(std::move(r), t.sink());
  }
  BOOST_REQUIRE_MESSAGE(t.wait(n, 60s), "only " << t.done << " of " << n << " completed");
  auto rss_after = rss_bytes();
  auto c = transport->counters();
  BOOST_TEST_MESSAGE("50,000 queued: worst elapsed " << t.worst_elapsed.count() / 1000
                     << " ms, easy handles made " << c.easy_handles_created << " (peak "
                     << c.peak_easy_handles << "), RSS growth "
                     << (rss_after - rss_before) / (1024 * 1024) << " MiB");
  BOOST_CHECK_EQUAL(t.timeouts, n);
  BOOST_CHECK_MESSAGE(t.other == 0, t.first_other);
  // Each ended within 1 s of its own deadline (200 ms after it was sent).
  BOOST_CHECK_LE(t.worst_elapsed.count(), (200ms + sanitizer_time_factor * 1s).count() * 1000);
  // Easy handles only for transfers that had a slot: never more than the pool's bound alive.
  BOOST_CHECK_LE(c.peak_easy_handles, options.max_connections_per_identity);
  BOOST_CHECK_LE(c.easy_handles_created, n / 100);
  BOOST_CHECK_LT(rss_after - rss_before, sanitizer_memory_factor * 50 * 1024 * 1024);
}

BOOST_AUTO_TEST_CASE(beyond_max_pending_requests_send_answers_overloaded_at_once) {
  net::io_context ioc;
  tcp::acceptor silent(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  const auto url = "https://127.0.0.1:" + std::to_string(silent.local_endpoint().port()) + "/token";
  auto identity = make_identity();
  io::curl_transport_options options;
  options.max_connections_per_identity = 1;
  options.max_pending_requests = 100;
  auto created = io::curl_transport::create(options);
  BOOST_REQUIRE(created.ok());
  auto transport = std::move(*created);
  tally t;
  for (int i = 0; i < 1000; ++i) {
    http_request r;
    r.url = url;
    r.identity = identity;
    r.timeout = 10s;
    r.connect_timeout = 10s;
    transport->send(std::move(r), t.sink());
  }
  // The 900 refusals came inside send(), before any deadline.
  {
    std::lock_guard<std::mutex> guard(t.mutex);
    BOOST_CHECK_EQUAL(t.overloaded, 900u);
    BOOST_CHECK_NE(t.first_overloaded.find("max_pending_requests"), std::string::npos);
  }
  transport->shutdown();
  BOOST_REQUIRE(t.wait(1000, 20s));
  BOOST_CHECK_GE(transport->counters().errors(transport_error::other), 900u);
}

BOOST_AUTO_TEST_SUITE_END()
