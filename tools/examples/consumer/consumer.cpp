// msiv2-consumer: a program outside the msiv2 source tree that uses an installed msiv2.
//
// It gets an mtls_pop token from the module and calls a resource with it over mTLS: the
// token goes into "Authorization: mtls_pop <token>", and the token's binding (certificate
// chain and key handle) is presented as the TLS client certificate through libcurl's
// SSL_CTX callback and msiv2::io::client_identity::apply_to.
//
//   msiv2-consumer --imds URL --ca-file PEM --resource-url URL [--resource R] [--trust-host H]
//
// --trust-host adds H to the hosts the token and attestation endpoints IMDS names may be on
// (the Azure clouds' by default; "127.0.0.1" for the simulator).
//
// Prints the msiv2 version, the token's expiry and x5t#S256 (never the token), then the
// resource's HTTP status and body. Exits 0 when the resource answered 200, 1 otherwise,
// 2 on bad arguments.

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <curl/curl.h>

#include <msiv2/msiv2.hpp>

namespace {

struct options {
  std::string imds;
  std::string ca_file;
  std::string resource = "https://management.azure.com";
  std::string resource_url;
  std::vector<std::string> trusted_hosts;
};

int usage(const std::string& why) {
  std::fprintf(stderr,
               "msiv2-consumer: %s\n"
               "usage: msiv2-consumer --imds URL --ca-file PEM --resource-url URL "
               "[--resource R] [--trust-host H]\n",
               why.c_str());
  return 2;
}

std::size_t append_body(char* data, std::size_t size, std::size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

// libcurl's OpenSSL backend hands us its SSL_CTX before the handshake.
CURLcode use_binding(CURL*, void* ssl_ctx, void* identity) {
  auto r = static_cast<const msiv2::io::client_identity*>(identity)->apply_to(
    static_cast<SSL_CTX*>(ssl_ctx));
  if (!r) {
    std::fprintf(stderr, "msiv2-consumer: cannot use the binding: %s\n", r.error().c_str());
    return CURLE_SSL_CERTPROBLEM;
  }
  return CURLE_OK;
}

} // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (i + 1 >= argc)
      return usage(arg + " needs a value");
    std::string value = argv[++i];
    if (arg == "--imds")
      o.imds = value;
    else if (arg == "--ca-file")
      o.ca_file = value;
    else if (arg == "--resource")
      o.resource = value;
    else if (arg == "--resource-url")
      o.resource_url = value;
    else if (arg == "--trust-host")
      o.trusted_hosts.push_back(value);
    else
      return usage("unknown argument '" + arg + "'");
  }
  if (o.imds.empty() || o.resource_url.empty())
    return usage("--imds and --resource-url are required");
  std::printf("msiv2 %s\n", msiv2::version());

  msiv2::client_options copts;
  copts.config.imds_base_url = o.imds;
  copts.config.ca_file = o.ca_file;
  copts.config.cache_dir.clear(); // memory only: this example leaves no files behind
  copts.config.trust_hosts(o.trusted_hosts);
  auto client = msiv2::client::create(std::move(copts));
  if (!client) {
    std::fprintf(stderr, "msiv2-consumer: cannot start the module: %s\n",
                 client.error().c_str());
    return 1;
  }

  msiv2::token_request req;
  req.resource = o.resource;
  req.type = msiv2::token_type::mtls_pop;
  auto token = (*client)->get_token_blocking(req);
  if (!token) {
    std::fprintf(stderr, "msiv2-consumer: no token: %s\n", msiv2::render(token.error()).c_str());
    return 1;
  }
  if (!token->binding || !token->binding->key) {
    std::fprintf(stderr, "msiv2-consumer: the mtls_pop token came without a binding\n");
    return 1;
  }
  auto now = std::chrono::duration_cast<std::chrono::seconds>(
                std::chrono::system_clock::now().time_since_epoch()).count();
  std::printf("token: mtls_pop, x5t#S256 %s, expires in %lld s\n",
              token->binding->x5t_s256.c_str(),
              static_cast<long long>(token->expires_on - now));

  auto identity = msiv2::io::client_identity::create(
    token->binding->certificate_chain, msiv2::platform::share_key(token->binding->key->get()));
  if (!identity) {
    std::fprintf(stderr, "msiv2-consumer: bad binding: %s\n", identity.error().c_str());
    return 1;
  }

  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  std::string authorization = "Authorization: mtls_pop " + token->access_token;
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> headers(
    curl_slist_append(nullptr, authorization.c_str()), curl_slist_free_all);
  // As MSAL does on calls made with a bound token (README "Protocol").
  // (curl_slist_append appends in place and returns the same head, or null when out of memory.)
  if (!headers || !curl_slist_append(headers.get(), "x-ms-tokenboundauth: true")) {
    std::fprintf(stderr, "msiv2-consumer: out of memory for the request headers\n");
    return 1;
  }
  std::string body;
  curl_easy_setopt(curl.get(), CURLOPT_URL, o.resource_url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_HTTPHEADER, headers.get());
  if (!o.ca_file.empty())
    curl_easy_setopt(curl.get(), CURLOPT_CAINFO, o.ca_file.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_SSL_CTX_FUNCTION, use_binding);
  curl_easy_setopt(curl.get(), CURLOPT_SSL_CTX_DATA, identity->get());
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, append_body);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT, 20L);
  if (auto rc = curl_easy_perform(curl.get()); rc != CURLE_OK) {
    std::fprintf(stderr, "msiv2-consumer: resource call failed: %s\n", curl_easy_strerror(rc));
    return 1;
  }
  long status = 0;
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &status);
  std::printf("resource: HTTP %ld %s\n", status, body.c_str());
  return status == 200 ? 0 : 1;
}
