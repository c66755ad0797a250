#include "io/http_parse.hpp"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <string>

namespace msiv2::io {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

} // namespace

header_line read_header_line(std::string_view line, http_headers& into) {
  if (line.rfind("HTTP/", 0) == 0) {
    into.fields.clear();
    return header_line::status_line;
  }
  if (!line.empty() && (line.front() == ' ' || line.front() == '\t')) {
    if (into.fields.empty())
      return header_line::ignored;
    if (auto more = trim(line); !more.empty())
      into.fields.back().second.append(" ").append(more);
    return header_line::continuation;
  }
  auto colon = line.find(':');
  if (colon == std::string_view::npos)
    return header_line::ignored;
  into.add(std::string(trim(line.substr(0, colon))), std::string(trim(line.substr(colon + 1))));
  return header_line::field;
}

std::optional<std::int64_t> parse_http_date(std::string_view text) {
  // strptime needs a terminated string; an IMF-fixdate has 29 bytes.
  if (text.size() > 64)
    return std::nullopt;
  const std::string copy(text);
  std::tm tm{};
  const char* end = strptime(copy.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  // An IMF-fixdate has a four-digit year; a longer one would overflow later arithmetic.
  if (end == nullptr || *end != '\0' || tm.tm_year > 9999 - 1900)
    return std::nullopt;
  return static_cast<std::int64_t>(timegm(&tm));
}

std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value,
                                                           std::int64_t now_unix_s) {
  std::string text(value);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
    text.pop_back();
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front())))
    text.erase(text.begin());
  if (!text.empty() && std::all_of(text.begin(), text.end(),
                                   [](unsigned char c) { return std::isdigit(c) != 0; })) {
    if (text.size() > 9)
      return std::nullopt;
    return std::chrono::milliseconds(std::stoll(text) * 1000);
  }
  if (auto when = parse_http_date(text))
    return std::chrono::milliseconds(std::max<std::int64_t>(0, *when - now_unix_s) * 1000);
  return std::nullopt;
}

} // namespace msiv2::io
