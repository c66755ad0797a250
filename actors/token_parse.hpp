#pragma once

// The readers of access-token answers (the mTLS token endpoint, protocol.md §7; IMDS v1, §8)
// and of OAuth error bodies, as pure functions of the bytes that came in and of value
// inputs: token_exchanger calls them, the unit tests and the fuzz targets (tests/fuzz/) call
// them without an actor.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "messages/token.hpp"
#include "platform/result.hpp"

namespace msiv2 {

/// The OAuth error members of an error body (any of them may be empty). The texts are
/// upstream's, sanitized (platform::sanitize_upstream): error and correlation_id at most 100
/// characters, description at most 300.
struct oauth_error_body {
  std::string error;          ///< "error"
  std::string description;    ///< "error_description", else "message"
  std::string correlation_id; ///< "correlation_id", else "correlationId"
  std::vector<std::int64_t> codes; ///< the numbers of "error_codes" when it is an array
};

/// Reads the OAuth error members of `body`; all empty when it is not a JSON object.
oauth_error_body read_oauth_error(std::string_view body);

/// True when the answer's error_codes hold `code`.
bool has_code(const oauth_error_body& e, std::int64_t code);

/// AADSTS500181: the presented certificate is not the one the token is bound to.
constexpr std::int64_t not_bound_code = 500181;
/// AADSTS1000901: the certificate is past its token_not_after.
constexpr std::int64_t token_not_after_code = 1000901;

/// invalid_client, or an AADSTS code saying the client certificate is bad (1000610-1000614:
/// time range, issuer, claim value, jku header, signature) or past its token_not_after
/// (1000901): the caller evicts it and re-mints once.
bool certificate_refused(const oauth_error_body& e);

/// Which answer a token body is, and what it must agree with.
struct token_answer_expectation {
  /// true: the mTLS token endpoint (expires_in relative, number or numeric string; optional
  /// ext_expires_in and refresh_in); false: IMDS v1 (expires_on in Unix seconds).
  bool mtls = true;
  /// The token type asked for ("token_type" must name it, any case).
  token_type want = token_type::mtls_pop;
  /// For mtls_pop: the x5t#S256 of our certificate, which the JWT's cnf claim must carry.
  std::string x5t_s256;
};

/// A 200 token answer, read.
struct token_answer {
  std::string access_token;               ///< secret: never log it
  std::int64_t expires_at_ms = 0;         ///< Unix milliseconds
  std::optional<std::int64_t> refresh_in_ms; ///< the answer's refresh_in, when it has one
};

/// Reads a 200 token answer at `now_ms` (Unix milliseconds). The error says why it is
/// unusable; when the JSON reader refused it the message starts "malformed <what>: ",
/// otherwise the caller adds that prefix.
result<token_answer> read_token_answer(std::string_view body,
                                       const token_answer_expectation& want,
                                       std::int64_t now_ms);

/// What a token answer is called in messages ("token endpoint response", "IMDS v1 token
/// response").
const char* token_response_name(bool mtls);

} // namespace msiv2
