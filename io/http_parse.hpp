#pragma once

// Readers of HTTP response header bytes, as pure functions: one raw header line as the
// transport receives it (curl_transport's header callback), and the Retry-After value with
// the HTTP date it may carry (io/retry). The unit tests and the fuzz targets (tests/fuzz/)
// call them directly.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

#include "io/http.hpp"

namespace msiv2::io {

/// What one response-header line was (see read_header_line).
enum class header_line {
  status_line,  ///< "HTTP/...": a new response starts (after 100 Continue or a proxy's
                ///< CONNECT answer); the fields read so far were dropped
  field,        ///< "name: value", appended
  continuation, ///< obsolete line folding (leading space or tab), appended to the last
                ///< field's value after one space
  ignored,      ///< anything else: the blank line ending the header, a line without ':', a
                ///< folded line before any field
};

/// Reads one raw header line (CRLF included or not) into `into`. Names and values are
/// trimmed of spaces, tabs and line ends.
header_line read_header_line(std::string_view line, http_headers& into);

/// A Retry-After value (delta-seconds, at most 9 digits, or an IMF-fixdate judged against
/// `now_unix_s`; surrounding white space ignored) as a delay; nullopt when malformed.
std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value,
                                                           std::int64_t now_unix_s);

/// An IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") as Unix seconds; nullopt when `text` is
/// not one (or longer than 64 bytes).
std::optional<std::int64_t> parse_http_date(std::string_view text);

} // namespace msiv2::io
