#include "actors/token_exchanger.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <iterator>
#include <string_view>

#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include "io/json.hpp"
#include "messages/errors.hpp"
#include "platform/binding.hpp"
#include "platform/encoding.hpp"
#include "platform/jwt.hpp"
#include "platform/lifecycle.hpp"

namespace msiv2 {

namespace {

using self_ptr = token_exchanger::stateful_pointer<token_exchanger_state>;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

constexpr const char* component = "token_exchanger";

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string upstream_of(const exchange_job& job) {
  return job.cred ? "token_endpoint" : "imds_token";
}

/// The job's upstream as the retry governor's circuits know it (leg and base URL).
std::string circuit_of(const deps_ptr& deps, const exchange_job& job) {
  return job.cred ? "token_endpoint " + job.cred->mtls_endpoint
                  : "imds " + deps->config.imds_base_url;
}

/// The status label of an upstream answer: the HTTP status, or the transport failure.
std::string status_label(const io::http_response& r) {
  return r.ok() ? std::to_string(r.status) : std::string(io::to_string(r.error));
}

nanoseconds left(self_ptr self, const exchange_job& job) {
  return job.req.due.left(self->clock().now());
}

void count(const deps_ptr& deps, const std::string& key) {
  deps->stats->add(key);
}

/// Answers the job (success or error) and forgets it.
void finish(self_ptr self, std::uint64_t job_id, caf::expected<token_result> outcome) {
  auto i = self->state.jobs.find(job_id);
  if (i == self->state.jobs.end())
    return;
  auto rp = i->second.rp;
  self->state.jobs.erase(i);
  if (outcome)
    rp.deliver(std::move(*outcome));
  else
    rp.deliver(std::move(outcome.error()));
}

void fail_job(self_ptr self, std::uint64_t job_id, caf::error err) {
  finish(self, job_id, caf::expected<token_result>{std::move(err)});
}

/// The TLS client identity of `cred`, built once per certificate; a new certificate of the
/// same (identity, attested?) replaces the old one, whose connections then go unused.
result<std::shared_ptr<const io::client_identity>> client_identity_for(self_ptr self,
                                                                       const credential& cred) {
  auto key = std::make_pair(cred.identity, cred.attested);
  auto& cache = self->state.client_identities;
  if (auto i = cache.find(key); i != cache.end() && i->second.x5t_s256 == cred.x5t_s256)
    return i->second.identity;
  if (!cred.key.key)
    return fail("the credential carries no binding key");
  auto made = io::client_identity::create({cred.certificate_der},
                                          platform::share_key(cred.key.key->get()));
  if (!made)
    return fail(made.error());
  cache[key] = cached_client_identity{cred.x5t_s256, *made};
  return *made;
}

/// Sends the current attempt of a job; the completion comes back as (http_atom, id, response).
void send_attempt(self_ptr self, const deps_ptr& deps, std::uint64_t job_id);

/// Arms a retry of `job_id` after `delay`.
void retry_after_delay(self_ptr self, const deps_ptr& deps, std::uint64_t job_id,
                       milliseconds delay) {
  auto& job = self->state.jobs.at(job_id);
  count(deps, "msiv2_retries_total{upstream=\"" + upstream_of(job) + "\"}");
  if (delay.count() <= 0) {
    send_attempt(self, deps, job_id);
    return;
  }
  self->delayed_send(self, delay, caf::tick_atom::value, job_id);
}

// -- requests ----------------------------------------------------------------------------------

io::http_request mtls_request(const deps_ptr& deps, const exchange_job& job,
                              const std::string& claims) {
  const auto& cred = *job.cred;
  std::string endpoint = cred.mtls_endpoint;
  while (!endpoint.empty() && endpoint.back() == '/')
    endpoint.pop_back();
  io::http_request r;
  r.method = "POST";
  r.url = endpoint + "/" + cred.tenant_id + "/oauth2/v2.0/token";
  r.body = "grant_type=client_credentials&client_id=" + platform::url_encode(cred.client_id) +
           "&scope=" + platform::url_encode(job.scope) +
           "&token_type=" + to_string(job.req.request.type);
  if (!claims.empty())
    r.body += "&claims=" + platform::url_encode(claims);
  r.headers.add("Content-Type", "application/x-www-form-urlencoded");
  r.headers.add("Accept", "application/json");
  r.headers.add("client-request-id", job.correlation_id);
  r.headers.add("return-client-request-id", "true");
  r.headers.add("x-ms-lib-capability", "retry-after, h429");
  add_client_telemetry(r.headers);
  r.ca_file = deps->config.ca_file;
  return r;
}

io::http_request v1_request(const deps_ptr& deps, const exchange_job& job) {
  std::string resource = job.req.request.resource;
  if (ends_with(resource, "/.default"))
    resource.resize(resource.size() - std::string_view("/.default").size());
  io::http_request r;
  r.method = "GET";
  r.url = deps->config.imds_base_url +
          "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" +
          platform::url_encode(resource);
  const auto& id = job.req.request.identity;
  switch (id.kind) {
    case identity_kind::system_assigned:
      break;
    case identity_kind::client_id:
      r.url += "&client_id=" + platform::url_encode(id.id);
      break;
    case identity_kind::object_id:
      r.url += "&object_id=" + platform::url_encode(id.id);
      break;
    case identity_kind::resource_id:
      r.url += "&msi_res_id=" + platform::url_encode(id.id);
      break;
  }
  r.headers.add("Metadata", "true");
  r.headers.add("x-ms-client-request-id", job.correlation_id);
  add_client_telemetry(r.headers);
  return r;
}

void send_attempt(self_ptr self, const deps_ptr& deps, std::uint64_t job_id) {
  auto ji = self->state.jobs.find(job_id);
  if (ji == self->state.jobs.end())
    return;
  auto& job = ji->second;
  auto remaining = std::chrono::duration_cast<milliseconds>(left(self, job));
  if (remaining.count() <= 0) {
    fail_job(self, job_id,
             make_msiv2_error(error_code::deadline_exceeded,
                              "the request's deadline passed before the " + upstream_of(job) +
                                " answered; allow a longer timeout",
                              0, job.correlation_id));
    return;
  }
  if (auto& gov = deps->retries; gov && !gov->admit(circuit_of(deps, job), self->clock().now())) {
    // The upstream failed circuit_failures times in a row: no call until its circuit lets a
    // probe through. Cached tokens are still served meanwhile.
    count(deps, "msiv2_circuit_refusals_total{upstream=\"" + upstream_of(job) + "\"}");
    auto until = gov->open_until(circuit_of(deps, job), self->clock().now());
    auto wait_s = until ? std::chrono::duration_cast<std::chrono::seconds>(
                            *until - self->clock().now()).count() + 1
                        : 1;
    fail_job(self, job_id,
             make_msiv2_error(error_code::transport_failed,
                              "the " + upstream_of(job) + " failed " +
                                std::to_string(gov->settings().circuit_failures) +
                                " times in a row; calls to it are paused (circuit open) for "
                                "about " + std::to_string(wait_s) +
                                " s more; retry later (cached tokens are still served)",
                              0, job.correlation_id));
    return;
  }
  io::http_request r;
  if (job.cred) {
    auto claims = merge_claims(job.req.request.claims, [&] {
      auto caps = deps->config.client_capabilities;
      for (auto& c : job.req.request.client_capabilities)
        if (std::find(caps.begin(), caps.end(), c) == caps.end())
          caps.push_back(c);
      return caps;
    }());
    if (!claims) {
      fail_job(self, job_id,
               make_msiv2_error(error_code::invalid_request,
                                "the claims of the token request are not usable: " +
                                  claims.error()));
      return;
    }
    auto identity = client_identity_for(self, *job.cred);
    if (!identity) {
      fail_job(self, job_id,
               make_msiv2_error(error_code::internal_failure,
                                "cannot use the binding certificate as a TLS client identity: " +
                                  identity.error()));
      return;
    }
    r = mtls_request(deps, job, *claims);
    r.identity = *identity;
    r.timeout = std::min(deps->config.upstream_timeout, remaining);
  } else {
    r = v1_request(deps, job);
    r.timeout = std::min(deps->config.imds_timeout, remaining);
  }
  r.connect_timeout = std::min(r.connect_timeout, r.timeout);
  auto http_id = ++self->state.last_id;
  self->state.in_flight.emplace(http_id, job_id);
  auto me = caf::actor_cast<token_exchanger>(self);
  deps->transport->send(std::move(r), [me, http_id](io::http_response resp) {
    caf::anon_send(me, http_atom::value, http_id, std::move(resp));
  });
}

// -- answers -----------------------------------------------------------------------------------

/// The OAuth error members of an error body (any of them may be empty).
struct oauth_error_body {
  std::string error;
  std::string description;
  std::string correlation_id;
  std::vector<std::int64_t> codes;
};

oauth_error_body read_oauth_error(const io::http_response& r) {
  oauth_error_body out;
  auto doc = io::json_object::parse(r.body, "token endpoint error");
  if (!doc)
    return out;
  auto str = [&](std::string_view name) {
    auto v = doc->optional_string(name);
    return v && *v ? **v : std::string();
  };
  out.error = str("error");
  out.description = str("error_description");
  if (out.description.empty())
    out.description = str("message");
  out.correlation_id = str("correlation_id");
  if (out.correlation_id.empty())
    out.correlation_id = str("correlationId");
  if (auto codes = doc->find("error_codes"); codes && codes->type == io::json_type::array) {
    std::string digits;
    for (char c : codes->text + ",") {
      if (std::isdigit(static_cast<unsigned char>(c)) != 0) {
        digits += c;
      } else if (!digits.empty()) {
        if (auto n = io::parse_decimal_int64(digits))
          out.codes.push_back(*n);
        digits.clear();
      }
    }
  }
  return out;
}

bool has_code(const oauth_error_body& e, std::int64_t code) {
  return std::find(e.codes.begin(), e.codes.end(), code) != e.codes.end();
}

/// AADSTS500181: the presented certificate is not the one the token is bound to.
constexpr std::int64_t not_bound_code = 500181;
/// AADSTS1000901: the certificate is past its token_not_after.
constexpr std::int64_t token_not_after_code = 1000901;

/// invalid_client, or an AADSTS code saying the client certificate is bad (1000610-1000614:
/// time range, issuer, claim value, jku header, signature) or past its token_not_after
/// (1000901): evict it and re-mint once.
bool certificate_refused(const oauth_error_body& e) {
  if (e.error == "invalid_client" || has_code(e, token_not_after_code))
    return true;
  return std::any_of(e.codes.begin(), e.codes.end(),
                     [](std::int64_t c) { return c >= 1000610 && c <= 1000614; });
}

/// The connection was reset while the TLS handshake that presented our certificate ran (as
/// MSAL .NET, a reason to re-mint): curl reports it as a TLS failure naming the reset.
bool handshake_reset(const io::http_response& r) {
  return r.error == io::transport_error::tls_failed &&
         (r.error_message.find("reset by peer") != std::string::npos ||
          r.error_message.find("Connection reset") != std::string::npos);
}

std::string with_upstream(const std::string& what, const oauth_error_body& e) {
  std::string out = what;
  if (!e.error.empty())
    out += ": " + e.error;
  if (!e.description.empty())
    out += " (" + e.description + ")";
  return out;
}

/// What the token response of a job is called in messages.
std::string response_name(const exchange_job& job) {
  return job.cred ? "token endpoint response" : "IMDS v1 token response";
}

/// invalid_response: "malformed <leg> response: <why>" (json_object's errors carry that prefix
/// already), with the status and our correlation id.
caf::error invalid_response(const exchange_job& job, const std::string& why, int status) {
  const std::string prefix = "malformed " + response_name(job) + ": ";
  return make_msiv2_error(error_code::invalid_response,
                          why.rfind("malformed ", 0) == 0 ? why : prefix + why, status,
                          job.correlation_id);
}

/// Parses a 200 answer: of the mTLS token endpoint (§7: expires_in relative, number or
/// numeric string; optional ext_expires_in and refresh_in; an mtls_pop token bound to our
/// certificate) or of IMDS v1 (§8: every value a string; expires_on in Unix seconds).
caf::expected<token_result> read_answer(const deps_ptr& deps, const exchange_job& job,
                                        const io::http_response& r) {
  const bool mtls = job.cred != nullptr;
  auto doc = io::json_object::parse(r.body, response_name(job));
  if (!doc)
    return invalid_response(job, doc.error(), r.status);
  auto type = doc->required_string("token_type");
  auto token = doc->required_string("access_token");
  const char* expiry_name = mtls ? "expires_in" : "expires_on";
  auto expiry = doc->required_integer_or_numeric_string(expiry_name);
  result<std::optional<std::int64_t>> none = std::optional<std::int64_t>{};
  auto ext = mtls ? doc->optional_integer_or_numeric_string("ext_expires_in") : none;
  auto refresh_in = mtls ? doc->optional_integer_or_numeric_string("refresh_in") : none;
  for (const std::string* e : {type ? nullptr : &type.error(), token ? nullptr : &token.error(),
                               expiry ? nullptr : &expiry.error(), ext ? nullptr : &ext.error(),
                               refresh_in ? nullptr : &refresh_in.error()})
    if (e != nullptr)
      return invalid_response(job, *e, r.status);
  // A v1 job is always a bearer request (mtls_pop is never downgraded).
  const auto want = job.req.request.type;
  if (!iequals(*type, to_string(want)))
    return invalid_response(job,
                            "member \"token_type\" is \"" + *type + "\" but \"" +
                              to_string(want) + "\" was requested",
                            r.status);
  const auto now_ms = deps->wall->now_ms();
  // M1: every lifetime from the answer is clamped to max_token_lifetime, without overflow.
  const auto max_life_ms = deps->config.max_token_lifetime.count();
  const auto absolute_ms = mtls ? std::optional<std::int64_t>(0) : platform::unix_seconds_to_ms(*expiry);
  if (!absolute_ms)
    return invalid_response(job, "member \"expires_on\" is not a plausible Unix time", r.status);
  const std::int64_t expires_at_ms =
    mtls ? platform::saturating_add(now_ms, platform::clamp_seconds_to_ms(*expiry, max_life_ms))
         : std::min(*absolute_ms, platform::saturating_add(now_ms, max_life_ms));
  if (mtls && *expiry <= 0)
    return invalid_response(job, "member \"expires_in\" is not positive", r.status);
  if (!mtls && expires_at_ms <= now_ms)
    return invalid_response(job, "member \"expires_on\" is not in the future", r.status);
  if (*refresh_in && **refresh_in <= 0)
    return invalid_response(job, "member \"refresh_in\" is not positive", r.status);
  token_result out;
  if (want == token_type::mtls_pop) {
    auto claims = platform::read_jwt_claims(*token);
    if (!claims)
      return invalid_response(job,
                              "member \"access_token\" is not a readable JWT: " + claims.error(),
                              r.status);
    if (claims->cnf_x5t_s256 != job.cred->x5t_s256)
      return invalid_response(job,
                              claims->cnf_x5t_s256.empty()
                                ? "member \"access_token\" has no cnf x5t#S256 claim"
                                : "member \"access_token\" is bound to another certificate "
                                  "(cnf x5t#S256 " + claims->cnf_x5t_s256 + ", ours " +
                                    job.cred->x5t_s256 + ")",
                              r.status);
    auto binding = std::make_shared<token_binding>();
    binding->certificate_chain = {job.cred->certificate_der};
    binding->x5t_s256 = job.cred->x5t_s256;
    binding->key = job.cred->key.key;
    out.binding = std::move(binding);
  }
  // The nominal refresh point, without jitter: token_service plans the renewal from it and
  // draws the jitter once. Drawing here as well spread renewals over twice the rule's window
  // (+-10 min instead of +-5 for a 24 h token; found by msiv2-fleet --check).
  auto plan = platform::plan_lifecycle(
    now_ms, expires_at_ms,
    *refresh_in ? std::optional<std::int64_t>(platform::clamp_seconds_to_ms(**refresh_in, max_life_ms))
                : std::nullopt,
    [](std::int64_t, std::int64_t) { return std::int64_t{0}; });
  out.access_token = std::move(*token);
  out.type = want;
  out.expires_on = expires_at_ms / 1000;
  out.refresh_on = plan.renew_at_ms / 1000;
  out.source = token_source::network;
  out.correlation_id = job.correlation_id;
  return out;
}

/// The token endpoint refused the certificate: evict it and re-mint through cert_issuer,
/// then retry once; bounded per identity.
void remediate(self_ptr self, const deps_ptr& deps, std::uint64_t job_id, int status,
               const std::string& why, const std::string& correlation) {
  auto& job = self->state.jobs.at(job_id);
  const auto& identity = job.req.request.identity;
  if (job.remediated) {
    fail_job(self, job_id,
             make_msiv2_error(error_code::token_refused,
                              "the token endpoint refused a freshly minted binding certificate "
                              "too (" + why + "); check the identity's assignment and the "
                              "token endpoint's trust in the IMDS issuer",
                              status, correlation));
    return;
  }
  const auto now_ms = deps->wall->now_ms();
  const auto window_ms =
    std::chrono::duration_cast<milliseconds>(deps->config.remediation_window).count();
  auto& recent = self->state.remediations[identity];
  while (!recent.empty() && recent.front() <= now_ms - window_ms)
    recent.pop_front();
  if (static_cast<int>(recent.size()) >= deps->config.max_remediations) {
    fail_job(self, job_id,
             make_msiv2_error(error_code::token_refused,
                              "the token endpoint refused the binding certificate (" + why +
                                ") and " + std::to_string(recent.size()) +
                                " certificate re-mints within " +
                                std::to_string(deps->config.remediation_window.count()) +
                                " s did not help; not re-minting again until the window passes",
                              status, correlation));
    return;
  }
  if (!self->state.peers || !self->state.peers->certs) {
    fail_job(self, job_id,
             make_msiv2_error(error_code::internal_failure,
                              "the token endpoint refused the binding certificate (" + why +
                                ") and no cert_issuer is wired to mint a new one",
                              status, correlation));
    return;
  }
  recent.push_back(now_ms);
  count(deps, "msiv2_remediations_total");
  deps->log->write(platform::log_level::warning, component,
                   "token endpoint refused the binding certificate of " + to_string(identity) +
                     " (" + why + "), correlation id " + correlation +
                     ": evicting it and minting a new one");
  job.remediated = true;
  credential_request cr;
  cr.identity = identity;
  cr.due = job.req.due;
  cr.refused_x5t = job.cred->x5t_s256;
  cr.correlation_id = job.correlation_id;
  auto timeout = std::min<nanoseconds>(left(self, job), deps->config.actor_request_timeout);
  if (timeout.count() <= 0) {
    fail_job(self, job_id,
             make_msiv2_error(error_code::deadline_exceeded,
                              "the request's deadline passed before a new binding certificate "
                              "could be minted",
                              status, correlation));
    return;
  }
  self->request(self->state.peers->certs, timeout, caf::get_atom::value, std::move(cr))
    .then(
      [=](credential_ptr fresh) {
        auto i = self->state.jobs.find(job_id);
        if (i == self->state.jobs.end())
          return;
        if (!fresh) {
          fail_job(self, job_id,
                   make_msiv2_error(error_code::internal_failure,
                                    "cert_issuer answered an empty credential"));
          return;
        }
        i->second.cred = std::move(fresh);
        i->second.retry = io::retry_state{};
        send_attempt(self, deps, job_id);
      },
      [=](caf::error& err) { fail_job(self, job_id, std::move(err)); });
}

/// AADSTS500181 (the presented certificate is not the one the token is bound to): the tokens
/// cached for this certificate are suspect. token_service drops them; the request is asked
/// once more with the same certificate.
void on_not_bound(self_ptr self, const deps_ptr& deps, std::uint64_t job_id,
                  const io::http_response& r, const oauth_error_body& upstream_error,
                  const std::string& correlation) {
  auto& job = self->state.jobs.at(job_id);
  const auto why = with_upstream("HTTP " + std::to_string(r.status), upstream_error);
  if (job.rebound) {
    fail_job(self, job_id,
             make_msiv2_error(error_code::token_refused,
                              "the token endpoint said twice that the certificate is not the one "
                              "the token is bound to (" + why + ")",
                              r.status, correlation));
    return;
  }
  job.rebound = true;
  count(deps, "msiv2_rebinds_total");
  deps->log->write(platform::log_level::warning, component,
                   "token endpoint said the certificate " + job.cred->x5t_s256 + " of " +
                     to_string(job.req.request.identity) +
                     " is not the one the token is bound to (" + why + "), correlation id " +
                     correlation + ": dropping the tokens bound to it and asking once more");
  if (self->state.peers && self->state.peers->service)
    self->send(self->state.peers->service, evict_atom::value, job.cred->x5t_s256);
  job.retry = io::retry_state{};
  send_attempt(self, deps, job_id);
}

/// The token endpoint asked to back off (429 or Retry-After): identical requests wait or fail
/// until then; one wait that fits the deadline. True when handled.
bool on_throttle(self_ptr self, const deps_ptr& deps, std::uint64_t job_id,
                 const io::http_response& r, const oauth_error_body& upstream_error,
                 const std::string& correlation) {
  auto& job = self->state.jobs.at(job_id);
  auto after = io::retry_after(r, deps->wall->now_s());
  if (r.status != 429 && !after)
    return false;
  if (after && *after > deps->config.max_retry_after) {
    // M4: one hostile or buggy answer must not disable a scope for years.
    count(deps, "msiv2_retry_after_capped_total{upstream=\"token_endpoint\"}");
    after = deps->config.max_retry_after;
  }
  const auto now = self->clock().now();
  if (after) {
    auto until = deadline::at(now + *after).ns;
    // Forget throttles that have passed, so the map stays as small as the live ones.
    auto& refusals = self->state.refuse_until_ns;
    for (auto i = refusals.begin(); i != refusals.end();)
      i = i->second <= deadline::at(now).ns ? refusals.erase(i) : std::next(i);
    auto& slot = refusals[job.throttle_key];
    slot = std::max(slot, until);
  }
  auto delay = io::next_retry_delay(io::retry_leg::token_endpoint, job.retry, r, deps->draw,
                                    deps->wall->now_s());
  if (delay && nanoseconds(*delay) < left(self, job)) {
    retry_after_delay(self, deps, job_id, *delay);
    return true;
  }
  count(deps, "msiv2_throttled_total{upstream=\"token_endpoint\"}");
  fail_job(self, job_id,
           make_msiv2_error(error_code::throttled,
                            with_upstream("the token endpoint asked to back off (HTTP " +
                                            std::to_string(r.status) + ")",
                                          upstream_error) +
                              (after ? " for " + std::to_string(after->count() / 1000) +
                                         " s, longer than the request's deadline allows"
                                     : std::string()) +
                              "; try again later",
                            r.status, correlation));
  return true;
}

/// Handles an answer (or transport failure) of the job's upstream: the mTLS token endpoint
/// (remediation of a refused certificate, throttling, §9 retries) or IMDS v1 (unknown
/// identity, the IMDS retry schedule).
void on_answer(self_ptr self, const deps_ptr& deps, std::uint64_t job_id,
               const io::http_response& r) {
  auto& job = self->state.jobs.at(job_id);
  if (r.ok() && r.status == 200) {
    finish(self, job_id, read_answer(deps, job, r));
    return;
  }
  const bool mtls = job.cred != nullptr;
  auto upstream_error = r.ok() ? read_oauth_error(r) : oauth_error_body{};
  const auto correlation =
    upstream_error.correlation_id.empty() ? job.correlation_id : upstream_error.correlation_id;
  if (mtls && !r.ok() && r.error == io::transport_error::tls_client_cert_rejected) {
    remediate(self, deps, job_id, 0, "TLS handshake refused the client certificate",
              correlation);
    return;
  }
  if (mtls && !r.ok() && handshake_reset(r)) {
    remediate(self, deps, job_id, 0,
              "the connection was reset during the TLS handshake that presented the client "
              "certificate",
              correlation);
    return;
  }
  if (mtls && r.ok() && has_code(upstream_error, not_bound_code)) {
    on_not_bound(self, deps, job_id, r, upstream_error, correlation);
    return;
  }
  if (mtls && r.ok() && certificate_refused(upstream_error)) {
    remediate(self, deps, job_id, r.status,
              with_upstream("HTTP " + std::to_string(r.status), upstream_error), correlation);
    return;
  }
  if (mtls && r.ok() && on_throttle(self, deps, job_id, r, upstream_error, correlation))
    return;
  if (!mtls && r.ok() && r.status == 400) {
    bool not_found = upstream_error.description.find("Identity not found") != std::string::npos;
    fail_job(self, job_id,
             make_msiv2_error(not_found ? error_code::identity_not_found
                                        : error_code::invalid_request,
                              with_upstream(not_found
                                              ? "IMDS does not know the identity " +
                                                  to_string(job.req.request.identity) +
                                                  "; check that it is assigned to this VM"
                                              : "IMDS refused the v1 token request",
                                            upstream_error),
                              r.status, correlation));
    return;
  }
  auto delay = io::next_retry_delay(mtls ? io::retry_leg::token_endpoint : io::retry_leg::imds,
                                    job.retry, r, deps->draw, deps->wall->now_s());
  if (delay && nanoseconds(*delay) < left(self, job)
      && (!deps->retries || deps->retries->take_retry(self->clock().now()))) {
    retry_after_delay(self, deps, job_id, *delay);
    return;
  }
  if (!r.ok()) {
    auto code = r.timed_out() && left(self, job).count() <= 0 ? error_code::deadline_exceeded
                                                              : error_code::transport_failed;
    const std::string why = std::string(io::to_string(r.error)) + ": " + r.error_message;
    fail_job(self, job_id,
             make_msiv2_error(code,
                              mtls ? "the token endpoint could not be reached (" + why +
                                       "); check network access to " + job.cred->mtls_endpoint
                                   : "IMDS could not be reached for a v1 token (" + why + ")",
                              0, correlation));
    return;
  }
  const auto code =
    !mtls && r.status == 429 ? error_code::throttled : error_code::token_refused;
  fail_job(self, job_id,
           make_msiv2_error(code,
                            with_upstream(std::string(mtls ? "the token endpoint refused the "
                                                             "token request (HTTP "
                                                           : "IMDS refused the v1 token "
                                                             "request (HTTP ") +
                                            std::to_string(r.status) + ")",
                                          upstream_error),
                            r.status, correlation));
}

} // namespace

std::string token_scope(const std::string& resource) {
  std::string scope = resource;
  while (!scope.empty() && scope.back() == '/')
    scope.pop_back();
  if (!ends_with(scope, "/.default"))
    scope += "/.default";
  return scope;
}

result<std::string> merge_claims(const std::string& claims,
                                 const std::vector<std::string>& capabilities) {
  std::string cc;
  if (!capabilities.empty()) {
    cc = "{\"values\":[";
    for (std::size_t i = 0; i < capabilities.size(); ++i)
      cc += (i > 0 ? "," : "") + platform::json_quote(capabilities[i]);
    cc += "]}";
  }
  if (claims.empty())
    return cc.empty() ? std::string() : "{\"access_token\":{\"xms_cc\":" + cc + "}}";
  auto doc = io::json_object::parse(claims, "claims");
  if (!doc)
    return fail(doc.error());
  if (cc.empty())
    return claims;
  std::string out = "{";
  bool merged = false;
  for (const auto& [name, value] : doc->members()) {
    if (out.size() > 1)
      out += ",";
    out += platform::json_quote(name) + ":";
    if (name == "access_token" && value.type == io::json_type::object) {
      auto inner = doc->required_object(name);
      if (!inner)
        return fail(inner.error());
      std::string obj = "{";
      for (const auto& [n, v] : inner->members())
        if (n != "xms_cc")
          obj += (obj.size() > 1 ? "," : "") + platform::json_quote(n) + ":" + v.raw;
      obj += std::string(obj.size() > 1 ? "," : "") + "\"xms_cc\":" + cc + "}";
      out += obj;
      merged = true;
    } else {
      out += value.raw;
    }
  }
  if (!merged)
    out += std::string(out.size() > 1 ? "," : "") + "\"access_token\":{\"xms_cc\":" + cc + "}";
  return out + "}";
}

token_exchanger::behavior_type
token_exchanger_impl(token_exchanger::stateful_pointer<token_exchanger_state> self, deps_ptr deps) {
  // Every caller gets an answer, also when the supervisor stops this actor.
  self->set_exit_handler([=](caf::exit_msg& msg) {
    for (auto& [id, job] : self->state.jobs)
      job.rp.deliver(make_msiv2_error(error_code::shutting_down,
                                      "the token exchanger stopped before the token arrived", 0,
                                      job.correlation_id));
    self->state.jobs.clear();
    self->quit(msg.reason);
  });
  return {
    [=](exchange_atom, exchange_request& req) -> caf::result<token_result> {
      const auto& tr = req.request;
      if (req.due.left(self->clock().now()).count() <= 0)
        return make_msiv2_error(error_code::deadline_exceeded,
                                "the request's deadline passed before the token exchange began");
      if (!req.cred && tr.type == token_type::mtls_pop)
        return make_msiv2_error(error_code::invalid_request,
                                "an mtls_pop token needs a binding credential (it is never "
                                "downgraded to IMDS v1)");
      if (tr.resource.empty())
        return make_msiv2_error(error_code::invalid_request, "the resource is empty");
      auto job_id = ++self->state.last_id;
      exchange_job job;
      job.rp = self->make_response_promise<token_result>();
      job.cred = req.cred;
      // The request's correlation id (token_service gives every flight one).
      job.correlation_id =
        tr.correlation_id.empty() ? platform::uuid_v4() : tr.correlation_id;
      job.retry.max_retry_after = deps->config.max_retry_after;
      if (job.cred) {
        job.scope = token_scope(tr.resource);
        job.throttle_key = job.cred->client_id + '\n' + job.scope + '\n' + to_string(tr.type);
      }
      job.req = std::move(req);
      auto rp = job.rp;
      auto& stored = self->state.jobs.emplace(job_id, std::move(job)).first->second;
      if (stored.cred) {
        // Throttled a moment ago: wait until then when the deadline allows, else fail fast
        // rather than ask again.
        auto ti = self->state.refuse_until_ns.find(stored.throttle_key);
        if (ti != self->state.refuse_until_ns.end()) {
          auto wait = deadline{ti->second}.left(self->clock().now());
          if (wait.count() <= 0) {
            self->state.refuse_until_ns.erase(ti);
          } else if (wait < left(self, stored)) {
            self->delayed_send(self, wait, caf::tick_atom::value, job_id);
            return rp;
          } else {
            count(deps, "msiv2_throttled_total{upstream=\"token_endpoint\"}");
            fail_job(self, job_id,
                     make_msiv2_error(error_code::throttled,
                                      "the token endpoint asked to back off for another " +
                                        std::to_string(
                                          std::chrono::duration_cast<std::chrono::seconds>(wait)
                                            .count() + 1) +
                                        " s, longer than the request's deadline allows; try "
                                        "again later"));
            return rp;
          }
        }
      }
      send_attempt(self, deps, job_id);
      return rp;
    },
    [=](http_atom, std::uint64_t http_id, io::http_response& r) {
      auto i = self->state.in_flight.find(http_id);
      if (i == self->state.in_flight.end())
        return;
      auto job_id = i->second;
      self->state.in_flight.erase(i);
      auto ji = self->state.jobs.find(job_id);
      if (ji == self->state.jobs.end())
        return;
      count(deps, "msiv2_upstream_requests_total{upstream=\"" + upstream_of(ji->second) +
                    "\",status=\"" + status_label(r) + "\"}");
      if (deps->retries)
        deps->retries->record(circuit_of(deps, ji->second), io::upstream_failed(r),
                              self->clock().now());
      on_answer(self, deps, job_id, r);
    },
    [=](caf::tick_atom, std::uint64_t job_id) { send_attempt(self, deps, job_id); },
    [=](wire_atom, wiring_ptr peers) { self->state.peers = std::move(peers); },
  };
}

} // namespace msiv2
