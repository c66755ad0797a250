#pragma once

// The simulated Instance Metadata Service: routing of IMDS paths to endpoint names and the
// IMDS-side checks of protocol.md §1, §2, §6, §8 and §10 (Metadata header, request id,
// cred-api-version, query selectors, identities). Crypto work goes to the authority.
// Transport-neutral: the server adds the Server header and applies faults.

#include <string>
#include <string_view>

#include "tools/sim/authority.hpp"
#include "tools/sim/config.hpp"
#include "tools/sim/http.hpp"

namespace msiv2::sim {

class imds_service {
public:
  /// `attestation_url` goes into getplatformmetadata's attestationEndpoint. `pki` must outlive
  /// this object.
  imds_service(config cfg, authority& pki, std::string attestation_url);

  /// The endpoint name of an IMDS path (imds_metadata, imds_issue, imds_token, imds_compute),
  /// or an empty view when IMDS has no such path. Case-insensitive; one trailing '/' is ignored.
  static std::string_view route(std::string_view path);

  /// Answers a request that `route` gave `endpoint` (an empty `endpoint` answers 404).
  /// Thread-safe.
  response handle(std::string_view endpoint, const request& req) const;

private:
  response metadata(const request& req) const;
  response issue(const request& req) const;
  response v1_token(const request& req) const;
  response compute(const request& req) const;

  /// The identity a v2 request selects, or the 400 to answer; `extra_param` is one more
  /// allowed query parameter (bypass_cache on issuecredential).
  const identity* select_v2(const request& req, std::string_view extra_param, response& err) const;
  const identity* find(std::string_view kind, std::string_view value) const;

  config cfg_;
  authority& pki_;
  std::string attestation_url_;
};

} // namespace msiv2::sim
