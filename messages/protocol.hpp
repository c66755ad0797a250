#pragma once

// The messages the module's actors exchange among themselves (the public ones are in
// token.hpp). Each actor's typed interface lives in its own header under actors/; the types
// those interfaces carry live here, so that every actor can be written and tested alone.
//
// Secrets (JWTs, access tokens) and key handles travel only between local actors: their types
// have no inspect() and are marked unsafe, so CAF can never print or serialize them.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <caf/atom.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/timestamp.hpp>

#include "msiv2/messages/token.hpp"

namespace msiv2 {

// -- atoms (at most 10 characters: a CAF 0.17 limit) ------------------------------------------

using probe_atom = caf::atom_constant<caf::atom("probe")>;
using attest_atom = caf::atom_constant<caf::atom("attest")>;
using exchange_atom = caf::atom_constant<caf::atom("exchange")>;
using evict_atom = caf::atom_constant<caf::atom("evict")>;
using renew_atom = caf::atom_constant<caf::atom("renew")>;
using rotate_atom = caf::atom_constant<caf::atom("rotate")>;
using schedule_atom = caf::atom_constant<caf::atom("schedule")>;
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;
using stats_atom = caf::atom_constant<caf::atom("stats")>;
using wire_atom = caf::atom_constant<caf::atom("wire")>;
using http_atom = caf::atom_constant<caf::atom("http")>;
/// A cache file read came back (artifact_store::read).
using disk_atom = caf::atom_constant<caf::atom("disk")>;
/// A writer lock and the re-read came back (artifact_store::lock_and_read).
using lock_atom = caf::atom_constant<caf::atom("lock")>;
/// The capability query (host_capabilities).
using capabilities_atom = caf::atom_constant<caf::atom("caps")>;

// -- time --------------------------------------------------------------------------------------

/// An absolute point on the actor clock (monotonic; virtual under the test scheduler) by
/// which an answer is due. token_service turns a request's relative timeout into one on
/// receipt; everything downstream bounds its retries and waits by it.
struct deadline {
  /// Nanoseconds since the actor clock's epoch.
  std::int64_t ns = 0;

  /// From an actor clock time point.
  template <class TimePoint>
  static deadline at(TimePoint tp) {
    return {std::chrono::duration_cast<std::chrono::nanoseconds>(tp.time_since_epoch()).count()};
  }
  /// Time left before the deadline at `now` (negative when passed).
  template <class TimePoint>
  std::chrono::nanoseconds left(TimePoint now) const {
    return std::chrono::nanoseconds(ns) - std::chrono::duration_cast<std::chrono::nanoseconds>(
                                            now.time_since_epoch());
  }
  friend bool operator<(deadline a, deadline b) { return a.ns < b.ns; }
  friend bool operator==(deadline a, deadline b) { return a.ns == b.ns; }
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, deadline& x) {
  return f(caf::meta::type_name("deadline"), x.ns);
}

// -- probe -------------------------------------------------------------------------------------

/// What the local metadata service offers (protocol.md §1).
enum class imds_source : std::uint8_t {
  v2 = 0,      ///< IMDS v2 (and v1)
  v1_only = 1, ///< the v2 paths answer 404
};

// -- keys --------------------------------------------------------------------------------------

/// The binding key as the actors pass it around: the handle plus its public half.
struct key_ref {
  std::shared_ptr<const binding_key> key;
  std::string spki_der; ///< DER SubjectPublicKeyInfo
  std::string key_id;   ///< lower-hex SHA-256 of spki_der
};

// -- platform metadata -------------------------------------------------------------------------

/// getplatformmetadata's answer (protocol.md §2).
struct platform_metadata {
  std::string client_id;
  std::string tenant_id;
  std::string cuid_json; ///< compact JSON of cuId as it goes into the CSR
  std::string attestation_endpoint;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, platform_metadata& x) {
  return f(caf::meta::type_name("platform_metadata"), x.client_id, x.tenant_id, x.cuid_json,
           x.attestation_endpoint);
}

// -- attestation -------------------------------------------------------------------------------

/// Asks attestation_cache for a JWT attesting `key` at `endpoint`.
struct attestation_request {
  std::string endpoint;
  std::string client_id;
  key_ref key;
  deadline due;
  /// Refuse a cached JWT with this value (the issuer rejected it): fetch a new one.
  bool refuse_cached = false;
  /// The correlation id of the request this attestation serves (empty: make one).
  std::string correlation_id;
};

/// An attestation JWT and the times read from it (Unix milliseconds).
struct attestation_token {
  std::string jwt; ///< secret: never log it
  std::int64_t issued_at_ms = 0;
  std::int64_t expires_at_ms = 0;
};

// -- binding certificate -----------------------------------------------------------------------

/// A binding certificate with everything issuecredential said about it.
struct credential {
  managed_identity identity;
  platform_metadata metadata;
  std::string client_id;     ///< issuecredential's client_id
  std::string tenant_id;     ///< issuecredential's tenant_id
  std::string identity_type; ///< "SystemAssigned" / "UserAssigned"
  std::string mtls_endpoint; ///< https://..., no trailing '/'
  std::string certificate_der;
  std::string x5t_s256;
  std::int64_t not_before_ms = 0; ///< Unix milliseconds
  std::int64_t not_after_ms = 0;
  /// The certificate's token_not_after extension (Unix ms): the last moment the token
  /// endpoint accepts it, earlier than notAfter. 0: the certificate has none.
  std::int64_t token_not_after_ms = 0;
  bool attested = false;
  key_ref key;

  /// Until when the certificate can get tokens: the earlier of notAfter and token_not_after.
  std::int64_t usable_until_ms() const {
    return token_not_after_ms > 0 && token_not_after_ms < not_after_ms ? token_not_after_ms
                                                                       : not_after_ms;
  }
};

/// Shared, immutable: a credential is replaced, never changed.
using credential_ptr = std::shared_ptr<const credential>;

/// Asks cert_issuer for a usable credential of an identity. Always makes one
/// getplatformmetadata call (protocol.md §0: that is how reassignment is noticed), then serves
/// the cached certificate or mints one.
struct credential_request {
  managed_identity identity;
  deadline due;
  /// The token endpoint refused this certificate (x5t#S256): evict it and mint a new one with
  /// bypass_cache=true.
  std::string refused_x5t;
  /// x-ms-client-request-id of the metadata and issuecredential calls (empty: make one).
  std::string correlation_id;
};

// -- token exchange ----------------------------------------------------------------------------

/// Asks token_exchanger for an access token over mTLS with `cred` (or over IMDS v1 for a
/// bearer token when `cred` is null).
struct exchange_request {
  token_request request;
  credential_ptr cred;
  deadline due;
};

// -- renewal -----------------------------------------------------------------------------------

/// Which owner actor an artifact belongs to (renewal_timer sends `renew_atom, artifact_id`
/// back to it when due).
enum class artifact_kind : std::uint8_t { attestation = 0, certificate = 1, access_token = 2 };

// -- observability -----------------------------------------------------------------------------

/// A snapshot of the module's counters and gauges (names in Prometheus style, labels inline:
/// `msiv2_upstream_requests_total{upstream="imds_metadata",status="200"}`).
struct stats_snapshot {
  std::map<std::string, std::uint64_t> counters;
  std::map<std::string, double> gauges;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stats_snapshot& x) {
  return f(caf::meta::type_name("stats_snapshot"), x.counters, x.gauges);
}

/// `value` escaped for a Prometheus label value (backslash, double quote and newline), for
/// keys that carry anything but fixed text. Ids of artifacts go into labels hashed instead.
std::string prometheus_label_value(std::string_view value);

/// The snapshot in Prometheus text exposition format (with # TYPE lines). Control bytes in a
/// key become '?', so a series is always one line.
std::string to_prometheus(const stats_snapshot& s);

} // namespace msiv2

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(msiv2::key_ref)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(msiv2::attestation_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(msiv2::attestation_token)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(msiv2::credential_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(msiv2::credential_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(msiv2::exchange_request)
