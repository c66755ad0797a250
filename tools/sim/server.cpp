#include <pthread.h>
#include "tools/sim/server.hpp"

// The Beast/Asio side of the simulator: listeners, sessions (plain and TLS), conversion to
// and from the transport-neutral request/response, faults, counters, the ready file.
// Every socket lives on its own strand; shared state (counters, faults, the session
// registry) is behind mutexes, everything else is immutable once start() returns.

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/crypto.h>

#include "platform/encoding.hpp"
#include "tools/sim/admin.hpp"
#include "tools/sim/authority_support.hpp"
#include "tools/sim/faults.hpp"
#include "tools/sim/imds.hpp"

namespace msiv2::sim {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using error_code = beast::error_code;

constexpr std::size_t max_body = 64 * 1024;
constexpr std::size_t max_header = 16 * 1024;
constexpr auto handshake_timeout = std::chrono::seconds(10);
constexpr auto idle_timeout = std::chrono::seconds(60);
constexpr auto io_timeout = std::chrono::seconds(30);
constexpr auto shutdown_timeout = std::chrono::seconds(2);
constexpr std::string_view continue_line = "HTTP/1.1 100 Continue\r\n\r\n";
/// Counter key for requests answered by closing the connection (the reset fault).
constexpr int reset_key = -1;
/// Counter key for TLS handshakes that refused the client certificate (token_tls fault).
constexpr int rejected_key = -2;

enum class listener_kind { imds, attestation, token, resource, admin };

const char* listener_name(listener_kind k) {
  switch (k) {
  case listener_kind::imds: return "imds";
  case listener_kind::attestation: return "attestation";
  case listener_kind::token: return "token";
  case listener_kind::resource: return "resource";
  case listener_kind::admin: return "admin";
  }
  return "?";
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

std::string host_for_url(const std::string& address) {
  return address.find(':') != std::string::npos ? "[" + address + "]" : address;
}

/// The ready file: 0600 (it holds the admin token), through a temp file of a random name
/// created O_EXCL|O_NOFOLLOW and a rename (review L11).
result<void> write_file_atomically(const std::string& path, const std::string& content) {
  return detail::write_file_safely(path, content, 0600, "ready file");
}

/// 1,000 connections need more descriptors than the usual soft limit of 1,024.
void raise_file_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0)
    return;
  rlim_t want = lim.rlim_max == RLIM_INFINITY ? rlim_t(65536) : std::min<rlim_t>(lim.rlim_max, 65536);
  if (lim.rlim_cur < want) {
    lim.rlim_cur = want;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
}

class simulator_impl;

/// What the registry needs of a session: a way to close it from another thread.
class session_base : public std::enable_shared_from_this<session_base> {
public:
  virtual ~session_base() = default;
  /// Closes the connection on the session's own strand.
  virtual void close_async() = 0;
};

class listener;

class simulator_impl final : public simulator {
public:
  explicit simulator_impl(config cfg) : cfg_(std::move(cfg)) {}
  ~simulator_impl() override;

  result<void> init();

  const endpoints& urls() const override { return urls_; }
  config current_config() const override {
    config c = cfg_;
    c.faults = faults_.snapshot();
    return c;
  }
  void stop() override;
  std::uint64_t count(std::string_view endpoint, int status) const override;
  std::string counters_json() const override;
  std::uint64_t count_sku(std::string_view sku) const override {
    std::lock_guard lock(counters_mutex_);
    auto it = by_sku_.find(sku);
    return it == by_sku_.end() ? 0 : it->second;
  }
  std::vector<logged_request> recent_requests() const override {
    std::lock_guard lock(counters_mutex_);
    return {log_.begin(), log_.end()};
  }
  std::uint64_t tls_handshakes(std::string_view listener, bool resumed_only) const override {
    for (auto kind : {listener_kind::attestation, listener_kind::token, listener_kind::resource})
      if (listener == listener_name(kind))
        return (resumed_only ? resumed_ : handshakes_)[static_cast<std::size_t>(kind)].load();
    return 0;
  }
  result<void> set_fault(std::string_view endpoint, fault_spec spec) override {
    return faults_.set(endpoint, std::move(spec));
  }
  void clear_faults() override { faults_.clear(); }
  void advance_clock(std::int64_t seconds) override { clock_offset_ += seconds; }
  authority& pki() override { return *pki_; }
  void reset() override {
    {
      std::lock_guard lock(counters_mutex_);
      counters_.clear();
      log_.clear();
      by_sku_.clear();
    }
    for (auto& n : handshakes_)
      n = 0;
    for (auto& n : resumed_)
      n = 0;
    faults_.clear();
    clock_offset_ = 0;
    pki_->reset();
  }

  // --- used by sessions (any I/O thread) ---

  /// The endpoint name a request addresses ("" when none: 404 or admin).
  std::string route(listener_kind kind, const request& req) const;
  /// The answer of the service behind `kind`.
  response answer(listener_kind kind, const std::string& endpoint, const request& req);
  /// Why an admin request is refused (wrong Host, missing or wrong bearer token); nullopt: ok.
  std::optional<response> admin_refusal(const request& req) const;
  fault_decision next_fault(const std::string& endpoint) { return faults_.next(endpoint); }
  void record(const std::string& endpoint, int status);
  /// Adds a request to the bounded log of GET /requests and counts its x-client-SKU.
  void log_request(listener_kind kind, const std::string& endpoint, const request& req,
                   int status);
  void note_handshake(listener_kind kind, bool resumed) {
    ++handshakes_[static_cast<std::size_t>(kind)];
    if (resumed)
      ++resumed_[static_cast<std::size_t>(kind)];
  }
  const std::string& server_header() const { return cfg_.imds_server_header; }
  /// Adds a live session; false when stopping (the caller closes it).
  bool add_session(const std::shared_ptr<session_base>& s);
  void remove_session(session_base* s);
  bool stopping() const { return stopping_.load(std::memory_order_acquire); }
  std::int64_t now() const {
    auto real = std::chrono::duration_cast<std::chrono::seconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
    return real + clock_offset_.load();
  }
  ssl::context* tls_context(listener_kind kind) {
    switch (kind) {
    case listener_kind::attestation: return attestation_tls_ ? &*attestation_tls_ : nullptr;
    case listener_kind::token: return token_tls_ ? &*token_tls_ : nullptr;
    case listener_kind::resource: return resource_tls_ ? &*resource_tls_ : nullptr;
    default: return nullptr;
    }
  }

private:
  result<void> prepare_state_dir();
  result<ssl::context> make_tls(listener_kind kind);
  result<void> open_listener(listener_kind kind, std::uint16_t port, std::string& url,
                             const char* scheme);
  std::string ready_json() const;
  void run_io();

  // Declared first so that they outlive every session and handler destroyed with ioc_.
  config cfg_;
  endpoints urls_;
  std::string state_dir_;
  bool own_state_dir_ = false;
  std::unique_ptr<authority> pki_;
  std::unique_ptr<imds_service> imds_;
  fault_table faults_;
  std::atomic<std::int64_t> clock_offset_{0};

  mutable std::mutex counters_mutex_;
  std::map<std::string, std::map<int, std::uint64_t>, std::less<>> counters_;
  std::deque<logged_request> log_;                               // newest last, bounded
  std::map<std::string, std::uint64_t, std::less<>> by_sku_;     // x-client-SKU -> requests
  std::array<std::atomic<std::uint64_t>, 5> handshakes_{};  // by listener_kind
  std::array<std::atomic<std::uint64_t>, 5> resumed_{};

  std::mutex sessions_mutex_;
  std::unordered_map<session_base*, std::weak_ptr<session_base>> sessions_;
  std::atomic<bool> stopping_{false};

  std::mutex stop_mutex_;
  bool stopped_ = false;

  std::optional<ssl::context> attestation_tls_;
  std::optional<ssl::context> token_tls_;
  std::optional<ssl::context> resource_tls_;

  net::io_context ioc_;
  std::vector<std::shared_ptr<listener>> listeners_;
  std::vector<std::thread> threads_;
};

/// One connection: reads requests, applies faults, answers, keeps the connection alive.
template <class Stream>
class session final : public session_base {
public:
  static constexpr bool tls = !std::is_same_v<Stream, beast::tcp_stream>;

  template <class... Args>
  session(simulator_impl& sim, listener_kind kind, Args&&... stream_args)
      : sim_(sim), kind_(kind), stream_(std::forward<Args>(stream_args)...),
        timer_(stream_.get_executor()) {}

  ~session() override { sim_.remove_session(this); }

  /// Registers and starts on the session's strand.
  void start() {
    net::dispatch(stream_.get_executor(), [self = shared()] {
      if (!self->sim_.add_session(self)) {
        self->close_now();
        return;
      }
      self->on_start();
    });
  }

  void close_async() override {
    net::post(stream_.get_executor(), [self = shared()] { self->close_now(); });
  }

private:
  std::shared_ptr<session> shared() {
    return std::static_pointer_cast<session>(shared_from_this());
  }
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  void on_start() {
    if constexpr (tls) {
      if (kind_ == listener_kind::token) {
        // Faults of the token listener's handshake (new connections only).
        auto d = sim_.next_fault("token_tls");
        if (d.reset) {
          sim_.record("token_tls", reset_key);
          error_code ignored;
          lowest().socket().set_option(net::socket_base::linger(true, 0), ignored);
          return close_now();
        }
        if (d.reject_client_cert) {
          sim_.record("token_tls", rejected_key);
          // The handshake fails with an alert about the client certificate.
          SSL_set_verify(stream_.native_handle(),
                         SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                         [](int, X509_STORE_CTX* ctx) {
                           X509_STORE_CTX_set_error(ctx, X509_V_ERR_CERT_REJECTED);
                           return 0; // alert "bad certificate"
                         });
        }
        if (d.latency.count() > 0) {
          timer_.expires_after(d.latency);
          timer_.async_wait([self = shared()](error_code tec) {
            if (tec || self->closing_)
              return;
            self->start_handshake();
          });
          return;
        }
      }
      start_handshake();
    } else {
      do_read();
    }
  }

  void start_handshake() {
    if constexpr (tls) {
      lowest().expires_after(handshake_timeout);
      stream_.async_handshake(ssl::stream_base::server,
                              [self = shared()](error_code ec) { self->on_handshake(ec); });
    }
  }

  void on_handshake(error_code ec) {
    if (ec || closing_)
      return close_now();
    if constexpr (tls) {
      sim_.note_handshake(kind_, SSL_session_reused(stream_.native_handle()) == 1);
      // The authority judges the certificate; the TLS layer only hands it over. On a resumed
      // session it is the certificate of the full handshake that made the session.
      if (X509* peer = SSL_get0_peer_certificate(stream_.native_handle())) {
        int len = i2d_X509(peer, nullptr);
        if (len > 0) {
          peer_der_.resize(static_cast<std::size_t>(len));
          auto* out = reinterpret_cast<unsigned char*>(peer_der_.data());
          i2d_X509(peer, &out);
        }
      }
    }
    do_read();
  }

  void do_read() {
    if (closing_)
      return;
    parser_.emplace();
    parser_->body_limit(max_body);
    parser_->header_limit(max_header);
    lowest().expires_after(idle_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared()](error_code ec, std::size_t) { self->on_header(ec); });
  }

  void on_header(error_code ec) {
    if (closing_)
      return;
    if (ec)
      return on_read_error(ec);
    // curl sends Expect: 100-continue on larger POSTs and waits a second for the go-ahead.
    if (iequals(parser_->get()[http::field::expect], "100-continue")) {
      lowest().expires_after(io_timeout);
      net::async_write(stream_, net::buffer(continue_line.data(), continue_line.size()),
                       [self = shared()](error_code wec, std::size_t) {
                         if (wec || self->closing_)
                           return self->close_now();
                         self->read_body();
                       });
      return;
    }
    read_body();
  }

  void read_body() {
    lowest().expires_after(io_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared()](error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read_error(error_code ec) {
    if (ec == http::error::body_limit)
      return send_error(413, "request_too_large",
                        "The request body exceeds " + std::to_string(max_body) + " bytes");
    if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message)
      return send_error(400, "invalid_request", "Malformed HTTP request: " + ec.message());
    if (ec == http::error::end_of_stream)
      return close_gracefully();
    close_now();
  }

  void on_read(error_code ec) {
    if (closing_)
      return;
    if (ec)
      return on_read_error(ec);
    auto msg = parser_->release();
    keep_alive_ = msg.keep_alive();
    req_ = request{};
    req_.method = std::string(msg.method_string());
    req_.target = std::string(msg.target());
    if (auto r = parse_target(req_.target, req_); !r)
      return send_error(400, "invalid_request", r.error());
    req_.headers.reserve(std::distance(msg.begin(), msg.end()));
    for (const auto& field : msg)
      req_.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    req_.body = std::move(msg.body());
    req_.client_cert_der = peer_der_;

    endpoint_ = sim_.route(kind_, req_);
    decision_ = endpoint_.empty() ? fault_decision{} : sim_.next_fault(endpoint_);
    if (decision_.latency.count() > 0) {
      timer_.expires_after(decision_.latency);
      timer_.async_wait([self = shared()](error_code tec) {
        if (tec || self->closing_)
          return;
        self->respond();
      });
      return;
    }
    respond();
  }

  void respond() {
    if (decision_.reset) {
      sim_.record(endpoint_, reset_key);
      sim_.log_request(kind_, endpoint_, req_, reset_key);
      error_code ignored;
      lowest().socket().set_option(net::socket_base::linger(true, 0), ignored);
      return close_now();
    }
    response res =
      decision_.status != 0 ? fault_response(endpoint_, decision_.status)
      : decision_.aadsts != 0
        ? aadsts_response(decision_.aadsts, req_.header("client-request-id").value_or(""))
        : sim_.answer(kind_, endpoint_, req_);
    if (kind_ == listener_kind::imds)
      res.set("Server", sim_.server_header());
    apply_fault(decision_, res);
    if (!endpoint_.empty())
      sim_.record(endpoint_, res.status);
    sim_.log_request(kind_, endpoint_, req_, res.status);
    if (decision_.body == body_fault::truncated)
      return write_truncated(res);
    write(std::move(res), keep_alive_ && !sim_.stopping());
  }

  void send_error(int status, std::string_view error, const std::string& description) {
    response res = response::oauth_error(status, error, description);
    if (kind_ == listener_kind::imds)
      res.set("Server", sim_.server_header());
    write(std::move(res), false);
  }

  void write(response res, bool keep) {
    auto& out = res_.emplace(static_cast<http::status>(res.status), 11);
    for (auto& [name, value] : res.headers)
      out.set(name, value);
    out.body() = std::move(res.body);
    out.keep_alive(keep);
    out.prepare_payload();
    lowest().expires_after(io_timeout);
    http::async_write(stream_, out, [self = shared(), keep](error_code ec, std::size_t) {
      if (ec || self->closing_)
        return self->close_now();
      if (!keep)
        return self->close_gracefully();
      self->do_read();
    });
  }

  // Declares the full Content-Length, sends half the body, then closes.
  void write_truncated(const response& res) {
    raw_ = "HTTP/1.1 " + std::to_string(res.status) + " " +
           std::string(http::obsolete_reason(static_cast<http::status>(res.status))) + "\r\n";
    for (const auto& [name, value] : res.headers)
      raw_ += name + ": " + value + "\r\n";
    raw_ += "Content-Length: " + std::to_string(res.body.size()) + "\r\nConnection: close\r\n\r\n";
    raw_.append(res.body, 0, res.body.size() / 2);
    lowest().expires_after(io_timeout);
    net::async_write(stream_, net::buffer(raw_),
                     [self = shared()](error_code, std::size_t) { self->close_now(); });
  }

  void close_gracefully() {
    if (closing_)
      return;
    if constexpr (tls) {
      lowest().expires_after(shutdown_timeout);
      stream_.async_shutdown([self = shared()](error_code) { self->close_now(); });
    } else {
      error_code ignored;
      lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
      close_now();
    }
  }

  void close_now() {
    closing_ = true;
    timer_.cancel();
    lowest().close();
  }

  simulator_impl& sim_;
  listener_kind kind_;
  Stream stream_;
  net::steady_timer timer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::response<http::string_body>> res_;
  std::string raw_;
  std::string peer_der_;
  request req_;
  std::string endpoint_;
  fault_decision decision_;
  bool keep_alive_ = false;
  bool closing_ = false;
};

/// Accepts connections for one listener and starts a session for each.
class listener : public std::enable_shared_from_this<listener> {
public:
  listener(simulator_impl& sim, net::io_context& ioc, listener_kind kind)
      : sim_(sim), ioc_(ioc), kind_(kind), acceptor_(net::make_strand(ioc)),
        retry_timer_(acceptor_.get_executor()) {}

  result<std::uint16_t> open(const tcp::endpoint& ep) {
    error_code ec;
    auto where = std::string(listener_name(kind_)) + " listener on " + ep.address().to_string() +
                 ":" + std::to_string(ep.port());
    acceptor_.open(ep.protocol(), ec);
    if (!ec)
      acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec)
      acceptor_.bind(ep, ec);
    if (ec)
      return fail(where + ": cannot bind: " + ec.message());
    acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec)
      return fail(where + ": cannot listen: " + ec.message());
    auto local = acceptor_.local_endpoint(ec);
    if (ec)
      return fail(where + ": " + ec.message());
    return local.port();
  }

  void start() {
    net::dispatch(acceptor_.get_executor(), [self = shared_from_this()] { self->do_accept(); });
  }

  void close_async() {
    net::post(acceptor_.get_executor(), [self = shared_from_this()] {
      self->closed_ = true;
      error_code ignored;
      self->retry_timer_.cancel();
      self->acceptor_.close(ignored);
    });
  }

private:
  void do_accept() {
    if (closed_)
      return;
    acceptor_.async_accept(net::make_strand(ioc_),
                           [self = shared_from_this()](error_code ec, tcp::socket socket) {
                             self->on_accept(ec, std::move(socket));
                           });
  }

  void on_accept(error_code ec, tcp::socket socket) {
    if (closed_ || ec == net::error::operation_aborted)
      return;
    if (ec) {
      // Out of descriptors and the like: back off briefly instead of spinning.
      retry_timer_.expires_after(std::chrono::milliseconds(50));
      retry_timer_.async_wait([self = shared_from_this()](error_code tec) {
        if (!tec)
          self->do_accept();
      });
      return;
    }
    socket.set_option(tcp::no_delay(true), ec);
    if (ssl::context* ctx = sim_.tls_context(kind_)) {
      std::make_shared<session<beast::ssl_stream<beast::tcp_stream>>>(sim_, kind_, std::move(socket),
                                                                      *ctx)
        ->start();
    } else {
      std::make_shared<session<beast::tcp_stream>>(sim_, kind_, std::move(socket))->start();
    }
    do_accept();
  }

  simulator_impl& sim_;
  net::io_context& ioc_;
  listener_kind kind_;
  tcp::acceptor acceptor_;
  net::steady_timer retry_timer_;
  bool closed_ = false;
};

simulator_impl::~simulator_impl() {
  stop();
  if (own_state_dir_ && !state_dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(state_dir_, ignored);
  }
}

result<void> simulator_impl::prepare_state_dir() {
  if (!cfg_.state_dir.empty()) {
    // Parents as the umask says; the state directory itself 0700 (the authority refuses an
    // existing one others can write to).
    std::error_code ec;
    auto parent = std::filesystem::path(cfg_.state_dir).parent_path();
    if (!parent.empty())
      std::filesystem::create_directories(parent, ec);
    if (ec || (::mkdir(cfg_.state_dir.c_str(), 0700) != 0 && errno != EEXIST))
      return fail("state_dir: cannot create " + cfg_.state_dir + ": " +
                  (ec ? ec.message() : std::string(std::strerror(errno))));
    state_dir_ = cfg_.state_dir;
    return ok();
  }
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
                        "/msiv2-sim-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr)
    return fail("state_dir: cannot create a temporary directory from " + pattern + ": " +
                std::strerror(errno));
  state_dir_ = pattern;
  own_state_dir_ = true;
  return ok();
}

result<ssl::context> simulator_impl::make_tls(listener_kind kind) {
  const std::string what = std::string(listener_name(kind)) + " TLS context";
  ssl::context ctx(ssl::context::tls_server);
  error_code ec;
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                    ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                  ec);
  if (!ec)
    ctx.use_certificate_chain(net::buffer(pki_->server_chain_pem()), ec);
  if (ec)
    return fail(what + ": server certificate chain: " + ec.message());
  ctx.use_private_key(net::buffer(pki_->server_key_pem()), ssl::context::pem, ec);
  if (ec)
    return fail(what + ": server key: " + ec.message());
  if (kind == listener_kind::token || kind == listener_kind::resource) {
    ssl::verify_mode mode = ssl::verify_peer;
    if (kind == listener_kind::token)
      mode |= ssl::verify_fail_if_no_peer_cert;
    ctx.set_verify_mode(mode, ec);
    // Any certificate passes the handshake: the authority answers invalid_client itself,
    // which is what the client must learn to handle.
    if (!ec)
      ctx.set_verify_callback([](bool, ssl::verify_context&) { return true; }, ec);
    if (ec)
      return fail(what + ": client certificate settings: " + ec.message());
  }
  if (kind == listener_kind::token) {
    if (cfg_.token_tls_max_version == "1.2" &&
        SSL_CTX_set_max_proto_version(ctx.native_handle(), TLS1_2_VERSION) != 1)
      return fail(what + ": cannot limit it to TLS 1.2");
    if (!cfg_.token_client_sigalgs.empty() &&
        SSL_CTX_set1_client_sigalgs_list(ctx.native_handle(),
                                         cfg_.token_client_sigalgs.c_str()) != 1)
      return fail(what + ": token_client_sigalgs: OpenSSL refuses the list \"" +
                  cfg_.token_client_sigalgs + "\"");
  }
  // Resumption from TLS 1.3 tickets, stateful: the ticket only names a session this
  // context keeps in its own cache (OpenSSL's default server cache: 20,480 sessions, LRU),
  // which holds the client certificate of the full handshake that made it. (Stateless
  // tickets carry the sealed session instead, and decoding it with that certificate on
  // every resumption cost ~0.8 ms of CPU, 4% of the herd benchmark.) A resumed connection
  // presents that certificate: the session handler reads it from the session and the
  // authority judges it like any other, so a client that resumed a session of another
  // certificate is seen using that certificate (clients must keep sessions per
  // certificate, as msiv2's transport does). OpenSSL refuses to resume a session with a
  // verified peer without a session id context.
  const std::string sid_context = std::string("msiv2-sim-") + listener_name(kind);
  if (SSL_CTX_set_session_id_context(ctx.native_handle(),
                                     reinterpret_cast<const unsigned char*>(sid_context.data()),
                                     static_cast<unsigned>(sid_context.size())) != 1)
    return fail(what + ": cannot set the session id context");
  SSL_CTX_set_session_cache_mode(ctx.native_handle(), SSL_SESS_CACHE_SERVER);
  SSL_CTX_set_options(ctx.native_handle(), SSL_OP_NO_TICKET);
  return ctx;
}

result<void> simulator_impl::open_listener(listener_kind kind, std::uint16_t port, std::string& url,
                                           const char* scheme) {
  error_code ec;
  auto address = net::ip::make_address(cfg_.bind_address, ec);
  if (ec)
    return fail("bind_address: '" + cfg_.bind_address + "' is not an IP address");
  auto l = std::make_shared<listener>(*this, ioc_, kind);
  auto bound = l->open(tcp::endpoint(address, port));
  if (!bound)
    return bound.fail();
  url = std::string(scheme) + "://" + host_for_url(cfg_.bind_address) + ":" +
        std::to_string(*bound);
  listeners_.push_back(std::move(l));
  return ok();
}

result<void> simulator_impl::init() {
  if (auto r = validate_config(cfg_); !r)
    return r;
  raise_file_limit();
  if (auto r = prepare_state_dir(); !r)
    return r;
  auto pki = authority::create(cfg_, state_dir_, [this] { return now(); });
  if (!pki)
    return fail("authority: " + pki.error());
  pki_ = std::move(*pki);
  urls_.ca_file = pki_->ca_file();

  for (auto kind : {listener_kind::attestation, listener_kind::token, listener_kind::resource}) {
    auto ctx = make_tls(kind);
    if (!ctx)
      return ctx.fail();
    (kind == listener_kind::attestation ? attestation_tls_
     : kind == listener_kind::token     ? token_tls_
                                        : resource_tls_)
      .emplace(std::move(*ctx));
  }

  if (auto r = open_listener(listener_kind::imds, cfg_.imds_port, urls_.imds, "http"); !r)
    return r;
  if (auto r = open_listener(listener_kind::attestation, cfg_.attestation_port, urls_.attestation,
                             "https");
      !r)
    return r;
  if (auto r = open_listener(listener_kind::token, cfg_.token_port, urls_.token, "https"); !r)
    return r;
  if (auto r = open_listener(listener_kind::resource, cfg_.resource_port, urls_.resource, "https");
      !r)
    return r;
  if (auto r = open_listener(listener_kind::admin, cfg_.admin_port, urls_.admin, "http"); !r)
    return r;
  urls_.admin_token = platform::hex_lower(platform::random_bytes(16));

  pki_->set_urls(authority_urls{urls_.attestation, urls_.token});
  imds_ = std::make_unique<imds_service>(cfg_, *pki_, urls_.attestation);
  for (const auto& [name, spec] : cfg_.faults)
    if (auto r = faults_.set(name, spec); !r)
      return r;

  for (auto& l : listeners_)
    l->start();
  threads_.reserve(static_cast<std::size_t>(cfg_.threads));
  for (int i = 0; i < cfg_.threads; ++i)
    threads_.emplace_back([this] { run_io(); });

  if (!cfg_.ready_file.empty())
    if (auto r = write_file_atomically(cfg_.ready_file, ready_json()); !r)
      return r;
  return ok();
}

void simulator_impl::run_io() {
#ifdef __linux__
  // Named so that a profiler, or the herd benchmark's CPU split, can tell the simulator's
  // threads from those of a client in the same process.
  pthread_setname_np(pthread_self(), "msiv2-sim-io");
#endif
  for (;;) {
    try {
      ioc_.run();
      return;
    } catch (const std::exception& e) {
      // A handler threw: that connection is lost, the server goes on.
      std::fprintf(stderr, "msiv2-sim: I/O thread caught: %s\n", e.what());
    }
  }
}

void simulator_impl::stop() {
  std::lock_guard stop_lock(stop_mutex_);
  if (stopped_)
    return;
  stopped_ = true;
  // The last reference to a session may be the one taken here; its destructor takes
  // sessions_mutex_, so the references are dropped only after the lock is released.
  std::vector<std::shared_ptr<session_base>> live;
  {
    std::lock_guard lock(sessions_mutex_);
    stopping_.store(true, std::memory_order_release);
    live.reserve(sessions_.size());
    for (auto& [ptr, weak] : sessions_)
      if (auto s = weak.lock())
        live.push_back(std::move(s));
  }
  for (auto& s : live)
    s->close_async();
  live.clear();
  for (auto& l : listeners_)
    l->close_async();
  for (auto& t : threads_)
    if (t.joinable())
      t.join();
  threads_.clear();
  listeners_.clear();
}

bool simulator_impl::add_session(const std::shared_ptr<session_base>& s) {
  std::lock_guard lock(sessions_mutex_);
  if (stopping_.load(std::memory_order_acquire))
    return false;
  sessions_.emplace(s.get(), s);
  return true;
}

void simulator_impl::remove_session(session_base* s) {
  std::lock_guard lock(sessions_mutex_);
  sessions_.erase(s);
}

std::string simulator_impl::route(listener_kind kind, const request& req) const {
  switch (kind) {
  case listener_kind::imds:
    return std::string(imds_service::route(req.path));
  case listener_kind::attestation:
    // One fault and counter endpoint for both protocols (keyguard, TPM).
    return req.path == "/attest/keyguard" || req.path == "/attest/tpm/challenge" ||
               req.path == "/attest/tpm/proof"
             ? "attestation"
             : "";
  case listener_kind::token: {
    // /{tenant}/oauth2/v2.0/token and /{tenant}/discovery/v2.0/keys
    std::string_view p = req.path;
    if (p.size() < 2 || p[0] != '/')
      return "";
    auto slash = p.find('/', 1);
    if (slash == std::string_view::npos || slash == 1)
      return "";
    auto rest = p.substr(slash);
    if (rest == "/oauth2/v2.0/token")
      return "token";
    if (rest == "/discovery/v2.0/keys")
      return "jwks";
    return "";
  }
  case listener_kind::resource:
    return "resource";
  case listener_kind::admin:
    return "";
  }
  return "";
}

std::optional<response> simulator_impl::admin_refusal(const request& req) const {
  // Loopback only, and only for those who can read the ready file: a Host that names the
  // admin listener (no DNS rebinding from a browser) and the bearer token (review L11).
  auto authority = urls_.admin.substr(urls_.admin.find("://") + 3);
  auto port = authority.substr(authority.rfind(':'));
  auto host = req.header("Host");
  bool host_ok = host && (*host == authority || *host == "localhost" + port ||
                          *host == "127.0.0.1" + port || *host == "[::1]" + port);
  if (!host_ok)
    return response::json(403, "{\"error\":\"the admin API answers only Host " + authority +
                                 " (or localhost" + port + ")\"}");
  auto auth = req.header("Authorization");
  const std::string expected = "Bearer " + urls_.admin_token;
  if (!auth || auth->size() != expected.size() ||
      CRYPTO_memcmp(auth->data(), expected.data(), expected.size()) != 0)
    return response::json(401, "{\"error\":\"the admin API needs 'Authorization: Bearer "
                               "<admin_token>' (admin_token is in the ready file)\"}")
      .set("WWW-Authenticate", "Bearer");
  return std::nullopt;
}

response simulator_impl::answer(listener_kind kind, const std::string& endpoint,
                                const request& req) {
  try {
    switch (kind) {
    case listener_kind::imds:
      return imds_->handle(endpoint, req);
    case listener_kind::admin:
      if (auto refused = admin_refusal(req); refused)
        return *refused;
      return handle_admin(req, *this);
    case listener_kind::resource:
      return pki_->resource(req);
    case listener_kind::attestation:
      if (endpoint.empty())
        break;
      if (req.method != "POST")
        return response::json(405, "{\"error\":{\"code\":\"MethodNotAllowed\",\"message\":\"use POST\"}}")
          .set("Allow", "POST");
      if (req.path == "/attest/tpm/challenge")
        return pki_->attest_tpm_challenge(req);
      if (req.path == "/attest/tpm/proof")
        return pki_->attest_tpm_proof(req);
      return pki_->attest(req);
    case listener_kind::token:
      if (endpoint == "token") {
        if (req.method != "POST")
          return response::oauth_error(405, "invalid_request", "The token endpoint takes POST")
            .set("Allow", "POST");
        return pki_->token(req);
      }
      if (endpoint == "jwks") {
        if (req.method != "GET")
          return response::oauth_error(405, "invalid_request", "The keys endpoint takes GET")
            .set("Allow", "GET");
        return pki_->jwks(req);
      }
      break;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "msiv2-sim: %s %s failed: %s\n", req.method.c_str(), req.path.c_str(),
                 e.what());
    return response::oauth_error(500, "server_error", "The simulator failed on this request");
  }
  return response::oauth_error(404, "not_found", "No such path: " + req.path);
}

void simulator_impl::log_request(listener_kind kind, const std::string& endpoint,
                                 const request& req, int status) {
  if (kind == listener_kind::admin)
    return;
  logged_request r;
  r.endpoint = endpoint;
  r.method = req.method;
  r.path = req.path;
  r.status = status;
  auto id = req.header("x-ms-client-request-id");
  if (!id)
    id = req.header("client-request-id");
  r.request_id = std::string(id.value_or(""));
  r.sku = std::string(req.header("x-client-SKU").value_or(""));
  std::lock_guard lock(counters_mutex_);
  if (!r.sku.empty() && (kind == listener_kind::imds || kind == listener_kind::token))
    ++by_sku_[r.sku];
  log_.push_back(std::move(r));
  while (log_.size() > cfg_.request_log_size)
    log_.pop_front();
}

void simulator_impl::record(const std::string& endpoint, int status) {
  std::lock_guard lock(counters_mutex_);
  auto it = counters_.find(endpoint);
  if (it == counters_.end())
    it = counters_.emplace(endpoint, std::map<int, std::uint64_t>{}).first;
  ++it->second[status];
}

std::uint64_t simulator_impl::count(std::string_view endpoint, int status) const {
  std::lock_guard lock(counters_mutex_);
  auto it = counters_.find(endpoint);
  if (it == counters_.end())
    return 0;
  if (status != 0) {
    auto s = it->second.find(status);
    return s == it->second.end() ? 0 : s->second;
  }
  std::uint64_t total = 0;
  for (const auto& [code, n] : it->second)
    total += n;
  return total;
}

std::string simulator_impl::counters_json() const {
  std::lock_guard lock(counters_mutex_);
  std::string out = "{";
  for (const auto& name : endpoint_names()) {
    if (out.size() > 1)
      out += ',';
    out += "\"" + name + "\":{";
    auto it = counters_.find(name);
    if (it != counters_.end()) {
      bool first = true;
      for (const auto& [code, n] : it->second) {
        if (!first)
          out += ',';
        first = false;
        out += "\"" + (code == reset_key      ? std::string("reset")
                       : code == rejected_key ? std::string("rejected")
                                              : std::to_string(code)) +
               "\":" + std::to_string(n);
      }
    }
    out += '}';
  }
  out += ",\"by_sku\":{";
  bool first = true;
  for (const auto& [sku, n] : by_sku_) {
    out += (first ? "" : ",") + platform::json_quote(sku) + ":" + std::to_string(n);
    first = false;
  }
  return out + "}}";
}

std::string simulator_impl::ready_json() const {
  using platform::json_quote;
  std::string ids = "[";
  auto add = [&](const char* type, const identity& id) {
    if (ids.size() > 1)
      ids += ',';
    ids += "{\"type\":\"" + std::string(type) + "\",\"client_id\":" + json_quote(id.client_id) +
           ",\"object_id\":" + json_quote(id.object_id) +
           ",\"resource_id\":" + json_quote(id.resource_id) + "}";
  };
  if (cfg_.system_assigned_enabled)
    add("SystemAssigned", cfg_.system_identity);
  for (const auto& id : cfg_.user_identities)
    add("UserAssigned", id);
  ids += ']';
  return "{\"imds\":" + json_quote(urls_.imds) + ",\"attestation\":" +
         json_quote(urls_.attestation) + ",\"token\":" + json_quote(urls_.token) +
         ",\"resource\":" + json_quote(urls_.resource) + ",\"admin\":" + json_quote(urls_.admin) +
         ",\"admin_token\":" + json_quote(urls_.admin_token) +
         ",\"ca_file\":" + json_quote(urls_.ca_file) + ",\"tenant_id\":" +
         json_quote(cfg_.tenant_id) + ",\"identities\":" + ids +
         ",\"pid\":" + std::to_string(::getpid()) + "}\n";
}

} // namespace

result<std::unique_ptr<simulator>> simulator::start(config cfg) {
  try {
    auto sim = std::make_unique<simulator_impl>(std::move(cfg));
    if (auto r = sim->init(); !r)
      return r.fail();  // the destructor stops whatever had started
    return std::unique_ptr<simulator>(std::move(sim));
  } catch (const std::exception& e) {
    return fail(std::string("simulator: cannot start: ") + e.what());
  }
}

} // namespace msiv2::sim
