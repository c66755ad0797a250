#pragma once

// The HTTP transport interface of the client runtime. Actors never touch sockets: they hand
// an http_request to a transport and get an http_response back through a completion (which
// they turn into a message). curl_transport.hpp is the real one, fake_transport.hpp the
// scripted one for tests.

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "msiv2/platform/openssl.hpp"
#include "msiv2/platform/result.hpp"

namespace msiv2::io {

/// HTTP header fields in order; lookups ignore the case of names.
struct http_headers {
  /// (name, value) pairs as sent or received.
  std::vector<std::pair<std::string, std::string>> fields;

  /// Appends a field (keeps existing fields of the same name).
  void add(std::string name, std::string value);
  /// Replaces every field named `name` (any case) by one field.
  void set(std::string name, std::string value);
  /// Value of the first field named `name` (any case).
  std::optional<std::string_view> get(std::string_view name) const;
  /// True when a field named `name` (any case) is present.
  bool contains(std::string_view name) const { return get(name).has_value(); }
};

/// A TLS client certificate chain and its private key, for mTLS. Immutable and shared by
/// pointer: the transport keeps connections of different identities apart by this object's
/// address (two objects holding the same certificate simply do not share connections).
/// The key stays an EVP_PKEY handle (possibly hardware-backed); it never becomes bytes.
class client_identity {
public:
  /// Builds an identity from the certificate chain (DER, leaf first, then intermediates)
  /// and the leaf's private key. Fails when the chain is empty, a certificate does not parse,
  /// or the key does not match the leaf certificate.
  static result<std::shared_ptr<const client_identity>> create(std::vector<std::string> chain_der,
                                                               platform::pkey_ptr key);

  /// The chain as given (DER, leaf first).
  const std::vector<std::string>& chain_der() const { return chain_der_; }
  /// The leaf certificate (owned by this object).
  X509* leaf() const { return chain_.front().get(); }
  /// The private key handle (owned by this object).
  EVP_PKEY* key() const { return key_.get(); }

  /// Installs the leaf, the intermediates and the key into `ctx` (for the transport's
  /// SSL_CTX callback, and for callers that configure their own TLS for a resource call).
  result<void> apply_to(SSL_CTX* ctx) const;

private:
  client_identity() = default;

  std::vector<std::string> chain_der_;
  std::vector<platform::x509_ptr> chain_;
  platform::pkey_ptr key_;
};

/// One HTTP request.
struct http_request {
  std::string method = "GET";  ///< GET, HEAD, POST, PUT, PATCH or DELETE
  std::string url;             ///< absolute http:// or https:// URL, query included
  http_headers headers;
  std::string body;            ///< sent when not empty (not allowed with GET and HEAD)

  /// Bound on TCP connect plus TLS handshake. IMDS probes set about 1 s.
  std::chrono::milliseconds connect_timeout{5000};
  /// Bound on the whole transfer, queueing excluded. Must be positive.
  std::chrono::milliseconds timeout{30000};
  /// A longer response body fails with transport_error::too_large.
  std::size_t max_response_bytes = std::size_t{1} << 20;

  /// PEM file of CAs to trust instead of the system store (empty: system store).
  std::string ca_file;
  /// PEM text of CAs to trust instead of the system store (empty: see ca_file).
  std::string ca_pem;
  /// Client certificate and key for mTLS (null: no client certificate).
  std::shared_ptr<const client_identity> identity;
  /// Whether proxy environment variables apply. Off by default: IMDS traffic must never go
  /// through a proxy (protocol.md), so only callers that know better turn it on.
  bool use_proxy = false;
};

/// Why a transfer produced no HTTP response.
enum class transport_error {
  none,                      ///< an HTTP response arrived (whatever its status)
  connect_failed,            ///< name not resolved, connection refused or unreachable
  connect_timeout,           ///< no connection within connect_timeout: TCP connect, and for
                             ///< https the TLS handshake too (curl's connect phase)
  timeout,                   ///< connected (or handshaking) but no complete response in time
  tls_failed,                ///< TLS handshake or server certificate verification failed
  tls_client_cert_rejected,  ///< the server refused the TLS client certificate we presented
                             ///< (best effort: a handshake alert about our certificate)
  too_large,                 ///< body longer than max_response_bytes
  reset,                     ///< connection reset or closed before a complete response
  cancelled,                 ///< transport shut down before the transfer finished
  other,                     ///< anything else (bad request, internal failure); see message
};

/// Stable lower-case name ("connect_failed").
const char* to_string(transport_error e);
/// Number of transport_error values (for per-kind counters).
inline constexpr std::size_t transport_error_count = 10;

/// One HTTP response, or the transport failure that replaced it.
struct http_response {
  int status = 0;  ///< HTTP status; 0 when error != none
  http_headers headers;
  /// Response body. When it comes from curl_transport its capacity leaves SIMDJSON_PADDING
  /// spare bytes, so `parser.iterate(body)` works without a copy (a copy loses that).
  std::string body;
  transport_error error = transport_error::none;
  std::string error_message;  ///< what failed, for people; never holds a secret
  std::chrono::microseconds elapsed{0};  ///< from send() to completion

  /// True when an HTTP response arrived (any status).
  bool ok() const noexcept { return error == transport_error::none; }
  /// True for either kind of timeout.
  bool timed_out() const noexcept {
    return error == transport_error::timeout || error == transport_error::connect_timeout;
  }
  /// A response carrying a transport failure.
  static http_response failure(transport_error kind, std::string message);
  /// A response with a status and body.
  static http_response with_status(int status, std::string body = {}, http_headers headers = {});
};

/// Receives the response of one request; called exactly once.
using completion = std::function<void(http_response)>;

/// Sends HTTP requests asynchronously. Every send() is answered exactly once through its
/// completion, also when the transport shuts down.
class transport {
public:
  virtual ~transport() = default;

  /// Starts the request; `done` is called with the response (see the implementation for the
  /// thread it runs on). Never blocks on the network.
  virtual void send(http_request request, completion done) = 0;
  /// Stops the transport: every pending request is answered with transport_error::cancelled
  /// and later sends are answered the same way. Idempotent.
  virtual void shutdown() = 0;
};

/// Pieces of an absolute URL (no decoding).
struct url_parts {
  std::string scheme;  ///< "http", "https"
  std::string host;    ///< without brackets or port
  std::string port;    ///< empty when absent
  std::string path;    ///< "/" when absent
  std::string query;   ///< after '?', without '#fragment'; empty when absent
};

/// Splits an absolute URL; an error names what is malformed.
result<url_parts> split_url(std::string_view url);
/// Decoded value of the first query parameter `name` of `url` (nullopt when absent or the
/// URL is malformed).
std::optional<std::string> query_param(std::string_view url, std::string_view name);

} // namespace msiv2::io
