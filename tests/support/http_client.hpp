#pragma once

// A blocking HTTP client for tests, on libcurl easy: one fresh handle per call (no connection
// or TLS session reuse), never through a proxy, bounded by a timeout.
//
//   auto r = msiv2::test::http_get(url + "/metadata/identity/getplatformmetadata?cred-api-version=2.0",
//                                  {{"Metadata", "true"}, {"x-ms-client-request-id", id}});
//   BOOST_TEST(r.status == 200);
//
// HTTPS: pass tls_options with the simulator's CA file and, for mTLS, the client certificate
// (DER) and its key. The key goes to OpenSSL as a handle (CURLOPT_SSL_CTX_FUNCTION), never as
// bytes.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <openssl/evp.h>

namespace msiv2::test {

/// Header fields to send, in order. A field with an empty value removes curl's default for
/// that name (`{"Expect", ""}` turns off Expect: 100-continue).
using header_list = std::vector<std::pair<std::string, std::string>>;

/// TLS settings of one request.
struct tls_options {
  std::string ca_file;          ///< PEM bundle to trust; empty = system default
  std::string client_cert_der;  ///< client certificate; empty = none
  EVP_PKEY* client_key = nullptr; ///< private key of client_cert_der (not owned)
};

/// What came back.
struct http_result {
  long status = 0;     ///< HTTP status; 0 when no answer came
  header_list headers; ///< of the final answer (after any 100 Continue), names as sent
  std::string body;
  int curl_code = 0;   ///< CURLcode; 0 = the transfer completed
  std::string error;   ///< curl's message when curl_code != 0

  /// First header with this name (case-insensitive).
  std::optional<std::string> header(std::string_view name) const;
  /// True when the transfer completed (any status).
  bool completed() const { return curl_code == 0; }
};

/// One request with `method` ("GET", "POST", "DELETE", ...). A non-empty `body` is sent as is.
http_result http_request(std::string_view method, const std::string& url,
                         const header_list& headers = {}, const std::string& body = {},
                         const tls_options& tls = {},
                         std::chrono::milliseconds timeout = std::chrono::seconds(20));

/// GET `url`.
http_result http_get(const std::string& url, const header_list& headers = {},
                     const tls_options& tls = {});

/// POST `body` to `url`.
http_result http_post(const std::string& url, const header_list& headers, const std::string& body,
                      const tls_options& tls = {});

} // namespace msiv2::test
