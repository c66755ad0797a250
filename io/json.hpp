#pragma once

// JSON reading helpers on simdjson On-Demand, shared by every response parser.
//
// A response is parsed once into a json_object: its top-level members copied out of the
// parser (strings unescaped, everything else as raw JSON text), so callers never hold a
// string_view into a parser buffer. Getters check presence and type and name the member in
// their errors ("issuecredential response: member \"certificate\" is missing").

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "platform/result.hpp"

namespace msiv2::io {

/// The type of a JSON value.
enum class json_type { string, number, boolean, null, object, array };

/// Stable lower-case name of a JSON type ("string").
const char* to_string(json_type t);

/// One member value, copied out of the parser.
struct json_value {
  json_type type = json_type::null;
  /// Unescaped text for strings; the raw JSON text for every other type.
  std::string text;
  /// The raw JSON text as it appeared (strings with their quotes and escapes), trimmed.
  std::string raw;
};

/// The top-level members of one JSON object.
class json_object {
public:
  /// Parses `text` as exactly one JSON object (nothing but whitespace after it). `what`
  /// names the document in every error, of this parse and of the accessors below:
  /// "malformed <what>: <why>", where <why> names the member when one is at fault
  /// ("malformed getplatformmetadata response: member \"clientId\" is missing"). Duplicate
  /// member names are an error. The text is copied into a padded buffer, so any string works.
  static result<json_object> parse(std::string_view text, std::string_view what);

  /// The name given to parse() (nested objects: "outer.member").
  const std::string& what() const { return what_; }
  /// Members in document order.
  const std::vector<std::pair<std::string, json_value>>& members() const { return members_; }
  /// The member named `name`, or null.
  const json_value* find(std::string_view name) const;
  /// True when the member is present (null included).
  bool has(std::string_view name) const { return find(name) != nullptr; }

  /// A string member that is present and not empty.
  result<std::string> required_string(std::string_view name) const;
  /// A string member; nullopt when absent or null; an error for any other type. Empty
  /// strings are returned as they are.
  result<std::optional<std::string>> optional_string(std::string_view name) const;
  /// An integer member (a JSON number without fraction or exponent that fits in 64 bits).
  result<std::int64_t> required_integer(std::string_view name) const;
  /// An integer given as a JSON number or as a string of decimal digits ("3599"), as the
  /// token endpoint does for expires_in.
  result<std::int64_t> required_integer_or_numeric_string(std::string_view name) const;
  /// As required_integer_or_numeric_string, but nullopt when absent or null.
  result<std::optional<std::int64_t>> optional_integer_or_numeric_string(std::string_view name) const;
  /// A boolean member.
  result<bool> required_boolean(std::string_view name) const;
  /// A nested object member, parsed (its `what` is "<what>.<name>").
  result<json_object> required_object(std::string_view name) const;
  /// The raw JSON text of a member of any type (strings with their quotes and escapes).
  result<std::string> raw(std::string_view name) const;

private:
  std::string what_;
  std::vector<std::pair<std::string, json_value>> members_;
};

/// Parses a decimal integer: optional '-', then digits, nothing else; fails on overflow.
std::optional<std::int64_t> parse_decimal_int64(std::string_view text);

/// Checks `text` is one JSON object; the error names `what`
/// ("malformed getplatformmetadata response: not a JSON object").
result<void> check_json_object(std::string_view text, std::string_view what);

} // namespace msiv2::io
