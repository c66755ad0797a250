#pragma once

// Unit tests of actors on CAF's test scheduler (toolchain.md pitfall 1): virtual time, no
// threads of CAF's own, no sleeps. The fixture wires runtime_deps to fakes: a scripted
// fake_transport (immediate delivery by default), a wall clock derived from the virtual
// actor clock (advancing virtual time moves wall time), a deterministic jitter source, a
// synchronous in-memory key store and a stats registry.
//
//   actor_fixture f;
//   auto a = f.sys.spawn(my_actor_impl, f.deps());
//   auto got = f.request<imds_source>(a, probe_atom::value, f.due_in(std::chrono::seconds(5)));
//   f.run();
//   BOOST_CHECK(got->value);

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include "actors/runtime.hpp"
#include "io/fake_transport.hpp"
#include "messages/errors.hpp"
#include "platform/clock.hpp"

namespace msiv2::test {

/// The answer to a request made by actor_fixture::request, once the scheduler ran.
template <class T>
struct outcome {
  std::optional<T> value;
  caf::error error;
  bool answered() const { return value.has_value() || static_cast<bool>(error); }
};

/// A key store that generates keys inline (real RSA-2048, synchronous: deterministic under
/// the test scheduler) and counts what it was asked.
class inline_key_store : public key_store {
public:
  void load_or_create(std::function<void(result<key_ref>)> done) override;
  void rotate(std::string key_id, std::function<void(result<key_ref>)> done) override;

  int creates = 0;
  int rotations = 0;
  /// When set, the next call fails with this message.
  std::string fail_next;

private:
  std::optional<key_ref> current_;
};

/// Builds the test actor system once per test case.
struct actor_config : caf::actor_system_config {
  actor_config();
};

class actor_fixture {
public:
  actor_fixture();
  ~actor_fixture();

  actor_config cfg;
  caf::actor_system sys;
  caf::scheduler::test_coordinator& sched;

  module_config config;  ///< edit before calling deps()
  std::shared_ptr<io::fake_transport> transport;
  std::shared_ptr<platform::derived_wall_clock> wall;
  std::shared_ptr<inline_key_store> keys;
  std::shared_ptr<stats_registry> stats;
  std::shared_ptr<attestation_provider> attestation; ///< null unless a test sets one
  /// The jitter every actor draws: returns the midpoint (0 for symmetric ranges) unless a
  /// test replaces it.
  platform::jitter_source draw;

  /// runtime_deps built from the members above (call after editing them).
  deps_ptr deps() const;

  /// Runs every runnable actor until none is left.
  void run();
  /// Advances virtual time (and so wall time) by `d`, fires due timeouts, runs.
  void advance(std::chrono::nanoseconds d);
  /// A deadline `d` from now on the virtual clock.
  deadline due_in(std::chrono::nanoseconds d) const;
  /// Wall time now (Unix ms).
  std::int64_t wall_ms() const { return wall->now_ms(); }

  /// Sends a request to `dest` from a helper actor; the outcome fills in as the scheduler
  /// runs (call run()).
  template <class T, class Handle, class... Ts>
  std::shared_ptr<outcome<T>> request(const Handle& dest, Ts... xs) {
    auto out = std::make_shared<outcome<T>>();
    // The unused argument keeps CAF 0.17 from dereferencing a null empty-tuple pointer when it
    // spawns a function without arguments (UBSan: "reference binding to null pointer").
    sys.spawn(
      [=](caf::event_based_actor* self, int) {
        self->request(dest, caf::infinite, xs...)
          .then([=](T& v) { out->value = std::move(v); },
                [=](caf::error& e) { out->error = std::move(e); });
      },
      0);
    return out;
  }

  /// Remembers an actor to stop when the test ends (pitfall 2: timers hang teardown).
  template <class Handle>
  Handle keep(Handle h) {
    spawned_.push_back(caf::actor_cast<caf::actor>(h));
    return h;
  }

private:
  std::vector<caf::actor> spawned_;
};

} // namespace msiv2::test
