#pragma once

// client_bridge: the one long-lived actor between msiv2::client::get_token (any thread) and
// the module. It forwards each (token_request, callback) to the module and runs the callback
// with the answer, exactly once.
//
// It sends each call straight to the current token_service (learnt from the supervisor's
// wiring and watched with a monitor), not through the supervisor, saving a hop on the hot
// path. A call that reaches a token_service that has just died (request_receiver_down) is sent
// again through the supervisor, which delegates to its successor or says it is restarting or
// stopping; while no token_service is known, calls go through the supervisor.
//
// It arms no timer per call: token_service answers every request by the request's own
// timeout, so the bridge asks with no CAF request timeout and keeps its calls in a table
// with their deadlines; one sweep tick (every sweep_interval while calls are outstanding)
// answers a call the module left unanswered past its timeout + margin with
// deadline_exceeded, and a reply that comes after that is dropped. On `close` it answers what
// is still outstanding with shutting_down and quits, so no callback is ever lost.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <unordered_map>

#include <caf/actor_clock.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include "msiv2/actors/interfaces.hpp"
#include "msiv2/actors/supervisor.hpp"

namespace msiv2 {

/// What get_token's callback receives.
using token_outcome = caf::expected<token_result>;

/// A get_token callback travelling to the bridge (local only: never serialized).
struct pending_callback {
  std::function<void(token_outcome)> fn;
};

/// Tells the bridge to answer what is outstanding with shutting_down and quit.
using close_atom = caf::atom_constant<caf::atom("close")>;
/// The bridge's own sweep tick (internal).
using sweep_atom = caf::atom_constant<caf::atom("sweep")>;

/// Timing of a client_bridge.
struct client_bridge_options {
  /// How long past a request's timeout the bridge still waits for the module's answer (the
  /// module answers deadline_exceeded at the timeout itself; this covers message latency).
  std::chrono::milliseconds answer_margin{1000};
  /// How often outstanding calls are checked against their deadlines.
  std::chrono::milliseconds sweep_interval{1000};
  /// Least time between two asks for the supervisor's wiring (while token_service restarts).
  std::chrono::milliseconds lookup_interval{100};
};

/// State of the client_bridge actor.
struct client_bridge_state {
  static inline const char* name = "msiv2.client_bridge";

  struct call {
    std::function<void(token_outcome)> fn;
    caf::actor_clock::time_point due;
    /// Kept while the call went straight to token_service, to resend it through the
    /// supervisor if that token_service turns out to be gone.
    std::optional<token_request> resend;
  };

  /// Outstanding calls by the bridge's own id.
  std::unordered_map<std::uint64_t, call> calls;
  std::uint64_t next_id = 0;
  /// The current token_service, once the supervisor's wiring named it (null: go through
  /// the supervisor).
  token_service direct;
  /// No wiring lookup before this time; true while one is in flight.
  caf::actor_clock::time_point next_lookup{};
  bool looking = false;
  bool sweeping = false;
  bool closing = false;
};

/// The behavior of the client_bridge actor; `module` is the module's supervisor.
caf::behavior client_bridge_impl(caf::stateful_actor<client_bridge_state>* self,
                                 supervisor module, client_bridge_options options);

} // namespace msiv2

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(msiv2::pending_callback)
