#pragma once

// The libcurl implementation of io::transport: one I/O thread owns a curl multi handle and
// sleeps in curl_multi_poll; send() from any thread queues the request and wakes it with
// curl_multi_wakeup.

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "io/http.hpp"
#include "platform/result.hpp"

namespace msiv2::io {

/// Tuning of a curl_transport.
struct curl_transport_options {
  /// Idle connections kept open per pool (the default pool and each identity's pool).
  long max_idle_connections = 8;
  /// Identity pools kept while idle; beyond this the least recently used idle pools are
  /// closed. A pool whose identity nobody else holds any more is closed when it goes idle.
  std::size_t max_identity_pools = 16;
  /// Transfers running at once in one identity's pool (so at most this many connections and
  /// TLS handshakes with its certificate); the rest wait inside the transport, in order, and
  /// take a kept-alive connection when one is free. Until the pool's first transfer to a
  /// host and port has finished (its TLS session is then cached) only that one runs to it,
  /// so the next connections resume that session instead of doing full handshakes. A waiting request still fails at its own
  /// deadline (the time it waited counts). Must be at least 1. Identity-less transfers
  /// (the default pool) are not bounded. The default 2 was measured on the bench's herd
  /// (100 identities x 10 concurrent token calls): every extra connection costs about 3 ms of
  /// CPU even when resumed (curl's per-connection SSL_CTX and CA load, the server's ticket and
  /// certificate decoding), so 1 used the least CPU and 4 the most, while 2 gave the shortest
  /// herd of the three (two calls of one identity in flight at once).
  std::size_t max_connections_per_identity = 2;
  /// Requests accepted and not answered yet (queued, waiting for a slot of their pool, or
  /// running). Beyond it send() answers at once, on the caller's thread, with
  /// transport_error::other and a message that starts "overloaded:" (review H2).
  std::size_t max_pending_requests = 10000;
};

/// What a curl_transport has done so far.
struct transport_counters {
  std::uint64_t requests = 0;           ///< send() calls
  std::uint64_t completed = 0;          ///< completions delivered (every kind)
  /// HTTP responses by status class: [1]..[5] = 1xx..5xx, [0] = anything else.
  std::array<std::uint64_t, 6> by_status_class{};
  /// Completions by transport_error ([none] = HTTP responses of any status).
  std::array<std::uint64_t, transport_error_count> by_error{};
  std::uint64_t connections_opened = 0; ///< new TCP connections (reused ones not counted)
  /// New TLS connections whose handshake resumed a cached session (abbreviated handshake).
  std::uint64_t tls_sessions_resumed = 0;
  /// Requests that had to wait for a slot of their identity's pool.
  std::uint64_t queued_for_pool = 0;
  /// curl easy handles made (one per launched transfer: a waiting one has none), and the
  /// most alive at once.
  std::uint64_t easy_handles_created = 0;
  std::uint64_t peak_easy_handles = 0;

  /// Completions that carried `kind`.
  std::uint64_t errors(transport_error kind) const {
    return by_error[static_cast<std::size_t>(kind)];
  }
};

/// HTTP over libcurl multi on one I/O thread.
///
/// Completions run on the I/O thread: they must not block, throw, or destroy the transport
/// (turn the response into a message and return). A completion may call send().
/// After shutdown(), send() answers `cancelled` at once on the calling thread.
///
/// Connections are reused per host, and never across client identities: each
/// client_identity object gets its own curl share (connection cache and TLS session cache),
/// transfers without an identity use the multi's own pool. See curl_transport.cpp.
class curl_transport final : public transport {
public:
  /// Initializes libcurl (once per process), creates the multi handle and starts the I/O
  /// thread. Fails when libcurl cannot be initialized or an option is out of range.
  static result<std::unique_ptr<curl_transport>> create(curl_transport_options options = {});
  /// Calls shutdown() and joins the I/O thread. Must not run on the I/O thread.
  ~curl_transport() override;

  curl_transport(const curl_transport&) = delete;
  curl_transport& operator=(const curl_transport&) = delete;

  /// Queues the request; thread-safe.
  void send(http_request request, completion done) override;
  /// Answers every pending request with `cancelled`, stops and joins the I/O thread (when
  /// called on the I/O thread itself, only requests the stop; the destructor joins).
  void shutdown() override;

  /// A consistent snapshot of the counters; thread-safe.
  transport_counters counters() const;

  struct impl;

private:
  explicit curl_transport(std::unique_ptr<impl> impl);
  std::unique_ptr<impl> impl_;
};

} // namespace msiv2::io
