#pragma once

// Transport-neutral request and response of the simulator. The Beast server (server.cpp)
// converts to and from these, so endpoint logic compiles without Beast and is easy to test.

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "platform/result.hpp"

namespace msiv2::sim {

/// One HTTP request as an endpoint sees it.
struct request {
  std::string method;  ///< "GET", "POST", ...
  std::string target;  ///< raw request target, path and query
  std::string path;    ///< decoded path, no query
  /// Decoded query parameters in the order received (duplicates kept).
  std::vector<std::pair<std::string, std::string>> query;
  /// Header fields in the order received; names as sent.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  /// DER of the TLS client certificate the peer presented (empty when none or plain HTTP).
  std::string client_cert_der;

  /// First header with this name (case-insensitive).
  std::optional<std::string_view> header(std::string_view name) const;
  /// First query parameter with this name (case-sensitive, as IMDS is).
  std::optional<std::string_view> param(std::string_view name) const;
};

/// One HTTP response.
/// Splits a raw request target into `req.path` (percent-decoded) and `req.query` (decoded
/// parameters in order); the error says what was malformed.
result<void> parse_target(std::string_view target, request& req);

struct response {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  /// Adds or replaces a header (case-insensitive name match).
  response& set(std::string name, std::string value);
  /// A JSON response (Content-Type: application/json; charset=utf-8).
  static response json(int status, std::string body);
  /// An OAuth-style error: {"error":..,"error_description":..} plus `extra_json_members`
  /// (already encoded, e.g. "\"error_codes\":[1000611]") when given.
  static response oauth_error(int status, std::string_view error, std::string_view description,
                              std::string_view extra_json_members = {});
};

} // namespace msiv2::sim
