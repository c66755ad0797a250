#pragma once

// renewal_timer: one renewal time per artifact id; at the artifact's renewal time (wall clock)
// it sends (renew_atom, id) to the artifact's owner. The times are kept in order and only the
// earliest one is armed on the actor clock (virtual under the test scheduler): one pending
// message however many artifacts there are, so a cached token costs a map entry, not a timer
// message. Every tick re-checks the wall clock, so a clock corrected backwards re-arms instead
// of renewing early and a late tick (suspend, overload) renews at once.

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_clock.hpp>

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/interfaces.hpp"

namespace msiv2 {

/// One scheduled renewal.
struct renewal_entry {
  std::int64_t at_ms = 0; ///< wall time (Unix ms) to renew at
  caf::actor owner;       ///< receives (renew_atom, id)
  std::string kind;       ///< gauge label: what the owner renews (see renewal_kind())
};

/// State of renewal_timer.
struct renewal_timer_state {
  static inline const char* name = "msiv2.renewal_timer";
  /// Scheduled renewals by artifact id.
  std::map<std::string, renewal_entry> timers;
  /// The same renewals in time order: (at_ms, artifact id owned by `timers`).
  std::set<std::pair<std::int64_t, const std::string*>> due;
  /// Generation of the one armed tick (older ticks are stale); 0: none armed.
  std::uint64_t armed = 0;
  /// Actor-clock time the armed tick fires at.
  caf::actor_clock::time_point armed_for;
  /// Last generation handed out.
  std::uint64_t generation = 0;
  /// The scheduled times of each kind (the gauges: how many, and the earliest).
  std::map<std::string, std::multiset<std::int64_t>> by_kind;
  /// Peers: owners come with each schedule; the wired ones name the artifact kind.
  wiring_ptr peers;
};

/// What `owner` renews, by the peer it is in `peers`: "attestation" (attestation_cache),
/// "certificate" (cert_issuer), "token" (token_service), else "artifact".
std::string renewal_kind(const wiring_ptr& peers, const caf::actor& owner);

/// The gauge of the earliest scheduled renewal of one kind (Unix seconds):
/// `msiv2_renewal_at_seconds{artifact="<kind>"}`. One series per kind (at most four),
/// however many artifacts are scheduled (review H1: bounded series); absent when none is.
std::string renewal_gauge_name(const std::string& kind);

/// The gauge of how many renewals of one kind are scheduled:
/// `msiv2_scheduled_renewals{artifact="<kind>"}` (0 when none is).
std::string scheduled_gauge_name(const std::string& kind);

/// The behavior of renewal_timer.
renewal_timer::behavior_type
renewal_timer_impl(renewal_timer::stateful_pointer<renewal_timer_state> self, deps_ptr deps);

} // namespace msiv2
