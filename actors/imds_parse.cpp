#include "actors/imds_parse.hpp"

#include <strings.h>

#include <utility>

#include "io/endpoint_trust.hpp"
#include "io/json.hpp"
#include "platform/csr.hpp"
#include "platform/encoding.hpp"
#include "platform/x509.hpp"

namespace msiv2 {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && ::strncasecmp(a.data(), b.data(), a.size()) == 0;
}

} // namespace

bool contains_ignoring_case(std::string_view hay, std::string_view needle) {
  if (needle.size() > hay.size())
    return false;
  for (std::size_t i = 0; i + needle.size() <= hay.size(); ++i)
    if (::strncasecmp(hay.data() + i, needle.data(), needle.size()) == 0)
      return true;
  return false;
}

result<platform_metadata> parse_platform_metadata(std::string_view body) {
  auto doc = io::json_object::parse(body, "getplatformmetadata response");
  if (!doc)
    return doc.fail();
  platform_metadata m;
  auto client = doc->required_string("clientId");
  auto tenant = doc->required_string("tenantId");
  auto endpoint = doc->required_string("attestationEndpoint");
  auto cu = doc->required_object("cuId");
  for (const std::string* e : {client ? nullptr : &client.error(), tenant ? nullptr : &tenant.error(),
                               endpoint ? nullptr : &endpoint.error(), cu ? nullptr : &cu.error()})
    if (e != nullptr)
      return fail(*e);
  if (!platform::is_guid(*client) || !platform::is_guid(*tenant))
    return fail("malformed getplatformmetadata response: clientId and tenantId must be GUIDs");
  auto vm = cu->optional_string("vmId");
  auto vmss = cu->optional_string("vmssId");
  if (!vm || !vmss)
    return fail(!vm ? vm.error() : vmss.error());
  platform::cu_id id{vm->value_or(""), vmss->value_or("")};
  if (id.vm_id.empty() && id.vmss_id.empty())
    return fail("malformed getplatformmetadata response: cuId has neither vmId nor vmssId");
  m.client_id = std::move(*client);
  m.tenant_id = std::move(*tenant);
  m.attestation_endpoint = std::move(*endpoint);
  m.cuid_json = platform::cu_id_json(id);
  return m;
}

result<platform_metadata> read_metadata_answer(const io::http_response& r) {
  auto server = r.headers.get("Server");
  if (!server || !contains_ignoring_case(*server, "IMDS"))
    return fail("the answer carries no Server header naming IMDS (Server: '" +
                platform::sanitize_upstream(server.value_or(""), 100) +
                "'): something other than IMDS answered; check the IMDS address "
                "(AZURE_POD_IDENTITY_AUTHORITY_HOST) and that no proxy intercepts it");
  return parse_platform_metadata(r.body);
}

result<credential> read_credential_answer(std::string_view body,
                                          const credential_expectation& want,
                                          std::int64_t now_s, bool* key_mismatch) {
  auto doc = io::json_object::parse(body, "issuecredential response");
  if (!doc)
    return doc.fail();
  std::string v[5];
  const char* names[5] = {"client_id", "tenant_id", "certificate", "identity_type",
                          "mtls_authentication_endpoint"};
  for (int i = 0; i < 5; ++i) {
    auto s = doc->required_string(names[i]);
    if (!s)
      return s.fail();
    v[i] = std::move(*s);
  }
  const auto& meta = want.metadata;
  if (!iequals(v[0], meta.client_id) || !iequals(v[1], meta.tenant_id))
    return fail("issuecredential response: client_id/tenant_id differ from getplatformmetadata's");
  auto der = platform::base64_decode(v[2]);
  if (!der)
    return fail("issuecredential response: certificate is not base64: " + der.error());
  auto info = platform::inspect_certificate(*der);
  if (!info)
    return fail("issuecredential response: certificate: " + info.error());
  if (info->spki_der != want.key.spki_der) {
    if (key_mismatch != nullptr)
      *key_mismatch = true;
    return fail("issuecredential response: the certificate does not certify our binding key");
  }
  if (auto ok = platform::validate_binding_certificate(*info, want.key.spki_der, v[0], now_s); !ok)
    return fail("issuecredential response: " + ok.error());
  auto endpoint = io::check_endpoint(v[4], want.token_hosts,
                                    "issuecredential response: mtls_authentication_endpoint");
  if (!endpoint)
    return endpoint.fail();
  credential c;
  c.identity = want.identity;
  c.metadata = meta;
  c.client_id = v[0];
  c.tenant_id = v[1];
  c.identity_type = v[3];
  c.mtls_endpoint = std::move(*endpoint);
  c.certificate_der = std::move(*der);
  c.x5t_s256 = info->x5t_s256;
  c.not_before_ms = info->not_before * 1000;
  c.not_after_ms = info->not_after * 1000;
  c.token_not_after_ms = info->token_not_after * 1000;
  c.attested = want.attested;
  c.key = want.key;
  return c;
}

std::string correlation_of(std::string_view body, const std::string& fallback) {
  if (auto doc = io::json_object::parse(body, "error response"))
    for (const char* name : {"correlationId", "correlation_id"})
      if (auto v = doc->optional_string(name); v && *v && !(*v)->empty())
        return platform::sanitize_upstream(**v, 100);
  return fallback;
}

std::string upstream_says(const io::http_response& r) {
  if (!r.ok())
    return std::string(io::to_string(r.error)) + " (" + r.error_message + ")";
  std::string out = "HTTP " + std::to_string(r.status);
  if (auto doc = io::json_object::parse(r.body, "error response")) {
    for (const char* name : {"error_description", "message", "error"})
      if (auto v = doc->optional_string(name); v && *v && !(*v)->empty())
        return out + ": " + platform::sanitize_upstream(**v, 300);
  }
  return out;
}

} // namespace msiv2
