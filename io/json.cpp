#include "io/json.hpp"

#include <limits>
#include <unordered_set>

#include <simdjson.h>

namespace msiv2::io {

namespace {

std::string_view trim_json_space(std::string_view s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// "a string", "an object", "null": for "member \"x\" is <this>, not ...".
std::string with_article(json_type t) {
  switch (t) {
    case json_type::null: return "null";
    case json_type::object:
    case json_type::array: return std::string("an ") + to_string(t);
    default: return std::string("a ") + to_string(t);
  }
}

std::string member_label(std::string_view name) {
  return "member \"" + std::string(name) + "\"";
}

// One parser per thread: parsing reuses its buffers, and a thread parses one document at a
// time (every view into it is copied out before parse() returns).
simdjson::ondemand::parser& thread_parser() {
  thread_local simdjson::ondemand::parser parser;
  return parser;
}

} // namespace

const char* to_string(json_type t) {
  switch (t) {
    case json_type::string: return "string";
    case json_type::number: return "number";
    case json_type::boolean: return "boolean";
    case json_type::null: return "null";
    case json_type::object: return "object";
    case json_type::array: return "array";
  }
  return "unknown";
}

result<json_object> json_object::parse(std::string_view text, std::string_view what) {
  namespace od = simdjson::ondemand;
  json_object out;
  out.what_ = std::string(what);
  auto bad = [&](std::string why) { return fail("malformed " + out.what_ + ": " + why); };

  simdjson::padded_string padded(text);
  od::document doc;
  if (auto err = thread_parser().iterate(padded).get(doc))
    return bad(std::string("not valid JSON (") + simdjson::error_message(err) + ")");
  od::object obj;
  if (doc.get_object().get(obj) != simdjson::SUCCESS)
    return bad("not a JSON object");

  // Names seen so far, for the duplicate check: one hash lookup per member (a scan of the
  // members copied so far made a 1 MiB object of ~95,000 members cost seconds of CPU).
  std::unordered_set<std::string> seen;
  for (auto field_result : obj) {
    if (auto err = field_result.error())
      return bad(std::string("not valid JSON (") + simdjson::error_message(err) + ")");
    od::field field = std::move(field_result).value_unsafe();
    std::string_view key_view;
    if (field.unescaped_key().get(key_view) != simdjson::SUCCESS)
      return bad("a member name is not a valid string");
    std::string name(key_view);
    if (!seen.insert(name).second)
      return bad(member_label(name) + " appears twice");

    od::value v = field.value();
    od::json_type type;
    if (v.type().get(type) != simdjson::SUCCESS)
      return bad(member_label(name) + " has no valid value");
    json_value value;
    std::string_view raw;
    switch (type) {
      case od::json_type::string: {
        value.type = json_type::string;
        raw = v.raw_json_token();
        std::string_view s;
        if (v.get_string().get(s) != simdjson::SUCCESS)
          return bad(member_label(name) + " is not a valid string");
        value.text = std::string(s);
        break;
      }
      case od::json_type::number: {
        value.type = json_type::number;
        raw = v.raw_json_token();
        od::number n;
        if (v.get_number().get(n) != simdjson::SUCCESS)
          return bad(member_label(name) + " is not a valid number");
        break;
      }
      case od::json_type::boolean: {
        value.type = json_type::boolean;
        raw = v.raw_json_token();
        bool b = false;
        if (v.get_bool().get(b) != simdjson::SUCCESS)
          return bad(member_label(name) + " is not a valid boolean");
        break;
      }
      case od::json_type::null: {
        value.type = json_type::null;
        raw = v.raw_json_token();
        bool is_null = false;
        if (v.is_null().get(is_null) != simdjson::SUCCESS || !is_null)
          return bad(member_label(name) + " is not a valid null");
        break;
      }
      case od::json_type::object: {
        value.type = json_type::object;
        od::object inner;
        if (v.get_object().get(inner) != simdjson::SUCCESS || inner.raw_json().get(raw) != simdjson::SUCCESS)
          return bad(member_label(name) + " is not a valid object");
        break;
      }
      case od::json_type::array: {
        value.type = json_type::array;
        od::array inner;
        if (v.get_array().get(inner) != simdjson::SUCCESS || inner.raw_json().get(raw) != simdjson::SUCCESS)
          return bad(member_label(name) + " is not a valid array");
        break;
      }
    }
    value.raw = std::string(trim_json_space(raw));
    if (value.type != json_type::string)
      value.text = value.raw;
    out.members_.emplace_back(std::move(name), std::move(value));
  }

  const char* location = nullptr;
  if (doc.current_location().get(location) == simdjson::SUCCESS)
    return bad("unexpected content after the JSON object");
  return out;
}

const json_value* json_object::find(std::string_view name) const {
  for (const auto& m : members_)
    if (m.first == name)
      return &m.second;
  return nullptr;
}

result<std::string> json_object::required_string(std::string_view name) const {
  auto v = optional_string(name);
  if (!v)
    return v.fail();
  if (!v->has_value())
    return fail("malformed " + what_ + ": " + member_label(name) + " is missing");
  if ((*v)->empty())
    return fail("malformed " + what_ + ": " + member_label(name) + " is empty");
  return std::move(**v);
}

result<std::optional<std::string>> json_object::optional_string(std::string_view name) const {
  const json_value* v = find(name);
  if (v == nullptr || v->type == json_type::null)
    return std::optional<std::string>{};
  if (v->type != json_type::string)
    return fail("malformed " + what_ + ": " + member_label(name) + " is " + with_article(v->type) + ", not a string");
  return std::optional<std::string>{v->text};
}

result<std::int64_t> json_object::required_integer(std::string_view name) const {
  const json_value* v = find(name);
  if (v == nullptr)
    return fail("malformed " + what_ + ": " + member_label(name) + " is missing");
  if (v->type != json_type::number)
    return fail("malformed " + what_ + ": " + member_label(name) + " is " + with_article(v->type) + ", not an integer");
  auto n = parse_decimal_int64(v->text);
  if (!n)
    return fail("malformed " + what_ + ": " + member_label(name) + " is not an integer that fits in 64 bits");
  return *n;
}

result<std::optional<std::int64_t>>
json_object::optional_integer_or_numeric_string(std::string_view name) const {
  const json_value* v = find(name);
  if (v == nullptr || v->type == json_type::null)
    return std::optional<std::int64_t>{};
  if (v->type != json_type::number && v->type != json_type::string)
    return fail("malformed " + what_ + ": " + member_label(name) + " is " + with_article(v->type)
                + ", not an integer or a numeric string");
  auto n = parse_decimal_int64(v->text);
  if (!n)
    return fail("malformed " + what_ + ": " + member_label(name) + " is not a decimal integer that fits in 64 bits");
  return std::optional<std::int64_t>{*n};
}

result<std::int64_t> json_object::required_integer_or_numeric_string(std::string_view name) const {
  auto v = optional_integer_or_numeric_string(name);
  if (!v)
    return v.fail();
  if (!v->has_value())
    return fail("malformed " + what_ + ": " + member_label(name) + " is missing");
  return **v;
}

result<bool> json_object::required_boolean(std::string_view name) const {
  const json_value* v = find(name);
  if (v == nullptr)
    return fail("malformed " + what_ + ": " + member_label(name) + " is missing");
  if (v->type != json_type::boolean)
    return fail("malformed " + what_ + ": " + member_label(name) + " is " + with_article(v->type) + ", not a boolean");
  return v->text == "true";
}

result<json_object> json_object::required_object(std::string_view name) const {
  const json_value* v = find(name);
  if (v == nullptr)
    return fail("malformed " + what_ + ": " + member_label(name) + " is missing");
  if (v->type != json_type::object)
    return fail("malformed " + what_ + ": " + member_label(name) + " is " + with_article(v->type) + ", not an object");
  return parse(v->raw, what_ + "." + std::string(name));
}

result<std::string> json_object::raw(std::string_view name) const {
  const json_value* v = find(name);
  if (v == nullptr)
    return fail("malformed " + what_ + ": " + member_label(name) + " is missing");
  return v->raw;
}

std::optional<std::int64_t> parse_decimal_int64(std::string_view text) {
  bool negative = !text.empty() && text.front() == '-';
  if (negative)
    text.remove_prefix(1);
  if (text.empty())
    return std::nullopt;
  // Accumulate as a negative number: its range is one larger than the positive one.
  std::int64_t value = 0;
  constexpr std::int64_t min = std::numeric_limits<std::int64_t>::min();
  for (char c : text) {
    if (c < '0' || c > '9')
      return std::nullopt;
    int digit = c - '0';
    if (value < (min + digit) / 10)
      return std::nullopt;
    value = value * 10 - digit;
  }
  if (!negative) {
    if (value == min)
      return std::nullopt;
    value = -value;
  }
  return value;
}

result<void> check_json_object(std::string_view text, std::string_view what) {
  auto parsed = json_object::parse(text, what);
  if (!parsed)
    return parsed.fail();
  return ok();
}

} // namespace msiv2::io
