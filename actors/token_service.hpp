#pragma once

// token_service: the facade of the module (architecture.md "Actors", "Public interface").
// Validates a token_request, serves the access-token cache (the hot path: no message to any
// other actor for a fresh token), and otherwise runs one upstream chain per cache key
// (single-flight): cert_issuer -> token_exchanger for mtls_pop (no probe: getplatformmetadata
// itself tells v2 from v1-only and no IMDS, as MSAL .NET does), token_exchanger over IMDS v1
// for bearer. The header-less probe answers the capability query only. Tokens are renewed by the lifecycle rule, in the background, when a
// request finds them due or when renewal_timer says so. After every change to its
// cache it publishes the cache to deps->snapshot (actors/token_snapshot.hpp), before it answers
// anything that depends on the change, so readers on other threads find fresh tokens without a
// message.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <caf/actor_addr.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/interfaces.hpp"
#include "platform/lifecycle.hpp"

namespace msiv2 {

/// Checks a request and normalizes it in place (a trailing "/.default" is removed from the
/// resource). Returns an invalid_request error that says what is wrong, or none.
caf::error normalize_token_request(token_request& req);

/// True for a bare GUID ("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", hex digits).
bool is_guid(const std::string& s) noexcept;

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
    std::vector<waiter> waiters;
    /// The cache entry this flight renews (empty: none).
    std::string renews;
    stage at = stage::probe;
    caf::actor_addr waiting_on;
    /// The correlation id of every upstream call of this flight (the first caller's, or a
    /// fresh one for a background renewal).
    std::string correlation_id;
    /// The last use of the entry it renews, when the renewal started: a renewed token whose
    /// key changed (a new certificate dropped the old entry) keeps it (a renewal is not a use).
    std::int64_t renews_last_used_ms = 0;
  };

  /// A cached access token. Its cache key spells out the rest (flight key: identity,
  /// resource, type, no claims; then the x5t#S256), so the entry keeps no copies of them:
  /// see cache_key_parts() in token_service.cpp.
  struct entry {
    /// The token and its request key, shared with the readers of deps->snapshot (immutable;
    /// a renewal replaces it).
    published_token_ptr token;
    platform::lifecycle life;
    /// Of the request that got the token (not part of the key); used again to renew it.
    std::vector<std::string> client_capabilities;
    int failed_renewals = 0;
    /// Its place in `lru`, keyed by the last use known when it was placed there.
    std::multimap<std::int64_t, const std::string*>::iterator lru_at;
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
  /// The cache keys (owned by `cache`: node keys do not move) by the last use known when
  /// they were placed (a later use, by a reader of the snapshot, is found when the key comes
  /// up for eviction); bounded by module_config::max_cached_tokens (review H1).
  std::multimap<std::int64_t, const std::string*> lru;
  /// Shared with the exit hook, which answers every waiter when the actor stops.
  std::shared_ptr<flight_map> flights = std::make_shared<flight_map>();
  /// Identity key -> x5t#S256 of the last credential cert_issuer gave for it.
  std::unordered_map<std::string, std::string> x5t_by_identity;
  /// Scratch buffers of the hot path (keep their capacity: no allocation per request).
  std::string key_buf;
  std::string identity_buf;
  std::uint64_t next_id = 1;
};

/// The behavior of token_service.
token_service::behavior_type
token_service_impl(token_service::stateful_pointer<token_service_state> self, deps_ptr deps);

} // namespace msiv2
