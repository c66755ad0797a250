#include "actors/renewal_timer.hpp"

#include <algorithm>
#include <chrono>

#include <caf/send.hpp>

#include "platform/encoding.hpp"

namespace msiv2 {

namespace {

using self_ptr = renewal_timer::stateful_pointer<renewal_timer_state>;

/// Longest single wait: a wall clock that jumps forwards (a suspended VM resumes) is noticed
/// within this time instead of when the actor clock reaches the target.
constexpr std::int64_t max_wait_ms = 60'000;

/// Arms the tick of `id` for its current generation; the delay comes from the wall clock.
void arm(self_ptr self, const deps_ptr& deps, const std::string& id, const renewal_entry& e) {
  auto delay = std::clamp<std::int64_t>(e.at_ms - deps->wall->now_ms(), 0, max_wait_ms);
  if (delay == 0)
    self->send(self, caf::tick_atom::value, id, e.generation);
  else
    self->delayed_send(self, std::chrono::milliseconds(delay), caf::tick_atom::value, id,
                       e.generation);
}

} // namespace

std::string renewal_kind(const wiring_ptr& peers, const caf::actor& owner) {
  if (!peers || !owner)
    return "artifact";
  if (owner == caf::actor_cast<caf::actor>(peers->attestation))
    return "attestation";
  if (owner == caf::actor_cast<caf::actor>(peers->certs))
    return "certificate";
  if (owner == caf::actor_cast<caf::actor>(peers->service))
    return "token";
  return "artifact";
}

std::string renewal_gauge_name(const std::string& kind, const std::string& artifact_id) {
  return "msiv2_renewal_at_seconds{artifact=\"" + kind + "\",id=\"" +
         platform::hex_lower(platform::sha256(artifact_id)).substr(0, 12) + "\"}";
}

renewal_timer::behavior_type
renewal_timer_impl(renewal_timer::stateful_pointer<renewal_timer_state> self, deps_ptr deps) {
  return {
    [=](schedule_atom, const std::string& id, std::int64_t at_ms, const caf::actor& owner) {
      auto& e = self->state.timers[id];
      e.generation = ++self->state.generation;
      e.at_ms = at_ms;
      auto kind = renewal_kind(self->state.peers, owner);
      if (!e.kind.empty() && e.kind != kind)
        deps->stats->erase_gauge(renewal_gauge_name(e.kind, id));
      e.owner = owner;
      e.kind = std::move(kind);
      deps->stats->set_gauge(renewal_gauge_name(e.kind, id), static_cast<double>(at_ms) / 1000.0);
      arm(self, deps, id, e);
    },
    [=](cancel_atom, const std::string& id) {
      auto i = self->state.timers.find(id);
      if (i == self->state.timers.end())
        return;
      deps->stats->erase_gauge(renewal_gauge_name(i->second.kind, id));
      self->state.timers.erase(i);
    },
    [=](caf::tick_atom, const std::string& id, std::uint64_t generation) {
      auto i = self->state.timers.find(id);
      if (i == self->state.timers.end() || i->second.generation != generation)
        return; // cancelled or replaced
      // Still early by the wall clock: a partial wait, or the wall clock was corrected
      // backwards (renewing now would be early). Wait for the wall time.
      if (deps->wall->now_ms() < i->second.at_ms) {
        arm(self, deps, id, i->second);
        return;
      }
      auto owner = std::move(i->second.owner);
      deps->stats->erase_gauge(renewal_gauge_name(i->second.kind, id));
      self->state.timers.erase(i);
      if (owner)
        caf::anon_send(owner, renew_atom::value, id);
    },
    [=](wire_atom, wiring_ptr peers) { self->state.peers = std::move(peers); },
  };
}

} // namespace msiv2
