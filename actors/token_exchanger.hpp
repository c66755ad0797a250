#pragma once

// token_exchanger: access tokens from the mTLS token endpoint (protocol.md §7) with a binding
// credential, and bearer tokens from IMDS v1 (§8) when no credential is given. One upstream
// call per exchange_request (no caching here: token_service owns the token cache), with the
// remedies of architecture.md's failure table: invalid_client or a refused client
// certificate -> one re-mint through cert_issuer and one retry (bounded per identity);
// 5xx -> one retry after ~1 s; 429 / Retry-After -> wait when it fits the deadline, and
// refuse identical requests until then.

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <caf/typed_response_promise.hpp>

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/interfaces.hpp"
#include "io/http.hpp"
#include "io/retry.hpp"

namespace msiv2 {

/// One exchange in progress.
struct exchange_job {
  exchange_request req;
  caf::typed_response_promise<token_result> rp;
  credential_ptr cred;        ///< the credential in use (replaced after a re-mint)
  std::string correlation_id; ///< client-request-id sent upstream
  std::string scope;          ///< normalised scope (mTLS path)
  std::string throttle_key;   ///< (client_id, scope, token type) (mTLS path)
  io::retry_state retry;
  bool remediated = false; ///< a re-mint was already tried
  bool rebound = false;    ///< AADSTS500181: the tokens of the certificate were dropped once
};

/// A TLS client identity built from one binding credential, kept so that connections are
/// reused (the transport keys its connection pools by this object).
struct cached_client_identity {
  std::string x5t_s256;
  std::shared_ptr<const io::client_identity> identity;
};

/// State of token_exchanger.
struct token_exchanger_state {
  static inline const char* name = "msiv2.token_exchanger";
  /// Exchanges in progress by job id.
  std::map<std::uint64_t, exchange_job> jobs;
  /// In-flight HTTP request id -> job id.
  std::map<std::uint64_t, std::uint64_t> in_flight;
  /// Last id handed out (jobs and HTTP requests share the sequence).
  std::uint64_t last_id = 0;
  /// Client identities per (identity, attested?): the newest certificate only.
  std::map<std::pair<managed_identity, bool>, cached_client_identity> client_identities;
  /// Throttle key -> actor-clock time (ns since epoch) before which identical requests are
  /// refused or made to wait.
  std::map<std::string, std::int64_t> refuse_until_ns;
  /// Remediations (re-mints) per identity: wall times (Unix ms) within the window.
  std::map<managed_identity, std::deque<std::int64_t>> remediations;
  /// Current peers (cert_issuer for re-mints).
  wiring_ptr peers;
};

/// The scope of a token request: the resource without trailing '/', then "/.default" unless
/// it is already there (protocol.md §7).
std::string token_scope(const std::string& resource);

/// The claims parameter: `claims` (a JSON object, or empty) merged with client capabilities
/// as {"access_token":{"xms_cc":{"values":[...]}}}; empty when both are empty. Fails when
/// `claims` is not a JSON object.
result<std::string> merge_claims(const std::string& claims,
                                 const std::vector<std::string>& capabilities);

/// The behavior of token_exchanger.
token_exchanger::behavior_type
token_exchanger_impl(token_exchanger::stateful_pointer<token_exchanger_state> self, deps_ptr deps);

} // namespace msiv2
