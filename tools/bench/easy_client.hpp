#pragma once

// The baselines' client: a minimal, sequential managed-identity v2 client on libcurl's easy
// API making exactly the HTTP calls of the protocol (getplatformmetadata, attestation,
// issuecredential, token), one at a time, with connections kept alive per host (per
// certificate for the token endpoint). No retries, no cache of its own: the floor of the
// critical path, and (behind one lock) the serialized client of the herd baseline.

#include <map>
#include <memory>
#include <string>

#include <curl/curl.h>

#include "io/http.hpp"
#include "platform/openssl.hpp"
#include "platform/result.hpp"

namespace msiv2::bench {

/// A binding certificate as the easy client holds it.
struct easy_binding {
  std::string client_id;
  std::string tenant_id;
  std::string mtls_endpoint;
  std::shared_ptr<const io::client_identity> identity;
};

class easy_client {
public:
  /// `imds`: http://127.0.0.1:P, `ca_file`: the simulator's CA bundle.
  easy_client(std::string imds, std::string ca_file);
  ~easy_client();
  easy_client(const easy_client&) = delete;
  easy_client& operator=(const easy_client&) = delete;

  /// getplatformmetadata (`selector` "client_id=<guid>" or empty), attestation when
  /// `attestation_jwt` is null, else the given JWT, CSR + issuecredential. Fills
  /// *attestation_jwt when it attested.
  result<easy_binding> mint(EVP_PKEY* key, const std::string& selector, bool attest,
                            std::string* attestation_jwt);
  /// getplatformmetadata alone (`selector` as for mint): what a client that holds a
  /// certificate still calls before the token endpoint.
  result<void> metadata(const std::string& selector);
  /// POST the token endpoint over mTLS; the access token.
  result<std::string> token(const easy_binding& b, const std::string& resource);

private:
  struct answer {
    long status = 0;
    std::string body;
  };
  result<answer> perform(CURL* h, const std::string& method, const std::string& url,
                         const std::vector<std::string>& headers, const std::string& body,
                         const io::client_identity* identity);
  CURL* handle_for(const std::string& key);

  std::string imds_;
  std::string ca_file_;
  std::map<std::string, CURL*> handles_;
};

} // namespace msiv2::bench
