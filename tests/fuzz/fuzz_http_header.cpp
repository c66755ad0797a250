// Response header bytes: read_header_line on every line of the input (as curl hands them
// over, line end included), then the Retry-After value and parse_http_date on the first line.

#include <cstddef>
#include <cstdint>
#include <string>

#include "io/http_parse.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace msiv2;
  auto text = fuzz::as_text(data, size);
  io::http_headers headers;
  std::size_t bytes = 0;
  while (!text.empty()) {
    auto nl = text.find('\n');
    auto line = text.substr(0, nl == std::string_view::npos ? text.size() : nl + 1);
    text.remove_prefix(line.size());
    auto kind = io::read_header_line(line, headers);
    if (kind == io::header_line::status_line)
      fuzz::require(headers.fields.empty(), "a status line drops the fields before it");
    bytes += line.size();
  }
  std::size_t kept = 0;
  for (const auto& [name, value] : headers.fields)
    kept += name.size() + value.size();
  fuzz::require(kept <= bytes, "fields hold no more bytes than came in");
  if (auto v = headers.get("Retry-After")) {
    auto delay = io::parse_retry_after(*v, fuzz::seed_time_s);
    fuzz::require(!delay || delay->count() >= 0, "a Retry-After delay is not negative");
  }
  auto [first, rest] = fuzz::first_line(fuzz::as_text(data, size));
  (void)rest;
  (void)io::parse_http_date(first);
  (void)io::parse_retry_after(first, fuzz::seed_time_s);
  return 0;
}
