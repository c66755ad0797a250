#pragma once

// supervisor: spawns every actor of the module, monitors them, hands each the wiring (the
// current handles of its peers), restarts a crashed actor with exponential backoff and sends
// the new wiring to all; on shutdown stops every actor (each answers its pending callers) and
// then itself. It also serves the token_service interface by delegating to the current
// token_service, so callers keep one handle across restarts of the facade.
//
//   caf::actor_system sys{cfg};
//   auto m = msiv2::module::start(sys, deps);
//   self->request(m.service(), timeout, token_request{...}).then(...);
//   m.stop(); // or let m go out of scope

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "msiv2/actors/interfaces.hpp"

namespace msiv2 {

/// The actors the supervisor owns, in spawn order.
enum class actor_role : std::uint8_t {
  probe = 0,
  keys = 1,
  attestation = 2,
  certs = 3,
  exchanger = 4,
  timer = 5,
  service = 6,
};

/// Number of actor_role values.
inline constexpr std::size_t actor_role_count = 7;

/// Lower-case name of a role ("cert_issuer").
const char* to_string(actor_role r) noexcept;

/// Makes one actor of a role. Returns an invalid handle when the role is not available (the
/// wiring then holds an invalid handle for it).
using actor_factory = std::function<caf::actor(caf::actor_system&, deps_ptr)>;

/// How the supervisor makes each actor: the real `*_impl` behaviors by default; unit tests
/// pass doubles.
struct actor_factories {
  std::array<actor_factory, actor_role_count> make;

  /// The module's own actors.
  static actor_factories defaults();
};

/// Restart policy.
struct restart_policy {
  std::chrono::milliseconds initial_backoff{100};
  std::chrono::milliseconds max_backoff{30000};
  /// An actor that ran this long before crashing restarts after initial_backoff again.
  std::chrono::milliseconds stable_after{60000};
  /// More than this many restarts (of all actors together) within degraded_window report the
  /// module degraded: one error log line and the gauge msiv2_degraded = 1, until a whole
  /// window passes without a restart (then an info line and the gauge back to 0).
  int degraded_after = 5;
  std::chrono::milliseconds degraded_window{60000};
};

/// The supervisor's interface: token_service's (delegated to the current token_service), the
/// current wiring, and its internal restart timer.
using supervisor = token_service::extend<
  caf::replies_to<caf::get_atom>::with<wiring_ptr>,
  caf::reacts_to<caf::tick_atom, std::uint32_t, std::uint64_t>>; ///< role, generation (internal)

/// The state of the supervisor.
struct supervisor_state {
  static inline const char* name = "msiv2.supervisor";

  /// One supervised actor.
  struct child {
    caf::actor handle;
    bool alive = false;
    std::uint64_t generation = 0; ///< bumped on every (re)spawn
    std::uint64_t restarts = 0;
    std::chrono::milliseconds backoff{0};
    caf::actor_clock::time_point started;
  };

  deps_ptr deps;
  actor_factories factories;
  restart_policy policy;
  std::array<child, actor_role_count> children;
  /// The current handles, shared with the exit hook that stops them with the supervisor.
  std::shared_ptr<std::array<caf::actor, actor_role_count>> handles =
    std::make_shared<std::array<caf::actor, actor_role_count>>();
  wiring_ptr wires;
  bool stopping = false;
  /// When the recent restarts happened (within restart_policy::degraded_window).
  std::deque<caf::actor_clock::time_point> recent_restarts;
  bool degraded = false;
};

/// The behavior of the supervisor: spawns every actor at once.
supervisor::behavior_type supervisor_impl(supervisor::stateful_pointer<supervisor_state> self,
                                          deps_ptr deps, actor_factories factories,
                                          restart_policy policy);

/// The module inside an embedder's actor_system (RAII: the destructor stops it).
class module {
public:
  /// Spawns the supervisor (which spawns every actor) in `sys`.
  static module start(caf::actor_system& sys, runtime_deps deps,
                      actor_factories factories = actor_factories::defaults(),
                      restart_policy policy = {});

  module() = default;
  module(module&&) noexcept = default;
  module& operator=(module&& other) noexcept;
  module(const module&) = delete;
  module& operator=(const module&) = delete;
  ~module();

  /// Where to send token_request and stats_atom; stays valid while actors restart.
  token_service service() const { return service_; }
  /// The supervisor itself (its down message says the module is fully stopped).
  const supervisor& handle() const { return supervisor_; }
  /// Stops every actor; pending callers get shutting_down. Returns at once; idempotent.
  void stop();

private:
  supervisor supervisor_;
  token_service service_;
};

} // namespace msiv2
