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

/// When a tick finds more than renewal_resume_burst renewals later than renewal_late_after_ms
/// (the timer re-checks the wall clock at least every minute, so only a pause of the whole
/// process or VM makes one this late), they are not fired at once but moved to random times
/// within renewal_resume_spread_ms, so that renewals due across a suspend do not all fire in
/// one tick (review M8). A few late ones fire at once.
inline constexpr std::int64_t renewal_late_after_ms = 61'000;
inline constexpr std::int64_t renewal_resume_spread_ms = 120'000;
inline constexpr std::size_t renewal_resume_burst = 10;

/// One scheduled renewal.
struct renewal_entry {
  std::int64_t at_ms = 0; ///< wall time (Unix ms) to renew at
  caf::actor owner;       ///< receives (renew_atom, id)
  std::string kind;       ///< gauge label: what the owner renews (see renewal_kind())
  /// Moved to a random time after a pause (suspend, a stopped process): fires when due
  /// however late.
  bool spread = false;
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
  /// Scheduled renewals per kind (the gauge's value).
  std::map<std::string, std::size_t> per_kind;
  /// Peers: owners come with each schedule; the wired ones name the artifact kind.
  wiring_ptr peers;
};

/// What `owner` renews, by the peer it is in `peers`: "attestation" (attestation_cache),
/// "certificate" (cert_issuer), "token" (token_service), else "artifact".
std::string renewal_kind(const wiring_ptr& peers, const caf::actor& owner);

/// The gauge of how many renewals of one kind are scheduled:
/// `msiv2_scheduled_renewals{artifact="<kind>"}`. One series per kind (at most four), however
/// many artifacts there are; each owner publishes its own earliest renewal time.
std::string renewal_gauge_name(const std::string& kind);

/// The behavior of renewal_timer.
renewal_timer::behavior_type
renewal_timer_impl(renewal_timer::stateful_pointer<renewal_timer_state> self, deps_ptr deps);

} // namespace msiv2
