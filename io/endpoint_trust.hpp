#pragma once

// Which hosts may receive our client certificate or our key's attestation request.
//
// IMDS answers name two endpoints the module then calls over HTTPS: the token endpoint
// (issuecredential's mtls_authentication_endpoint, called with the binding certificate) and
// the attestation service (getplatformmetadata's attestationEndpoint, sent the key's
// attestation request). An answer from IMDS (plain HTTP on the link-local address) must not be
// enough to send either to any host: both must be https, name no user-info, path, query or
// fragment, and their host must match an allow-list. The defaults are the Azure public and
// sovereign clouds' domains; the simulator, demo and tests add loopback explicitly
// (module_config, $MSIV2_TRUSTED_HOSTS).

#include <string>
#include <string_view>
#include <vector>

#include "msiv2/platform/result.hpp"

namespace msiv2::io {

/// Default allow-list of the token endpoint: the mTLS hosts of the Azure clouds
/// (mtlsauth.microsoft.com and its regional <region>.mtlsauth.microsoft.com, the sovereign
/// clouds' mtlsauth.<domain>) and their login.<domain> hosts.
const std::vector<std::string>& default_token_endpoint_hosts();

/// Default allow-list of the attestation endpoint: the Microsoft Azure Attestation domains
/// (<instance>.<region>.attest.azure.net and the sovereign clouds' equivalents).
const std::vector<std::string>& default_attestation_endpoint_hosts();

/// The entries that make the loopback simulator trusted: "127.0.0.1", "::1", "localhost".
const std::vector<std::string>& loopback_hosts();

/// True when `host` (lower case, no brackets, no port) matches an entry of `allowed`: a DNS
/// name matches an entry equal to it or one it ends with after a dot ("westus.mtlsauth.
/// microsoft.com" matches "mtlsauth.microsoft.com"); an IP literal matches only an entry equal
/// to it. Entries are compared without case.
bool host_allowed(std::string_view host, const std::vector<std::string>& allowed);

/// Checks an endpoint URL named by an upstream answer: https, no user-info, a host that is a
/// DNS name of letters, digits, '-' and '.' or an IP literal, an optional numeric port, no path
/// beyond "/", no query and no fragment, and a host on `allowed`. Returns the URL in canonical
/// form ("https://host[:port]", host in lower case, no trailing '/'). The error names `what`,
/// the (sanitized) URL and what is wrong, and says how to trust another host.
result<std::string> check_endpoint(std::string_view url, const std::vector<std::string>& allowed,
                                   std::string_view what);

/// Parses a comma- or space-separated host list ($MSIV2_TRUSTED_HOSTS); empty items are
/// skipped, entries are lower-cased and a leading '.' is dropped.
std::vector<std::string> parse_host_list(std::string_view text);

} // namespace msiv2::io
