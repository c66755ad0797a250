#include "actors/persisted.hpp"

#include <utility>

#include "io/endpoint_trust.hpp"
#include "io/json.hpp"
#include "platform/encoding.hpp"
#include "platform/files.hpp"
#include "platform/jwt.hpp"
#include "platform/keys.hpp"
#include "platform/x509.hpp"

namespace msiv2::persisted {

namespace {

constexpr const char* cert_schema = "msiv2.binding-certificate";
constexpr const char* attestation_schema = "msiv2.attestation-token";
constexpr std::int64_t version = 1;
constexpr const char* key_header = "msiv2-binding-key";

const char* kind_name(identity_kind k) {
  switch (k) {
    case identity_kind::system_assigned: return "system_assigned";
    case identity_kind::client_id: return "client_id";
    case identity_kind::object_id: return "object_id";
    case identity_kind::resource_id: return "resource_id";
  }
  return "unknown";
}

std::optional<identity_kind> kind_of(const std::string& s) {
  for (auto k : {identity_kind::system_assigned, identity_kind::client_id,
                 identity_kind::object_id, identity_kind::resource_id})
    if (s == kind_name(k))
      return k;
  return std::nullopt;
}

template <class T>
decoded<T> refuse(refusal why, std::string reason) {
  decoded<T> d;
  d.why = why;
  d.reason = std::move(reason);
  return d;
}

/// The common head of our JSON files: the schema and version, checked.
template <class T>
std::optional<decoded<T>> check_head(const io::json_object& doc, const char* schema) {
  auto s = doc.required_string("schema");
  if (!s)
    return refuse<T>(refusal::malformed, s.error());
  if (*s != schema)
    return refuse<T>(refusal::other_format,
                     "schema is '" + *s + "', expected '" + std::string(schema) + "'");
  auto v = doc.required_integer("version");
  if (!v)
    return refuse<T>(refusal::malformed, v.error());
  if (*v != version)
    return refuse<T>(refusal::other_format,
                     "version " + std::to_string(*v) + " (this module reads version " +
                       std::to_string(version) + ")");
  return std::nullopt;
}

} // namespace

// -- certificate --------------------------------------------------------------------------------

std::string certificate_artifact_id(const std::string& imds_base_url, const std::string& cache_key) {
  return imds_base_url + " " + cache_key;
}

std::string certificate_file_name(const std::string& artifact_id, const std::string& key_id) {
  // Key ids are lower-case hex (SHA-256 of the SPKI); anything else is hashed to stay a plain
  // file name.
  bool hex = key_id.size() >= 16 &&
             key_id.find_first_not_of("0123456789abcdef") == std::string::npos;
  std::string tag =
    hex ? key_id.substr(0, 16) : platform::hex_lower(platform::sha256(key_id)).substr(0, 16);
  return platform::artifact_file_name("cert", artifact_id, "-" + tag + ".json");
}

std::string encode_certificate(const credential& c, const std::string& artifact_id,
                               std::int64_t written_at_ms) {
  using platform::json_quote;
  std::string out = "{\"schema\":" + json_quote(cert_schema);
  out += ",\"version\":" + std::to_string(version);
  out += ",\"artifact_id\":" + json_quote(artifact_id);
  out += ",\"key_id\":" + json_quote(c.key.key_id);
  out += ",\"attested\":" + std::string(c.attested ? "true" : "false");
  out += ",\"identity\":{\"kind\":" + json_quote(kind_name(c.identity.kind)) +
         ",\"id\":" + json_quote(c.identity.id) + "}";
  out += ",\"metadata\":{\"client_id\":" + json_quote(c.metadata.client_id) +
         ",\"tenant_id\":" + json_quote(c.metadata.tenant_id) +
         ",\"cuid\":" + json_quote(c.metadata.cuid_json) +
         ",\"attestation_endpoint\":" + json_quote(c.metadata.attestation_endpoint) + "}";
  out += ",\"client_id\":" + json_quote(c.client_id);
  out += ",\"tenant_id\":" + json_quote(c.tenant_id);
  out += ",\"identity_type\":" + json_quote(c.identity_type);
  out += ",\"mtls_authentication_endpoint\":" + json_quote(c.mtls_endpoint);
  out += ",\"certificate\":" + json_quote(platform::base64_encode(c.certificate_der));
  out += ",\"not_after\":" + std::to_string(c.not_after_ms / 1000);
  out += ",\"written_at_ms\":" + std::to_string(written_at_ms);
  out += "}\n";
  return out;
}

decoded<credential> decode_certificate(std::string_view bytes, const std::string& artifact_id,
                                       const key_ref& current, std::int64_t now_s,
                                       const std::vector<std::string>& token_hosts) {
  using D = decoded<credential>;
  auto doc = io::json_object::parse(bytes, "certificate file");
  if (!doc)
    return refuse<credential>(refusal::malformed, doc.error());
  if (auto bad = check_head<credential>(*doc, cert_schema))
    return std::move(*bad);
  auto id = doc->required_string("artifact_id");
  if (!id)
    return refuse<credential>(refusal::malformed, id.error());
  if (*id != artifact_id)
    return refuse<credential>(refusal::other_artifact,
                              "the file is for '" + *id + "', not '" + artifact_id + "'");
  auto key_id = doc->required_string("key_id");
  if (!key_id)
    return refuse<credential>(refusal::malformed, key_id.error());
  if (*key_id != current.key_id)
    return refuse<credential>(refusal::orphan, "the certificate was made for key " + *key_id +
                                                 ", not the current key " + current.key_id);
  auto attested = doc->required_boolean("attested");
  auto identity = doc->required_object("identity");
  auto meta = doc->required_object("metadata");
  if (!attested || !identity || !meta)
    return refuse<credential>(refusal::malformed, !attested   ? attested.error()
                                                  : !identity ? identity.error()
                                                              : meta.error());
  credential c;
  c.attested = *attested;
  auto kind = identity->required_string("kind");
  auto ident = identity->optional_string("id");
  if (!kind || !ident)
    return refuse<credential>(refusal::malformed, !kind ? kind.error() : ident.error());
  auto k = kind_of(*kind);
  if (!k)
    return refuse<credential>(refusal::malformed, "certificate file: identity kind '" + *kind +
                                                    "' is unknown");
  c.identity.kind = *k;
  c.identity.id = ident->value_or("");
  struct field {
    const io::json_object* in;
    const char* name;
    std::string* to;
    bool required;
  };
  field fields[] = {
    {&*meta, "client_id", &c.metadata.client_id, true},
    {&*meta, "tenant_id", &c.metadata.tenant_id, true},
    {&*meta, "cuid", &c.metadata.cuid_json, true},
    {&*meta, "attestation_endpoint", &c.metadata.attestation_endpoint, false},
    {&*doc, "client_id", &c.client_id, true},
    {&*doc, "tenant_id", &c.tenant_id, true},
    {&*doc, "identity_type", &c.identity_type, true},
    {&*doc, "mtls_authentication_endpoint", &c.mtls_endpoint, true},
  };
  for (auto& f : fields) {
    if (f.required) {
      auto v = f.in->required_string(f.name);
      if (!v)
        return refuse<credential>(refusal::malformed, v.error());
      *f.to = std::move(*v);
    } else {
      auto v = f.in->optional_string(f.name);
      if (!v)
        return refuse<credential>(refusal::malformed, v.error());
      *f.to = v->value_or("");
    }
  }
  auto endpoint = io::check_endpoint(c.mtls_endpoint, token_hosts,
                                    "certificate file: mtls_authentication_endpoint");
  if (!endpoint)
    return refuse<credential>(refusal::invalid, endpoint.error());
  c.mtls_endpoint = std::move(*endpoint);
  auto b64 = doc->required_string("certificate");
  if (!b64)
    return refuse<credential>(refusal::malformed, b64.error());
  auto der = platform::base64_decode(*b64);
  if (!der)
    return refuse<credential>(refusal::invalid, "certificate is not base64: " + der.error());
  auto info = platform::inspect_certificate(*der);
  if (!info)
    return refuse<credential>(refusal::invalid, "certificate does not parse: " + info.error());
  if (info->spki_der != current.spki_der)
    return refuse<credential>(refusal::orphan,
                              "the certificate does not certify the current key " + current.key_id);
  if (now_s >= info->not_after)
    return refuse<credential>(refusal::expired, "the certificate expired at " +
                                                  std::to_string(info->not_after) + " (Unix s)");
  if (info->token_not_after > 0 && now_s >= info->token_not_after)
    return refuse<credential>(refusal::expired,
                              "the certificate is past its token_not_after " +
                                std::to_string(info->token_not_after) + " (Unix s)");
  if (auto ok = platform::validate_binding_certificate(*info, current.spki_der, c.client_id, now_s);
      !ok)
    return refuse<credential>(refusal::invalid, "certificate: " + ok.error());
  c.certificate_der = std::move(*der);
  c.x5t_s256 = info->x5t_s256;
  c.not_before_ms = info->not_before * 1000;
  c.not_after_ms = info->not_after * 1000;
  c.token_not_after_ms = info->token_not_after * 1000;
  c.key = current;
  D out;
  out.value = std::move(c);
  return out;
}

// -- attestation --------------------------------------------------------------------------------

std::string attestation_artifact_id(const std::string& endpoint, const std::string& key_id) {
  return endpoint + " " + key_id;
}

std::string attestation_file_name(const std::string& endpoint, const std::string& key_id) {
  return platform::artifact_file_name("attestation", attestation_artifact_id(endpoint, key_id),
                                      ".json");
}

std::string encode_attestation(const attestation_token& t, const std::string& endpoint,
                               const std::string& key_id, std::int64_t written_at_ms) {
  using platform::json_quote;
  std::string out = "{\"schema\":" + json_quote(attestation_schema);
  out += ",\"version\":" + std::to_string(version);
  out += ",\"endpoint\":" + json_quote(endpoint);
  out += ",\"key_id\":" + json_quote(key_id);
  out += ",\"jwt\":" + json_quote(t.jwt);
  out += ",\"iat\":" + std::to_string(t.issued_at_ms / 1000);
  out += ",\"exp\":" + std::to_string(t.expires_at_ms / 1000);
  out += ",\"written_at_ms\":" + std::to_string(written_at_ms);
  out += "}\n";
  return out;
}

decoded<attestation_token> decode_attestation(std::string_view bytes, const std::string& endpoint,
                                              const std::string& key_id, std::int64_t now_ms) {
  using T = attestation_token;
  auto doc = io::json_object::parse(bytes, "attestation file");
  if (!doc)
    return refuse<T>(refusal::malformed, doc.error());
  if (auto bad = check_head<T>(*doc, attestation_schema))
    return std::move(*bad);
  auto ep = doc->required_string("endpoint");
  auto kid = doc->required_string("key_id");
  auto jwt = doc->required_string("jwt");
  auto iat = doc->required_integer("iat");
  if (!ep || !kid || !jwt || !iat)
    return refuse<T>(refusal::malformed, !ep    ? ep.error()
                                         : !kid ? kid.error()
                                         : !jwt ? jwt.error()
                                                : iat.error());
  if (*kid != key_id)
    return refuse<T>(refusal::orphan, "the attestation token was made for key " + *kid +
                                        ", not the current key " + key_id);
  if (*ep != endpoint)
    return refuse<T>(refusal::other_artifact,
                     "the attestation token is from '" + *ep + "', not '" + endpoint + "'");
  auto claims = platform::read_jwt_claims(*jwt);
  if (!claims)
    return refuse<T>(refusal::invalid, "the attestation token is not a JWT: " + claims.error());
  if (!claims->exp)
    return refuse<T>(refusal::invalid, "the attestation token has no exp claim");
  T t;
  t.jwt = std::move(*jwt);
  // Times from a file: milliseconds that do not fit in 64 bits are refused.
  if (__builtin_mul_overflow(*claims->exp, std::int64_t{1000}, &t.expires_at_ms) ||
      __builtin_mul_overflow(claims->iat ? *claims->iat : *iat, std::int64_t{1000},
                             &t.issued_at_ms))
    return refuse<T>(refusal::invalid, "the attestation token has an exp or iat out of range");
  if (now_ms >= t.expires_at_ms)
    return refuse<T>(refusal::expired, "the attestation token expired at " +
                                         std::to_string(*claims->exp) + " (Unix s)");
  decoded<T> out;
  out.value = std::move(t);
  return out;
}

std::string key_id_of(std::string_view bytes) {
  auto doc = io::json_object::parse(bytes, "cache file");
  if (!doc)
    return {};
  auto s = doc->optional_string("key_id");
  return s && *s ? **s : std::string{};
}

// -- binding key --------------------------------------------------------------------------------

result<std::string> encode_key(EVP_PKEY* key, const std::string& boot_id, const std::string& key_id) {
  auto pem = platform::private_key_pem(key);
  if (!pem)
    return fail("writing the binding key as PEM: " + pem.error());
  std::string out = std::string(key_header) + " " + std::to_string(version) +
                    "\nboot_id: " + boot_id + "\nkey_id: " + key_id + "\n";
  out.reserve(out.size() + pem->size());
  out += *pem;
  platform::secure_clear(*pem);
  return out;
}

decoded<key_file> decode_key_file(std::string_view bytes) {
  using T = key_file;
  auto begin = bytes.find("-----BEGIN");
  if (begin == std::string_view::npos)
    return refuse<T>(refusal::malformed, "key file: no PEM block");
  auto head = bytes.substr(0, begin);
  std::string lines[3];
  std::size_t n = 0;
  while (!head.empty()) {
    auto eol = head.find('\n');
    if (eol == std::string_view::npos)
      return refuse<T>(refusal::malformed, "key file: header line without end");
    if (n == 3)
      return refuse<T>(refusal::malformed, "key file: more than three header lines");
    lines[n++] = std::string(head.substr(0, eol));
    head.remove_prefix(eol + 1);
  }
  if (n == 0 || lines[0].rfind(key_header, 0) != 0)
    return refuse<T>(refusal::malformed, "key file: the first line is not '" +
                                           std::string(key_header) + " <version>'");
  if (lines[0] != std::string(key_header) + " " + std::to_string(version))
    return refuse<T>(refusal::other_format, "key file: '" + lines[0] + "' (this module reads " +
                                              std::string(key_header) + " " +
                                              std::to_string(version) + ")");
  if (n != 3 || lines[1].rfind("boot_id: ", 0) != 0 || lines[2].rfind("key_id: ", 0) != 0)
    return refuse<T>(refusal::malformed, "key file: expected 'boot_id: ' and 'key_id: ' lines");
  T f;
  f.boot_id = lines[1].substr(9);
  f.key_id = lines[2].substr(8);
  if (f.boot_id.empty() || f.key_id.empty())
    return refuse<T>(refusal::malformed, "key file: empty boot_id or key_id");
  f.pem = std::string(bytes.substr(begin));
  decoded<T> out;
  out.value = std::move(f);
  return out;
}

} // namespace msiv2::persisted
