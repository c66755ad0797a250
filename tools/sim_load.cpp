// msiv2-sim-load: a load generator for the simulator's IMDS listener. Keep-alive connections
// on one Asio thread send GET getplatformmetadata back to back and report requests/s,
// latency percentiles and errors. --concurrency-check N holds N connections open at once
// and gets one answer on each. Loopback only, always bounded in time.

#include <sys/resource.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "platform/encoding.hpp"
#include "tools/sim/server.hpp"

namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;
using steady = std::chrono::steady_clock;

constexpr int exit_usage = 2;

const char* usage_text =
  "usage: msiv2-sim-load [--imds URL] [--connections N] [--seconds S | --requests N]\n"
  "                      [--server-threads N] [--concurrency-check N]\n"
  "  --imds URL              load an external simulator (http://127.0.0.1:P); default: start\n"
  "                          one in this process\n"
  "  --connections N         keep-alive connections (default 64, max 5000)\n"
  "  --seconds S             run time (default 5, max 60)\n"
  "  --requests N            stop after N requests instead (max 10000000)\n"
  "  --server-threads N      I/O threads of the embedded simulator (default 2)\n"
  "  --concurrency-check N   open N connections at once, one answer on each (max 5000)\n";

struct options {
  std::string imds;
  int connections = 64;
  int seconds = 5;
  std::optional<long> requests;
  int server_threads = 2;
  std::optional<int> concurrency_check;
};

std::optional<long> parse_number(const std::string& text, long lo, long hi) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos || text.size() > 12)
    return std::nullopt;
  long v = std::strtol(text.c_str(), nullptr, 10);
  if (v < lo || v > hi)
    return std::nullopt;
  return v;
}

msiv2::result<options> parse_args(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> msiv2::result<std::string> {
      if (i + 1 >= argc)
        return msiv2::fail(arg + " needs a value");
      return std::string(argv[++i]);
    };
    auto number = [&](long lo, long hi) -> msiv2::result<long> {
      auto v = value();
      if (!v)
        return v.fail();
      auto n = parse_number(*v, lo, hi);
      if (!n)
        return msiv2::fail(arg + ": must be an integer from " + std::to_string(lo) + " to " +
                           std::to_string(hi) + ", got '" + *v + "'");
      return *n;
    };
    if (arg == "--imds") {
      auto v = value();
      if (!v)
        return v.fail();
      o.imds = *v;
    } else if (arg == "--connections") {
      auto n = number(1, 5000);
      if (!n)
        return n.fail();
      o.connections = static_cast<int>(*n);
    } else if (arg == "--seconds") {
      auto n = number(1, 60);
      if (!n)
        return n.fail();
      o.seconds = static_cast<int>(*n);
    } else if (arg == "--requests") {
      auto n = number(1, 10000000);
      if (!n)
        return n.fail();
      o.requests = *n;
    } else if (arg == "--server-threads") {
      auto n = number(1, 64);
      if (!n)
        return n.fail();
      o.server_threads = static_cast<int>(*n);
    } else if (arg == "--concurrency-check") {
      auto n = number(1, 5000);
      if (!n)
        return n.fail();
      o.concurrency_check = static_cast<int>(*n);
    } else {
      return msiv2::fail("unknown option '" + arg + "'");
    }
  }
  return o;
}

/// The loopback endpoint of an http://host:port URL.
msiv2::result<tcp::endpoint> loopback_endpoint(const std::string& url) {
  const std::string prefix = "http://";
  if (url.rfind(prefix, 0) != 0)
    return msiv2::fail("--imds: must be http://<loopback address>:<port>, got '" + url + "'");
  std::string rest = url.substr(prefix.size());
  if (auto slash = rest.find('/'); slash != std::string::npos)
    rest.resize(slash);
  auto colon = rest.rfind(':');
  if (colon == std::string::npos)
    return msiv2::fail("--imds: the URL needs a port");
  std::string host = rest.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  auto port = parse_number(rest.substr(colon + 1), 1, 65535);
  error_code ec;
  auto address = net::ip::make_address(host, ec);
  if (ec || !port)
    return msiv2::fail("--imds: cannot read host and port from '" + url + "'");
  if (!address.is_loopback())
    return msiv2::fail("--imds: " + host + " is not a loopback address (the load tool stays on loopback)");
  return tcp::endpoint(address, static_cast<unsigned short>(*port));
}

std::string metadata_request(const tcp::endpoint& ep) {
  return "GET /metadata/identity/getplatformmetadata?cred-api-version=2.0 HTTP/1.1\r\nHost: " +
         ep.address().to_string() + ":" + std::to_string(ep.port()) +
         "\r\nMetadata: true\r\nx-ms-client-request-id: " + msiv2::platform::uuid_v4() + "\r\n\r\n";
}

/// Shared by every connection; the client runs on one thread, so no locking.
struct load_state {
  tcp::endpoint target;
  std::string request;
  steady::time_point deadline;
  long remaining = -1;  ///< requests still to send; -1 = until the deadline
  bool stop_after_one = false;
  std::vector<std::uint32_t> latencies_us;
  long ok = 0;
  long errors = 0;
  long connect_errors = 0;
  int live = 0;              ///< connections still working
  std::function<void()> on_idle; ///< called when `live` drops to 0

  void one_done() {
    if (--live == 0 && on_idle)
      on_idle();
  }

  bool take_ticket() {
    if (stop_after_one)
      return true;
    if (steady::now() >= deadline)
      return false;
    if (remaining == 0)
      return false;
    if (remaining > 0)
      --remaining;
    return true;
  }
};

class connection : public std::enable_shared_from_this<connection> {
public:
  connection(net::io_context& ioc, load_state& state) : socket_(ioc), state_(state) {}

  /// Connects; `on_connected` runs once the connection is up (or failed).
  template <class F>
  void connect(F on_connected) {
    ++state_.live;
    socket_.async_connect(state_.target, [self = shared_from_this(), on_connected](error_code ec) {
      if (ec) {
        ++self->state_.connect_errors;
        self->state_.one_done();
      } else {
        self->up_ = true;
        error_code ignored;
        self->socket_.set_option(tcp::no_delay(true), ignored);
      }
      on_connected(!ec);
    });
  }

  void next() {
    if (!up_)
      return;  // never connected: already counted and done
    if (!state_.take_ticket())
      return finish();
    start_ = steady::now();
    net::async_write(socket_, net::buffer(state_.request),
                     [self = shared_from_this()](error_code ec, std::size_t) {
                       if (ec) {
                         ++self->state_.errors;
                         return self->finish();
                       }
                       self->read();
                     });
  }

  void close() {
    error_code ignored;
    socket_.close(ignored);
  }

private:
  // The simulator always sends Content-Length, so a minimal reader is enough (and keeps
  // Beast's parser out of the measurement).
  void read() {
    net::async_read_until(socket_, net::dynamic_buffer(buf_), "\r\n\r\n",
                          [self = shared_from_this()](error_code ec, std::size_t head) {
                            self->on_head(ec, head);
                          });
  }

  void on_head(error_code ec, std::size_t head) {
    if (ec || buf_.compare(0, 9, "HTTP/1.1 ") != 0) {
      ++state_.errors;
      return finish();
    }
    status_ = std::atoi(buf_.c_str() + 9);
    std::string lower = buf_.substr(0, head);
    for (auto& c : lower)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::size_t length = 0;
    if (auto p = lower.find("\r\ncontent-length:"); p != std::string::npos)
      length = std::strtoul(lower.c_str() + p + 17, nullptr, 10);
    close_after_ = lower.find("\r\nconnection: close") != std::string::npos;
    const std::size_t total = head + length;
    if (buf_.size() >= total)
      return on_read(total);
    net::async_read(socket_, net::dynamic_buffer(buf_), net::transfer_exactly(total - buf_.size()),
                    [self = shared_from_this(), total](error_code rec, std::size_t) {
                      if (rec) {
                        ++self->state_.errors;
                        return self->finish();
                      }
                      self->on_read(total);
                    });
  }

  void on_read(std::size_t consumed) {
    buf_.erase(0, consumed);
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(steady::now() - start_).count();
    state_.latencies_us.push_back(static_cast<std::uint32_t>(std::min<long long>(us, UINT32_MAX)));
    if (status_ == 200)
      ++state_.ok;
    else
      ++state_.errors;
    if (state_.stop_after_one || close_after_)
      return finish();
    next();
  }

  void finish() {
    if (finished_)
      return;
    finished_ = true;
    if (!state_.stop_after_one)
      close();
    state_.one_done();
  }

  tcp::socket socket_;
  load_state& state_;
  std::string buf_;
  int status_ = 0;
  bool close_after_ = false;
  steady::time_point start_;
  bool up_ = false;
  bool finished_ = false;
};

std::uint32_t percentile(std::vector<std::uint32_t>& v, double p) {
  if (v.empty())
    return 0;
  auto idx = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(idx), v.end());
  return v[idx];
}

int run_load(const options& o, const tcp::endpoint& target) {
  net::io_context ioc(1);
  load_state state;
  state.target = target;
  state.request = metadata_request(target);
  if (o.requests)
    state.remaining = *o.requests;
  state.deadline = steady::now() + (o.requests ? std::chrono::seconds(60) : std::chrono::seconds(o.seconds));
  state.latencies_us.reserve(o.requests ? static_cast<std::size_t>(*o.requests) : 1u << 20);

  std::vector<std::shared_ptr<connection>> conns;
  for (int i = 0; i < o.connections; ++i) {
    auto c = std::make_shared<connection>(ioc, state);
    c->connect([c = c.get()](bool up) {
      if (up)
        c->next();
    });
    conns.push_back(std::move(c));
  }
  auto t0 = steady::now();
  // Every connection stops at the deadline; the watchdog only guards against a stuck server.
  net::steady_timer watchdog(ioc);
  watchdog.expires_at(state.deadline + std::chrono::seconds(10));
  watchdog.async_wait([&](error_code ec) {
    if (!ec) {
      std::fprintf(stderr, "msiv2-sim-load: answers stopped coming; giving up\n");
      for (auto& c : conns)
        c->close();
    }
  });
  state.on_idle = [&] { watchdog.cancel(); };
  ioc.run();
  double secs = std::chrono::duration<double>(steady::now() - t0).count();

  const long total = state.ok + state.errors;
  std::printf("connections      %d\n", o.connections);
  std::printf("requests         %ld (%ld ok, %ld errors, %ld connect errors)\n", total, state.ok,
              state.errors, state.connect_errors);
  std::printf("duration         %.2f s\n", secs);
  std::printf("throughput       %.0f requests/s\n", secs > 0 ? static_cast<double>(total) / secs : 0.0);
  std::printf("latency p50      %.3f ms\n", percentile(state.latencies_us, 0.50) / 1000.0);
  std::printf("latency p99      %.3f ms\n", percentile(state.latencies_us, 0.99) / 1000.0);
  return state.errors == 0 && state.connect_errors == 0 ? 0 : 1;
}

int run_concurrency_check(int n, const tcp::endpoint& target) {
  net::io_context ioc(1);
  load_state state;
  state.target = target;
  state.request = metadata_request(target);
  state.stop_after_one = true;
  state.deadline = steady::now() + std::chrono::seconds(60);

  std::vector<std::shared_ptr<connection>> conns;
  int connected = 0, settled = 0;
  auto t0 = steady::now();
  // All connections must be open before the first request goes out.
  for (int i = 0; i < n; ++i) {
    auto c = std::make_shared<connection>(ioc, state);
    conns.push_back(c);
    c->connect([&, n](bool up) {
      connected += up ? 1 : 0;
      if (++settled == n) {
        for (auto& conn : conns)
          conn->next();
      }
    });
  }
  net::steady_timer watchdog(ioc);
  watchdog.expires_after(std::chrono::seconds(60));
  watchdog.async_wait([&](error_code ec) {
    if (!ec) {
      std::fprintf(stderr, "msiv2-sim-load: concurrency check timed out\n");
      for (auto& c : conns)
        c->close();
    }
  });
  state.on_idle = [&] { watchdog.cancel(); };
  ioc.run();
  double secs = std::chrono::duration<double>(steady::now() - t0).count();
  // Every connection is still open here: the answers came while all N were held.
  std::printf("concurrency check: %d connections open at once, %ld answered 200, %ld errors, "
              "%ld connect errors, %.2f s\n",
              connected, state.ok, state.errors, state.connect_errors, secs);
  for (auto& c : conns)
    c->close();
  return state.ok == n ? 0 : 1;
}

void raise_file_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max == RLIM_INFINITY ? 65536 : std::min<rlim_t>(lim.rlim_max, 65536);
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
}

} // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 2 && (std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "-h")) {
      std::fputs(usage_text, stdout);
      return 0;
    }
    auto opts = parse_args(argc, argv);
    if (!opts) {
      std::fprintf(stderr, "msiv2-sim-load: %s (try --help)\n", opts.error().c_str());
      return exit_usage;
    }
    raise_file_limit();

    std::unique_ptr<msiv2::sim::simulator> sim;
    std::string imds = opts->imds;
    if (imds.empty()) {
      msiv2::sim::config cfg;
      cfg.threads = opts->server_threads;
      auto started = msiv2::sim::simulator::start(cfg);
      if (!started) {
        std::fprintf(stderr, "msiv2-sim-load: cannot start the simulator: %s\n", started.error().c_str());
        return 1;
      }
      sim = std::move(*started);
      imds = sim->urls().imds;
      std::printf("embedded simulator at %s (%d I/O threads)\n", imds.c_str(), opts->server_threads);
    }
    auto target = loopback_endpoint(imds);
    if (!target) {
      std::fprintf(stderr, "msiv2-sim-load: %s\n", target.error().c_str());
      return exit_usage;
    }
    int rc = opts->concurrency_check ? run_concurrency_check(*opts->concurrency_check, *target)
                                     : run_load(*opts, *target);
    if (sim)
      sim->stop();
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "msiv2-sim-load: internal error: %s\n", e.what());
    return 1;
  }
}
