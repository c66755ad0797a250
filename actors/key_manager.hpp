#pragma once

// The binding key owner: asks the key_store (off the actor threads) for the current key,
// shares one creation between concurrent callers, and rotates a key only when the caller
// names the key that is current (a late report about an old key changes nothing). With
// module_config::eager_key it asks for the key when it starts, so that the first caller finds
// it ready or joins the call in flight.

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include <caf/actor_clock.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/interfaces.hpp"

namespace msiv2 {

/// State of the key_manager actor.
struct key_manager_state {
  static inline const char* name = "msiv2.key_manager";

  deps_ptr deps;
  wiring_ptr peers;

  /// The key handed out, once the store gave one.
  std::optional<key_ref> current;
  /// Id of the key_store call in flight (0: none); completions of other calls are dropped.
  std::uint64_t in_flight = 0;
  std::uint64_t next_op = 0;
  /// When the key was last rotated (virtual time): rotations an upstream answer forces are
  /// allowed once per min_rotation_interval (review M6).
  std::optional<caf::actor_clock::time_point> last_rotation;
  /// Callers waiting for the call in flight.
  std::vector<caf::typed_response_promise<key_ref>> waiters;

  /// Answers every waiter with `err`.
  void fail_all(const caf::error& err);
  ~key_manager_state();
};

/// Shortest time between two rotations: an IMDS that keeps answering with a certificate for
/// another key cannot make the module generate keys (and rewrite the key file, and purge every
/// process's certificates) on every request.
inline constexpr std::chrono::minutes min_rotation_interval{10};

/// The behavior of the key_manager actor.
key_manager::behavior_type key_manager_impl(key_manager::stateful_pointer<key_manager_state> self,
                                            deps_ptr deps);

} // namespace msiv2
