#include "io/http.hpp"

#include <strings.h>

#include "platform/encoding.hpp"

namespace msiv2::io {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

result<platform::x509_ptr> parse_der(std::string_view der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  platform::x509_ptr cert{d2i_X509(nullptr, &p, static_cast<long>(der.size()))};
  if (!cert)
    return fail(platform::drain_openssl_errors("certificate does not parse"));
  if (p != reinterpret_cast<const unsigned char*>(der.data()) + der.size())
    return fail("certificate has trailing bytes after its DER");
  return cert;
}

} // namespace

void http_headers::add(std::string name, std::string value) {
  fields.emplace_back(std::move(name), std::move(value));
}

void http_headers::set(std::string name, std::string value) {
  std::vector<std::pair<std::string, std::string>> kept;
  kept.reserve(fields.size() + 1);
  for (auto& f : fields)
    if (!iequals(f.first, name))
      kept.push_back(std::move(f));
  kept.emplace_back(std::move(name), std::move(value));
  fields = std::move(kept);
}

std::optional<std::string_view> http_headers::get(std::string_view name) const {
  for (const auto& f : fields)
    if (iequals(f.first, name))
      return std::string_view(f.second);
  return std::nullopt;
}

result<std::shared_ptr<const client_identity>>
client_identity::create(std::vector<std::string> chain_der, platform::pkey_ptr key) {
  if (chain_der.empty())
    return fail("client identity: empty certificate chain");
  if (!key)
    return fail("client identity: no private key");
  std::shared_ptr<client_identity> id{new client_identity()};
  for (std::size_t i = 0; i < chain_der.size(); ++i) {
    auto cert = parse_der(chain_der[i]);
    if (!cert)
      return fail("client identity: chain[" + std::to_string(i) + "]: " + cert.error());
    id->chain_.push_back(std::move(*cert));
  }
  if (X509_check_private_key(id->chain_.front().get(), key.get()) != 1)
    return fail(platform::drain_openssl_errors(
        "client identity: the private key does not match the leaf certificate"));
  id->chain_der_ = std::move(chain_der);
  id->key_ = std::move(key);
  return std::shared_ptr<const client_identity>(std::move(id));
}

result<void> client_identity::apply_to(SSL_CTX* ctx) const {
  if (SSL_CTX_use_certificate(ctx, leaf()) != 1)
    return fail(platform::drain_openssl_errors("SSL_CTX_use_certificate"));
  for (std::size_t i = 1; i < chain_.size(); ++i)
    if (SSL_CTX_add1_chain_cert(ctx, chain_[i].get()) != 1)
      return fail(platform::drain_openssl_errors("SSL_CTX_add1_chain_cert"));
  if (SSL_CTX_use_PrivateKey(ctx, key()) != 1)
    return fail(platform::drain_openssl_errors("SSL_CTX_use_PrivateKey"));
  if (SSL_CTX_check_private_key(ctx) != 1)
    return fail(platform::drain_openssl_errors("SSL_CTX_check_private_key"));
  return ok();
}

const char* to_string(transport_error e) {
  switch (e) {
    case transport_error::none: return "none";
    case transport_error::connect_failed: return "connect_failed";
    case transport_error::connect_timeout: return "connect_timeout";
    case transport_error::timeout: return "timeout";
    case transport_error::tls_failed: return "tls_failed";
    case transport_error::tls_client_cert_rejected: return "tls_client_cert_rejected";
    case transport_error::too_large: return "too_large";
    case transport_error::reset: return "reset";
    case transport_error::cancelled: return "cancelled";
    case transport_error::other: return "other";
  }
  return "unknown";
}

http_response http_response::failure(transport_error kind, std::string message) {
  http_response r;
  r.error = kind;
  r.error_message = std::move(message);
  return r;
}

http_response http_response::with_status(int status, std::string body, http_headers headers) {
  http_response r;
  r.status = status;
  r.body = std::move(body);
  r.headers = std::move(headers);
  return r;
}

result<url_parts> split_url(std::string_view url) {
  url_parts out;
  auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos || scheme_end == 0)
    return fail("URL has no scheme: expected scheme://host/...");
  out.scheme = std::string(url.substr(0, scheme_end));
  for (auto& c : out.scheme)
    if (c >= 'A' && c <= 'Z')
      c = static_cast<char>(c - 'A' + 'a');
  auto rest = url.substr(scheme_end + 3);
  auto authority_end = rest.find_first_of("/?#");
  auto authority = rest.substr(0, authority_end);
  rest = authority_end == std::string_view::npos ? std::string_view{} : rest.substr(authority_end);
  if (authority.find('@') != std::string_view::npos)
    return fail("URL has user information before the host");
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos)
      return fail("URL has an unterminated [IPv6] host");
    out.host = std::string(authority.substr(1, close - 1));
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':')
        return fail("URL has characters after the [IPv6] host");
      out.port = std::string(after.substr(1));
    }
  } else {
    auto colon = authority.find(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos)
      out.port = std::string(authority.substr(colon + 1));
  }
  if (out.host.empty())
    return fail("URL has no host");
  for (char c : out.port)
    if (c < '0' || c > '9')
      return fail("URL port is not a number");
  auto fragment = rest.find('#');
  if (fragment != std::string_view::npos)
    rest = rest.substr(0, fragment);
  auto q = rest.find('?');
  out.path = std::string(rest.substr(0, q));
  if (out.path.empty())
    out.path = "/";
  if (q != std::string_view::npos)
    out.query = std::string(rest.substr(q + 1));
  return out;
}

std::optional<std::string> query_param(std::string_view url, std::string_view name) {
  auto parts = split_url(url);
  if (!parts)
    return std::nullopt;
  std::string_view query = parts->query;
  while (!query.empty()) {
    auto amp = query.find('&');
    auto item = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    auto eq = item.find('=');
    auto key = platform::url_decode(item.substr(0, eq));
    if (!key || *key != name)
      continue;
    if (eq == std::string_view::npos)
      return std::string();
    auto value = platform::url_decode(item.substr(eq + 1));
    if (!value)
      return std::nullopt;
    return std::move(*value);
  }
  return std::nullopt;
}

} // namespace msiv2::io
