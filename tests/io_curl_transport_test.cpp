// curl_transport against real loopback servers: a small Beast/Asio HTTP(S) server defined
// here (plain HTTP, and TLS that asks for a client certificate and records which one it got),
// plus raw listeners for refused, stalled and backlog-full connections.

#include <boost/test/unit_test.hpp>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

#include "io/curl_transport.hpp"
#include "io/json.hpp"
#include "platform/keys.hpp"
#include "platform/x509.hpp"
#include "tests/support/sim_fixture.hpp"

using namespace msiv2;
using namespace std::chrono_literals;
using io::http_request;
using io::http_response;
using io::transport_error;

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;
using steady = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------
// Throwaway PKI: two CAs, a server certificate for 127.0.0.1 from CA "a", client
// certificates "client-a" and "client-b" from CA "a". Built once (RSA keygen is slow under
// sanitizers).

struct issued {
  std::string der;
  platform::pkey_ptr key;
  platform::x509_ptr cert;
};

issued issue(const std::string& cn, const issued* ca, bool is_ca, bool server, bool client) {
  issued out;
  auto key = platform::generate_rsa_key();
  BOOST_REQUIRE_MESSAGE(key.ok(), (key.ok() ? std::string() : key.error()));
  out.key = std::move(*key);
  platform::issue_params p;
  p.subject_key = out.key.get();
  p.subject_cn = cn;
  p.not_before = std::time(nullptr) - 3600;
  p.not_after = std::time(nullptr) + 86400;
  p.is_ca = is_ca;
  p.server_auth = server;
  p.client_auth = client;
  if (server)
    p.ip_addresses = {"127.0.0.1"};
  auto der = ca ? platform::issue_certificate(p, ca->cert.get(), ca->key.get())
                : platform::issue_certificate(p, nullptr, out.key.get());
  BOOST_REQUIRE_MESSAGE(der.ok(), (der.ok() ? std::string() : der.error()));
  out.der = *der;
  auto cert = platform::parse_certificate(out.der);
  BOOST_REQUIRE(cert.ok());
  out.cert = std::move(*cert);
  return out;
}

struct test_pki {
  issued ca_a = issue("io test CA a", nullptr, true, false, false);
  issued ca_b = issue("io test CA b", nullptr, true, false, false);
  issued server = issue("127.0.0.1", &ca_a, false, true, false);
  issued client_a = issue("client-a", &ca_a, false, false, true);
  issued client_b = issue("client-b", &ca_a, false, false, true);

  std::string pem_a() const { return platform::pem_encode(ca_a.der, "CERTIFICATE"); }
  std::string pem_b() const { return platform::pem_encode(ca_b.der, "CERTIFICATE"); }

  std::shared_ptr<const io::client_identity> identity(const issued& who) const {
    auto id = io::client_identity::create({who.der}, platform::share_key(who.key.get()));
    BOOST_REQUIRE_MESSAGE(id.ok(), (id.ok() ? std::string() : id.error()));
    return *id;
  }
};

const test_pki& pki() {
  static const test_pki instance;
  return instance;
}

// ---------------------------------------------------------------------------------------
// The test server.

struct seen_request {
  std::uint64_t connection = 0;
  std::string client_cn;  ///< empty: no client certificate
  bool resumed = false;   ///< the TLS session was resumed
  std::string method;
  std::string target;
  std::string body;
  io::http_headers headers;
};

enum class client_certs {
  none,          ///< do not ask for one
  any,           ///< ask, accept whatever is presented (to see it)
  from_ca_b,     ///< require one issued by CA b
};

class test_server;

template <bool Tls>
class session : public std::enable_shared_from_this<session<Tls>> {
public:
  using stream_type = std::conditional_t<Tls, beast::ssl_stream<beast::tcp_stream>, beast::tcp_stream>;

  session(stream_type stream, test_server& server, std::uint64_t id)
      : stream_(std::move(stream)), server_(server), id_(id),
        timer_(beast::get_lowest_layer(stream_).get_executor()) {}

  void start() {
    if constexpr (Tls) {
      stream_.async_handshake(net::ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (ec)
                                  return;
                                self->note_peer();
                                self->read();
                              });
    } else {
      read();
    }
  }

private:
  void note_peer() {
    if constexpr (Tls) {
      resumed_ = SSL_session_reused(stream_.native_handle()) == 1;
      X509* peer = SSL_get0_peer_certificate(stream_.native_handle());
      if (peer != nullptr) {
        char buf[256] = {};
        X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, buf, sizeof(buf));
        cn_ = buf;
      }
    }
  }

  void read() {
    req_ = {};
    bhttp::async_read(stream_, buffer_, req_,
                      [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                        if (!ec)
                          self->handle();
                      });
  }

  void handle();

  void respond(unsigned status, std::string body, bool chunked = false) {
    auto res = std::make_shared<bhttp::response<bhttp::string_body>>(
        static_cast<bhttp::status>(status), req_.version());
    res->keep_alive(req_.keep_alive());
    res->set("X-Test", "yes");
    res->body() = std::move(body);
    if (chunked)
      res->chunked(true);
    else
      res->prepare_payload();
    bhttp::async_write(stream_, *res,
                       [self = this->shared_from_this(), res](beast::error_code ec, std::size_t) {
                         if (!ec && res->keep_alive())
                           self->read();
                       });
  }

  stream_type stream_;
  test_server& server_;
  std::uint64_t id_;
  std::string cn_;
  bool resumed_ = false;
  net::steady_timer timer_;
  beast::flat_buffer buffer_;
  bhttp::request<bhttp::string_body> req_;
  std::shared_ptr<std::string> raw_;
};

class test_server {
public:
  /// Plain HTTP when `tls` is false; otherwise HTTPS with the server certificate of pki().
  explicit test_server(bool tls = false, client_certs certs = client_certs::none)
      : tls_(tls), acceptor_(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
    if (tls_) {
      ssl_.emplace(net::ssl::context::tls_server);
      SSL_CTX* ctx = ssl_->native_handle();
      BOOST_REQUIRE(SSL_CTX_use_certificate(ctx, pki().server.cert.get()) == 1);
      BOOST_REQUIRE(SSL_CTX_use_PrivateKey(ctx, pki().server.key.get()) == 1);
      // Needed for resumption when client certificates are verified (else OpenSSL's server
      // answers a resumption attempt with an internal_error alert).
      static const unsigned char sid_ctx[] = "msiv2-io-test";
      BOOST_REQUIRE(SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1) == 1);
      if (certs == client_certs::any) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, [](int, X509_STORE_CTX*) { return 1; });
      } else if (certs == client_certs::from_ca_b) {
        BOOST_REQUIRE(X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), pki().ca_b.cert.get()) == 1);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
      }
    }
    accept();
    thread_ = std::thread([this] { ioc_.run(); });
  }

  ~test_server() { stop(); }

  void stop() {
    ioc_.stop();
    if (thread_.joinable())
      thread_.join();
  }

  std::string url(const std::string& path) const {
    return std::string(tls_ ? "https" : "http") + "://127.0.0.1:"
           + std::to_string(acceptor_.local_endpoint().port()) + path;
  }

  std::vector<seen_request> seen() const {
    std::lock_guard<std::mutex> guard(mutex_);
    return seen_;
  }

  /// Waits until `n` requests have arrived (bounded).
  bool wait_seen(std::size_t n, std::chrono::milliseconds within) const {
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, within, [&] { return seen_.size() >= n; });
  }

  std::uint64_t connections() const {
    std::lock_guard<std::mutex> guard(mutex_);
    return connections_;
  }

  void record(seen_request r) {
    std::lock_guard<std::mutex> guard(mutex_);
    seen_.push_back(std::move(r));
    cv_.notify_all();
  }

private:
  void accept() {
    acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec)
        return;
      std::uint64_t id = 0;
      {
        std::lock_guard<std::mutex> guard(mutex_);
        id = ++connections_;
      }
      if (tls_)
        std::make_shared<session<true>>(
            beast::ssl_stream<beast::tcp_stream>(beast::tcp_stream(std::move(socket)), *ssl_), *this, id)
            ->start();
      else
        std::make_shared<session<false>>(beast::tcp_stream(std::move(socket)), *this, id)->start();
      accept();
    });
  }

  bool tls_;
  std::optional<net::ssl::context> ssl_;  // outlives the sessions that ioc_ destroys
  net::io_context ioc_;
  tcp::acceptor acceptor_;
  std::thread thread_;
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  std::vector<seen_request> seen_;
  std::uint64_t connections_ = 0;
};

std::size_t number_after(std::string_view target, std::string_view prefix) {
  return static_cast<std::size_t>(std::stoul(std::string(target.substr(prefix.size()))));
}

template <bool Tls>
void session<Tls>::handle() {
  seen_request r;
  r.connection = id_;
  r.client_cn = cn_;
  r.resumed = resumed_;
  r.method = std::string(req_.method_string());
  r.target = std::string(req_.target());
  r.body = req_.body();
  for (const auto& f : req_)
    r.headers.add(std::string(f.name_string()), std::string(f.value()));
  server_.record(r);

  std::string_view t = r.target;
  if (t == "/hello") {
    respond(200, "hello");
  } else if (t == "/echo") {
    respond(200, req_.body());
  } else if (t == "/whoami") {
    respond(200, "conn=" + std::to_string(id_) + " cn=" + cn_);
  } else if (t.rfind("/status/", 0) == 0) {
    respond(static_cast<unsigned>(number_after(t, "/status/")), "status");
  } else if (t.rfind("/big/", 0) == 0) {
    respond(200, std::string(number_after(t, "/big/"), 'x'));
  } else if (t.rfind("/chunked/", 0) == 0) {
    respond(200, std::string(number_after(t, "/chunked/"), 'y'), true);
  } else if (t.rfind("/delay/", 0) == 0) {
    timer_.expires_after(std::chrono::milliseconds(number_after(t, "/delay/")));
    timer_.async_wait([self = this->shared_from_this()](beast::error_code ec) {
      if (!ec)
        self->respond(200, "delayed");
    });
  } else if (t.rfind("/headers/", 0) == 0) {
    // N header fields of ~30 bytes each, written raw (Beast caps what it serializes).
    std::size_t n = number_after(t, "/headers/");
    auto raw = std::make_shared<std::string>("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n");
    for (std::size_t i = 0; i < n; ++i)
      *raw += "X-Field-" + std::to_string(i) + ": some value here\r\n";
    *raw += "\r\nok";
    raw_ = raw;
    net::async_write(stream_, net::buffer(*raw_),
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                       if (!ec)
                         self->read();
                     });
  } else if (t == "/hang") {
    read();  // keeps the connection open and never answers
  } else if (t == "/truncate") {
    raw_ = std::make_shared<std::string>("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a part");
    net::async_write(stream_, net::buffer(*raw_),
                     [self = this->shared_from_this()](beast::error_code, std::size_t) {
                       beast::error_code ignored;
                       beast::get_lowest_layer(self->stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
                     });
  } else {
    respond(404, "no such test route");
  }
}

// ---------------------------------------------------------------------------------------
// Client-side helpers.

struct collector {
  struct entry {
    http_response response;
    std::thread::id thread;
    std::size_t body_capacity = 0;  ///< as delivered (a copy of the body loses the padding)
  };
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<entry> got;

  io::completion sink() {
    return [this](http_response r) {
      std::lock_guard<std::mutex> guard(mutex);
      std::size_t capacity = r.body.capacity();
      got.push_back({std::move(r), std::this_thread::get_id(), capacity});
      cv.notify_all();
    };
  }
  bool wait(std::size_t n, std::chrono::milliseconds within = 20s) {
    std::unique_lock<std::mutex> lock(mutex);
    return cv.wait_for(lock, within, [&] { return got.size() >= n; });
  }
  std::vector<entry> snapshot() {
    std::lock_guard<std::mutex> guard(mutex);
    return got;
  }
};

std::unique_ptr<io::curl_transport> make_transport(io::curl_transport_options options = {}) {
  auto t = io::curl_transport::create(options);
  BOOST_REQUIRE_MESSAGE(t.ok(), (t.ok() ? std::string() : t.error()));
  return std::move(*t);
}

/// A transport whose identity pools run at most `per_identity` transfers at once.
std::unique_ptr<io::curl_transport> make_bounded_transport(std::size_t per_identity) {
  io::curl_transport_options options;
  options.max_connections_per_identity = per_identity;
  return make_transport(options);
}

http_request get(std::string url) {
  http_request r;
  r.url = std::move(url);
  r.timeout = 10s;
  return r;
}

http_request tls_get(const test_server& s, const std::string& path,
                     std::shared_ptr<const io::client_identity> id = nullptr) {
  http_request r = get(s.url(path));
  r.ca_pem = pki().pem_a();
  r.identity = std::move(id);
  return r;
}

collector::entry send_and_wait_entry(io::transport& t, http_request r) {
  collector c;
  t.send(std::move(r), c.sink());
  BOOST_REQUIRE_MESSAGE(c.wait(1), "no completion within 20 s");
  return c.snapshot().at(0);
}

http_response send_and_wait(io::transport& t, http_request r) {
  return send_and_wait_entry(t, std::move(r)).response;
}

std::string describe(const http_response& r) {
  return "status " + std::to_string(r.status) + ", error " + io::to_string(r.error) + ": " + r.error_message;
}

long ms_since(steady::time_point start) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - start).count());
}

/// A loopback port with nothing listening.
unsigned short closed_port() {
  net::io_context ioc;
  tcp::acceptor a(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

} // namespace

BOOST_AUTO_TEST_SUITE(io_curl_transport_test)

BOOST_AUTO_TEST_CASE(get_returns_status_headers_and_a_body_padded_for_simdjson) {
  test_server server;
  auto transport = make_transport();
  auto e = send_and_wait_entry(*transport, get(server.url("/hello")));
  const http_response& r = e.response;
  BOOST_REQUIRE_MESSAGE(r.ok(), describe(r));
  BOOST_TEST(r.status == 200);
  BOOST_TEST(r.body == "hello");
  BOOST_TEST(r.headers.get("x-test").value_or("-") == "yes");
  BOOST_TEST(r.headers.get("Content-Length").value_or("-") == "5");
  BOOST_TEST(e.body_capacity >= r.body.size() + 64);
  BOOST_TEST(r.elapsed.count() > 0);

  auto missing = send_and_wait(*transport, get(server.url("/status/503")));
  BOOST_REQUIRE_MESSAGE(missing.ok(), describe(missing));
  BOOST_TEST(missing.status == 503);

  auto c = transport->counters();
  BOOST_TEST(c.requests == 2u);
  BOOST_TEST(c.completed == 2u);
  BOOST_TEST(c.by_status_class[2] == 1u);
  BOOST_TEST(c.by_status_class[5] == 1u);
  BOOST_TEST(c.errors(transport_error::none) == 2u);
  BOOST_TEST(c.connections_opened == 1u);  // the second request reused the connection
}

BOOST_AUTO_TEST_CASE(post_sends_body_and_headers_without_expect_continue) {
  test_server server;
  auto transport = make_transport();
  http_request r = get(server.url("/echo"));
  r.method = "POST";
  r.body = std::string(4000, 'b');  // large enough that curl would add Expect: 100-continue
  r.headers.add("Content-Type", "application/json; charset=utf-8");
  r.headers.add("x-ms-client-request-id", "req-1");
  auto resp = send_and_wait(*transport, r);
  BOOST_REQUIRE_MESSAGE(resp.ok(), describe(resp));
  BOOST_TEST(resp.body == r.body);
  auto seen = server.seen();
  BOOST_REQUIRE_EQUAL(seen.size(), 1u);
  BOOST_TEST(seen[0].method == "POST");
  BOOST_TEST(seen[0].body.size() == 4000u);
  BOOST_TEST(seen[0].headers.get("content-type").value_or("-") == "application/json; charset=utf-8");
  BOOST_TEST(seen[0].headers.get("x-ms-client-request-id").value_or("-") == "req-1");
  BOOST_TEST(!seen[0].headers.contains("Expect"));
}

BOOST_AUTO_TEST_CASE(many_concurrent_requests_complete_from_one_io_thread) {
  test_server server;
  collector c;
  auto transport = make_transport();
  constexpr std::size_t n = 25;
  constexpr long delay_ms = 400;
  auto start = steady::now();
  for (std::size_t i = 0; i < n; ++i)
    transport->send(get(server.url("/delay/" + std::to_string(delay_ms))), c.sink());
  BOOST_REQUIRE(c.wait(n, 30s));
  long took = ms_since(start);
  BOOST_TEST_MESSAGE(n << " requests of " << delay_ms << " ms took " << took << " ms");
  BOOST_TEST(took < static_cast<long>(n) * delay_ms / 2);  // far from serial
  auto got = c.snapshot();
  std::set<std::thread::id> threads;
  for (const auto& e : got) {
    BOOST_TEST(e.response.status == 200, describe(e.response));
    threads.insert(e.thread);
  }
  BOOST_TEST(threads.size() == 1u);
  BOOST_TEST((*threads.begin() != std::this_thread::get_id()));
  BOOST_TEST(transport->counters().by_status_class[2] == n);
}

BOOST_AUTO_TEST_CASE(a_server_that_never_answers_times_out_within_the_bound) {
  test_server server;
  auto transport = make_transport();
  http_request r = get(server.url("/hang"));
  r.timeout = 300ms;
  auto start = steady::now();
  auto resp = send_and_wait(*transport, r);
  long took = ms_since(start);
  BOOST_TEST((resp.error == transport_error::timeout), describe(resp));
  BOOST_TEST(resp.timed_out());
  BOOST_TEST(took >= 250);
  BOOST_TEST(took < 3000);
  BOOST_TEST(resp.error_message.find("/hang") != std::string::npos);
  BOOST_TEST(transport->counters().errors(transport_error::timeout) == 1u);

  // Over TLS too: the handshake finished, so it is `timeout`, not `connect_timeout`.
  test_server tls_server(true);
  auto tls_hang = tls_get(tls_server, "/hang");
  tls_hang.timeout = 300ms;
  auto tls_resp = send_and_wait(*transport, tls_hang);
  BOOST_TEST((tls_resp.error == transport_error::timeout), describe(tls_resp));
}

BOOST_AUTO_TEST_CASE(a_stalled_answer_on_a_reused_connection_is_timeout_not_connect_timeout) {
  // curl reports a connect time of 0 for a reused connection; the request went out, so the
  // connection was there (found by the simulator's latency fault after a warm-up call).
  test_server server;
  auto transport = make_transport();
  auto warm = send_and_wait(*transport, get(server.url("/hello")));
  BOOST_REQUIRE_MESSAGE(warm.ok(), describe(warm));
  http_request r = get(server.url("/hang"));
  r.timeout = 300ms;
  auto resp = send_and_wait(*transport, r);
  BOOST_TEST((resp.error == transport_error::timeout), describe(resp));
  BOOST_TEST(transport->counters().connections_opened == 1u); // it was reused
}

BOOST_AUTO_TEST_CASE(connection_refused_fails_fast_with_connect_failed) {
  auto transport = make_transport();
  http_request r = get("http://127.0.0.1:" + std::to_string(closed_port()) + "/");
  auto start = steady::now();
  auto resp = send_and_wait(*transport, r);
  BOOST_TEST((resp.error == transport_error::connect_failed), describe(resp));
  BOOST_TEST(ms_since(start) < 1000);
  BOOST_TEST(resp.status == 0);
}

BOOST_AUTO_TEST_CASE(a_listener_that_completes_no_tcp_handshake_gives_connect_timeout) {
  // listen(0) plus a few unaccepted connections fill the accept queue; Linux then drops
  // further SYNs, which is what an absent IMDS looks like from the probe.
  net::io_context ioc;
  tcp::acceptor acceptor(ioc);
  tcp::endpoint ep(net::ip::make_address("127.0.0.1"), 0);
  acceptor.open(ep.protocol());
  acceptor.bind(ep);
  acceptor.listen(0);
  ep = acceptor.local_endpoint();
  // Raw non-blocking connects: Asio's synchronous connect would wait for them.
  std::vector<int> fillers;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(ep.port());
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < 4; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    BOOST_REQUIRE(fd >= 0);
    fillers.push_back(fd);
    (void)::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));  // EINPROGRESS
  }
  std::this_thread::sleep_for(100ms);

  auto transport = make_transport();
  http_request r = get("http://127.0.0.1:" + std::to_string(ep.port()) + "/");
  r.connect_timeout = 300ms;
  auto start = steady::now();
  auto resp = send_and_wait(*transport, r);
  long took = ms_since(start);
  BOOST_TEST((resp.error == transport_error::connect_timeout), describe(resp));
  BOOST_TEST(took >= 250);
  BOOST_TEST(took < 3000);
  for (int fd : fillers)
    ::close(fd);
}

BOOST_AUTO_TEST_CASE(a_tls_handshake_that_never_completes_is_a_connect_timeout) {
  // TCP accepted (by the kernel) but no TLS answer: connect_timeout bounds the handshake too.
  net::io_context ioc;
  tcp::acceptor silent(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  auto transport = make_transport();
  http_request r = get("https://127.0.0.1:" + std::to_string(silent.local_endpoint().port()) + "/");
  r.connect_timeout = 300ms;
  r.timeout = 10s;
  auto start = steady::now();
  auto resp = send_and_wait(*transport, r);
  long took = ms_since(start);
  BOOST_TEST((resp.error == transport_error::connect_timeout), describe(resp));
  BOOST_TEST(took >= 250);
  BOOST_TEST(took < 3000);
}

BOOST_AUTO_TEST_CASE(bodies_over_the_limit_fail_with_too_large) {
  test_server server;
  auto transport = make_transport();
  http_request sized = get(server.url("/big/5000"));  // Content-Length known up front
  sized.max_response_bytes = 1000;
  auto a = send_and_wait(*transport, sized);
  BOOST_TEST((a.error == transport_error::too_large), describe(a));

  http_request chunked = get(server.url("/chunked/5000"));  // caught in the write callback
  chunked.max_response_bytes = 1000;
  auto b = send_and_wait(*transport, chunked);
  BOOST_TEST((b.error == transport_error::too_large), describe(b));
  BOOST_TEST(b.error_message.find("exceeds 1000 bytes") != std::string::npos);

  http_request exact = get(server.url("/chunked/1000"));
  exact.max_response_bytes = 1000;
  auto e = send_and_wait_entry(*transport, exact);
  const http_response& c = e.response;
  BOOST_REQUIRE_MESSAGE(c.ok(), describe(c));
  BOOST_TEST(c.body.size() == 1000u);
  BOOST_TEST(e.body_capacity >= 1000u + 64u);
  BOOST_TEST(transport->counters().errors(transport_error::too_large) == 2u);
}

// Review L3: a server cannot make one response hold unbounded header memory.
BOOST_AUTO_TEST_CASE(responses_with_too_many_header_fields_fail_with_too_large) {
  test_server server;
  auto transport = make_transport();
  auto fine = send_and_wait(*transport, get(server.url("/headers/90")));
  BOOST_REQUIRE_MESSAGE(fine.ok(), describe(fine));
  BOOST_TEST(fine.headers.fields.size() == 91u); // and Content-Length
  auto many = send_and_wait(*transport, get(server.url("/headers/10000")));
  BOOST_TEST((many.error == transport_error::too_large), describe(many));
  BOOST_TEST(many.error_message.find("response headers exceed 100 fields") != std::string::npos,
             many.error_message);
  // The connection that carried it is not reused for a bad state: the next request works.
  BOOST_TEST(send_and_wait(*transport, get(server.url("/hello"))).status == 200);
}

BOOST_AUTO_TEST_CASE(a_response_cut_short_fails_with_reset) {
  test_server server;
  auto transport = make_transport();
  auto r = send_and_wait(*transport, get(server.url("/truncate")));
  BOOST_TEST((r.error == transport_error::reset), describe(r));
}

BOOST_AUTO_TEST_CASE(requests_that_cannot_be_sent_fail_with_other_and_a_reason) {
  test_server server;
  auto transport = make_transport();
  auto zero = get(server.url("/hello"));
  zero.timeout = 0ms;
  auto a = send_and_wait(*transport, zero);
  BOOST_TEST((a.error == transport_error::other));
  BOOST_TEST(a.error_message.find("timeout must be positive") != std::string::npos);

  auto get_with_body = get(server.url("/hello"));
  get_with_body.body = "x";
  BOOST_TEST(send_and_wait(*transport, get_with_body).error_message.find("cannot carry a body") != std::string::npos);

  auto injected = get(server.url("/hello"));
  injected.headers.add("X-Bad", "a\r\nInjected: yes");
  BOOST_TEST(send_and_wait(*transport, injected).error_message.find("forbidden characters") != std::string::npos);

  auto ftp = get("ftp://127.0.0.1/file");
  auto d = send_and_wait(*transport, ftp);
  BOOST_TEST((d.error == transport_error::other), describe(d));

  auto method = get(server.url("/hello"));
  method.method = "TRACE";
  BOOST_TEST(send_and_wait(*transport, method).error_message.find("unsupported method") != std::string::npos);
  BOOST_TEST(server.seen().empty());
}

BOOST_AUTO_TEST_CASE(a_completion_can_send_the_next_request) {
  test_server server;
  auto transport = make_transport();
  collector c;
  io::transport* t = transport.get();
  transport->send(get(server.url("/status/500")), [&, t](http_response first) {
    c.sink()(std::move(first));
    t->send(get(server.url("/hello")), c.sink());  // the retry, from the I/O thread
  });
  BOOST_REQUIRE(c.wait(2));
  auto got = c.snapshot();
  BOOST_TEST(got[0].response.status == 500);
  BOOST_TEST(got[1].response.status == 200);
}

BOOST_AUTO_TEST_CASE(shutdown_answers_every_pending_transfer_with_cancelled) {
  test_server server;
  collector c;
  auto transport = make_transport();
  for (int i = 0; i < 5; ++i) {
    auto r = get(server.url("/hang"));
    r.timeout = 60s;
    transport->send(r, c.sink());
  }
  BOOST_REQUIRE(server.wait_seen(5, 10s));
  auto start = steady::now();
  transport->shutdown();
  BOOST_TEST(ms_since(start) < 2000);
  auto got = c.snapshot();  // shutdown() returns after the completions ran
  BOOST_REQUIRE_EQUAL(got.size(), 5u);
  for (const auto& e : got)
    BOOST_TEST((e.response.error == transport_error::cancelled), describe(e.response));

  transport->send(get(server.url("/hello")), c.sink());  // answered at once, on this thread
  got = c.snapshot();
  BOOST_REQUIRE_EQUAL(got.size(), 6u);
  BOOST_TEST((got[5].response.error == transport_error::cancelled));
  BOOST_TEST((got[5].thread == std::this_thread::get_id()));
  transport->shutdown();  // idempotent
  BOOST_TEST(transport->counters().errors(transport_error::cancelled) == 6u);
}

BOOST_AUTO_TEST_CASE(destroying_the_transport_answers_queued_and_running_transfers) {
  test_server server;
  collector c;
  {
    auto transport = make_transport();
    for (int i = 0; i < 20; ++i) {
      auto r = get(server.url(i % 2 ? "/hang" : "/delay/5000"));
      transport->send(r, c.sink());
    }
  }
  auto got = c.snapshot();
  BOOST_REQUIRE_EQUAL(got.size(), 20u);
  for (const auto& e : got)
    BOOST_TEST((e.response.error == transport_error::cancelled), describe(e.response));
}

BOOST_AUTO_TEST_CASE(proxies_are_ignored_unless_the_request_allows_them) {
  test_server server;
  std::string dead_proxy = "http://127.0.0.1:" + std::to_string(closed_port());
  setenv("http_proxy", dead_proxy.c_str(), 1);  // before the transport's thread exists
  {
    auto transport = make_transport();
    auto direct = send_and_wait(*transport, get(server.url("/hello")));
    BOOST_TEST(direct.status == 200, describe(direct));
    auto via_proxy = get(server.url("/hello"));
    via_proxy.use_proxy = true;
    auto proxied = send_and_wait(*transport, via_proxy);
    BOOST_TEST((proxied.error == transport_error::connect_failed), describe(proxied));
  }
  unsetenv("http_proxy");
}

BOOST_AUTO_TEST_CASE(https_trusts_the_given_ca_by_blob_or_file_and_fails_with_another) {
  test_server server(true);
  auto transport = make_transport();
  auto by_blob = send_and_wait(*transport, tls_get(server, "/hello"));
  BOOST_TEST(by_blob.status == 200, describe(by_blob));

  char path[] = "/tmp/msiv2-io-ca-XXXXXX";
  int fd = mkstemp(path);
  BOOST_REQUIRE(fd >= 0);
  std::string pem = pki().pem_a();
  BOOST_REQUIRE(write(fd, pem.data(), pem.size()) == static_cast<ssize_t>(pem.size()));
  close(fd);
  auto file_req = get(server.url("/hello"));
  file_req.ca_file = path;
  auto by_file = send_and_wait(*transport, file_req);
  std::remove(path);
  BOOST_TEST(by_file.status == 200, describe(by_file));

  auto wrong = tls_get(server, "/hello");
  wrong.ca_pem = pki().pem_b();
  auto refused = send_and_wait(*transport, wrong);
  BOOST_TEST((refused.error == transport_error::tls_failed), describe(refused));

  auto system_store = get(server.url("/hello"));  // our test CA is in no system store
  auto untrusted = send_and_wait(*transport, system_store);
  BOOST_TEST((untrusted.error == transport_error::tls_failed), describe(untrusted));
  BOOST_TEST(server.seen().size() == 2u);
}

// The CA store curl builds from a file is cached per transport (not parsed per connection);
// a file replaced under the same path (a restarted simulator writes a new CA) is trusted, and
// the old one no longer, from the next connection on.
BOOST_AUTO_TEST_CASE(a_ca_file_replaced_under_the_same_path_is_used_from_the_next_connection) {
  test_server first(true), second(true), third(true);
  auto transport = make_transport();
  char dir[] = "/tmp/msiv2-io-ca-XXXXXX";
  BOOST_REQUIRE(mkdtemp(dir) != nullptr);
  std::string path = std::string(dir) + "/ca.pem";
  auto write_ca = [&](const std::string& pem) {
    std::string tmp = path + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    BOOST_REQUIRE(f != nullptr);
    BOOST_REQUIRE(std::fwrite(pem.data(), 1, pem.size(), f) == pem.size());
    std::fclose(f);
    BOOST_REQUIRE(std::rename(tmp.c_str(), path.c_str()) == 0);
  };
  auto via_file = [&](test_server& server) {
    auto r = get(server.url("/hello"));
    r.ca_file = path;
    return send_and_wait(*transport, r);
  };
  write_ca(pki().pem_a());
  auto trusted = via_file(first);
  BOOST_TEST(trusted.status == 200, describe(trusted));
  write_ca(pki().pem_b()); // another CA: the servers' certificates no longer verify
  auto refused = via_file(second);
  BOOST_TEST((refused.error == transport_error::tls_failed), describe(refused));
  write_ca(pki().pem_a());
  auto again = via_file(third);
  BOOST_TEST(again.status == 200, describe(again));
  std::remove(path.c_str());
  rmdir(dir);
}

BOOST_AUTO_TEST_CASE(client_certificate_reaches_the_server_through_the_ssl_ctx_callback) {
  test_server server(true, client_certs::any);
  auto transport = make_transport();
  auto r = send_and_wait(*transport, tls_get(server, "/whoami", pki().identity(pki().client_a)));
  BOOST_REQUIRE_MESSAGE(r.ok(), describe(r));
  BOOST_TEST(r.status == 200);
  auto seen = server.seen();
  BOOST_REQUIRE_EQUAL(seen.size(), 1u);
  BOOST_TEST(seen[0].client_cn == "client-a");

  auto anonymous = send_and_wait(*transport, tls_get(server, "/whoami"));
  BOOST_TEST(anonymous.status == 200, describe(anonymous));
  BOOST_TEST(server.seen().at(1).client_cn == "");
}

// Review M3: a client certificate is only ever presented over TLS.
BOOST_AUTO_TEST_CASE(a_request_with_a_client_certificate_to_an_http_url_is_refused_unsent) {
  test_server plain;
  auto transport = make_transport();
  auto r = get(plain.url("/whoami"));
  r.identity = pki().identity(pki().client_a);
  auto refused = send_and_wait(*transport, r);
  BOOST_TEST((refused.error == transport_error::other), describe(refused));
  BOOST_TEST(refused.error_message.find("https required") != std::string::npos, refused.error_message);
  BOOST_TEST(plain.connections() == 0u);
  BOOST_TEST(plain.seen().empty());
}

BOOST_AUTO_TEST_CASE(client_identities_never_share_a_connection_but_each_reuses_its_own) {
  test_server server(true, client_certs::any);
  auto transport = make_transport();
  auto a = pki().identity(pki().client_a);
  auto b = pki().identity(pki().client_b);
  // Sequential, interleaved: every request finds an idle connection of the other identity.
  const std::vector<std::shared_ptr<const io::client_identity>> order = {a, b, a, nullptr, b, a, nullptr, b};
  for (const auto& id : order) {
    auto r = send_and_wait(*transport, tls_get(server, "/whoami", id));
    BOOST_REQUIRE_MESSAGE(r.status == 200, describe(r));
  }
  auto seen = server.seen();
  BOOST_REQUIRE_EQUAL(seen.size(), order.size());
  std::map<std::string, std::set<std::uint64_t>> connections_by_cn;
  for (std::size_t i = 0; i < order.size(); ++i) {
    std::string expected = order[i] == a ? "client-a" : order[i] == b ? "client-b" : "";
    BOOST_TEST(seen[i].client_cn == expected, "request " << i);
    connections_by_cn[seen[i].client_cn].insert(seen[i].connection);
  }
  // One connection per identity (and one without): reused within, never across.
  BOOST_TEST(connections_by_cn["client-a"].size() == 1u);
  BOOST_TEST(connections_by_cn["client-b"].size() == 1u);
  BOOST_TEST(connections_by_cn[""].size() == 1u);
  BOOST_TEST(server.connections() == 3u);
  BOOST_TEST(transport->counters().connections_opened == 3u);
}

BOOST_AUTO_TEST_CASE(concurrent_requests_of_two_identities_each_present_their_own_certificate) {
  test_server server(true, client_certs::any);
  auto transport = make_transport();
  auto a = pki().identity(pki().client_a);
  auto b = pki().identity(pki().client_b);
  collector c;
  constexpr int rounds = 3;
  constexpr int per_round = 8;
  for (int round = 0; round < rounds; ++round) {
    std::size_t before = c.snapshot().size();
    for (int i = 0; i < per_round; ++i) {
      bool use_a = i % 2 == 0;
      auto r = tls_get(server, "/delay/50", use_a ? a : b);
      r.headers.add("X-Expect-CN", use_a ? "client-a" : "client-b");
      transport->send(r, c.sink());
    }
    BOOST_REQUIRE(c.wait(before + per_round));
  }
  for (const auto& e : c.snapshot())
    BOOST_TEST(e.response.status == 200, describe(e.response));
  std::map<std::uint64_t, std::set<std::string>> cns_by_connection;
  for (const auto& s : server.seen()) {
    BOOST_TEST(s.client_cn == std::string(s.headers.get("X-Expect-CN").value_or("?")));
    cns_by_connection[s.connection].insert(s.client_cn);
  }
  for (const auto& [conn, cns] : cns_by_connection)
    BOOST_TEST(cns.size() == 1u, "connection " << conn << " carried more than one identity");
  // Later rounds reused connections of the first.
  BOOST_TEST(server.connections() < static_cast<std::uint64_t>(rounds * per_round));
}

BOOST_AUTO_TEST_CASE(resumed_tls_sessions_stay_with_their_identity) {
  test_server server(true, client_certs::any);
  auto transport = make_transport();
  auto a = pki().identity(pki().client_a);
  auto b = pki().identity(pki().client_b);
  // "Connection: close" makes every request a new connection, which may resume a session.
  const std::vector<std::shared_ptr<const io::client_identity>> order = {a, b, a, b, nullptr, a, b};
  for (const auto& id : order) {
    auto r = tls_get(server, "/whoami", id);
    r.headers.add("Connection", "close");
    auto resp = send_and_wait(*transport, r);
    BOOST_REQUIRE_MESSAGE(resp.status == 200, describe(resp));
  }
  auto seen = server.seen();
  BOOST_REQUIRE_EQUAL(seen.size(), order.size());
  int resumed = 0;
  for (std::size_t i = 0; i < order.size(); ++i) {
    std::string expected = order[i] == a ? "client-a" : order[i] == b ? "client-b" : "";
    BOOST_TEST(seen[i].client_cn == expected, "request " << i);
    resumed += seen[i].resumed ? 1 : 0;
  }
  BOOST_TEST(server.connections() == order.size());
  BOOST_TEST(!seen[4].resumed);  // no identity: nothing to resume from
  BOOST_TEST(resumed >= 2, "sessions resumed: " << resumed);  // resumption was exercised
}

BOOST_AUTO_TEST_CASE(a_burst_on_one_identity_opens_at_most_the_bound_of_connections_resuming_the_first_session) {
  test_server server(true, client_certs::any);
  auto transport = make_bounded_transport(3);
  auto a = pki().identity(pki().client_a);
  collector c;
  constexpr std::size_t n = 12;
  for (std::size_t i = 0; i < n; ++i)
    transport->send(tls_get(server, "/delay/30", a), c.sink());
  BOOST_REQUIRE(c.wait(n));
  for (const auto& e : c.snapshot())
    BOOST_TEST(e.response.status == 200, describe(e.response));

  auto seen = server.seen();
  BOOST_REQUIRE_EQUAL(seen.size(), n);
  std::map<std::uint64_t, bool> resumed_by_connection;
  for (const auto& s : seen) {
    BOOST_TEST(s.client_cn == "client-a");
    resumed_by_connection[s.connection] = s.resumed;
  }
  BOOST_TEST(server.connections() <= 3u);
  BOOST_TEST(resumed_by_connection.size() == server.connections());
  // The first connection made the session; the later ones resumed it. Known limit: the
  // two connections opened together once the first has finished present the same cached
  // ticket, and under load one of them now and then does a full handshake (seen once in
  // a parallel ctest run here, never when run alone; also seen against the simulator).
  BOOST_TEST(!resumed_by_connection.at(1));
  std::size_t resumed_connections = 0;
  for (const auto& [conn, resumed] : resumed_by_connection)
    resumed_connections += resumed ? 1 : 0;
  BOOST_TEST(resumed_connections >= std::min<std::size_t>(1, server.connections() - 1));
  BOOST_TEST(resumed_connections + 2 >= server.connections());  // at most one extra full

  auto counters = transport->counters();
  BOOST_TEST(counters.connections_opened == server.connections());
  BOOST_TEST(counters.tls_sessions_resumed == resumed_connections);
  // Only the first ran until it finished: the other eleven waited for a slot.
  BOOST_TEST(counters.queued_for_pool == n - 1);
}

BOOST_AUTO_TEST_CASE(bursts_of_two_identities_never_share_a_connection_or_a_session) {
  test_server server(true, client_certs::any);
  auto transport = make_bounded_transport(2);
  auto a = pki().identity(pki().client_a);
  auto b = pki().identity(pki().client_b);
  collector c;
  constexpr int per_identity = 8;
  for (int i = 0; i < 2 * per_identity; ++i) {
    bool use_a = i % 2 == 0;
    auto r = tls_get(server, "/delay/20", use_a ? a : b);
    r.headers.add("X-Expect-CN", use_a ? "client-a" : "client-b");
    transport->send(r, c.sink());
  }
  BOOST_REQUIRE(c.wait(2 * per_identity));
  for (const auto& e : c.snapshot())
    BOOST_TEST(e.response.status == 200, describe(e.response));
  std::map<std::uint64_t, std::set<std::string>> cns_by_connection;
  int resumed_requests = 0;
  for (const auto& s : server.seen()) {
    // Resumed or not, the server sees the certificate of the request's own identity.
    BOOST_TEST(s.client_cn == std::string(s.headers.get("X-Expect-CN").value_or("?")),
               "resumed " << s.resumed);
    cns_by_connection[s.connection].insert(s.client_cn);
    resumed_requests += s.resumed ? 1 : 0;
  }
  for (const auto& [conn, cns] : cns_by_connection)
    BOOST_TEST(cns.size() == 1u, "connection " << conn << " carried more than one identity");
  BOOST_TEST(server.connections() <= 4u);
  BOOST_TEST(resumed_requests > 0);
  BOOST_TEST(transport->counters().tls_sessions_resumed >= 1u);
}

BOOST_AUTO_TEST_CASE(a_request_waiting_for_its_identity_fails_at_its_own_deadline) {
  test_server server(true, client_certs::any);
  auto transport = make_bounded_transport(1);
  auto a = pki().identity(pki().client_a);
  collector c;
  auto slow = tls_get(server, "/delay/1500", a);
  slow.headers.add("X-Which", "slow");
  transport->send(slow, c.sink());
  auto waiting = tls_get(server, "/hello", a);
  waiting.timeout = 300ms;
  transport->send(waiting, c.sink());
  BOOST_REQUIRE(c.wait(2));
  auto got = c.snapshot();
  // The waiting one ended first, without reaching the server.
  BOOST_TEST((got[0].response.error == transport_error::timeout), describe(got[0].response));
  BOOST_TEST(got[0].response.error_message.find("waiting for a connection") != std::string::npos,
             got[0].response.error_message);
  BOOST_TEST(got[0].response.error_message.find("/hello") != std::string::npos);
  BOOST_TEST(got[1].response.status == 200, describe(got[1].response));
  auto seen = server.seen();
  BOOST_REQUIRE_EQUAL(seen.size(), 1u);
  BOOST_TEST(seen[0].target == "/delay/1500");
  auto counters = transport->counters();
  BOOST_TEST(counters.queued_for_pool == 1u);
  BOOST_TEST(counters.errors(transport_error::timeout) == 1u);
}

BOOST_AUTO_TEST_CASE(shutdown_answers_requests_waiting_for_their_identity_with_cancelled) {
  test_server server(true, client_certs::any);
  auto transport = make_bounded_transport(1);
  auto a = pki().identity(pki().client_a);
  collector c;
  for (int i = 0; i < 4; ++i) {
    auto r = tls_get(server, "/hang", a);
    r.timeout = 60s;
    transport->send(r, c.sink());
  }
  BOOST_REQUIRE(server.wait_seen(1, 10s));
  transport->shutdown();
  auto got = c.snapshot();
  BOOST_REQUIRE_EQUAL(got.size(), 4u);
  for (const auto& e : got)
    BOOST_TEST((e.response.error == transport_error::cancelled), describe(e.response));
  BOOST_TEST(server.seen().size() == 1u);
  BOOST_TEST(transport->counters().queued_for_pool == 3u);
}

BOOST_AUTO_TEST_CASE(the_largest_timeout_is_no_immediate_timeout) {
  // The transport computes each request's deadline; the largest duration must not overflow.
  test_server server(true, client_certs::any);
  auto transport = make_transport();
  auto plain = tls_get(server, "/hello");
  plain.timeout = std::chrono::milliseconds::max();
  auto a = send_and_wait(*transport, plain);
  BOOST_TEST(a.status == 200, describe(a));
  auto with_identity = tls_get(server, "/hello", pki().identity(pki().client_a));
  with_identity.timeout = std::chrono::milliseconds::max();
  auto b = send_and_wait(*transport, with_identity);
  BOOST_TEST(b.status == 200, describe(b));
}

BOOST_AUTO_TEST_CASE(a_bound_of_zero_connections_per_identity_is_refused) {
  io::curl_transport_options options;
  options.max_connections_per_identity = 0;
  auto t = io::curl_transport::create(options);
  BOOST_REQUIRE(!t.ok());
  BOOST_TEST(t.error().find("max_connections_per_identity") != std::string::npos, t.error());
}

BOOST_AUTO_TEST_CASE(a_client_certificate_the_server_does_not_trust_is_classified_as_rejected) {
  test_server server(true, client_certs::from_ca_b);  // client-a is from CA a
  auto transport = make_transport();
  auto rejected = send_and_wait(*transport, tls_get(server, "/hello", pki().identity(pki().client_a)));
  BOOST_TEST((rejected.error == transport_error::tls_client_cert_rejected), describe(rejected));

  auto without = send_and_wait(*transport, tls_get(server, "/hello"));
  BOOST_TEST((without.error == transport_error::tls_failed), describe(without));
  BOOST_TEST(server.seen().empty());
}

BOOST_AUTO_TEST_CASE(idle_identity_pools_are_closed_when_their_identity_is_dropped_or_over_the_cap) {
  test_server server(true, client_certs::any);
  io::curl_transport_options options;
  options.max_identity_pools = 1;
  auto transport = make_transport(options);
  auto a = pki().identity(pki().client_a);
  auto b = pki().identity(pki().client_b);
  BOOST_TEST(send_and_wait(*transport, tls_get(server, "/whoami", a)).status == 200);
  BOOST_TEST(send_and_wait(*transport, tls_get(server, "/whoami", a)).status == 200);
  BOOST_TEST(server.connections() == 1u);
  BOOST_TEST(send_and_wait(*transport, tls_get(server, "/whoami", b)).status == 200);
  // Over the cap of one pool: a's pool (least recently used) was closed, so a reconnects.
  BOOST_TEST(send_and_wait(*transport, tls_get(server, "/whoami", a)).status == 200);
  BOOST_TEST(server.connections() == 3u);
  auto seen = server.seen();
  BOOST_TEST(seen.back().client_cn == "client-a");

  // A fresh identity object for the same certificate is a different pool.
  auto a2 = pki().identity(pki().client_a);
  BOOST_TEST(send_and_wait(*transport, tls_get(server, "/whoami", a2)).status == 200);
  BOOST_TEST(server.connections() == 4u);
}

BOOST_AUTO_TEST_CASE(reads_imds_metadata_from_the_simulator) {
  test::sim_fixture sim;
  auto transport = make_transport();
  http_request r = get(sim.urls().imds + "/metadata/identity/getplatformmetadata?cred-api-version=2.0");
  r.headers.add("Metadata", "true");
  r.headers.add("x-ms-client-request-id", "6f1c2d3e-0000-4000-8000-000000000001");
  r.connect_timeout = 1s;
  auto resp = send_and_wait(*transport, r);
  BOOST_REQUIRE_MESSAGE(resp.status == 200, describe(resp) << " body " << resp.body);
  BOOST_TEST(resp.headers.get("server").value_or("").find("IMDS") != std::string_view::npos);
  auto doc = io::json_object::parse(resp.body, "getplatformmetadata response");
  BOOST_REQUIRE_MESSAGE(doc.ok(), (doc.ok() ? std::string() : doc.error()));
  BOOST_TEST(doc->required_string("clientId").ok());
  BOOST_TEST(*doc->required_string("tenantId") == sim.cfg().tenant_id);
  BOOST_TEST(doc->required_object("cuId").ok());
  BOOST_TEST(sim.sim().count("imds_metadata", 200) == 1u);
}

BOOST_AUTO_TEST_CASE(simulator_token_endpoint_needs_a_client_certificate_and_judges_it_itself) {
  test::sim_fixture sim;
  auto transport = make_transport();
  auto token_request = [&](std::shared_ptr<const io::client_identity> id) {
    http_request r = get(sim.urls().token + "/" + sim.cfg().tenant_id + "/oauth2/v2.0/token");
    r.method = "POST";
    r.headers.add("Content-Type", "application/x-www-form-urlencoded");
    r.body = "grant_type=client_credentials&client_id=x&scope=https%3A%2F%2Fr%2F.default&token_type=mtls_pop";
    r.ca_file = sim.urls().ca_file;
    r.identity = std::move(id);
    return send_and_wait(*transport, r);
  };
  auto without = token_request(nullptr);
  BOOST_TEST((without.error == transport_error::tls_failed), describe(without));
  // A certificate the simulator did not issue passes the handshake; the endpoint refuses it.
  auto foreign = token_request(pki().identity(pki().client_a));
  BOOST_REQUIRE_MESSAGE(foreign.ok(), describe(foreign));
  BOOST_TEST(foreign.status == 401);
  BOOST_TEST(foreign.body.find("invalid_client") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
