#include "tools/sim/faults.hpp"

#include <strings.h>

#include <algorithm>

#include "platform/encoding.hpp"

namespace msiv2::sim {

namespace {

// `injects_status` is about the spec as it was set: once its statuses are used up, a
// retry_after that belonged to them must not start decorating normal answers.
bool has_side_faults(const fault_spec& s, bool injects_status) {
  return s.probability > 0.0 || s.latency.count() > 0 || s.reset || s.body != body_fault::none ||
         s.drop_server_header || (s.retry_after && !injects_status) || s.aadsts != 0 ||
         s.reject_client_cert;
}

const char* reason_code(int status) {
  switch (status) {
  case 400: return "BadRequest";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "NotFound";
  case 408: return "RequestTimeout";
  case 410: return "Gone";
  case 429: return "TooManyRequests";
  case 500: return "InternalServerError";
  case 502: return "BadGateway";
  case 503: return "ServiceUnavailable";
  case 504: return "GatewayTimeout";
  default: return status < 500 ? "ClientError" : "ServerError";
  }
}

} // namespace

fault_table::fault_table(std::uint64_t seed) : rng_(seed) {}

result<void> fault_table::set(std::string_view endpoint, fault_spec spec) {
  const auto& names = endpoint_names();
  if (std::find(names.begin(), names.end(), endpoint) == names.end())
    return fail("unknown endpoint '" + std::string(endpoint) +
                "' (known: imds_metadata, imds_issue, imds_token, imds_compute, attestation, "
                "token, jwks, resource, token_tls)");
  config probe;
  probe.faults.emplace(std::string(endpoint), spec);
  // validate_config names the member; reuse it so the admin API and the config file agree.
  if (auto r = validate_config(probe); !r)
    return r;
  const bool injects_status = !spec.statuses.empty() || spec.probability > 0.0;
  std::lock_guard lock(mutex_);
  // A spec that would do nothing clears the endpoint (DELETE /faults/<endpoint> sends one).
  if (spec.statuses.empty() && (spec.count == 0 || !has_side_faults(spec, injects_status)))
    specs_.erase(std::string(endpoint));
  else
    specs_[std::string(endpoint)] = entry{std::move(spec), injects_status};
  return ok();
}

void fault_table::clear() {
  std::lock_guard lock(mutex_);
  specs_.clear();
}

fault_decision fault_table::next(std::string_view endpoint) {
  fault_decision d;
  std::lock_guard lock(mutex_);
  auto it = specs_.find(endpoint);
  if (it == specs_.end())
    return d;
  fault_spec& s = it->second.spec;
  const bool injects_status = it->second.injects_status;

  if (!s.statuses.empty()) {
    d.status = s.statuses.front();
    s.statuses.erase(s.statuses.begin());
  }
  if (s.count != 0 && has_side_faults(s, injects_status)) {
    if (s.count > 0)
      --s.count;
    if (d.status == 0 && s.probability > 0.0 &&
        std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < s.probability)
      d.status = s.probability_status;
    d.latency = s.latency;
    d.reset = s.reset;
    d.body = s.body;
    d.drop_server_header = s.drop_server_header;
    d.aadsts = s.aadsts;
    d.reject_client_cert = s.reject_client_cert;
    if (!injects_status)
      d.retry_after = s.retry_after;
  }
  if (d.status != 0)
    d.retry_after = s.retry_after;

  if (s.statuses.empty() && (s.count == 0 || !has_side_faults(s, injects_status)))
    specs_.erase(it);
  return d;
}

std::map<std::string, fault_spec> fault_table::snapshot() const {
  std::lock_guard lock(mutex_);
  std::map<std::string, fault_spec> out;
  for (const auto& [name, e] : specs_)
    out.emplace(name, e.spec);
  return out;
}

response fault_response(std::string_view endpoint, int status) {
  const std::string description = "Simulated fault: HTTP " + std::to_string(status);
  if (endpoint == "attestation" || endpoint == "resource")
    return response::json(status, "{\"error\":{\"code\":\"" + std::string(reason_code(status)) +
                                    "\",\"message\":" + platform::json_quote(description) + "}}");
  if (endpoint == "token" || endpoint == "jwks") {
    const char* error = status == 400   ? "invalid_request"
                        : status == 401 ? "invalid_client"
                        : status == 429 || status == 503 ? "temporarily_unavailable"
                        : status >= 500 ? "server_error"
                                        : "invalid_request";
    const std::string id = platform::uuid_v4();
    return response::oauth_error(status, error, description,
                                 "\"error_codes\":[" + std::to_string(status == 429 ? 50196 : 50000) +
                                   "],\"trace_id\":\"" + id + "\",\"correlation_id\":\"" + id +
                                   "\"");
  }
  // IMDS: the OAuth-like shape IMDS uses for its own errors.
  const char* error = status == 400   ? "invalid_request"
                      : status == 404 ? "not_found"
                      : status == 429 ? "too_many_requests"
                      : status == 503 ? "service_unavailable"
                      : status >= 500 ? "internal_error"
                                      : "bad_request";
  return response::oauth_error(status, error, description);
}

response aadsts_response(int code, std::string_view request_id) {
  std::string what;
  switch (code) {
  case 1000610: what = "The client certificate's validity time range is not acceptable."; break;
  case 1000611: what = "The client certificate's issuer is not trusted."; break;
  case 1000612: what = "A claim value of the client certificate is not valid."; break;
  case 1000613: what = "The client assertion's jku header is not valid."; break;
  case 1000614: what = "The client certificate's signature is not valid."; break;
  case 1000901: what = "The client certificate is past its token_not_after."; break;
  case 500181:
    what = "The presented certificate is not the one the token is bound to.";
    break;
  default: what = "Simulated error."; break;
  }
  const bool not_bound = code == 500181;
  const std::string id = request_id.empty() ? platform::uuid_v4() : std::string(request_id);
  return response::oauth_error(not_bound ? 400 : 401,
                               not_bound ? "invalid_request" : "invalid_client",
                               "AADSTS" + std::to_string(code) + ": " + what,
                               "\"error_codes\":[" + std::to_string(code) +
                                 "],\"trace_id\":\"" + platform::uuid_v4() +
                                 "\",\"correlation_id\":" + platform::json_quote(id));
}

void apply_fault(const fault_decision& d, response& res) {
  switch (d.body) {
  case body_fault::malformed:
    res.body = std::string(malformed_body);
    break;
  case body_fault::empty:
    res.body.clear();
    break;
  case body_fault::none:
  case body_fault::truncated:
    break;
  }
  if (d.drop_server_header)
    res.headers.erase(std::remove_if(res.headers.begin(), res.headers.end(),
                                     [](const auto& h) {
                                       return ::strcasecmp(h.first.c_str(), "Server") == 0;
                                     }),
                      res.headers.end());
  if (d.retry_after)
    res.set("Retry-After", std::to_string(*d.retry_after));
}

} // namespace msiv2::sim
