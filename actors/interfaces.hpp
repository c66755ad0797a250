#pragma once

// The typed interfaces of every actor of the module, in one place, and the wiring that
// connects them. Each actor's state and behavior live in actors/<name>.{hpp,cpp}.
//
// Conventions:
// - Transport completions come back as (http_atom, request id, http_response), sent by the
//   completion callback with caf::anon_send.
// - Every owner of a renewable artifact accepts (renew_atom, artifact id) from renewal_timer.
// - Every actor accepts (wire_atom, wiring) from the supervisor: the current handles of its
//   peers (sent again after a peer restarts).
// - Errors are caf::error values made by make_msiv2_error (messages/errors.hpp).

#include <cstdint>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "msiv2/actors/runtime.hpp"
#include "msiv2/messages/protocol.hpp"
#include "msiv2/messages/token.hpp"

namespace msiv2 {

struct wiring;
using wiring_ptr = std::shared_ptr<const wiring>;

/// The IMDS source: probes once per process (v2 first, then v1), remembers definite answers
/// for the process lifetime and transient failures for module_config::transient_probe_ttl;
/// concurrent callers share one probe. Fails with imds_unavailable.
using probe = caf::typed_actor<
  caf::replies_to<probe_atom, deadline>::with<imds_source>,
  caf::reacts_to<http_atom, std::uint64_t, io::http_response>,
  caf::reacts_to<wire_atom, wiring_ptr>,
  caf::reacts_to<caf::tick_atom, std::uint64_t>,     ///< retry timer, attempt (internal)
  caf::reacts_to<caf::timeout_atom, std::uint64_t>>; ///< a caller's deadline (internal)

/// The binding key: creates or opens it through key_store (off the actor threads), hands out
/// key_ref, rotates a key proven bad. Fails with key_failed.
using key_manager = caf::typed_actor<
  caf::replies_to<caf::get_atom>::with<key_ref>,
  caf::replies_to<rotate_atom, std::string>::with<key_ref>, ///< key id that failed
  caf::reacts_to<caf::put_atom, std::uint64_t, key_ref>,    ///< key_store completion
  caf::reacts_to<caf::put_atom, std::uint64_t, caf::error>, ///< key_store failure
  caf::reacts_to<wire_atom, wiring_ptr>>;

/// Attestation JWTs per (endpoint, key id), renewed by the lifecycle rule. Fails with
/// attestation_failed.
using attestation_cache = caf::typed_actor<
  caf::replies_to<attest_atom, attestation_request>::with<attestation_token>,
  caf::reacts_to<evict_atom, std::string, std::string>, ///< endpoint, key id
  caf::reacts_to<renew_atom, std::string>,
  caf::reacts_to<caf::put_atom, std::uint64_t, attestation_token>, ///< provider completion
  caf::reacts_to<caf::put_atom, std::uint64_t, caf::error, std::int32_t>, ///< failure, status
  caf::reacts_to<disk_atom, std::uint64_t, platform::file_read>, ///< attempt id (internal)
  caf::reacts_to<lock_atom, std::uint64_t, artifact_lock_ptr, platform::file_read>, ///< attempt id
  caf::reacts_to<wire_atom, wiring_ptr>,
  caf::reacts_to<caf::tick_atom, std::uint64_t>,     ///< retry after a failed attempt (internal)
  caf::reacts_to<caf::timeout_atom, std::uint64_t>>; ///< a caller's deadline (internal)

/// Binding certificates per (identity, attested?): one getplatformmetadata call per request,
/// then the cached certificate or a new one (key + attestation + CSR + issuecredential).
/// With runtime_deps::files, certificates are shared with this user's other processes: read
/// from the cache directory on a miss, minted under the artifact's writer lock after a re-read.
/// Fails with metadata_failed, identity_not_found, v1_only_host, issuance_refused, ...
using cert_issuer = caf::typed_actor<
  caf::replies_to<caf::get_atom, credential_request>::with<credential_ptr>,
  caf::reacts_to<evict_atom, managed_identity>,
  caf::reacts_to<renew_atom, std::string>,
  caf::reacts_to<http_atom, std::uint64_t, io::http_response>,
  caf::reacts_to<disk_atom, std::uint64_t, platform::file_read>, ///< flight id (internal)
  caf::reacts_to<lock_atom, std::uint64_t, artifact_lock_ptr, platform::file_read>, ///< flight id
  caf::reacts_to<wire_atom, wiring_ptr>,
  caf::reacts_to<caf::tick_atom, std::uint64_t>,     ///< retry an IMDS call (internal)
  caf::reacts_to<caf::timeout_atom, std::uint64_t>>; ///< a caller's deadline (internal)

/// Access tokens over mTLS (and bearer tokens over IMDS v1): one upstream call per
/// exchange_request, invalid_client -> one re-mint through cert_issuer and one retry,
/// Retry-After honoured. Fails with token_refused, throttled, transport_failed, ...
using token_exchanger = caf::typed_actor<
  caf::replies_to<exchange_atom, exchange_request>::with<token_result>,
  caf::reacts_to<http_atom, std::uint64_t, io::http_response>,
  caf::reacts_to<wire_atom, wiring_ptr>,
  caf::reacts_to<caf::tick_atom, std::uint64_t>>; ///< retry an exchange after a wait (internal)

/// Timers: at an artifact's renewal time (wall ms) sends (renew_atom, artifact id) to its
/// owner. Re-checks wall time when a timer fires (suspend, clock jumps).
using renewal_timer = caf::typed_actor<
  caf::reacts_to<schedule_atom, std::string, std::int64_t, caf::actor>, ///< id, at, owner
  caf::reacts_to<cancel_atom, std::string>,
  caf::reacts_to<caf::tick_atom, std::uint64_t>, ///< generation of the armed tick (internal)
  caf::reacts_to<wire_atom, wiring_ptr>>;

/// The facade: validates, serves the access-token cache (single-flight per key), routes
/// bearer/mtls_pop, renews tokens ahead of time, answers the capability query, and drops
/// the tokens bound to a certificate (x5t#S256) the token endpoint says they are not bound to.
using token_service = caf::typed_actor<
  caf::replies_to<token_request>::with<token_result>,
  caf::replies_to<stats_atom>::with<stats_snapshot>,
  caf::replies_to<capabilities_atom>::with<host_capabilities>,
  caf::reacts_to<evict_atom, std::string>,
  caf::reacts_to<renew_atom, std::string>,
  caf::reacts_to<wire_atom, wiring_ptr>,
  caf::reacts_to<caf::timeout_atom, std::string, std::uint64_t>>; ///< flight key, waiter (internal)

/// The current handles of every actor (the supervisor sends a new one after a restart).
struct wiring {
  probe probe_actor;
  key_manager keys;
  attestation_cache attestation;
  cert_issuer certs;
  token_exchanger exchanger;
  renewal_timer timer;
  token_service service;
};

} // namespace msiv2

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(msiv2::wiring_ptr)
