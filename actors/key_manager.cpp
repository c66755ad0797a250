#include "actors/key_manager.hpp"

#include <string>

#include <caf/send.hpp>

#include "messages/errors.hpp"
#include "platform/binding.hpp"

namespace msiv2 {

void key_manager_state::fail_all(const caf::error& err) {
  auto pending = std::move(waiters);
  waiters.clear();
  for (auto& w : pending)
    if (w.pending())
      w.deliver(err);
}

key_manager_state::~key_manager_state() {
  fail_all(make_msiv2_error(error_code::shutting_down,
                            "the key manager stopped before the binding key was ready"));
}

key_manager::behavior_type key_manager_impl(key_manager::stateful_pointer<key_manager_state> self,
                                            deps_ptr deps) {
  self->state.deps = deps;

  // Starts a key_store call (create, or rotate away from `failed_id` when not empty); the
  // store answers on any thread, so its answer comes back as a message.
  auto start = [=](std::string failed_id) {
    auto& st = self->state;
    auto op = ++st.next_op;
    st.in_flight = op;
    auto hdl = caf::actor_cast<key_manager>(self);
    auto done = [hdl, op](result<key_ref> k) {
      if (k)
        caf::anon_send(hdl, caf::put_atom::value, op, std::move(*k));
      else
        caf::anon_send(hdl, caf::put_atom::value, op,
                       make_msiv2_error(error_code::key_failed,
                                        "the binding key could not be created or opened: " +
                                          k.error()));
    };
    if (failed_id.empty()) {
      st.deps->keys->load_or_create(std::move(done));
    } else {
      st.deps->stats->add("msiv2_renewals_total{artifact=\"binding_key\"}");
      st.deps->log->write(platform::log_level::warning, "key_manager",
                          "rotating the binding key " + failed_id + " (it was proven bad)");
      st.deps->keys->rotate(std::move(failed_id), std::move(done));
    }
  };

  auto wait = [=]() -> caf::result<key_ref> {
    auto& st = self->state;
    st.waiters.push_back(self->make_response_promise<key_ref>());
    return st.waiters.back();
  };

  // Eager: the first certificate flight finds the key made, or joins this call.
  if (deps->config.eager_key && deps->config.v2_enabled)
    start({});

  return {
    [=](caf::get_atom) -> caf::result<key_ref> {
      auto& st = self->state;
      if (st.current && st.current->key && st.current->key->unusable()) {
        // Its TPM refused to load it at a signature (cleared or replaced): never hand it out
        // again; the key store replaces it (and deletes what certified it).
        auto failed_id = st.current->key_id;
        st.deps->log->write(platform::log_level::warning, "key_manager",
                            "the binding key " + failed_id +
                              " can no longer sign (its TPM refused to load it): replacing it");
        auto res = wait();
        if (st.in_flight == 0) {
          st.current.reset();
          start(std::move(failed_id));
        }
        return res;
      }
      if (st.current) {
        st.deps->stats->add("msiv2_cache_hits_total{artifact=\"binding_key\"}");
        return *st.current;
      }
      auto res = wait();
      if (st.in_flight == 0)
        start({});
      return res;
    },
    [=](rotate_atom, std::string& failed_id) -> caf::result<key_ref> {
      auto& st = self->state;
      if (st.current && st.current->key_id != failed_id)
        return *st.current; // already rotated (or never that key): nothing to do
      auto now = self->clock().now();
      if (st.current && st.last_rotation && now - *st.last_rotation < min_rotation_interval) {
        st.deps->stats->add("msiv2_rotations_refused_total");
        st.deps->log->write(platform::log_level::warning, "key_manager",
                            "not rotating the binding key " + failed_id +
                              " again: it was rotated less than " +
                              std::to_string(min_rotation_interval.count()) +
                              " minutes ago (one rotation per that interval)");
        return *st.current;
      }
      if (st.current)
        st.last_rotation = now;
      auto res = wait();
      if (st.in_flight == 0) {
        // With no current key, a call in flight (or a plain create) gives a new one anyway.
        auto rotate_from = st.current ? failed_id : std::string{};
        st.current.reset();
        start(std::move(rotate_from));
      }
      return res;
    },
    [=](caf::put_atom, std::uint64_t op, key_ref& k) {
      auto& st = self->state;
      if (op != st.in_flight)
        return;
      st.in_flight = 0;
      st.current = k;
      auto pending = std::move(st.waiters);
      st.waiters.clear();
      for (auto& w : pending)
        w.deliver(k);
    },
    [=](caf::put_atom, std::uint64_t op, caf::error& err) {
      auto& st = self->state;
      if (op != st.in_flight)
        return;
      st.in_flight = 0;
      if (st.waiters.empty()) // the eager call at start: nobody waits, the next get retries
        st.deps->log->write(platform::log_level::warning, "key_manager",
                            "making the binding key at start failed (the first request tries "
                            "again): " + render(err));
      else
        st.deps->log->write(platform::log_level::error, "key_manager", render(err));
      st.fail_all(err);
    },
    [=](wire_atom, wiring_ptr w) { self->state.peers = std::move(w); },
  };
}

} // namespace msiv2
