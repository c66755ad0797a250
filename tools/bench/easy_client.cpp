#include "tools/bench/easy_client.hpp"

#include "actors/cert_issuer.hpp"

#include "io/json.hpp"
#include "platform/csr.hpp"
#include "platform/encoding.hpp"
#include "platform/keys.hpp"

namespace msiv2::bench {

namespace {

std::size_t on_body(char* data, std::size_t size, std::size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

CURLcode on_ssl_ctx(CURL*, void* ssl_ctx, void* user) {
  auto* id = static_cast<const io::client_identity*>(user);
  return id->apply_to(static_cast<SSL_CTX*>(ssl_ctx)) ? CURLE_OK : CURLE_SSL_CERTPROBLEM;
}

const std::string v2_query = "cred-api-version=2.0";

} // namespace

easy_client::easy_client(std::string imds, std::string ca_file)
    : imds_(std::move(imds)), ca_file_(std::move(ca_file)) {}

easy_client::~easy_client() {
  for (auto& [k, h] : handles_)
    curl_easy_cleanup(h);
}

CURL* easy_client::handle_for(const std::string& key) {
  auto& h = handles_[key];
  if (h == nullptr)
    h = curl_easy_init();
  return h;
}

result<easy_client::answer> easy_client::perform(CURL* h, const std::string& method,
                                                 const std::string& url,
                                                 const std::vector<std::string>& headers,
                                                 const std::string& body,
                                                 const io::client_identity* identity) {
  if (h == nullptr)
    return fail("curl_easy_init failed");
  answer a;
  curl_slist* list = nullptr;
  for (auto& line : headers)
    list = curl_slist_append(list, line.c_str());
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &a.body);
  curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 20000L);
  if (method == "POST") {
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  } else {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  }
  if (url.rfind("https://", 0) == 0)
    curl_easy_setopt(h, CURLOPT_CAINFO, ca_file_.c_str());
  if (identity != nullptr) {
    curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
    curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, const_cast<io::client_identity*>(identity));
  }
  auto rc = curl_easy_perform(h);
  curl_slist_free_all(list);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, nullptr);
  if (rc != CURLE_OK)
    return fail(method + " " + url + ": " + curl_easy_strerror(rc));
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a.status);
  return a;
}

result<easy_binding> easy_client::mint(EVP_PKEY* key, const std::string& selector, bool attest,
                                       std::string* attestation_jwt) {
  std::string sel = selector.empty() ? "" : "&" + selector;
  std::vector<std::string> imds_headers{"Metadata: true",
                                        "x-ms-client-request-id: " + platform::uuid_v4()};
  auto meta = perform(handle_for("imds"), "GET",
                      imds_ + "/metadata/identity/getplatformmetadata?" + v2_query + sel,
                      imds_headers, "", nullptr);
  if (!meta)
    return fail(meta.error());
  if (meta->status != 200)
    return fail("getplatformmetadata: HTTP " + std::to_string(meta->status));
  auto parsed = parse_platform_metadata(meta->body);
  if (!parsed)
    return fail(parsed.error());
  const std::string* client = &parsed->client_id;
  const std::string* tenant = &parsed->tenant_id;
  const std::string* att = &parsed->attestation_endpoint;

  std::string jwt = attestation_jwt != nullptr ? *attestation_jwt : std::string();
  if (attest && jwt.empty()) {
    auto spki = platform::public_key_der(key);
    auto nonce = platform::base64url_encode(platform::random_bytes(24));
    auto sig = platform::sign_pss_sha256(key, nonce);
    if (!spki || !sig)
      return fail("could not sign the attestation nonce");
    auto body = "{\"public_key\":" + platform::json_quote(platform::base64_encode(*spki)) +
                ",\"client_id\":" + platform::json_quote(*client) +
                ",\"nonce\":" + platform::json_quote(nonce) +
                ",\"signature\":" + platform::json_quote(platform::base64_encode(*sig)) + "}";
    auto r = perform(handle_for("attestation"), "POST", *att + "/attest/keyguard",
                     {"Content-Type: application/json"}, body, nullptr);
    if (!r)
      return fail(r.error());
    if (r->status != 200)
      return fail("attestation: HTTP " + std::to_string(r->status));
    auto a = io::json_object::parse(r->body, "attestation response");
    if (!a)
      return fail(a.error());
    auto token = a->required_string("token");
    if (!token)
      return fail(token.error());
    jwt = *token;
    if (attestation_jwt != nullptr)
      *attestation_jwt = jwt;
  }

  auto csr = platform::build_csr(key, *client, *tenant, parsed->cuid_json);
  if (!csr)
    return fail("CSR: " + csr.error());
  std::string body = "{\"csr\":" + platform::json_quote(platform::base64_encode(*csr));
  if (!jwt.empty())
    body += ",\"attestation_token\":" + platform::json_quote(jwt);
  body += "}";
  imds_headers.push_back("Content-Type: application/json; charset=utf-8");
  auto issued = perform(handle_for("imds"), "POST",
                        imds_ + "/metadata/identity/issuecredential?" + v2_query + sel,
                        imds_headers, body, nullptr);
  if (!issued)
    return fail(issued.error());
  if (issued->status != 200)
    return fail("issuecredential: HTTP " + std::to_string(issued->status) + ": " +
                issued->body.substr(0, 200));
  auto idoc = io::json_object::parse(issued->body, "issuecredential response");
  if (!idoc)
    return fail(idoc.error());
  auto cert_b64 = idoc->required_string("certificate");
  auto endpoint = idoc->required_string("mtls_authentication_endpoint");
  if (!cert_b64 || !endpoint)
    return fail("issuecredential response: certificate or endpoint missing");
  auto der = platform::base64_decode(*cert_b64);
  if (!der)
    return fail("certificate: " + der.error());
  auto identity = io::client_identity::create({*der}, platform::share_key(key));
  if (!identity)
    return fail(identity.error());
  easy_binding b;
  b.client_id = *client;
  b.tenant_id = *tenant;
  b.mtls_endpoint = *endpoint;
  b.identity = *identity;
  return b;
}

result<void> easy_client::metadata(const std::string& selector) {
  std::string sel = selector.empty() ? "" : "&" + selector;
  auto meta = perform(handle_for("imds"), "GET",
                      imds_ + "/metadata/identity/getplatformmetadata?" + v2_query + sel,
                      {"Metadata: true", "x-ms-client-request-id: " + platform::uuid_v4()}, "",
                      nullptr);
  if (!meta)
    return fail(meta.error());
  if (meta->status != 200)
    return fail("getplatformmetadata: HTTP " + std::to_string(meta->status));
  auto parsed = parse_platform_metadata(meta->body);
  if (!parsed)
    return fail(parsed.error());
  return ok();
}

result<std::string> easy_client::token(const easy_binding& b, const std::string& resource) {
  auto body = "grant_type=client_credentials&client_id=" + platform::url_encode(b.client_id) +
              "&scope=" + platform::url_encode(resource + "/.default") + "&token_type=mtls_pop";
  // One handle (so one kept-alive connection) per certificate.
  auto r = perform(handle_for("token|" + b.client_id), "POST",
                   b.mtls_endpoint + "/" + b.tenant_id + "/oauth2/v2.0/token",
                   {"Content-Type: application/x-www-form-urlencoded", "Accept: application/json"},
                   body, b.identity.get());
  if (!r)
    return fail(r.error());
  if (r->status != 200)
    return fail("token endpoint: HTTP " + std::to_string(r->status) + ": " +
                r->body.substr(0, 200));
  auto doc = io::json_object::parse(r->body, "token response");
  if (!doc)
    return fail(doc.error());
  auto access = doc->required_string("access_token");
  if (!access)
    return fail(access.error());
  return *access;
}

} // namespace msiv2::bench
