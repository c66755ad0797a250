#include "actors/token_exchanger.hpp"

#include "actors/token_parse.hpp"

#include <algorithm>
#include <chrono>
#include <iterator>
#include <string_view>

#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include "io/json.hpp"
#include "messages/errors.hpp"
#include "platform/binding.hpp"
#include "platform/encoding.hpp"
#include "platform/lifecycle.hpp"

namespace msiv2 {

namespace {

using self_ptr = token_exchanger::stateful_pointer<token_exchanger_state>;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

constexpr const char* component = "token_exchanger";

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string upstream_of(const exchange_job& job) {
  return job.cred ? "token_endpoint" : "imds_token";
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

/// invalid_response: "malformed <leg> response: <why>" (json_object's errors carry that prefix
/// already), with the status and our correlation id.
caf::error invalid_response(const exchange_job& job, const std::string& why, int status) {
  const std::string prefix = std::string("malformed ") + token_response_name(job.cred != nullptr) + ": ";
  return make_msiv2_error(error_code::invalid_response,
                          why.rfind("malformed ", 0) == 0 ? why : prefix + why, status,
                          job.correlation_id);
}

/// A 200 answer of the job's upstream (read_token_answer), as the token_result handed out:
/// an mtls_pop token carries its binding, and the renewal time is planned with jitter.
caf::expected<token_result> read_answer(const deps_ptr& deps, const exchange_job& job,
                                        const io::http_response& r) {
  const bool mtls = job.cred != nullptr;
  // A v1 job is always a bearer request (mtls_pop is never downgraded).
  const auto want = job.req.request.type;
  token_answer_expectation expect{mtls, want, mtls ? job.cred->x5t_s256 : std::string()};
  const auto now_ms = deps->wall->now_ms();
  auto answer = read_token_answer(r.body, expect, now_ms);
  if (!answer)
    return invalid_response(job, answer.error(), r.status);
  token_result out;
  if (want == token_type::mtls_pop) {
    auto binding = std::make_shared<token_binding>();
    binding->certificate_chain = {job.cred->certificate_der};
    binding->x5t_s256 = job.cred->x5t_s256;
    binding->key = job.cred->key.key;
    binding->attested = job.cred->attested;
    out.binding = std::move(binding);
  }
  // The nominal refresh point, without jitter: token_service plans the renewal from it and
  // draws the jitter once. Drawing here as well spread renewals over twice the rule's window
  // (+-10 min instead of +-5 for a 24 h token; found by msiv2-fleet --check).
  auto plan = platform::plan_lifecycle(now_ms, answer->expires_at_ms, answer->refresh_in_ms,
                                       [](std::int64_t, std::int64_t) { return std::int64_t{0}; });
  out.access_token = std::move(answer->access_token);
  out.type = want;
  out.expires_on = answer->expires_at_ms / 1000;
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
  auto upstream_error = r.ok() ? read_oauth_error(r.body) : oauth_error_body{};
  const auto correlation =
    upstream_error.correlation_id.empty() ? job.correlation_id : upstream_error.correlation_id;
  if (mtls && !r.ok() && r.error == io::transport_error::tls_client_cert_rejected) {
    remediate(self, deps, job_id, 0, "TLS handshake refused the client certificate",
              correlation);
    return;
  }
  if (mtls && !r.ok() && r.error == io::transport_error::tls_failed && job.cred->key.key &&
      job.cred->key.key->unusable()) {
    // Our side of the handshake failed: the TPM refused to load the binding key (its owner
    // seed was cleared, or it is another TPM). The certificate is useless with it: re-mint,
    // and the key manager replaces the key first.
    remediate(self, deps, job_id, 0,
              "the TPM no longer loads the binding key " + job.cred->key.key_id +
                " (cleared or replaced), so the TLS handshake could not sign",
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
  if (delay && nanoseconds(*delay) < left(self, job)) {
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
      on_answer(self, deps, job_id, r);
    },
    [=](caf::tick_atom, std::uint64_t job_id) { send_attempt(self, deps, job_id); },
    [=](wire_atom, wiring_ptr peers) { self->state.peers = std::move(peers); },
  };
}

} // namespace msiv2
