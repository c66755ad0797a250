#pragma once

// token_service: the facade of the module (architecture.md "Actors", "Public interface").
// Validates a token_request, serves the access-token cache (the hot path: no message to any
// other actor for a fresh token), and otherwise runs one upstream chain per cache key
// (single-flight): cert_issuer -> token_exchanger for mtls_pop (no probe: getplatformmetadata
// itself tells v2 from v1-only and no IMDS, as MSAL .NET does), token_exchanger over IMDS v1
// for bearer. The header-less probe answers the capability query only. Tokens are renewed by the lifecycle rule, in the background, when a
// request finds them due or when renewal_timer says so.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <caf/actor_addr.hpp>
#include <caf/actor_clock.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/interfaces.hpp"
#include "platform/lifecycle.hpp"

namespace msiv2 {

/// The longest timeout a token_request may ask for (a longer one is invalid_request: review M1,
/// deadlines computed from it would overflow).
inline constexpr std::chrono::hours max_request_timeout{24};

/// Checks a request and normalizes it in place (a trailing "/.default" is removed from the
/// resource). Returns an invalid_request error that says what is wrong, or none.
caf::error normalize_token_request(token_request& req);

/// True for a bare GUID ("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", hex digits).
bool is_guid(const std::string& s) noexcept;

/// When a cached token was last served (Unix ms, the wall clock that judged its freshness).
/// One instance is shared by token_service's cache entry and by any snapshot of that entry
/// that serves hits without a message: every path that serves the token calls touch(), and
/// token_service reads last() when it picks the least recently used token to drop and when it
/// decides whether an idle token is worth renewing (module_config::max_cached_tokens,
/// token_idle_window). touch() is a relaxed load, and a relaxed store at most once per
/// granularity_ms, so concurrent readers of a hot token do not keep writing one cache line.
struct token_use {
  /// Uses closer together than this are recorded as one.
  static constexpr std::int64_t granularity_ms = 1000;

  explicit token_use(std::int64_t now_ms) noexcept : last_used_ms_(now_ms) {}

  /// Records a use at `now_ms`.
  void touch(std::int64_t now_ms) noexcept {
    if (last_used_ms_.load(std::memory_order_relaxed) + granularity_ms <= now_ms)
      last_used_ms_.store(now_ms, std::memory_order_relaxed);
  }

  /// The last recorded use (at most granularity_ms older than the real last use).
  std::int64_t last() const noexcept { return last_used_ms_.load(std::memory_order_relaxed); }

private:
  std::atomic<std::int64_t> last_used_ms_;
};

/// The state of token_service.
struct token_service_state {
  static inline const char* name = "msiv2.token_service";

  /// A caller waiting for a flight.
  struct waiter {
    caf::typed_response_promise<token_result> promise;
    deadline due;
    std::uint64_t id = 0;
  };

  /// Which peer a flight is waiting for.
  enum class stage : std::uint8_t { probe, certs, exchanger };

  /// One upstream chain for one flight key; every waiter gets its outcome.
  struct flight {
    std::uint64_t id = 0;
    token_request request; ///< normalized
    std::string identity_key;
    deadline due;
    /// In the order they joined, so by increasing id (a timeout finds its waiter by binary
    /// search; an answered waiter stays, its promise no longer pending).
    std::vector<waiter> waiters;
    /// The cache entry this flight renews (empty: none).
    std::string renews;
    /// The last use of that entry when the renewal started (a renewed token whose key
    /// changes with a new certificate keeps its usage history).
    std::int64_t renews_last_used_ms = 0;
    stage at = stage::probe;
    caf::actor_addr waiting_on;
    /// The correlation id of every upstream call of this flight (the first caller's, or a
    /// fresh one for a background renewal).
    std::string correlation_id;
  };

  /// A cached access token. Its cache key spells out the rest (flight key: identity,
  /// resource, type, no claims; then the x5t#S256), so the entry keeps no copies of them:
  /// see cache_key_parts() in token_service.cpp.
  struct entry {
    token_result result;
    platform::lifecycle life;
    /// Of the request that got the token (not part of the key); used again to renew it.
    std::vector<std::string> client_capabilities;
    int failed_renewals = 0;
    /// Shared with lock-free readers; never null.
    std::shared_ptr<token_use> use;
    /// Its place in `lru` and the use time it was placed for (a later use moves it to the
    /// front when it reaches the back: second chance).
    std::list<const std::string*>::iterator lru_at;
    std::int64_t placed_for_ms = 0;
    /// usable_until on the actor's monotonic clock, counted from receipt: expires_in is
    /// relative to receipt, so a wall clock set back after receipt must not keep the token
    /// usable past its server-side expiry (review M8). Usable while both clocks say so.
    caf::actor_clock::time_point usable_until_mono;
  };

  using flight_map = std::unordered_map<std::string, flight>;

  deps_ptr deps;
  wiring_ptr wires;
  /// What this host's IMDS is, once known: v1_only when getplatformmetadata answered 404
  /// (mtls_pop requests then fail at once), or the capability probe's answer.
  std::optional<imds_source> source;
  /// An mtls_pop chain found no IMDS at all (imds_unavailable): that error, answered at once
  /// to mtls_pop requests until `unavailable_until` (module_config::transient_probe_ttl).
  caf::error unavailable;
  caf::actor_clock::time_point unavailable_until;
  /// Cache key -> token (key = flight key + '\n' + x5t#S256, empty x5t for bearer).
  std::unordered_map<std::string, entry> cache;
  /// The cache keys (owned by `cache`), most recently placed first.
  std::list<const std::string*> lru;
  /// Shared with the exit hook, which answers every waiter when the actor stops.
  std::shared_ptr<flight_map> flights = std::make_shared<flight_map>();
  /// Identity key -> x5t#S256 of the last credential cert_issuer gave for it.
  std::unordered_map<std::string, std::string> x5t_by_identity;
  /// Scratch buffers of the hot path (keep their capacity: no allocation per request).
  std::string key_buf;
  std::string identity_buf;
  std::uint64_t next_id = 1;
  /// Callers waiting for a flight and not answered yet (bounded by
  /// module_config::max_pending_requests).
  std::size_t waiting = 0;
};

/// The behavior of token_service.
token_service::behavior_type
token_service_impl(token_service::stateful_pointer<token_service_state> self, deps_ptr deps);

} // namespace msiv2
