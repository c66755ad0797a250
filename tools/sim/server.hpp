#pragma once

// msiv2-sim: the simulator as a library (the `msiv2-sim serve` command, the demo and the
// integration tests all start it through this class). Boost.Beast + Asio on loopback:
// IMDS and admin on plain HTTP, attestation, token and resource on HTTPS.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "platform/result.hpp"
#include "tools/sim/authority.hpp"
#include "tools/sim/config.hpp"

namespace msiv2::sim {

/// Where a running simulator listens (also written to the ready file).
struct endpoints {
  std::string imds;        ///< http://127.0.0.1:P
  std::string attestation; ///< https://127.0.0.1:P
  std::string token;       ///< https://127.0.0.1:P
  std::string resource;    ///< https://127.0.0.1:P
  std::string admin;       ///< http://127.0.0.1:P
  /// Bearer token every admin request must carry ("Authorization: Bearer <token>"), random
  /// per start, written to the ready file (0600) only (review L11).
  std::string admin_token;
  std::string ca_file;     ///< PEM bundle to trust for the HTTPS listeners
};

/// One request as GET /requests shows it (the most recent config::request_log_size).
struct logged_request {
  std::string endpoint;   ///< endpoint name ("imds_metadata"), or "" when none matched
  std::string method;
  std::string path;       ///< without the query
  int status = 0;         ///< answered status; -1: the connection was reset instead
  std::string request_id; ///< x-ms-client-request-id, else client-request-id ("" when none)
  std::string sku;        ///< x-client-SKU ("" when none)
};

class simulator {
public:
  /// Validates `cfg`, creates the authority, binds every listener, starts cfg.threads I/O
  /// threads and writes cfg.ready_file when set. Errors name what failed (bad config, port
  /// in use, non-loopback address).
  static result<std::unique_ptr<simulator>> start(config cfg);
  virtual ~simulator() = default;

  /// Where it listens.
  virtual const endpoints& urls() const = 0;
  /// The configuration in force (with faults as last set).
  virtual config current_config() const = 0;
  /// Stops accepting, closes connections, joins the threads. Idempotent; the destructor calls it.
  virtual void stop() = 0;

  /// Requests answered on `endpoint` with `status` so far (0 for "any status").
  virtual std::uint64_t count(std::string_view endpoint, int status = 0) const = 0;
  /// Every counter as JSON {"imds_metadata":{"200":3,"400":1},...,"by_sku":{"msiv2.cpp":5}}.
  virtual std::string counters_json() const = 0;
  /// Requests on IMDS and the token endpoint that carried x-client-SKU `sku`.
  virtual std::uint64_t count_sku(std::string_view sku) const = 0;
  /// The most recent requests, oldest first (at most config::request_log_size).
  virtual std::vector<logged_request> recent_requests() const = 0;
  /// TLS handshakes completed on an HTTPS listener ("attestation", "token", "resource"; 0 for
  /// any other name); with `resumed_only`, those that resumed a session from a ticket.
  virtual std::uint64_t tls_handshakes(std::string_view listener, bool resumed_only = false) const = 0;
  /// Sets or replaces the fault of one endpoint; an error for an unknown endpoint name.
  virtual result<void> set_fault(std::string_view endpoint, fault_spec spec) = 0;
  /// Clears every fault.
  virtual void clear_faults() = 0;
  /// Moves the simulator's clock forward (certificate, attestation and token times).
  virtual void advance_clock(std::int64_t seconds) = 0;
  /// The authority (revoke, issued certificates).
  virtual authority& pki() = 0;
  /// Clears counters, faults, the clock offset, issued certificates and revocations.
  virtual void reset() = 0;
};

} // namespace msiv2::sim
