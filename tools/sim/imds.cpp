#include "tools/sim/imds.hpp"

#include <strings.h>

#include <algorithm>

#include "platform/encoding.hpp"

namespace msiv2::sim {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && ::strncasecmp(a.data(), b.data(), a.size()) == 0;
}

response bad_request(std::string_view description) {
  return response::oauth_error(400, "invalid_request", description);
}

response method_not_allowed(std::string_view allowed) {
  response r = response::oauth_error(405, "invalid_request",
                                     "Method not allowed; use " + std::string(allowed));
  r.set("Allow", std::string(allowed));
  return r;
}

response not_found() {
  return response::oauth_error(404, "not_found", "The requested path is not found on this IMDS");
}

/// The probe answer: a request without `Metadata: true` (protocol.md §1).
std::optional<response> check_metadata_header(const request& req) {
  auto h = req.header("Metadata");
  if (!h || !iequals(*h, "true"))
    return bad_request("Required metadata header not specified");
  return std::nullopt;
}

/// A second copy of a query parameter is refused: it would make the selection ambiguous.
std::optional<response> check_no_duplicates(const request& req) {
  for (std::size_t i = 0; i < req.query.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (req.query[i].first == req.query[j].first)
        return bad_request("Query variable '" + req.query[i].first + "' is given more than once");
  return std::nullopt;
}

// yyyy-mm-dd, as every IMDS api-version is.
bool looks_like_api_version(std::string_view v) {
  if (v.size() < 10)
    return false;
  for (std::size_t i = 0; i < 10; ++i) {
    bool dash = i == 4 || i == 7;
    if (dash != (v[i] == '-') || (!dash && !std::isdigit(static_cast<unsigned char>(v[i]))))
      return false;
  }
  return true;
}

/// Segment `index` of an ARM id ("/subscriptions/<sub>/resourceGroups/<rg>/...").
std::string arm_segment(std::string_view id, std::string_view name) {
  std::string needle = "/" + std::string(name) + "/";
  auto lower = [](std::string s) {
    std::transform(s.begin(), s.end(), s.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
  };
  std::string hay = lower(std::string(id));
  auto pos = hay.find(lower(needle));
  if (pos == std::string::npos)
    return {};
  auto start = pos + needle.size();
  auto end = id.find('/', start);
  return std::string(id.substr(start, end == std::string_view::npos ? id.size() - start : end - start));
}

} // namespace

imds_service::imds_service(config cfg, authority& pki, std::string attestation_url)
    : cfg_(std::move(cfg)), pki_(pki), attestation_url_(std::move(attestation_url)) {}

std::string_view imds_service::route(std::string_view path) {
  // Paths are matched case-insensitively (MSAL .NET sends the lower-case
  // /metadata/identity/getplatformmetadata; only its stale design doc and a demo page spell
  // getPlatformMetadata) and one trailing slash is tolerated (msal-node sends
  // /metadata/identity/oauth2/token/).
  if (path.size() > 1 && path.back() == '/')
    path.remove_suffix(1);
  if (iequals(path, "/metadata/identity/getplatformmetadata"))
    return "imds_metadata";
  if (iequals(path, "/metadata/identity/issuecredential"))
    return "imds_issue";
  if (iequals(path, "/metadata/identity/oauth2/token"))
    return "imds_token";
  if (iequals(path, "/metadata/instance/compute"))
    return "imds_compute";
  return {};
}

response imds_service::handle(std::string_view endpoint, const request& req) const {
  if (endpoint == "imds_metadata")
    return metadata(req);
  if (endpoint == "imds_issue")
    return issue(req);
  if (endpoint == "imds_token")
    return v1_token(req);
  if (endpoint == "imds_compute")
    return compute(req);
  return not_found();
}

const identity* imds_service::find(std::string_view kind, std::string_view value) const {
  auto matches = [&](const identity& id) {
    if (kind == "client_id")
      return iequals(id.client_id, value);
    if (kind == "object_id")
      return iequals(id.object_id, value);
    return !id.resource_id.empty() && iequals(id.resource_id, value);
  };
  if (cfg_.system_assigned_enabled && matches(cfg_.system_identity))
    return &cfg_.system_identity;
  for (const auto& id : cfg_.user_identities)
    if (matches(id))
      return &id;
  return nullptr;
}

const identity* imds_service::select_v2(const request& req, std::string_view extra_param,
                                        response& err) const {
  if (auto e = check_metadata_header(req)) {
    err = std::move(*e);
    return nullptr;
  }
  auto request_id = req.header("x-ms-client-request-id");
  if (!request_id || request_id->empty()) {
    err = bad_request("Required x-ms-client-request-id header not specified");
    return nullptr;
  }
  std::string unsupported;
  for (const auto& [name, value] : req.query) {
    bool known = name == "cred-api-version" || name == "client_id" || name == "object_id" ||
                 name == "mi_res_id" || (!extra_param.empty() && name == extra_param);
    if (!known)
      unsupported += (unsupported.empty() ? "" : ", ") + name;
  }
  if (!unsupported.empty()) {
    err = bad_request("Unsupported query variables: " + unsupported);
    return nullptr;
  }
  if (auto e = check_no_duplicates(req)) {
    err = std::move(*e);
    return nullptr;
  }
  auto version = req.param("cred-api-version");
  if (!version) {
    err = bad_request("Required query variable cred-api-version not specified");
    return nullptr;
  }
  if (*version != "2.0") {
    err = bad_request("Unsupported cred-api-version '" + std::string(*version) +
                      "'; the supported version is 2.0");
    return nullptr;
  }
  if (auto bypass = req.param("bypass_cache"); bypass && *bypass != "true" && *bypass != "false") {
    err = bad_request("Query variable bypass_cache must be true or false");
    return nullptr;
  }

  const char* kinds[] = {"client_id", "object_id", "mi_res_id"};
  const char* kind = nullptr;
  std::string_view value;
  for (const char* k : kinds) {
    if (auto v = req.param(k)) {
      if (kind != nullptr) {
        err = bad_request("Only one of client_id, object_id and mi_res_id may be given");
        return nullptr;
      }
      kind = k;
      value = *v;
    }
  }
  if (kind == nullptr) {
    if (!cfg_.system_assigned_enabled) {
      err = bad_request("Identity not found");
      return nullptr;
    }
    return &cfg_.system_identity;
  }
  const identity* who = find(kind, value);
  if (who == nullptr)
    err = bad_request("Identity not found");
  return who;
}

response imds_service::metadata(const request& req) const {
  if (cfg_.v1_only)
    return not_found();
  if (req.method != "GET")
    return method_not_allowed("GET");
  response err;
  const identity* who = select_v2(req, {}, err);
  if (who == nullptr)
    return err;
  std::string cu_id = "{\"vmId\":" + platform::json_quote(cfg_.vm_id);
  if (!cfg_.vmss_id.empty())
    cu_id += ",\"vmssId\":" + platform::json_quote(cfg_.vmss_id);
  cu_id += '}';
  return response::json(200, "{\"cuId\":" + cu_id + ",\"clientId\":" +
                               platform::json_quote(who->client_id) +
                               ",\"tenantId\":" + platform::json_quote(cfg_.tenant_id) +
                               ",\"attestationEndpoint\":" +
                               platform::json_quote(attestation_url_) + "}");
}

response imds_service::issue(const request& req) const {
  if (cfg_.v1_only)
    return not_found();
  if (req.method != "POST")
    return method_not_allowed("POST");
  response err;
  const identity* who = select_v2(req, "bypass_cache", err);
  if (who == nullptr)
    return err;
  return pki_.issue_credential(req, *who);
}

response imds_service::v1_token(const request& req) const {
  if (req.method != "GET")
    return method_not_allowed("GET");
  if (auto e = check_metadata_header(req))
    return std::move(*e);
  if (auto e = check_no_duplicates(req))
    return std::move(*e);
  auto version = req.param("api-version");
  if (!version || version->empty())
    return bad_request("Required query variable 'api-version' is missing");
  if (!looks_like_api_version(*version))
    return bad_request("Invalid api-version '" + std::string(*version) + "'");
  auto resource = req.param("resource");
  if (!resource || resource->empty())
    return bad_request("Required audience parameter not specified");

  // v1 names: msi_res_id (what MSAL and azure-identity send) and mi_res_id (newer docs).
  const std::pair<const char*, const char*> kinds[] = {{"client_id", "client_id"},
                                                       {"object_id", "object_id"},
                                                       {"msi_res_id", "mi_res_id"},
                                                       {"mi_res_id", "mi_res_id"}};
  const identity* who = nullptr;
  bool selected = false;
  for (const auto& [param, kind] : kinds) {
    if (auto v = req.param(param)) {
      if (selected)
        return bad_request("Only one of client_id, object_id and msi_res_id may be given");
      selected = true;
      who = find(kind, *v);
      if (who == nullptr)
        return bad_request("Identity not found");
    }
  }
  if (!selected) {
    if (!cfg_.system_assigned_enabled)
      return bad_request("Identity not found");
    who = &cfg_.system_identity;
  }
  auto body = pki_.v1_token_response(*who, *resource);
  if (!body)
    return bad_request(body.error());
  return response::json(200, std::move(*body));
}

response imds_service::compute(const request& req) const {
  if (req.method != "GET")
    return method_not_allowed("GET");
  if (auto e = check_metadata_header(req))
    return std::move(*e);
  auto version = req.param("api-version");
  if (!version || version->empty())
    return bad_request("Required query variable 'api-version' is missing");
  if (!looks_like_api_version(*version))
    return bad_request("Invalid api-version '" + std::string(*version) + "'");

  std::string subscription = "00000000-0000-0000-0000-000000000000";
  std::string group = "rg";
  if (!cfg_.user_identities.empty()) {
    const std::string& id = cfg_.user_identities.front().resource_id;
    if (auto s = arm_segment(id, "subscriptions"); !s.empty())
      subscription = s;
    if (auto g = arm_segment(id, "resourceGroups"); !g.empty())
      group = g;
  }
  const std::string scale_set = cfg_.vmss_id.empty() ? "" : "msiv2-sim-vmss";
  return response::json(
    200, "{\"azEnvironment\":\"AzurePublicCloud\",\"location\":" + platform::json_quote(cfg_.region) +
           ",\"name\":\"msiv2-sim-vm\",\"osType\":\"Linux\",\"resourceGroupName\":" +
           platform::json_quote(group) + ",\"subscriptionId\":" + platform::json_quote(subscription) +
           ",\"vmId\":" + platform::json_quote(cfg_.vm_id) +
           ",\"vmScaleSetName\":" + platform::json_quote(scale_set) + "}");
}

} // namespace msiv2::sim
