#include "actors/token_parse.hpp"

#include <algorithm>
#include <cctype>
#include <utility>

#include "io/json.hpp"
#include "platform/encoding.hpp"
#include "platform/jwt.hpp"

namespace msiv2 {

namespace {

/// `s` seconds in milliseconds; nullopt when that does not fit in 64 bits.
std::optional<std::int64_t> seconds_to_ms(std::int64_t s) {
  std::int64_t ms = 0;
  if (__builtin_mul_overflow(s, std::int64_t{1000}, &ms))
    return std::nullopt;
  return ms;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

} // namespace

oauth_error_body read_oauth_error(std::string_view body) {
  oauth_error_body out;
  auto doc = io::json_object::parse(body, "token endpoint error");
  if (!doc)
    return out;
  auto str = [&](std::string_view name) {
    auto v = doc->optional_string(name);
    return v && *v ? **v : std::string();
  };
  // Upstream text goes into errors and logs: bounded and escaped (review L2).
  out.error = platform::sanitize_upstream(str("error"), 100);
  out.description = str("error_description");
  if (out.description.empty())
    out.description = str("message");
  out.description = platform::sanitize_upstream(out.description, 300);
  out.correlation_id = str("correlation_id");
  if (out.correlation_id.empty())
    out.correlation_id = str("correlationId");
  out.correlation_id = platform::sanitize_upstream(out.correlation_id, 100);
  if (auto codes = doc->find("error_codes"); codes && codes->type == io::json_type::array) {
    std::string digits;
    for (char c : codes->text + ",") {
      if (std::isdigit(static_cast<unsigned char>(c)) != 0) {
        digits += c;
      } else if (!digits.empty()) {
        if (auto n = io::parse_decimal_int64(digits))
          out.codes.push_back(*n);
        digits.clear();
      }
    }
  }
  return out;
}

bool has_code(const oauth_error_body& e, std::int64_t code) {
  return std::find(e.codes.begin(), e.codes.end(), code) != e.codes.end();
}

bool certificate_refused(const oauth_error_body& e) {
  if (e.error == "invalid_client" || has_code(e, token_not_after_code))
    return true;
  return std::any_of(e.codes.begin(), e.codes.end(),
                     [](std::int64_t c) { return c >= 1000610 && c <= 1000614; });
}

const char* token_response_name(bool mtls) {
  return mtls ? "token endpoint response" : "IMDS v1 token response";
}

result<token_answer> read_token_answer(std::string_view body,
                                       const token_answer_expectation& want,
                                       std::int64_t now_ms) {
  const bool mtls = want.mtls;
  auto doc = io::json_object::parse(body, token_response_name(mtls));
  if (!doc)
    return doc.fail();
  auto type = doc->required_string("token_type");
  auto token = doc->required_string("access_token");
  const char* expiry_name = mtls ? "expires_in" : "expires_on";
  auto expiry = doc->required_integer_or_numeric_string(expiry_name);
  // ext_expires_in and refresh_in exist only in the mTLS answer (IMDS v1 has neither).
  auto mtls_only = [&](const char* name) -> result<std::optional<std::int64_t>> {
    if (!mtls)
      return std::optional<std::int64_t>{};
    return doc->optional_integer_or_numeric_string(name);
  };
  auto ext = mtls_only("ext_expires_in");
  auto refresh_in = mtls_only("refresh_in");
  for (const std::string* e : {type ? nullptr : &type.error(), token ? nullptr : &token.error(),
                               expiry ? nullptr : &expiry.error(), ext ? nullptr : &ext.error(),
                               refresh_in ? nullptr : &refresh_in.error()})
    if (e != nullptr)
      return fail(*e);
  if (!iequals(*type, to_string(want.want)))
    return fail("member \"token_type\" is \"" + *type + "\" but \"" + to_string(want.want) +
                "\" was requested");
  // Values from upstream: arithmetic that would overflow is refused, not wrapped.
  const auto expiry_ms = seconds_to_ms(*expiry);
  std::int64_t expires_at_ms = expiry_ms.value_or(0);
  if (!expiry_ms || (mtls && __builtin_add_overflow(now_ms, *expiry_ms, &expires_at_ms)))
    return fail(std::string("member \"") + expiry_name + "\" is out of range");
  const auto refresh_in_ms =
    *refresh_in ? seconds_to_ms(**refresh_in) : std::optional<std::int64_t>(0);
  if (!refresh_in_ms)
    return fail("member \"refresh_in\" is out of range");
  if (mtls && *expiry <= 0)
    return fail("member \"expires_in\" is not positive");
  if (!mtls && expires_at_ms <= now_ms)
    return fail("member \"expires_on\" is not in the future");
  if (*refresh_in && **refresh_in <= 0)
    return fail("member \"refresh_in\" is not positive");
  if (want.want == token_type::mtls_pop) {
    auto claims = platform::read_jwt_claims(*token);
    if (!claims)
      return fail("member \"access_token\" is not a readable JWT: " + claims.error());
    if (claims->cnf_x5t_s256 != want.x5t_s256)
      return fail(claims->cnf_x5t_s256.empty()
                    ? "member \"access_token\" has no cnf x5t#S256 claim"
                    : "member \"access_token\" is bound to another certificate (cnf x5t#S256 " +
                        claims->cnf_x5t_s256 + ", ours " + want.x5t_s256 + ")");
  }
  token_answer out;
  out.access_token = std::move(*token);
  out.expires_at_ms = expires_at_ms;
  if (*refresh_in)
    out.refresh_in_ms = *refresh_in_ms;
  return out;
}

} // namespace msiv2
