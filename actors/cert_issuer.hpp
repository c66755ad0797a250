#pragma once

// The binding certificate owner (protocol.md §0, §2, §4, §6). Every request makes one
// getplatformmetadata call (how identity reassignment is noticed); a usable cached
// certificate is served, otherwise one is minted: key (asked while the metadata call is in
// flight), attestation when configured, CSR, issuecredential. Single-flight per
// (identity, attested?); renewals run in the background and never drop a usable certificate.
//
// With runtime_deps::files the certificate is shared with this user's other processes
// (architecture.md, "Across processes on one machine"): a request that finds no usable
// certificate in memory reads the certificate file (no lock) while the metadata call is in
// flight and adopts it when it certifies the current key and matches the metadata. Minting
// (missing, expired, due, remediation) first takes the file's writer lock and re-reads: a
// certificate another process renewed meanwhile is adopted without any upstream call; else
// the new certificate is minted under the lock and written before the lock is dropped.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/imds_parse.hpp"
#include "actors/interfaces.hpp"
#include "io/retry.hpp"
#include "platform/csr.hpp"
#include "platform/lifecycle.hpp"
#include "platform/result.hpp"

namespace msiv2 {

/// State of the cert_issuer actor.
struct cert_issuer_state {
  static inline const char* name = "msiv2.cert_issuer";

  /// A caller waiting for a flight.
  struct waiter {
    std::uint64_t id = 0;
    deadline due;
    caf::typed_response_promise<credential_ptr> promise;
  };

  /// One metadata call (+ maybe one issuance) for one cache key, shared by its callers.
  struct flight {
    enum class phase { metadata, locking, attesting, issuing };
    std::uint64_t id = 0;      ///< tells a reply of this flight from one of an older flight
    managed_identity identity;
    phase at = phase::metadata;
    bool background = false;   ///< a renewal nobody waits for
    bool bypass_cache = false; ///< the token endpoint refused the cached certificate
    bool reattested = false;   ///< issuecredential rejected the attestation token once
    std::string request_id;    ///< x-ms-client-request-id of metadata and issuecredential
    deadline due;              ///< latest deadline of any caller (bounds the retries)
    io::retry_state retries;
    std::uint64_t attempt = 0; ///< id of the HTTP call or retry timer waited for
    std::optional<platform_metadata> metadata;
    std::optional<key_ref> key;
    std::optional<attestation_token> attestation;
    std::string issue_body;    ///< the issuecredential JSON (sent again on a retry)
    std::string refused_x5t;   ///< the certificate the token endpoint refused: never adopted
    // Persistence (runtime_deps::files):
    bool disk_pending = false; ///< the unlocked read of the certificate file is under way
    std::optional<platform::file_read> disk; ///< what that read found
    bool adopted = false;      ///< the certificate served came from the file
    artifact_lock_ptr lock;    ///< the file's writer lock while minting (null: going alone)
    std::vector<waiter> waiters;
  };

  /// A cached certificate and its schedule.
  struct entry {
    credential_ptr cred;
    platform::lifecycle plan;
    int failed_renewals = 0;
  };

  deps_ptr deps;
  wiring_ptr peers;
  /// Cache key ("<identity>|attested" / "|plain") -> certificate.
  std::map<std::string, entry> cache;
  /// Cache key -> the flight in progress.
  std::map<std::string, flight> flights;
  std::uint64_t next_id = 0;
  /// Certificates (x5t#S256) the token endpoint refused: never adopted from a file again.
  std::set<std::string> refused;
  /// Certificate file name -> the last refusal logged for it (each refusal is logged once).
  std::map<std::string, std::string> refusals_logged;
  /// IMDS answered an HTTP request of this actor once: from then on a connection failure is an
  /// outage to retry, not "no IMDS here", and the normal connect timeout applies (until then
  /// the probe's short one: the mtls_pop path has no probe in front of it).
  bool imds_answered = false;
  /// The binding key's public half as build_csr checks its CSRs with (decoded once per key,
  /// not per certificate), and the key_id it was made for.
  std::shared_ptr<const platform::csr_public_key> csr_public;
  std::string csr_public_key_id;

  /// Answers every waiter of every flight with `err`.
  void fail_all(const caf::error& err);
  ~cert_issuer_state();
};

/// The behavior of the cert_issuer actor.
cert_issuer::behavior_type cert_issuer_impl(cert_issuer::stateful_pointer<cert_issuer_state> self,
                                            deps_ptr deps);

/// The cache key (and renewal artifact id) of an identity's certificate.
std::string certificate_cache_key(const managed_identity& id, bool attested);

} // namespace msiv2
