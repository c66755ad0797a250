#pragma once

// Fault injection: a thread-safe table of fault_spec per endpoint name, consulted once per
// request. A spec has two parts that apply independently:
//  - the status sequence: each request takes the next entry (0 = serve normally this time)
//    until the list is used up;
//  - everything else (probability, latency, reset, body, drop_server_header, and retry_after
//    when the spec injects no status), applied to the next `count` requests (-1 = until
//    cleared).
// retry_after goes on every answer whose status was injected. A spec that has nothing left
// to do is removed.

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include "platform/result.hpp"
#include "tools/sim/config.hpp"
#include "tools/sim/http.hpp"

namespace msiv2::sim {

/// What to do to one request.
struct fault_decision {
  int status = 0;                       ///< injected status; 0 = serve normally
  std::chrono::milliseconds latency{0}; ///< wait before answering
  bool reset = false;                   ///< close the connection without answering
  body_fault body = body_fault::none;   ///< spoil the answer's body
  bool drop_server_header = false;      ///< leave out the Server header
  std::optional<int> retry_after;       ///< seconds, as a Retry-After header
  int aadsts = 0;                       ///< token endpoint: answer this AADSTS error
  bool reject_client_cert = false;      ///< token_tls: refuse the client certificate

  /// True when the request is affected at all.
  bool any() const {
    return status != 0 || latency.count() > 0 || reset || body != body_fault::none ||
           drop_server_header || retry_after.has_value() || aadsts != 0 || reject_client_cert;
  }
};

/// The faults in force, per endpoint name. Thread-safe.
class fault_table {
public:
  /// Seeds the probability draws (a fixed seed makes runs repeatable).
  explicit fault_table(std::uint64_t seed = std::random_device{}());

  /// Sets or replaces the fault of `endpoint`; an error naming it when it is unknown or the
  /// spec is out of range.
  result<void> set(std::string_view endpoint, fault_spec spec);
  /// Removes every fault.
  void clear();
  /// Consumes one request's worth of the fault of `endpoint`.
  fault_decision next(std::string_view endpoint);
  /// The faults still in force (what is left of each spec).
  std::map<std::string, fault_spec> snapshot() const;

private:
  struct entry {
    fault_spec spec;
    bool injects_status = false; ///< as set: statuses or a probability
  };
  mutable std::mutex mutex_;
  std::map<std::string, entry, std::less<>> specs_;
  std::mt19937_64 rng_;
};

/// The answer for an injected `status` on `endpoint`, in that service's own error shape
/// (IMDS and token endpoint: OAuth JSON; attestation and resource: {"error":{"code","message"}}).
response fault_response(std::string_view endpoint, int status);

/// The token endpoint's answer carrying AADSTS `code` (1000610-1000614 and 1000901: 401
/// invalid_client; 500181: 400 invalid_request), with `request_id` (the client-request-id, as
/// Entra echoes it) as correlation_id.
response aadsts_response(int code, std::string_view request_id);

/// Applies the body, Server-header and Retry-After parts of `d` to an answer about to be
/// sent. A truncated body is left whole: the transport sends half of it and closes.
void apply_fault(const fault_decision& d, response& res);

/// The body a `body_fault::malformed` answer carries.
inline constexpr std::string_view malformed_body = "{\"not json";

} // namespace msiv2::sim
