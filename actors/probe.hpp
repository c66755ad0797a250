#pragma once

// The IMDS source probe of protocol.md §1: header-less GETs (v2 first, then v1) whose 400
// answer means "present". One probe in flight per process; definite answers are remembered
// for the process lifetime, failures for module_config::transient_probe_ttl.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <caf/actor_clock.hpp>
#include <caf/error.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/interfaces.hpp"
#include "io/retry.hpp"

namespace msiv2 {

/// State of the probe actor.
struct probe_state {
  static inline const char* name = "msiv2.probe";

  /// Which path the probe in flight is on.
  enum class stage { idle, v2, v1 };

  /// A caller waiting for the probe in flight.
  struct waiter {
    std::uint64_t id = 0;
    deadline due;
    caf::typed_response_promise<imds_source> promise;
  };

  deps_ptr deps;
  wiring_ptr peers;

  /// The definite answer, once known.
  std::optional<imds_source> source;
  /// The last failure and until when (actor clock) it is served without probing again.
  caf::error failure;
  caf::actor_clock::time_point failure_until;

  stage current = stage::idle;
  io::retry_state retries;
  /// Id of the HTTP attempt (or retry timer) the probe waits for; stale answers are dropped.
  std::uint64_t attempt = 0;
  /// True once any HTTP answer came back during this probe (normal connect timeout then).
  bool answered = false;
  /// x-ms-client-request-id of every attempt of the current probe (v2, v1 and retries).
  std::string request_id;

  std::vector<waiter> waiters;
  std::uint64_t next_waiter = 0;

  /// Answers every waiter with `err` (also on exit: no caller is left without an answer).
  void fail_all(const caf::error& err);
  ~probe_state();
};

/// The behavior of the probe actor.
probe::behavior_type probe_impl(probe::stateful_pointer<probe_state> self, deps_ptr deps);

} // namespace msiv2
