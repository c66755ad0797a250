#include "actors/renewal_timer.hpp"

#include <algorithm>
#include <chrono>

#include <caf/send.hpp>

namespace msiv2 {

namespace {

using self_ptr = renewal_timer::stateful_pointer<renewal_timer_state>;

/// Longest single wait: a wall clock that jumps forwards (a suspended VM resumes) is noticed
/// within this time instead of when the actor clock reaches the target.
constexpr std::int64_t max_wait_ms = 60'000;

/// Arms one tick for the earliest renewal (none when nothing is scheduled), unless the tick
/// already armed fires no later (`force`: the armed tick is being consumed, arm anew).
void arm(self_ptr self, const deps_ptr& deps, bool force) {
  auto& st = self->state;
  if (st.due.empty()) {
    st.armed = 0; // a tick still in the clock is stale now
    return;
  }
  auto delay = std::clamp<std::int64_t>(st.due.begin()->first - deps->wall->now_ms(), 0,
                                        max_wait_ms);
  auto fire = self->clock().now() + std::chrono::milliseconds(delay);
  if (!force && st.armed != 0 && st.armed_for <= fire)
    return;
  st.armed = ++st.generation;
  st.armed_for = fire;
  if (delay == 0)
    self->send(self, caf::tick_atom::value, st.armed);
  else
    self->delayed_send(self, std::chrono::milliseconds(delay), caf::tick_atom::value, st.armed);
}

/// Publishes the two gauges of `kind`.
void publish_kind(self_ptr self, const deps_ptr& deps, const std::string& kind) {
  auto& times = self->state.by_kind[kind];
  deps->stats->set_gauge(scheduled_gauge_name(kind), static_cast<double>(times.size()));
  if (times.empty())
    deps->stats->erase_gauge(renewal_gauge_name(kind));
  else
    deps->stats->set_gauge(renewal_gauge_name(kind), static_cast<double>(*times.begin()) / 1000.0);
}

/// Removes `e`'s time from its kind's gauges (the caller publishes them).
void unindex_kind(self_ptr self, const renewal_entry& e) {
  auto& times = self->state.by_kind[e.kind];
  if (auto t = times.find(e.at_ms); t != times.end())
    times.erase(t);
}

/// Removes `i` from both indexes and from its kind's gauges.
void drop(self_ptr self, const deps_ptr& deps,
          std::map<std::string, renewal_entry>::iterator i) {
  self->state.due.erase({i->second.at_ms, &i->first});
  unindex_kind(self, i->second);
  auto kind = std::move(i->second.kind);
  self->state.timers.erase(i);
  publish_kind(self, deps, kind);
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

std::string renewal_gauge_name(const std::string& kind) {
  return "msiv2_renewal_at_seconds{artifact=\"" + kind + "\"}";
}

std::string scheduled_gauge_name(const std::string& kind) {
  return "msiv2_scheduled_renewals{artifact=\"" + kind + "\"}";
}

renewal_timer::behavior_type
renewal_timer_impl(renewal_timer::stateful_pointer<renewal_timer_state> self, deps_ptr deps) {
  return {
    [=](schedule_atom, const std::string& id, std::int64_t at_ms, const caf::actor& owner) {
      auto& st = self->state;
      auto [i, created] = st.timers.try_emplace(id);
      auto& e = i->second;
      auto kind = renewal_kind(st.peers, owner);
      if (!created) {
        st.due.erase({e.at_ms, &i->first});
        unindex_kind(self, e);
        if (e.kind != kind)
          publish_kind(self, deps, e.kind);
      }
      e.at_ms = at_ms;
      e.owner = owner;
      e.kind = std::move(kind);
      st.due.emplace(at_ms, &i->first);
      st.by_kind[e.kind].insert(at_ms);
      publish_kind(self, deps, e.kind);
      arm(self, deps, false);
    },
    [=](cancel_atom, const std::string& id) {
      auto i = self->state.timers.find(id);
      if (i == self->state.timers.end())
        return;
      drop(self, deps, i);
      // The armed tick may now be early or needless; it finds that out when it fires.
    },
    [=](caf::tick_atom, std::uint64_t generation) {
      auto& st = self->state;
      if (generation != st.armed)
        return; // superseded by an earlier arming
      st.armed = 0;
      // Everything due by the wall clock renews now; a tick that came early by the wall
      // clock (a partial wait, or the wall clock corrected backwards) renews nothing and
      // re-arms for the wall time.
      auto now = deps->wall->now_ms();
      while (!st.due.empty() && st.due.begin()->first <= now) {
        auto i = st.timers.find(*st.due.begin()->second);
        auto owner = std::move(i->second.owner);
        auto id = i->first;
        drop(self, deps, i);
        if (owner)
          caf::anon_send(owner, renew_atom::value, id);
      }
      arm(self, deps, true);
    },
    [=](wire_atom, wiring_ptr peers) { self->state.peers = std::move(peers); },
  };
}

} // namespace msiv2
