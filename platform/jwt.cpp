#include "platform/jwt.hpp"

#include <set>

#include <simdjson.h>

#include "platform/encoding.hpp"
#include "platform/keys.hpp"

namespace msiv2::platform {

namespace {

namespace od = simdjson::ondemand;

std::string json_error(std::string_view what, simdjson::error_code err) {
  return std::string(what) + ": " + simdjson::error_message(err);
}

// Opens `doc` as one JSON object with nothing but whitespace after it. On-Demand 3.0 has
// no document::at_end(), so the document's extent is measured with raw_json() and the
// document rewound before the caller reads it.
result<od::object> open_object(od::parser& parser, const simdjson::padded_string& padded,
                               od::document& doc, std::string_view what) {
  if (auto err = parser.iterate(padded).get(doc))
    return fail(json_error(std::string(what) + " is not valid JSON", err));
  std::string_view raw;
  if (auto err = doc.raw_json().get(raw))
    return fail(json_error(std::string(what) + " is not valid JSON", err));
  auto end = std::size_t(raw.data() - padded.data()) + raw.size();
  for (auto i = end; i < padded.size(); ++i) {
    char c = padded.data()[i];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
      return fail(std::string(what) + " has content after the JSON value");
  }
  doc.rewind();
  od::json_type type;
  if (auto err = doc.type().get(type))
    return fail(json_error(std::string(what) + " is not valid JSON", err));
  if (type != od::json_type::object)
    return fail(std::string(what) + " is not a JSON object");
  od::object obj;
  if (auto err = doc.get_object().get(obj))
    return fail(json_error(std::string(what) + " is not a JSON object", err));
  return obj;
}

result<std::string> read_string(od::value& v, std::string_view what) {
  od::json_type type;
  if (auto err = v.type().get(type))
    return fail(json_error(what, err));
  if (type != od::json_type::string)
    return fail(std::string(what) + " must be a string");
  std::string_view s;
  if (auto err = v.get_string().get(s))
    return fail(json_error(what, err));
  return std::string(s);
}

result<std::int64_t> read_integer(od::value& v, std::string_view what) {
  od::json_type type;
  if (auto err = v.type().get(type))
    return fail(json_error(what, err));
  if (type != od::json_type::number)
    return fail(std::string(what) + " must be an integer");
  od::number_type kind;
  if (auto err = v.get_number_type().get(kind))
    return fail(json_error(what, err));
  if (kind == od::number_type::floating_point_number)
    return fail(std::string(what) + " must be an integer");
  std::int64_t i = 0;
  if (auto err = v.get_int64().get(i))
    return fail(std::string(what) + " is out of range: " + simdjson::error_message(err));
  return i;
}

result<std::string> read_cnf_thumbprint(od::value& v) {
  od::json_type type;
  if (auto err = v.type().get(type))
    return fail(json_error("JWT claim cnf", err));
  if (type != od::json_type::object)
    return fail("JWT claim cnf must be an object");
  od::object cnf;
  if (auto err = v.get_object().get(cnf))
    return fail(json_error("JWT claim cnf", err));
  std::string thumbprint;
  bool seen = false;
  for (auto member : cnf) {
    od::field f;
    if (auto err = std::move(member).get(f))
      return fail(json_error("JWT claim cnf", err));
    std::string_view key;
    if (auto err = f.unescaped_key().get(key))
      return fail(json_error("JWT claim cnf", err));
    if (key != "x5t#S256")
      continue;
    if (seen)
      return fail("JWT claim cnf has x5t#S256 twice");
    seen = true;
    auto s = read_string(f.value(), "JWT claim cnf.x5t#S256");
    if (!s)
      return s.fail();
    thumbprint = std::move(*s);
  }
  return thumbprint;
}

} // namespace

result<std::string> sign_jwt_rs256(EVP_PKEY* key, std::string_view payload_json,
                                   std::string_view kid) {
  std::string header = R"({"alg":"RS256","typ":"JWT")";
  if (!kid.empty())
    header += ",\"kid\":" + json_quote(kid);
  header += '}';
  auto input = base64url_encode(header) + '.' + base64url_encode(payload_json);
  auto signature = sign_rs256(key, input);
  if (!signature)
    return fail("signing the JWT failed: " + signature.error());
  return input + '.' + base64url_encode(*signature);
}

result<jwt_parts> split_jwt(std::string_view token) {
  auto first = token.find('.');
  if (first == std::string_view::npos)
    return fail("JWT must have three dot-separated parts, found one");
  auto second = token.find('.', first + 1);
  if (second == std::string_view::npos)
    return fail("JWT must have three dot-separated parts, found two");
  if (token.find('.', second + 1) != std::string_view::npos)
    return fail("JWT must have three dot-separated parts, found more");
  if (first == 0)
    return fail("JWT header part is empty");
  if (second == first + 1)
    return fail("JWT payload part is empty");
  jwt_parts parts;
  auto header = base64url_decode(token.substr(0, first));
  if (!header)
    return fail("JWT header: " + header.error());
  auto payload = base64url_decode(token.substr(first + 1, second - first - 1));
  if (!payload)
    return fail("JWT payload: " + payload.error());
  auto signature = base64url_decode(token.substr(second + 1));
  if (!signature)
    return fail("JWT signature: " + signature.error());
  parts.header_json = std::move(*header);
  parts.payload_json = std::move(*payload);
  parts.signing_input = std::string(token.substr(0, second));
  parts.signature = std::move(*signature);
  return parts;
}

result<void> verify_jwt_rs256(const jwt_parts& parts, EVP_PKEY* key) {
  simdjson::padded_string padded(parts.header_json);
  od::parser parser;
  od::document doc;
  auto header = open_object(parser, padded, doc, "JWT header");
  if (!header)
    return header.fail();
  std::string alg;
  bool seen = false;
  for (auto member : *header) {
    od::field f;
    if (auto err = std::move(member).get(f))
      return fail(json_error("JWT header", err));
    std::string_view name;
    if (auto err = f.unescaped_key().get(name))
      return fail(json_error("JWT header", err));
    if (name != "alg")
      continue;
    if (seen)
      return fail("JWT header has alg twice");
    seen = true;
    auto value = read_string(f.value(), "JWT header alg");
    if (!value)
      return value.fail();
    alg = std::move(*value);
  }
  if (!seen)
    return fail("JWT header has no alg");
  if (alg != "RS256")
    return fail("JWT header alg must be RS256, found '" + alg + "'");
  if (!verify_rs256(key, parts.signing_input, parts.signature))
    return fail("JWT signature does not verify");
  return ok();
}

result<jwt_claims> parse_jwt_claims(std::string_view payload_json) {
  simdjson::padded_string padded(payload_json);
  od::parser parser;
  od::document doc;
  auto payload = open_object(parser, padded, doc, "JWT payload");
  if (!payload)
    return payload.fail();
  jwt_claims claims;
  std::set<std::string> seen;
  for (auto member : *payload) {
    od::field f;
    if (auto err = std::move(member).get(f))
      return fail(json_error("JWT payload", err));
    std::string_view key_view;
    if (auto err = f.unescaped_key().get(key_view))
      return fail(json_error("JWT payload", err));
    std::string key(key_view);
    bool integer = key == "exp" || key == "iat" || key == "nbf";
    bool text = key == "key_id" || key == "iss" || key == "tid" || key == "appid" ||
                key == "attestation_type";
    if (!integer && !text && key != "aud" && key != "cnf")
      continue;
    // Duplicate claims are ambiguous (RFC 7519 §4): refuse rather than pick one.
    if (!seen.insert(key).second)
      return fail("JWT claim " + key + " appears twice");
    auto what = "JWT claim " + key;
    od::value value = f.value();
    if (integer) {
      auto n = read_integer(value, what);
      if (!n)
        return n.fail();
      (key == "exp" ? claims.exp : key == "iat" ? claims.iat : claims.nbf) = *n;
    } else if (text) {
      auto s = read_string(value, what);
      if (!s)
        return s.fail();
      (key == "key_id"  ? claims.key_id
       : key == "iss"   ? claims.iss
       : key == "tid"   ? claims.tid
       : key == "appid" ? claims.appid
                        : claims.attestation_type) = std::move(*s);
    } else if (key == "aud") {
      od::json_type type;
      if (auto err = value.type().get(type))
        return fail(json_error(what, err));
      if (type == od::json_type::string) {
        auto s = read_string(value, what);
        if (!s)
          return s.fail();
        claims.aud = std::move(*s);
      }
    } else {
      auto thumbprint = read_cnf_thumbprint(value);
      if (!thumbprint)
        return thumbprint.fail();
      claims.cnf_x5t_s256 = std::move(*thumbprint);
    }
  }
  return claims;
}

result<jwt_claims> read_jwt_claims(std::string_view token) {
  auto parts = split_jwt(token);
  if (!parts)
    return parts.fail();
  return parse_jwt_claims(parts->payload_json);
}

} // namespace msiv2::platform
