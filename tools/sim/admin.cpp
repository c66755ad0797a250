#include "tools/sim/admin.hpp"

#include <algorithm>

#include <simdjson.h>

#include "platform/encoding.hpp"

namespace msiv2::sim {

namespace {

namespace od = simdjson::ondemand;
using platform::json_quote;

response admin_error(int status, std::string_view message) {
  return response::json(status, "{\"error\":" + json_quote(message) + "}");
}

response method_not_allowed(std::string_view allowed) {
  response r = admin_error(405, "method not allowed; use " + std::string(allowed));
  r.set("Allow", std::string(allowed));
  return r;
}

/// Reads a body that must be one JSON object with exactly one member out of `names`; the
/// member's value goes to `on_value`.
template <class F>
result<void> read_single_member(std::string_view body, std::initializer_list<std::string_view> names,
                                F&& on_value) {
  std::string expected;
  for (auto n : names)
    expected += (expected.empty() ? "\"" : " or \"") + std::string(n) + "\"";
  simdjson::padded_string padded(body);
  od::parser parser;
  od::document doc;
  od::object obj;
  if (parser.iterate(padded).get(doc) != simdjson::SUCCESS ||
      doc.get_object().get(obj) != simdjson::SUCCESS)
    return fail("body: must be a JSON object with " + expected);
  int seen = 0;
  for (auto item : obj) {
    od::field field;
    std::string_view key;
    if (std::move(item).get(field) != simdjson::SUCCESS ||
        field.unescaped_key().get(key) != simdjson::SUCCESS)
      return fail("body: not valid JSON");
    if (std::find(names.begin(), names.end(), key) == names.end())
      return fail("body: unknown member \"" + std::string(key) + "\" (expected " + expected + ")");
    if (++seen > 1)
      return fail("body: give exactly one of " + expected);
    std::string k(key);
    od::value v = field.value();
    if (auto r = on_value(k, v); !r)
      return r;
  }
  if (seen == 0)
    return fail("body: must be a JSON object with " + expected);
  const char* rest = nullptr;
  if (doc.current_location().get(rest) != simdjson::OUT_OF_BOUNDS)
    return fail("body: unexpected content after the JSON object");
  return ok();
}

std::string issued_json(const std::vector<issued_cert>& certs) {
  std::string out = "[";
  for (const auto& c : certs) {
    if (out.size() > 1)
      out += ',';
    out += "{\"serial\":" + json_quote(c.serial_hex) + ",\"x5t\":" + json_quote(c.x5t_s256) +
           ",\"client_id\":" + json_quote(c.client_id) +
           ",\"not_after\":" + std::to_string(c.not_after) +
           ",\"attested\":" + (c.attested ? "true" : "false") +
           ",\"attestation_type\":" + json_quote(c.attestation_type) +
           ",\"revoked\":" + (c.revoked ? "true" : "false") + "}";
  }
  return out + "]";
}

std::string requests_json(const std::vector<logged_request>& log) {
  std::string out = "[";
  for (const auto& r : log) {
    if (out.size() > 1)
      out += ',';
    out += "{\"endpoint\":" + json_quote(r.endpoint) + ",\"method\":" + json_quote(r.method) +
           ",\"path\":" + json_quote(r.path) + ",\"status\":" + std::to_string(r.status) +
           ",\"request_id\":" + json_quote(r.request_id) + ",\"sku\":" + json_quote(r.sku) + "}";
  }
  return out + "]";
}

std::string faults_json(const std::map<std::string, fault_spec>& faults) {
  std::string out = "{";
  for (const auto& [name, spec] : faults) {
    if (out.size() > 1)
      out += ',';
    out += json_quote(name) + ":" + fault_spec_json(spec);
  }
  return out + "}";
}

std::string identity_json(const identity& id) {
  return "{\"client_id\":" + json_quote(id.client_id) + ",\"object_id\":" +
         json_quote(id.object_id) + ",\"resource_id\":" + json_quote(id.resource_id) + "}";
}

response post_fault(const request& req, simulator& sim, std::string_view endpoint) {
  auto spec = parse_fault_spec(req.body);
  if (!spec)
    return admin_error(400, spec.error());
  std::string json = fault_spec_json(*spec);
  if (auto r = sim.set_fault(endpoint, std::move(*spec)); !r)
    return admin_error(400, r.error());
  return response::json(200, "{\"endpoint\":" + json_quote(endpoint) + ",\"fault\":" + json + "}");
}

response revoke(const request& req, simulator& sim) {
  std::string id;
  auto r = read_single_member(req.body, {"serial", "x5t"},
                              [&](const std::string& key, od::value& v) -> result<void> {
                                std::string_view s;
                                if (v.get_string().get(s) != simdjson::SUCCESS || s.empty())
                                  return fail(key + ": must be a non-empty string");
                                id = std::string(s);
                                return ok();
                              });
  if (!r)
    return admin_error(400, r.error());
  if (auto rv = sim.pki().revoke(id); !rv)
    return admin_error(404, rv.error());
  return response::json(200, "{\"revoked\":" + json_quote(id) + "}");
}

response advance(const request& req, simulator& sim) {
  std::int64_t seconds = 0;
  constexpr std::int64_t max_seconds = 10LL * 366 * 24 * 3600;
  auto r = read_single_member(req.body, {"seconds"},
                              [&](const std::string& key, od::value& v) -> result<void> {
                                if (v.get_int64().get(seconds) != simdjson::SUCCESS ||
                                    seconds < 0 || seconds > max_seconds)
                                  return fail(key + ": must be an integer from 0 to " +
                                              std::to_string(max_seconds));
                                return ok();
                              });
  if (!r)
    return admin_error(400, r.error());
  sim.advance_clock(seconds);
  return response::json(200, "{\"advanced\":" + std::to_string(seconds) + "}");
}

} // namespace

std::string fault_spec_json(const fault_spec& f) {
  std::string statuses = "[";
  for (int s : f.statuses) {
    if (statuses.size() > 1)
      statuses += ',';
    statuses += std::to_string(s);
  }
  statuses += ']';
  const char* body = f.body == body_fault::malformed   ? "malformed"
                     : f.body == body_fault::truncated ? "truncated"
                     : f.body == body_fault::empty     ? "empty"
                                                       : "none";
  char probability[32];
  std::snprintf(probability, sizeof(probability), "%.17g", f.probability);
  return "{\"statuses\":" + statuses + ",\"probability\":" + probability +
         ",\"probability_status\":" + std::to_string(f.probability_status) +
         ",\"latency_ms\":" + std::to_string(f.latency.count()) +
         ",\"reset\":" + (f.reset ? "true" : "false") + ",\"body\":\"" + body +
         "\",\"drop_server_header\":" + (f.drop_server_header ? "true" : "false") +
         ",\"retry_after\":" + (f.retry_after ? std::to_string(*f.retry_after) : "null") +
         ",\"count\":" + std::to_string(f.count) +
         (f.aadsts != 0 ? ",\"aadsts\":" + std::to_string(f.aadsts) : std::string()) +
         (f.reject_client_cert ? ",\"reject_client_cert\":true" : "") + "}";
}

std::string config_json(const config& c) {
  std::string users = "[";
  for (const auto& id : c.user_identities) {
    if (users.size() > 1)
      users += ',';
    users += identity_json(id);
  }
  users += ']';
  const char* attestation = c.attestation == attestation_policy::off        ? "off"
                            : c.attestation == attestation_policy::required ? "required"
                                                                            : "optional";
  auto secs = [](std::chrono::seconds s) { return std::to_string(s.count()); };
  return "{\"bind_address\":" + json_quote(c.bind_address) +
         ",\"imds_port\":" + std::to_string(c.imds_port) +
         ",\"attestation_port\":" + std::to_string(c.attestation_port) +
         ",\"token_port\":" + std::to_string(c.token_port) +
         ",\"resource_port\":" + std::to_string(c.resource_port) +
         ",\"admin_port\":" + std::to_string(c.admin_port) +
         ",\"threads\":" + std::to_string(c.threads) + ",\"ready_file\":" + json_quote(c.ready_file) +
         ",\"state_dir\":" + json_quote(c.state_dir) + ",\"ca_cert_file\":" +
         json_quote(c.ca_cert_file) + ",\"ca_key_file\":" + json_quote(c.ca_key_file) +
         ",\"tenant_id\":" + json_quote(c.tenant_id) + ",\"vm_id\":" + json_quote(c.vm_id) +
         ",\"vmss_id\":" + json_quote(c.vmss_id) +
         ",\"system_assigned_enabled\":" + (c.system_assigned_enabled ? "true" : "false") +
         ",\"system_identity\":" + identity_json(c.system_identity) +
         ",\"user_identities\":" + users + ",\"v1_only\":" + (c.v1_only ? "true" : "false") +
         ",\"imds_server_header\":" + json_quote(c.imds_server_header) +
         ",\"region\":" + json_quote(c.region) + ",\"cert_lifetime\":" + secs(c.cert_lifetime) +
         ",\"attestation_lifetime\":" + secs(c.attestation_lifetime) +
         ",\"token_lifetime\":" + secs(c.token_lifetime) +
         ",\"refresh_in\":" + (c.refresh_in ? secs(*c.refresh_in) : "null") +
         ",\"v1_token_lifetime\":" + secs(c.v1_token_lifetime) + ",\"attestation\":\"" +
         attestation + "\",\"token_not_after\":" +
         (c.token_not_after ? secs(*c.token_not_after) : "null") + ",\"csr_profile\":\"" +
         (c.csr_profile == platform::csr_profile::lenient ? "lenient" : "strict") +
         "\",\"request_log_size\":" + std::to_string(c.request_log_size) +
         ",\"tpm_ek_ca\":" + json_quote(c.tpm_ek_ca) +
         ",\"token_tls_max_version\":" + json_quote(c.token_tls_max_version) +
         ",\"token_client_sigalgs\":" + json_quote(c.token_client_sigalgs) +
         ",\"tpm_challenge_lifetime\":" + secs(c.tpm_challenge_lifetime) +
         ",\"tpm_max_challenges\":" + std::to_string(c.tpm_max_challenges) +
         ",\"faults\":" + faults_json(c.faults) + "}";
}

response handle_admin(const request& req, simulator& sim) {
  const std::string& path = req.path;
  const std::string_view faults_prefix = "/faults/";
  if (path == "/counters") {
    if (req.method != "GET")
      return method_not_allowed("GET");
    return response::json(200, sim.counters_json());
  }
  if (path == "/faults") {
    if (req.method == "GET")
      return response::json(200, faults_json(sim.current_config().faults));
    if (req.method == "DELETE") {
      sim.clear_faults();
      return response::json(200, "{\"cleared\":\"all\"}");
    }
    return method_not_allowed("GET, DELETE");
  }
  if (path.compare(0, faults_prefix.size(), faults_prefix) == 0) {
    std::string_view endpoint = std::string_view(path).substr(faults_prefix.size());
    if (req.method == "POST")
      return post_fault(req, sim, endpoint);
    if (req.method == "DELETE") {
      if (auto r = sim.set_fault(endpoint, fault_spec{}); !r)
        return admin_error(400, r.error());
      return response::json(200, "{\"cleared\":" + json_quote(endpoint) + "}");
    }
    return method_not_allowed("POST, DELETE");
  }
  if (path == "/revoke") {
    if (req.method != "POST")
      return method_not_allowed("POST");
    return revoke(req, sim);
  }
  if (path == "/clock/advance") {
    if (req.method != "POST")
      return method_not_allowed("POST");
    return advance(req, sim);
  }
  if (path == "/reset") {
    if (req.method != "POST")
      return method_not_allowed("POST");
    sim.reset();
    return response::json(200, "{\"reset\":true}");
  }
  if (path == "/issued") {
    if (req.method != "GET")
      return method_not_allowed("GET");
    return response::json(200, issued_json(sim.pki().issued()));
  }
  if (path == "/requests") {
    if (req.method != "GET")
      return method_not_allowed("GET");
    return response::json(200, requests_json(sim.recent_requests()));
  }
  if (path == "/config") {
    if (req.method != "GET")
      return method_not_allowed("GET");
    return response::json(200, config_json(sim.current_config()));
  }
  return admin_error(404, "no admin endpoint " + path +
                            " (try /counters, /requests, /faults, /revoke, /clock/advance, /reset, "
                            "/issued, /config)");
}

} // namespace msiv2::sim
