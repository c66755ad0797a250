#pragma once

// Byte encodings, digests, randomness and JSON string escaping.
// Binary data (DER, digests, signatures) is carried in std::string throughout the project.

#include <cstdint>
#include <string>
#include <string_view>

#include "platform/result.hpp"

namespace msiv2::platform {

/// Standard base64 with padding, no line breaks.
std::string base64_encode(std::string_view bytes);
/// Strict standard base64 (padding required, no whitespace); a clear error otherwise.
result<std::string> base64_decode(std::string_view text);
/// base64url without padding (RFC 7515 §2).
std::string base64url_encode(std::string_view bytes);
/// base64url, padding optional; a clear error on any other character.
result<std::string> base64url_decode(std::string_view text);

/// Lower-case hex of the bytes.
std::string hex_lower(std::string_view bytes);

/// Raw 32-byte SHA-256 digest.
std::string sha256(std::string_view bytes);

/// `n` bytes from the OpenSSL CSPRNG.
std::string random_bytes(std::size_t n);
/// Uniform integer in [lo, hi] from the CSPRNG.
std::int64_t random_between(std::int64_t lo, std::int64_t hi);
/// A random RFC 4122 version 4 UUID in lower-case text form.
std::string uuid_v4();

/// `s` as a JSON string literal, quotes included ("a\"b" for a"b); control characters are
/// escaped as \u00XX, other bytes pass through unchanged.
std::string json_quote(std::string_view s);

/// Upstream text (an error_description, a correlation id, a Server header, a URL from an
/// answer) made safe for one log line or error message: control characters and bytes >= 0x7f
/// become \xHH, backslashes are doubled, and the result is cut after about `max_chars`
/// characters (at most 3 more), with "...(N bytes)" appended when something was cut.
std::string sanitize_upstream(std::string_view text, std::size_t max_chars = 300);

/// Overwrites every byte `s` owns (its capacity, not only its size) with OPENSSL_cleanse and
/// empties it: for buffers that held a private key (review M5).
void secure_clear(std::string& s);

/// True when every byte of `s` is printable ASCII (0x21-0x7e): identity ids (ARM resource
/// ids, GUIDs) are ASCII.
bool is_printable_ascii(std::string_view s);

/// True when `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past
/// U+10FFFF).
bool is_valid_utf8(std::string_view s);

/// True when `s` is a GUID in 8-4-4-4-12 hex form (either case).
bool is_guid(std::string_view s);

/// Percent-encodes for application/x-www-form-urlencoded and query strings (RFC 3986
/// unreserved characters pass through, space becomes %20).
std::string url_encode(std::string_view s);
/// Decodes percent-escapes and '+' (as space); a clear error on a malformed escape.
result<std::string> url_decode(std::string_view s);

} // namespace msiv2::platform
