#pragma once

// attestation_cache: attestation JWTs per (endpoint, key id). One JWT serves every identity
// that uses the key, so K identities on one key cost one attestation call. Single-flight per
// (endpoint, key id); lifecycle rule of architecture.md (iat..exp): served while fresh or
// due, renewed in the background from the renewal_timer or from a request that finds it due,
// a failed renewal keeps the usable JWT; retries per io::retry_leg::attestation bounded by
// the callers' deadlines. A refusal or an unusable answer (4xx other than 408/429, a 200
// whose JWT is malformed, expired-less or for another key) is not retried on a schedule: the
// answer is dropped and one fresh attestation (new nonce) follows at once (architecture.md
// "Failure handling"); when that fails too, callers get attestation_failed naming what was
// wrong. A usable JWT being renewed in the background stays in use either way.
//
// With runtime_deps::files the JWT is shared with this user's other processes: a request with
// no usable JWT in memory reads the attestation file first (no lock); a fetch takes the file's
// writer lock and re-reads it, adopting a JWT another process wrote meanwhile instead of
// calling the provider; a fetched JWT is written under the lock.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/interfaces.hpp"
#include "io/retry.hpp"
#include "platform/lifecycle.hpp"

namespace msiv2 {

/// (endpoint, key id).
using attestation_key = std::pair<std::string, std::string>;

/// A caller waiting for a JWT.
struct attestation_waiter {
  caf::typed_response_promise<attestation_token> rp;
  deadline due;
};

/// One (endpoint, key id).
struct attestation_entry {
  key_ref key;           ///< the key to attest (latest request's handle)
  std::string client_id; ///< client id of the latest request (renewals use it)
  /// x-ms-client-request-id of the fetch: the correlation id of the request that started it,
  /// or a fresh one for a renewal.
  std::string correlation_id;
  std::optional<attestation_token> token;
  platform::lifecycle plan;
  std::string timer_id; ///< renewal_timer artifact id
  // The fetch in progress, if any.
  bool fetching = false;
  bool background = false;       ///< started by a renewal (no caller waited at the start)
  deadline fetch_due;            ///< bound on retries
  std::uint64_t attempt = 0;     ///< id of the current attempt (stale completions are ignored)
  io::retry_state retry;
  bool reattested = false;       ///< the one fresh attempt after a refusal was made
  // Persistence (runtime_deps::files):
  artifact_lock_ptr lock;        ///< the file's writer lock while fetching (null: alone)
  /// SHA-256 (hex) of JWTs the issuer refused: never adopted from the file again.
  std::set<std::string> refused;
  std::map<std::uint64_t, attestation_waiter> waiters; ///< by waiter id
};

/// State of attestation_cache.
struct attestation_cache_state {
  static inline const char* name = "msiv2.attestation_cache";
  std::map<attestation_key, attestation_entry> entries;
  /// Attempt id / waiter id -> entry.
  std::map<std::uint64_t, attestation_key> attempts;
  std::map<std::uint64_t, attestation_key> waiter_keys;
  /// renewal_timer artifact id -> entry.
  std::map<std::string, attestation_key> timer_ids;
  std::uint64_t last_id = 0;
  wiring_ptr peers;
  /// The key id of the latest attest request: the module's current binding key. Entries of
  /// other keys (rotated away) are forgotten, not renewed (review L8).
  std::string current_key_id;
  /// Attestation file name -> the last refusal logged for it (each refusal is logged once).
  std::map<std::string, std::string> refusals_logged;
};

/// The behavior of attestation_cache.
attestation_cache::behavior_type
attestation_cache_impl(attestation_cache::stateful_pointer<attestation_cache_state> self,
                       deps_ptr deps);

} // namespace msiv2
