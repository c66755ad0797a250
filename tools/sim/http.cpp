#include "tools/sim/http.hpp"

#include <strings.h>

#include "platform/encoding.hpp"

namespace msiv2::sim {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && ::strncasecmp(a.data(), b.data(), a.size()) == 0;
}

} // namespace

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
