#include "tests/support/http_client.hpp"

#include <strings.h>

#include <mutex>

#include <curl/curl.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace msiv2::test {

namespace {

struct transfer {
  http_result* out;
  const tls_options* tls;
};

std::size_t on_body(char* data, std::size_t size, std::size_t n, void* user) {
  static_cast<http_result*>(user)->body.append(data, size * n);
  return size * n;
}

std::size_t on_header(char* data, std::size_t size, std::size_t n, void* user) {
  auto* out = static_cast<http_result*>(user);
  std::string_view line(data, size * n);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r'))
    line.remove_suffix(1);
  if (line.rfind("HTTP/", 0) == 0) {
    out->headers.clear();  // a new answer begins (after 100 Continue)
  } else if (auto colon = line.find(':'); colon != std::string_view::npos) {
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    out->headers.emplace_back(std::string(line.substr(0, colon)), std::string(value));
  }
  return size * n;
}

// Hands the client certificate and key to OpenSSL for this handle's SSL_CTX.
CURLcode on_ssl_ctx(CURL*, void* ssl_ctx, void* user) {
  const auto* tls = static_cast<const tls_options*>(user);
  auto* ctx = static_cast<SSL_CTX*>(ssl_ctx);
  const auto* p = reinterpret_cast<const unsigned char*>(tls->client_cert_der.data());
  X509* cert = d2i_X509(nullptr, &p, static_cast<long>(tls->client_cert_der.size()));
  if (cert == nullptr)
    return CURLE_SSL_CERTPROBLEM;
  int ok = SSL_CTX_use_certificate(ctx, cert);
  X509_free(cert);
  if (ok != 1 || SSL_CTX_use_PrivateKey(ctx, tls->client_key) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1)
    return CURLE_SSL_CERTPROBLEM;
  return CURLE_OK;
}

} // namespace

std::optional<std::string> http_result::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k.size() == name.size() && ::strncasecmp(k.data(), name.data(), k.size()) == 0)
      return v;
  return std::nullopt;
}

http_result http_request(std::string_view method, const std::string& url, const header_list& headers,
                         const std::string& body, const tls_options& tls,
                         std::chrono::milliseconds timeout) {
  static std::once_flag init;
  std::call_once(init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });

  http_result out;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) {
    out.curl_code = CURLE_FAILED_INIT;
    out.error = "curl_easy_init failed";
    return out;
  }
  const std::string method_s(method);
  curl_slist* list = nullptr;
  for (const auto& [name, value] : headers)
    list = curl_slist_append(list, (name + ":" + (value.empty() ? "" : " " + value)).c_str());

  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &out);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &out);
  if (method_s == "GET") {
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
  } else {
    if (method_s == "POST" || !body.empty()) {
      curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
      curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    }
    if (method_s != "POST")
      curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method_s.c_str());
  }
  if (!tls.ca_file.empty())
    curl_easy_setopt(curl, CURLOPT_CAINFO, tls.ca_file.c_str());
  if (!tls.client_cert_der.empty() && tls.client_key != nullptr) {
    curl_easy_setopt(curl, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
    curl_easy_setopt(curl, CURLOPT_SSL_CTX_DATA, &tls);
  }

  CURLcode rc = curl_easy_perform(curl);
  out.curl_code = static_cast<int>(rc);
  if (rc != CURLE_OK)
    out.error = curl_easy_strerror(rc);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  out.status = status;
  curl_slist_free_all(list);
  curl_easy_cleanup(curl);
  return out;
}

http_result http_get(const std::string& url, const header_list& headers, const tls_options& tls) {
  return http_request("GET", url, headers, {}, tls);
}

http_result http_post(const std::string& url, const header_list& headers, const std::string& body,
                      const tls_options& tls) {
  return http_request("POST", url, headers, body, tls);
}

} // namespace msiv2::test
