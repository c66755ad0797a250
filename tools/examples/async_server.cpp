// msiv2-example-server: how an async (Boost.Asio/Beast) server uses msiv2.
//
// Every incoming HTTP request asks the module for a token with msiv2::client::get_token. The
// callback runs on a module thread, so it only posts the result back to the connection's
// strand; from there the server calls the upstream resource over mTLS with the bound token
// (Authorization: mtls_pop <token>, the binding certificate and key as the TLS client
// identity) through io::curl_transport, whose completion is posted back to the strand too,
// and answers the incoming request with the resource's status and body. Nothing blocks the
// server's thread, and concurrent requests share one token acquisition (the module's
// single-flight) and then the cached token.
//
//   msiv2-example-server --imds http://127.0.0.1:P --ca-file ca.pem
//       --resource-url https://127.0.0.1:Q/api/whoami [--resource R] [--attest] [--port-file F]
//       [--cache-dir DIR|none]
//
// Certificates, attestation tokens and the per-boot key are shared with this user's other
// processes through the cache directory (MSIV2_CACHE_DIR, XDG_RUNTIME_DIR/msiv2 or
// ~/.cache/msiv2 by default; --cache-dir overrides it, "none" keeps them in memory).
//
// GET /metrics answers the module's counters and gauges in Prometheus text format 0.0.4
// (msiv2::to_prometheus; the README's "Embedding" section lists them). client::stats() waits
// for the module (at most a second), so it runs on a thread of its own, never on the
// connection's strand.
//
// Listens on 127.0.0.1, port 0 (any free port): prints "listening on 127.0.0.1:<port>" and
// writes the port to --port-file. Stops on SIGINT/SIGTERM.

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "actors/client.hpp"
#include "actors/keyguard_attestation.hpp"
#include "io/curl_transport.hpp"
#include "io/http.hpp"
#include "messages/errors.hpp"
#include "messages/protocol.hpp"
#include "platform/binding.hpp"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

struct settings {
  std::string imds;
  std::string ca_file;
  std::vector<std::string> trusted_hosts;
  bool persist_key = false;
  std::string resource = "https://management.azure.com";
  std::string resource_url;
  std::string port_file;
  std::optional<std::string> cache_dir; ///< unset: from the environment; "none": memory only
  bool attest = false;
};

/// What a request handler needs: the module, the transport for the resource call, and the
/// thread that collects /metrics.
struct services {
  msiv2::client* tokens = nullptr;
  std::shared_ptr<msiv2::io::transport> transport;
  settings cfg;
  asio::thread_pool* metrics = nullptr;
};

/// One connection: read a request, get a token, call the resource, answer; repeat while
/// keep-alive. Every handler runs on the connection's strand.
class session : public std::enable_shared_from_this<session> {
public:
  session(tcp::socket socket, const services& svc) : stream_(std::move(socket)), svc_(svc) {}

  void start() { read(); }

private:
  void read() {
    req_ = {};
    stream_.expires_after(std::chrono::seconds(60));
    http::async_read(stream_, buffer_, req_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       if (ec)
                         return self->close();
                       self->handle();
                     });
  }

  void handle() {
    if (req_.target() == "/metrics")
      return metrics();
    msiv2::token_request tr;
    tr.resource = svc_.cfg.resource;
    tr.type = msiv2::token_type::mtls_pop;
    tr.timeout = std::chrono::seconds(20);
    auto self = shared_from_this();
    svc_.tokens->get_token(std::move(tr), [self](msiv2::token_outcome got) {
      // A module thread: hand the outcome to the connection's strand and return.
      asio::post(self->stream_.get_executor(),
                 [self, got = std::move(got)]() mutable { self->on_token(std::move(got)); });
    });
  }

  void metrics() {
    auto self = shared_from_this();
    asio::post(*svc_.metrics, [self] {
      auto text = msiv2::to_prometheus(self->svc_.tokens->stats());
      asio::post(self->stream_.get_executor(), [self, text = std::move(text)]() mutable {
        self->answer(http::status::ok, std::move(text), "text/plain; version=0.0.4; charset=utf-8");
      });
    });
  }

  void on_token(msiv2::token_outcome got) {
    if (!got)
      return answer(http::status::service_unavailable,
                    std::string("{\"error\":\"token\",\"detail\":\"") +
                      msiv2::to_string(msiv2::describe(got.error()).code) + "\"}");
    msiv2::io::http_request call;
    call.url = svc_.cfg.resource_url;
    call.ca_file = svc_.cfg.ca_file;
    call.timeout = std::chrono::seconds(10);
    call.headers.set("Authorization", "mtls_pop " + got->access_token);
    call.headers.set("x-ms-tokenboundauth", "true"); // as MSAL's calls with a bound token
    if (got->binding && got->binding->key) {
      auto id = identity_for(*got->binding);
      if (!id)
        return answer(http::status::internal_server_error, "{\"error\":\"binding\"}");
      call.identity = std::move(id);
    }
    auto self = shared_from_this();
    svc_.transport->send(std::move(call), [self](msiv2::io::http_response r) {
      // The transport's I/O thread: back to the strand.
      asio::post(self->stream_.get_executor(),
                 [self, r = std::move(r)]() mutable { self->on_resource(std::move(r)); });
    });
  }

  void on_resource(msiv2::io::http_response r) {
    if (!r.ok())
      return answer(http::status::bad_gateway,
                    std::string("{\"error\":\"resource\",\"detail\":\"") +
                      msiv2::io::to_string(r.error) + "\"}");
    answer(static_cast<http::status>(r.status), std::move(r.body));
  }

  /// The TLS client identity of a binding, reused while the certificate stays the same (so
  /// the transport keeps the connection pool of that identity).
  std::shared_ptr<const msiv2::io::client_identity> identity_for(const msiv2::token_binding& b) {
    if (identity_ && identity_x5t_ == b.x5t_s256)
      return identity_;
    auto made = msiv2::io::client_identity::create(b.certificate_chain,
                                                   msiv2::platform::share_key(b.key->get()));
    if (!made)
      return nullptr;
    identity_ = *made;
    identity_x5t_ = b.x5t_s256;
    return identity_;
  }

  void answer(http::status status, std::string body,
              const char* content_type = "application/json") {
    res_ = {};
    res_.version(req_.version());
    res_.result(status);
    res_.set(http::field::server, "msiv2-example-server");
    res_.set(http::field::content_type, content_type);
    res_.keep_alive(req_.keep_alive());
    res_.body() = std::move(body);
    res_.prepare_payload();
    http::async_write(stream_, res_,
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        if (ec || !self->res_.keep_alive())
                          return self->close();
                        self->read();
                      });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> req_;
  http::response<http::string_body> res_;
  const services& svc_;
  std::shared_ptr<const msiv2::io::client_identity> identity_;
  std::string identity_x5t_;
};

void accept(tcp::acceptor& acceptor, asio::io_context& io, const services& svc) {
  acceptor.async_accept(asio::make_strand(io), [&acceptor, &io, &svc](beast::error_code ec,
                                                                      tcp::socket socket) {
    if (ec == asio::error::operation_aborted)
      return;
    if (!ec)
      std::make_shared<session>(std::move(socket), svc)->start();
    accept(acceptor, io, svc);
  });
}

int usage(const std::string& message) {
  std::fprintf(stderr,
               "msiv2-example-server: %s\n"
               "usage: msiv2-example-server --resource-url URL [--imds URL] [--ca-file PEM]\n"
               "         [--resource R] [--attest] [--port-file PATH] [--cache-dir DIR|none]\n"
               "         [--trust-host H[,H...]] (hosts trusted for the endpoints IMDS names)\n"
               "         [--persist-key] (write the key into a cache dir on persistent disk)\n",
               message.c_str());
  return 2;
}

bool write_port_file(const std::string& path, unsigned short port) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out)
      return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

} // namespace

int main(int argc, char** argv) {
  settings cfg;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--attest") {
      cfg.attest = true;
      continue;
    }
    if (arg == "--persist-key") {
      cfg.persist_key = true;
      continue;
    }
    if (arg == "--help" || arg == "-h")
      return usage("an example async server that calls a resource with msiv2 tokens"), 0;
    if (i + 1 >= argc)
      return usage(arg + (arg.rfind("--", 0) == 0 ? " needs a value" : ": unknown argument"));
    std::string value = argv[++i];
    if (arg == "--imds")
      cfg.imds = value;
    else if (arg == "--ca-file")
      cfg.ca_file = value;
    else if (arg == "--resource")
      cfg.resource = value;
    else if (arg == "--resource-url")
      cfg.resource_url = value;
    else if (arg == "--port-file")
      cfg.port_file = value;
    else if (arg == "--cache-dir")
      cfg.cache_dir = value;
    else if (arg == "--trust-host")
      for (auto& h : msiv2::io::parse_host_list(value))
        cfg.trusted_hosts.push_back(h);
    else
      return usage("unknown option '" + arg + "'");
  }
  if (cfg.resource_url.empty())
    return usage("--resource-url is required");

  asio::io_context io{1};
  auto made = msiv2::io::curl_transport::create();
  if (!made) {
    std::fprintf(stderr, "msiv2-example-server: %s\n", made.error().c_str());
    return 1;
  }
  std::shared_ptr<msiv2::io::transport> transport(std::move(*made));

  msiv2::client_options opts;
  if (!cfg.imds.empty())
    opts.config.imds_base_url = cfg.imds;
  opts.config.ca_file = cfg.ca_file;
  opts.config.trust_hosts(cfg.trusted_hosts);
  if (cfg.persist_key)
    opts.config.persist_key_on_disk = true;
  if (cfg.cache_dir) {
    opts.config.cache_dir = *cfg.cache_dir == "none" ? std::string() : *cfg.cache_dir;
    opts.config.cache_dir_error.clear();
  }
  opts.log = msiv2::platform::stderr_log_sink(msiv2::platform::log_level::warning);
  opts.transport = transport;
  if (cfg.attest)
    opts.attestation = std::make_shared<msiv2::keyguard_attestation>(transport, cfg.ca_file);
  auto client = msiv2::client::create(std::move(opts));
  if (!client) {
    std::fprintf(stderr, "msiv2-example-server: %s\n", client.error().c_str());
    transport->shutdown();
    return 1;
  }
  asio::thread_pool metrics_thread{1};
  services svc{client->get(), transport, cfg, &metrics_thread};

  tcp::acceptor acceptor(io);
  beast::error_code ec;
  tcp::endpoint at(asio::ip::make_address("127.0.0.1"), 0);
  acceptor.open(at.protocol(), ec);
  if (!ec)
    acceptor.bind(at, ec);
  if (!ec)
    acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    std::fprintf(stderr, "msiv2-example-server: cannot listen: %s\n", ec.message().c_str());
    return 1;
  }
  unsigned short port = acceptor.local_endpoint().port();
  if (!cfg.port_file.empty() && !write_port_file(cfg.port_file, port)) {
    std::fprintf(stderr, "msiv2-example-server: cannot write %s\n", cfg.port_file.c_str());
    return 1;
  }
  std::printf("listening on 127.0.0.1:%u\n", port);
  std::fflush(stdout);

  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](beast::error_code, int) {
    beast::error_code ignored;
    acceptor.close(ignored);
    io.stop();
  });
  accept(acceptor, io, svc);
  io.run();

  // Stop the module first (pending callbacks post into the stopped io_context and are
  // dropped with it), then the transport. A /metrics collection still running ends within
  // its one-second bound before the module goes.
  metrics_thread.join();
  client->reset();
  transport->shutdown();
  return 0;
}
