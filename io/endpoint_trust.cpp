#include "io/endpoint_trust.hpp"

#include <algorithm>

#include "io/http.hpp"
#include "platform/encoding.hpp"

namespace msiv2::io {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z')
      c = static_cast<char>(c - 'A' + 'a');
  return out;
}

bool is_ipv4_literal(std::string_view host) {
  if (host.empty())
    return false;
  for (char c : host)
    if (!(c >= '0' && c <= '9') && c != '.')
      return false;
  return true;
}

// Letters, digits, '-' and '.', no empty label, no label starting or ending with '-'.
bool is_dns_name(std::string_view host) {
  if (host.empty() || host.size() > 253)
    return false;
  std::size_t label = 0;
  char prev = '.';
  for (char c : host) {
    bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (c == '.') {
      if (label == 0 || prev == '-')
        return false;
      label = 0;
    } else if (alnum || (c == '-' && label > 0)) {
      if (++label > 63)
        return false;
    } else {
      return false;
    }
    prev = c;
  }
  return label > 0 && prev != '-';
}

std::string list_of(const std::vector<std::string>& allowed) {
  std::string out;
  for (const auto& a : allowed) {
    if (out.size() > 200) {
      out += ", ...";
      break;
    }
    out += (out.empty() ? "" : ", ") + a;
  }
  return out.empty() ? "nothing" : out;
}

} // namespace

const std::vector<std::string>& default_token_endpoint_hosts() {
  // MSAL derives the mTLS host from the cloud's login host (login.<domain> ->
  // mtlsauth.<domain>; <region>.login.microsoft.com -> <region>.mtlsauth.microsoft.com); the
  // legacy login.usgovcloudapi.net and login.chinacloudapi.cn have no mTLS host.
  static const std::vector<std::string> hosts{
    "mtlsauth.microsoft.com",           "login.microsoft.com",
    "login.microsoftonline.com",        "mtlsauth.microsoftonline.us",
    "login.microsoftonline.us",         "mtlsauth.partner.microsoftonline.cn",
    "login.partner.microsoftonline.cn", "mtlsauth.sovcloud-identity.fr",
    "login.sovcloud-identity.fr",       "mtlsauth.sovcloud-identity.de",
    "login.sovcloud-identity.de",       "mtlsauth.sovcloud-identity.sg",
    "login.sovcloud-identity.sg",
  };
  return hosts;
}

const std::vector<std::string>& default_attestation_endpoint_hosts() {
  static const std::vector<std::string> hosts{"attest.azure.net", "attest.azure.us"};
  return hosts;
}

const std::vector<std::string>& loopback_hosts() {
  static const std::vector<std::string> hosts{"127.0.0.1", "::1", "localhost"};
  return hosts;
}

bool host_allowed(std::string_view host_in, const std::vector<std::string>& allowed) {
  auto host = lower(host_in);
  bool ip = is_ipv4_literal(host) || host.find(':') != std::string::npos;
  for (const auto& entry_in : allowed) {
    auto entry = lower(entry_in);
    if (entry.empty())
      continue;
    if (host == entry)
      return true;
    if (!ip && host.size() > entry.size() + 1 &&
        host.compare(host.size() - entry.size(), entry.size(), entry) == 0 &&
        host[host.size() - entry.size() - 1] == '.')
      return true;
  }
  return false;
}

result<std::string> check_endpoint(std::string_view url, const std::vector<std::string>& allowed,
                                   std::string_view what) {
  auto shown = platform::sanitize_upstream(url, 200);
  auto bad = [&](const std::string& why) {
    return fail(std::string(what) + " '" + shown + "' is not trusted: " + why);
  };
  if (url.find_first_of("?#") != std::string_view::npos)
    return bad("it has a query or a fragment");
  auto parts = split_url(url);
  if (!parts)
    return bad(parts.error());
  if (parts->scheme != "https")
    return bad("it must be an https URL");
  if (parts->path.find_first_not_of('/') != std::string::npos)
    return bad("it has a path; only scheme, host and port are expected");
  auto host = lower(parts->host);
  bool v6 = host.find(':') != std::string::npos;
  if (v6 ? host.find_first_not_of("0123456789abcdef:.") != std::string::npos
         : !(is_ipv4_literal(host) || is_dns_name(host)))
    return bad("its host is not a DNS name or an IP address");
  if (!parts->port.empty() && (parts->port.size() > 5 || std::stoul(parts->port) > 65535 ||
                               std::stoul(parts->port) == 0))
    return bad("its port is out of range");
  if (!host_allowed(host, allowed))
    return bad("host '" + platform::sanitize_upstream(host, 100) +
               "' is not on the allow-list (" + list_of(allowed) +
               "); a deployment that trusts it adds it to $MSIV2_TRUSTED_HOSTS or "
               "module_config's endpoint host lists");
  std::string out = "https://" + (v6 ? "[" + host + "]" : host);
  if (!parts->port.empty())
    out += ":" + parts->port;
  return out;
}

std::vector<std::string> parse_host_list(std::string_view text) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i <= text.size()) {
    auto end = text.find_first_of(", \t", i);
    if (end == std::string_view::npos)
      end = text.size();
    auto item = lower(text.substr(i, end - i));
    while (!item.empty() && item.front() == '.')
      item.erase(0, 1);
    if (!item.empty() && std::find(out.begin(), out.end(), item) == out.end())
      out.push_back(std::move(item));
    i = end + 1;
  }
  return out;
}

} // namespace msiv2::io
