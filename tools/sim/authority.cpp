#include "tools/sim/authority.hpp"

#include <mutex>
#include <unordered_map>
#include <utility>

#include "platform/csr.hpp"
#include "platform/encoding.hpp"
#include "platform/jwt.hpp"
#include "platform/keys.hpp"
#include "platform/x509.hpp"
#include "tools/sim/authority_pki.hpp"
#include "tools/sim/authority_support.hpp"
#include "tools/sim/tpm_attestation.hpp"

namespace msiv2::sim {
namespace {

using detail::aad_error;
using detail::iequals;

// AADSTS codes of the simulated token endpoint. Entra ID answers a bad client certificate
// with invalid_client and one of 1000610-1000614 (time range, issuer, claim value, jku
// header, signature); the client evicts its certificate and re-mints on any of them
// (protocol.md §7). The simulator uses them so:
constexpr int aadsts_cert_time_range = 1000610;  // expired or not yet valid
constexpr int aadsts_cert_issuer = 1000611;      // not issued (signed) by the simulator's CA
constexpr int aadsts_cert_claim_value = 1000612; // client_id differs from the certificate CN
// 1000613 (jku header) has no counterpart here.
constexpr int aadsts_cert_revoked = 1000614;     // revoked through the admin API
constexpr int aadsts_token_not_after = 1000901;  // past the certificate's token_not_after
// Other request errors, with the codes Entra ID uses for the same mistake.
constexpr int aadsts_tenant_not_found = 90002;
constexpr int aadsts_post_only = 900561;
constexpr int aadsts_missing_parameter = 900144;
constexpr int aadsts_unsupported_grant = 70003;
constexpr int aadsts_invalid_value = 70011;
constexpr int aadsts_secret_presented = 700025;
constexpr int aadsts_no_credential = 7000218;
constexpr int aadsts_scope_not_default = 1002012;

constexpr std::string_view token_path_suffix = "/oauth2/v2.0/token";
constexpr std::string_view default_scope_suffix = "/.default";
constexpr std::string_view missing_attestation =
  "Attestation Token is missing / empty in the issue credential request";

response bad_request(std::string_view description) {
  return response::oauth_error(400, "invalid_request", description);
}

response server_error(std::string_view description) {
  return response::oauth_error(500, "server_error", description);
}

std::string quote(std::string_view s) {
  return platform::json_quote(s);
}

bool is_rsa_2048_or_more(EVP_PKEY* key) {
  return EVP_PKEY_is_a(key, "RSA") == 1 && EVP_PKEY_get_bits(key) >= 2048;
}

class authority_impl final : public authority {
public:
  authority_impl(config cfg, unix_clock now, detail::authority_pki pki,
                 std::unique_ptr<tpm_attestation> tpm)
    : cfg_(std::move(cfg)), now_(std::move(now)), pki_(std::move(pki)), tpm_(std::move(tpm)) {}

  const std::string& ca_file() const override { return pki_.ca_file; }
  const std::string& server_chain_pem() const override { return pki_.server_chain_pem; }
  const std::string& server_key_pem() const override { return pki_.server_key_pem; }

  void set_urls(authority_urls urls) override {
    std::lock_guard<std::mutex> lock(mutex_);
    urls_ = std::move(urls);
  }

  response issue_credential(const request& req, const identity& who) override;
  response attest(const request& req) override;
  response attest_tpm_challenge(const request& req) override;
  response attest_tpm_proof(const request& req) override;
  response token(const request& req) override;
  response jwks(const request&) override { return response::json(200, pki_.jwks_json); }
  response resource(const request& req) override;
  result<std::string> v1_token_response(const identity& who, std::string_view resource) override;

  result<void> revoke(std::string_view serial_or_thumbprint) override;
  std::vector<issued_cert> issued() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return issued_;
  }
  void reset() override {
    if (tpm_)
      tpm_->reset();
    std::lock_guard<std::mutex> lock(mutex_);
    issued_.clear();
    by_serial_.clear();
    by_x5t_.clear();
  }

private:
  authority_urls urls() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return urls_;
  }
  /// The attestation token's attestation_type claim when it is valid for the CSR's key.
  result<std::string> check_attestation(std::string_view jwt, std::string_view csr_key_id,
                                        std::int64_t now) const;
  /// Signs an attestation JWT for `key_id`; `extra_claims` are encoded members (",\"a\":1").
  response attestation_answer(std::int64_t now, const std::string& key_id,
                              const std::string& client_id, const std::string& extra_claims);
  response token_answer(const request& req, std::string_view correlation_id);
  std::string object_id_of(std::string_view client_id) const;
  bool is_revoked(const std::string& serial_hex) const;

  const config cfg_;
  const unix_clock now_;
  const detail::authority_pki pki_;
  const std::unique_ptr<tpm_attestation> tpm_; // null: TPM attestation is off

  mutable std::mutex mutex_;
  authority_urls urls_;
  std::vector<issued_cert> issued_;
  // Lookups for revoke() and the token endpoint; values index issued_.
  std::unordered_map<std::string, std::size_t> by_serial_;
  std::unordered_map<std::string, std::size_t> by_x5t_;

  // Client certificates already parsed and found signed by our issuer key, by DER. The token
  // endpoint sees the same few certificates on every request, and parsing one twice plus
  // checking its signature cost more than the rest of a token answer (OpenSSL 3's public-key
  // decoder). Both results depend on the DER alone; time, revocation and client_id are
  // still checked on every request. Only our own certificates enter, so it stays small.
  mutable std::mutex verified_mutex_;
  mutable std::unordered_map<std::string, platform::cert_info> verified_;

  /// The presented certificate's fields when it is ours; an error response when not.
  result<platform::cert_info> verified_client_cert(const std::string& der) const;
};

// --- issuecredential (protocol.md §4, §6, §10) ---

response authority_impl::issue_credential(const request& req, const identity& who) {
  const std::int64_t now = now_();
  auto checked = detail::read_issue_request(
    req.body, {who.client_id, cfg_.tenant_id, platform::cu_id_json({cfg_.vm_id, cfg_.vmss_id}),
               cfg_.csr_profile});
  if (!checked)
    return bad_request(checked.error());
  const auto& subject_key = checked->subject_key;

  bool attested = false;
  std::string attestation_type;
  if (cfg_.attestation != attestation_policy::off) {
    const bool present = !checked->attestation_token.empty();
    if (!present && cfg_.attestation == attestation_policy::required)
      return bad_request(missing_attestation);
    if (present) {
      auto kid = platform::key_id(subject_key.get());
      if (!kid)
        return server_error("CSR key id: " + kid.error());
      auto att = check_attestation(checked->attestation_token, *kid, now);
      if (!att)
        return bad_request(att.error());
      attested = true;
      attestation_type = std::move(*att);
    }
  }

  platform::issue_params params;
  params.subject_key = subject_key.get();
  params.subject_cn = who.client_id;
  params.subject_dc = cfg_.tenant_id;
  params.not_before = now;
  params.not_after = now + cfg_.cert_lifetime.count();
  if (cfg_.token_not_after)
    params.token_not_after = now + cfg_.token_not_after->count();
  params.client_auth = true;
  auto cert_der =
    platform::issue_certificate(params, pki_.issuer_cert.get(), pki_.issuer_key.get());
  if (!cert_der)
    return server_error("issuing the certificate: " + cert_der.error());
  auto info = platform::inspect_certificate(*cert_der);
  if (!info)
    return server_error("reading the issued certificate: " + info.error());

  const authority_urls u = urls();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    issued_cert rec;
    rec.serial_hex = info->serial_hex;
    rec.x5t_s256 = info->x5t_s256;
    rec.client_id = who.client_id;
    rec.not_after = info->not_after;
    rec.attested = attested;
    rec.attestation_type = std::move(attestation_type);
    by_serial_[detail::to_lower(rec.serial_hex)] = issued_.size();
    by_x5t_[rec.x5t_s256] = issued_.size();
    issued_.push_back(std::move(rec));
  }

  std::string body = "{\"client_id\":" + quote(who.client_id);
  body += ",\"tenant_id\":" + quote(cfg_.tenant_id);
  body += ",\"certificate\":" + quote(platform::base64_encode(*cert_der));
  body += ",\"identity_type\":";
  body += who.system_assigned ? "\"SystemAssigned\"" : "\"UserAssigned\"";
  body += ",\"mtls_authentication_endpoint\":" + quote(u.token) + "}";
  return response::json(200, std::move(body));
}

result<std::string> authority_impl::check_attestation(std::string_view jwt, std::string_view csr_key_id,
                                               std::int64_t now) const {
  auto parts = platform::split_jwt(jwt);
  if (!parts)
    return fail("attestation token is not a JWT: " + parts.error());
  if (!platform::verify_jwt_rs256(*parts, pki_.attestation_key.get()))
    return fail("attestation token signature does not verify with the attestation service key");
  auto claims = platform::parse_jwt_claims(parts->payload_json);
  if (!claims)
    return fail("attestation token claims: " + claims.error());
  if (!claims->exp)
    return fail("attestation token has no exp claim");
  if (now >= *claims->exp)
    return fail("attestation token has expired");
  if (claims->nbf && now < *claims->nbf)
    return fail("attestation token is not yet valid (nbf)");
  if (claims->key_id != csr_key_id)
    return fail("attestation token was issued for another key (key_id differs from the CSR key)");
  if (claims->iss != urls().attestation)
    return fail("attestation token issuer is not this attestation service");
  return claims->attestation_type;
}

// --- attestation (protocol.md §5, simulated) ---

response authority_impl::attest(const request& req) {
  const std::int64_t now = now_();
  if (req.method != "POST")
    return response::oauth_error(405, "invalid_request", "attestation accepts POST only")
      .set("Allow", "POST");
  auto members =
    detail::read_string_members(req.body, {"public_key", "client_id", "nonce", "signature"});
  if (!members)
    return bad_request(members.error());
  for (const char* name : {"public_key", "client_id", "nonce", "signature"}) {
    const auto it = members->find(name);
    if (it == members->end())
      return bad_request(std::string(name) + " is missing");
    if (it->second.empty())
      return bad_request(std::string(name) + " is empty");
  }
  const std::string& client_id = members->find("client_id")->second;
  const std::string& nonce = members->find("nonce")->second;
  if (!platform::is_guid(client_id))
    return bad_request("client_id must be a GUID");

  auto spki = platform::base64_decode(members->find("public_key")->second);
  if (!spki)
    return bad_request("public_key is not valid base64: " + spki.error());
  auto key = platform::public_key_from_der(*spki);
  if (!key)
    return bad_request("public_key is not a DER SubjectPublicKeyInfo: " + key.error());
  if (!is_rsa_2048_or_more(key->get()))
    return bad_request("public_key must be an RSA key of at least 2048 bits");
  auto signature = platform::base64_decode(members->find("signature")->second);
  if (!signature)
    return bad_request("signature is not valid base64: " + signature.error());
  if (!platform::verify_pss_sha256(key->get(), nonce, *signature))
    return bad_request("signature does not verify: it must be RSA-PSS SHA-256 (salt 32) over "
                       "the nonce bytes by public_key");
  auto kid = platform::key_id(key->get());
  if (!kid)
    return server_error("public key id: " + kid.error());
  // Possession of the key is all the simulated keyguard protocol proves.
  return attestation_answer(now, *kid, client_id, ",\"attestation_type\":\"keyguard\"");
}

response authority_impl::attestation_answer(std::int64_t now, const std::string& key_id,
                                            const std::string& client_id,
                                            const std::string& extra_claims) {
  std::string payload = "{\"iat\":" + std::to_string(now);
  payload += ",\"nbf\":" + std::to_string(now);
  payload += ",\"exp\":" + std::to_string(now + cfg_.attestation_lifetime.count());
  payload += ",\"iss\":" + quote(urls().attestation);
  payload += ",\"key_id\":" + quote(key_id);
  payload += ",\"client_id\":" + quote(client_id);
  payload += extra_claims;
  payload += ",\"jti\":" + quote(platform::uuid_v4()) + "}";
  auto jwt = platform::sign_jwt_rs256(pki_.attestation_key.get(), payload);
  if (!jwt)
    return server_error("signing the attestation token: " + jwt.error());
  return response::json(200, "{\"token\":" + quote(*jwt) + "}");
}

// --- TPM attestation (README "TPM attestation") ---

namespace {
response tpm_off() {
  return response::oauth_error(404, "not_found",
                               "TPM attestation is not enabled on this simulator (start it with "
                               "--tpm-ek-ca PEM or set tpm_ek_ca in its config)");
}
} // namespace

response authority_impl::attest_tpm_challenge(const request& req) {
  if (!tpm_)
    return tpm_off();
  return tpm_->challenge(req, now_());
}

response authority_impl::attest_tpm_proof(const request& req) {
  if (!tpm_)
    return tpm_off();
  const std::int64_t now = now_();
  auto outcome = tpm_->proof(req, now);
  if (auto* refusal = std::get_if<response>(&outcome))
    return std::move(*refusal);
  const tpm_attested_key& key = std::get<tpm_attested_key>(outcome);
  // The key is TPM-resident (fixedTPM|fixedParent|sensitiveDataOrigin, certified by an AK
  // that the EK certificate's TPM activated): it cannot be exported.
  std::string claims = ",\"attestation_type\":\"tpm\"";
  claims += ",\"key_storage\":\"tpm\"";
  claims += ",\"key_exportable\":false";
  claims += ",\"tpm_ek_certificate_sha256\":" + quote(key.ek_cert_sha256);
  claims += ",\"tpm_ak_name\":" + quote(key.ak_name);
  return attestation_answer(now, key.key_id, key.client_id, claims);
}

// --- token endpoint (protocol.md §7, §10) ---

response authority_impl::token(const request& req) {
  const std::string correlation_id(req.header("client-request-id").value_or(""));
  response r = token_answer(req, correlation_id);
  r.set("Cache-Control", "no-store, no-cache");
  if (!correlation_id.empty() && iequals(req.header("return-client-request-id").value_or(""), "true"))
    r.set("client-request-id", correlation_id);
  return r;
}

response authority_impl::token_answer(const request& req, std::string_view correlation_id) {
  const std::int64_t now = now_();
  auto error = [&](int status, std::string_view err, int code, std::string_view message) {
    return aad_error(status, err, code, message, correlation_id, now);
  };

  if (req.method != "POST")
    return error(400, "invalid_request", aadsts_post_only,
                 "The endpoint only accepts POST requests. Received a " + req.method + " request.");

  const std::string_view path = req.path;
  if (path.size() <= token_path_suffix.size() + 1 || path.front() != '/' ||
      path.substr(path.size() - token_path_suffix.size()) != token_path_suffix)
    return response::oauth_error(404, "not_found", "no token endpoint at this path");
  const std::string_view tenant = path.substr(1, path.size() - token_path_suffix.size() - 1);
  if (tenant.find('/') != std::string_view::npos || !iequals(tenant, cfg_.tenant_id))
    return error(400, "invalid_request", aadsts_tenant_not_found,
                 "Tenant '" + std::string(tenant) + "' not found. Check to make sure you have "
                 "the correct tenant ID and are signing into the correct cloud.");

  const std::string content_type = detail::to_lower(req.header("content-type").value_or(""));
  if (content_type.rfind("application/x-www-form-urlencoded", 0) != 0)
    return error(400, "invalid_request", aadsts_missing_parameter,
                 "The request body must contain the following parameter: 'grant_type'. (The "
                 "body must be application/x-www-form-urlencoded.)");
  auto fields = detail::parse_form(req.body);
  if (!fields)
    return error(400, "invalid_request", aadsts_invalid_value, fields.error());
  detail::string_members form;
  for (auto& [name, value] : *fields) {
    if (form.count(name) != 0)
      return error(400, "invalid_request", aadsts_invalid_value,
                   "The request parameter '" + name + "' appears more than once.");
    form.emplace(name, value);
  }
  auto param = [&](std::string_view name) -> const std::string* {
    const auto it = form.find(name);
    return it == form.end() ? nullptr : &it->second;
  };
  auto missing = [&](std::string_view name) {
    return error(400, "invalid_request", aadsts_missing_parameter,
                 "The request body must contain the following parameter: '" +
                   std::string(name) + "'.");
  };

  const std::string* grant_type = param("grant_type");
  if (grant_type == nullptr || grant_type->empty())
    return missing("grant_type");
  if (*grant_type != "client_credentials")
    return error(400, "unsupported_grant_type", aadsts_unsupported_grant,
                 "The app requested an unsupported grant type '" + *grant_type + "'.");
  const std::string* client_id = param("client_id");
  if (client_id == nullptr || client_id->empty())
    return missing("client_id");
  if (param("client_assertion") != nullptr || param("client_assertion_type") != nullptr ||
      param("client_secret") != nullptr)
    return error(400, "invalid_request", aadsts_secret_presented,
                 "The client authenticates with its mTLS certificate, so neither "
                 "'client_assertion' nor 'client_secret' may be presented.");
  const std::string* scope = param("scope");
  if (scope == nullptr || scope->empty())
    return missing("scope");
  const bool default_scope =
    scope->size() > default_scope_suffix.size() &&
    scope->compare(scope->size() - default_scope_suffix.size(), std::string::npos,
                   default_scope_suffix) == 0 &&
    scope->find_first_of(" \t") == std::string::npos;
  if (!default_scope)
    return error(400, "invalid_scope", aadsts_scope_not_default,
                 "The provided value for scope " + *scope + " is not valid. Client credential "
                 "flows must have a scope value with /.default suffixed to the resource "
                 "identifier (application ID URI).");
  const std::string audience = scope->substr(0, scope->size() - default_scope_suffix.size());

  const std::string* token_type_param = param("token_type");
  bool pop = false;
  if (token_type_param != nullptr) {
    if (iequals(*token_type_param, "mtls_pop"))
      pop = true;
    else if (!iequals(*token_type_param, "bearer"))
      return error(400, "invalid_request", aadsts_invalid_value,
                   "The provided value for the input parameter 'token_type' is not valid. "
                   "Expected 'mtls_pop' or 'bearer'.");
  }
  if (const std::string* claims = param("claims"); claims != nullptr) {
    if (auto parsed = detail::read_string_members(*claims, {}); !parsed)
      return error(400, "invalid_request", aadsts_invalid_value,
                   "The provided value for the input parameter 'claims' is not valid: it must "
                   "be a non-empty JSON object.");
  }

  // The client certificate: issued by us, in its time range, not revoked, for this client.
  if (req.client_cert_der.empty())
    return error(401, "invalid_client", aadsts_no_credential,
                 "No client certificate was presented over mTLS. The request must carry a "
                 "client credential.");
  auto cert = verified_client_cert(req.client_cert_der);
  if (!cert)
    return error(401, "invalid_client", aadsts_cert_issuer, cert.error());
  if (now < cert->not_before)
    return error(401, "invalid_client", aadsts_cert_time_range,
                 "The client certificate is not yet valid (notBefore is in the future).");
  if (now > cert->not_after)
    return error(401, "invalid_client", aadsts_cert_time_range,
                 "The client certificate has expired (notAfter is in the past).");
  if (cert->token_not_after > 0 && now >= cert->token_not_after)
    return error(401, "invalid_client", aadsts_token_not_after,
                 "The client certificate is past its token_not_after: it can no longer get "
                 "tokens (mint a new one).");
  if (is_revoked(cert->serial_hex))
    return error(401, "invalid_client", aadsts_cert_revoked,
                 "The client certificate has been revoked.");
  if (!iequals(*client_id, cert->subject_cn))
    return error(401, "invalid_client", aadsts_cert_claim_value,
                 "The client_id '" + *client_id + "' does not match the subject CN of the "
                 "client certificate.");

  const std::int64_t lifetime = cfg_.token_lifetime.count();
  const std::string object_id = object_id_of(cert->subject_cn);
  std::string claims = "{\"aud\":" + quote(audience);
  claims += ",\"iss\":" + quote(urls().token + "/" + cfg_.tenant_id + "/v2.0");
  claims += ",\"iat\":" + std::to_string(now);
  claims += ",\"nbf\":" + std::to_string(now);
  claims += ",\"exp\":" + std::to_string(now + lifetime);
  claims += ",\"tid\":" + quote(cfg_.tenant_id);
  claims += ",\"appid\":" + quote(cert->subject_cn);
  claims += ",\"idtyp\":\"app\"";
  claims += ",\"oid\":" + quote(object_id);
  claims += ",\"sub\":" + quote(object_id);
  claims += ",\"ver\":\"2.0\"";
  claims += ",\"jti\":" + quote(platform::uuid_v4());
  if (pop)
    claims += ",\"cnf\":{\"x5t#S256\":" + quote(cert->x5t_s256) + "}";
  claims += "}";
  auto jwt = platform::sign_jwt_rs256(pki_.token_key.get(), claims, pki_.token_kid);
  if (!jwt)
    return server_error("signing the access token: " + jwt.error());

  std::string body = "{\"token_type\":";
  body += pop ? "\"mtls_pop\"" : "\"Bearer\"";
  body += ",\"expires_in\":" + std::to_string(lifetime);
  body += ",\"ext_expires_in\":" + std::to_string(lifetime);
  body += ",\"access_token\":" + quote(*jwt);
  if (cfg_.refresh_in)
    body += ",\"refresh_in\":" + std::to_string(cfg_.refresh_in->count());
  body += "}";
  return response::json(200, std::move(body));
}

result<platform::cert_info> authority_impl::verified_client_cert(const std::string& der) const {
  {
    std::lock_guard<std::mutex> lock(verified_mutex_);
    if (auto it = verified_.find(der); it != verified_.end())
      return it->second;
  }
  auto cert = platform::inspect_certificate(der);
  if (!cert)
    return fail("The client certificate could not be parsed.");
  if (!platform::certificate_signed_by(cert->der, pki_.issuer_key.get()))
    return fail(std::string("The client certificate was not issued by ") + detail::issuer_cn + ".");
  std::lock_guard<std::mutex> lock(verified_mutex_);
  verified_.emplace(der, *cert);
  return *cert;
}

std::string authority_impl::object_id_of(std::string_view client_id) const {
  if (iequals(cfg_.system_identity.client_id, client_id) && !cfg_.system_identity.object_id.empty())
    return cfg_.system_identity.object_id;
  for (const identity& id : cfg_.user_identities)
    if (iequals(id.client_id, client_id) && !id.object_id.empty())
      return id.object_id;
  return std::string(client_id);
}

bool authority_impl::is_revoked(const std::string& serial_hex) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = by_serial_.find(detail::to_lower(serial_hex));
  return it != by_serial_.end() && issued_[it->second].revoked;
}

// --- resource server ---

response authority_impl::resource(const request& req) {
  const std::int64_t now = now_();
  const std::string_view auth = req.header("authorization").value_or("");
  if (auth.empty())
    return detail::resource_refusal("mtls_pop", "invalid_request", "no Authorization header");
  const auto space = auth.find(' ');
  const std::string_view scheme = auth.substr(0, space);
  std::string_view token =
    space == std::string_view::npos ? std::string_view{} : auth.substr(space + 1);
  while (!token.empty() && token.front() == ' ')
    token.remove_prefix(1);
  const bool pop = iequals(scheme, "mtls_pop");
  if (!pop && !iequals(scheme, "bearer"))
    return detail::resource_refusal("mtls_pop", "invalid_request",
                                    "Authorization scheme must be mtls_pop or Bearer");
  const std::string_view challenge = pop ? "mtls_pop" : "Bearer";
  auto refuse = [&](std::string_view why) {
    return detail::resource_refusal(challenge, "invalid_token", why);
  };
  if (token.empty())
    return refuse("the Authorization header carries no token");

  auto parts = platform::split_jwt(token);
  if (!parts)
    return refuse("the token is not a JWT");
  if (!platform::verify_jwt_rs256(*parts, pki_.token_key.get()))
    return refuse("the token signature does not verify with the token signing key");
  auto claims = platform::parse_jwt_claims(parts->payload_json);
  if (!claims)
    return refuse("the token claims do not parse");
  if (!claims->exp || now >= *claims->exp)
    return refuse("the token has expired");
  if (claims->nbf && now < *claims->nbf)
    return refuse("the token is not yet valid");

  if (pop) {
    if (claims->cnf_x5t_s256.empty())
      return refuse("the token is not bound to a certificate (no cnf claim)");
    if (req.client_cert_der.empty())
      return refuse("no client certificate was presented for the bound token");
    if (platform::x5t_s256(req.client_cert_der) != claims->cnf_x5t_s256)
      return refuse("the presented certificate is not the one the token is bound to");
  } else if (!claims->cnf_x5t_s256.empty()) {
    return refuse("a certificate-bound (mtls_pop) token cannot be used as a bearer token");
  }
  std::string body = "{\"ok\":true,\"appid\":" + quote(claims->appid);
  body += ",\"token_type\":";
  body += pop ? "\"mtls_pop\"" : "\"Bearer\"";
  // Whether the caller said the token is bound (x-ms-tokenboundauth: true, as MSAL's calls
  // with a bound token do): reported, not required.
  body += ",\"token_bound_auth\":";
  body += iequals(req.header("x-ms-tokenboundauth").value_or(""), "true") ? "true" : "false";
  body += "}";
  return response::json(200, std::move(body));
}

// --- IMDS v1 (protocol.md §8) ---

result<std::string> authority_impl::v1_token_response(const identity& who,
                                                      std::string_view resource) {
  if (resource.empty())
    return fail("resource is empty");
  const std::int64_t now = now_();
  const std::int64_t lifetime = cfg_.v1_token_lifetime.count();
  const std::string object_id =
    who.object_id.empty() ? object_id_of(who.client_id) : who.object_id;
  std::string claims = "{\"aud\":" + quote(resource);
  claims += ",\"iss\":" + quote("https://sts.windows.net/" + cfg_.tenant_id + "/");
  claims += ",\"iat\":" + std::to_string(now);
  claims += ",\"nbf\":" + std::to_string(now);
  claims += ",\"exp\":" + std::to_string(now + lifetime);
  claims += ",\"tid\":" + quote(cfg_.tenant_id);
  claims += ",\"appid\":" + quote(who.client_id);
  claims += ",\"idtyp\":\"app\"";
  claims += ",\"oid\":" + quote(object_id);
  claims += ",\"sub\":" + quote(object_id);
  claims += ",\"ver\":\"1.0\"";
  claims += ",\"jti\":" + quote(platform::uuid_v4()) + "}";
  auto jwt = platform::sign_jwt_rs256(pki_.token_key.get(), claims, pki_.token_kid);
  if (!jwt)
    return fail("signing the v1 access token: " + jwt.error());

  const std::string lifetime_text = std::to_string(lifetime);
  std::string body = "{\"access_token\":" + quote(*jwt);
  body += ",\"client_id\":" + quote(who.client_id);
  body += ",\"expires_in\":" + quote(lifetime_text);
  body += ",\"expires_on\":" + quote(std::to_string(now + lifetime));
  body += ",\"ext_expires_in\":" + quote(lifetime_text);
  body += ",\"not_before\":" + quote(std::to_string(now));
  body += ",\"resource\":" + quote(resource);
  body += ",\"token_type\":\"Bearer\"}";
  return body;
}

// --- administration ---

result<void> authority_impl::revoke(std::string_view serial_or_thumbprint) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::size_t index = 0;
  if (auto s = by_serial_.find(detail::to_lower(serial_or_thumbprint)); s != by_serial_.end())
    index = s->second;
  else if (auto t = by_x5t_.find(std::string(serial_or_thumbprint)); t != by_x5t_.end())
    index = t->second;
  else
    return fail("no issued certificate has serial or x5t#S256 '" +
                std::string(serial_or_thumbprint) + "'");
  issued_[index].revoked = true;
  return ok();
}

} // namespace

result<std::unique_ptr<authority>> authority::create(const config& cfg, std::string state_dir,
                                                     unix_clock now) {
  if (!now)
    return fail("authority: a clock is required");
  auto pki = detail::authority_pki_create(cfg, std::move(state_dir), now());
  if (!pki)
    return pki.fail();
  std::unique_ptr<tpm_attestation> tpm;
  if (!cfg.tpm_ek_ca.empty()) {
    auto made = tpm_attestation::create(cfg.tpm_ek_ca, cfg.tpm_challenge_lifetime,
                                        static_cast<std::size_t>(cfg.tpm_max_challenges));
    if (!made)
      return fail("tpm_ek_ca: " + made.error());
    tpm = std::move(*made);
  }
  return std::unique_ptr<authority>(
    std::make_unique<authority_impl>(cfg, std::move(now), std::move(*pki), std::move(tpm)));
}

} // namespace msiv2::sim
