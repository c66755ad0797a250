#include "tools/sim/http.hpp"

#include <strings.h>

#include "platform/encoding.hpp"

namespace msiv2::sim {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && ::strncasecmp(a.data(), b.data(), a.size()) == 0;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

// In a path '+' is an ordinary character; only percent-escapes are decoded.
result<std::string> decode_path(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    int hi = i + 2 < s.size() ? hex_digit(s[i + 1]) : -1;
    int lo = i + 2 < s.size() ? hex_digit(s[i + 2]) : -1;
    if (hi < 0 || lo < 0)
      return fail("malformed percent-escape in the request path");
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

} // namespace

result<void> parse_target(std::string_view target, request& req) {
  auto q = target.find('?');
  auto path = decode_path(target.substr(0, q));
  if (!path)
    return path.fail();
  req.path = std::move(*path);
  if (q == std::string_view::npos)
    return ok();
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    auto amp = rest.find('&');
    std::string_view part = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
    if (part.empty())
      continue;
    auto eq = part.find('=');
    auto name = platform::url_decode(part.substr(0, eq));
    if (!name)
      return fail("query parameter name: " + name.error());
    auto value = platform::url_decode(eq == std::string_view::npos ? std::string_view{}
                                                                   : part.substr(eq + 1));
    if (!value)
      return fail("query parameter '" + *name + "': " + value.error());
    req.query.emplace_back(std::move(*name), std::move(*value));
  }
  return ok();
}

std::optional<std::string_view> request::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (iequals(k, name))
      return std::string_view(v);
  return std::nullopt;
}

std::optional<std::string_view> request::param(std::string_view name) const {
  for (const auto& [k, v] : query)
    if (k == name)
      return std::string_view(v);
  return std::nullopt;
}

response& response::set(std::string name, std::string value) {
  for (auto& [k, v] : headers) {
    if (iequals(k, name)) {
      v = std::move(value);
      return *this;
    }
  }
  headers.emplace_back(std::move(name), std::move(value));
  return *this;
}

response response::json(int status, std::string body) {
  response r;
  r.status = status;
  r.body = std::move(body);
  r.set("Content-Type", "application/json; charset=utf-8");
  return r;
}

response response::oauth_error(int status, std::string_view error, std::string_view description,
                               std::string_view extra_json_members) {
  std::string body = "{\"error\":" + platform::json_quote(error) +
                     ",\"error_description\":" + platform::json_quote(description);
  if (!extra_json_members.empty()) {
    body += ',';
    body += extra_json_members;
  }
  body += '}';
  return json(status, std::move(body));
}

} // namespace msiv2::sim
