#include "platform/encoding.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "platform/openssl.hpp"

namespace msiv2::platform {

namespace {

constexpr char std_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char url_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
constexpr char hex_digits[] = "0123456789abcdef";

std::string encode_base64(std::string_view bytes, const char* alphabet, bool pad) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    auto v = (std::uint32_t(std::uint8_t(bytes[i])) << 16)
             | (std::uint32_t(std::uint8_t(bytes[i + 1])) << 8) | std::uint8_t(bytes[i + 2]);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  auto rest = bytes.size() - i;
  if (rest == 1) {
    auto v = std::uint32_t(std::uint8_t(bytes[i])) << 16;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    if (pad)
      out += "==";
  } else if (rest == 2) {
    auto v = (std::uint32_t(std::uint8_t(bytes[i])) << 16)
             | (std::uint32_t(std::uint8_t(bytes[i + 1])) << 8);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    if (pad)
      out += '=';
  }
  return out;
}

int sextet(char c, bool url) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == (url ? '-' : '+'))
    return 62;
  if (c == (url ? '_' : '/'))
    return 63;
  return -1;
}

// Decodes unpadded symbols; `what` names the encoding in errors. Rejects non-zero
// leftover bits so every byte string has exactly one accepted spelling.
result<std::string> decode_symbols(std::string_view text, bool url, std::string_view what) {
  if (text.size() % 4 == 1)
    return fail(std::string(what) + " has an impossible length (" + std::to_string(text.size())
                + " symbols)");
  std::string out;
  out.reserve(text.size() / 4 * 3 + 2);
  std::uint32_t acc = 0;
  int bits = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    int v = sextet(text[i], url);
    if (v < 0) {
      if (text[i] == '=')
        return fail(std::string(what) + " has padding '=' inside the text at offset "
                    + std::to_string(i));
      return fail(std::string(what) + " has an invalid character at offset " + std::to_string(i));
    }
    acc = (acc << 6) | std::uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xff);
      acc &= (1u << bits) - 1;
    }
  }
  if (acc != 0)
    return fail(std::string(what) + " has non-zero bits after the last byte");
  return out;
}

[[noreturn]] void rng_failure() {
  auto msg = drain_openssl_errors("RAND_bytes failed");
  std::fprintf(stderr, "fatal: %s\n", msg.c_str());
  std::abort();
}

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return c - 'A' + 10;
}

} // namespace

std::string base64_encode(std::string_view bytes) {
  return encode_base64(bytes, std_alphabet, true);
}

result<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0)
    return fail("base64 length " + std::to_string(text.size())
                + " is not a multiple of 4 (padding is required)");
  std::size_t pad = 0;
  if (!text.empty() && text.back() == '=')
    pad = (text.size() >= 2 && text[text.size() - 2] == '=') ? 2 : 1;
  if (text.size() >= 3 && text[text.size() - 3] == '=')
    return fail("base64 has more than two padding characters");
  return decode_symbols(text.substr(0, text.size() - pad), false, "base64");
}

std::string base64url_encode(std::string_view bytes) {
  return encode_base64(bytes, url_alphabet, false);
}

result<std::string> base64url_decode(std::string_view text) {
  std::size_t pad = 0;
  while (pad < text.size() && text[text.size() - 1 - pad] == '=')
    ++pad;
  if (pad > 0) {
    if (pad > 2)
      return fail("base64url has more than two padding characters");
    if (text.size() % 4 != 0)
      return fail("base64url padding does not complete a 4-symbol group");
  }
  auto body = text.substr(0, text.size() - pad);
  if (pad > 0 && (body.size() % 4) + pad != 4)
    return fail("base64url has the wrong amount of padding");
  return decode_symbols(body, true, "base64url");
}

std::string hex_lower(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) {
    auto b = std::uint8_t(c);
    out += hex_digits[b >> 4];
    out += hex_digits[b & 15];
  }
  return out;
}

std::string sha256(std::string_view bytes) {
  std::string out(32, '\0');
  unsigned int len = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), reinterpret_cast<unsigned char*>(out.data()), &len,
                 EVP_sha256(), nullptr)
        != 1
      || len != 32) {
    // Only a broken OpenSSL installation gets here; nothing sensible can continue.
    auto msg = drain_openssl_errors("SHA-256 failed");
    std::fprintf(stderr, "fatal: %s\n", msg.c_str());
    std::abort();
  }
  return out;
}

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  if (n > 0 && RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), int(n)) != 1)
    rng_failure();
  return out;
}

std::int64_t random_between(std::int64_t lo, std::int64_t hi) {
  if (hi <= lo)
    return lo;
  auto span = std::uint64_t(hi) - std::uint64_t(lo); // inclusive range size minus one
  auto draw = [] {
    std::uint64_t v = 0;
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&v), sizeof(v)) != 1)
      rng_failure();
    return v;
  };
  if (span == std::numeric_limits<std::uint64_t>::max())
    return std::int64_t(draw());
  auto n = span + 1;
  // Values below 2^64 mod n would be over-represented by the modulo: reject them.
  auto threshold = (0 - n) % n;
  std::uint64_t v = draw();
  while (v < threshold)
    v = draw();
  return std::int64_t(std::uint64_t(lo) + v % n);
}

std::string uuid_v4() {
  auto b = random_bytes(16);
  b[6] = char((std::uint8_t(b[6]) & 0x0f) | 0x40);
  b[8] = char((std::uint8_t(b[8]) & 0x3f) | 0x80);
  auto h = hex_lower(b);
  return h.substr(0, 8) + '-' + h.substr(8, 4) + '-' + h.substr(12, 4) + '-' + h.substr(16, 4)
         + '-' + h.substr(20, 12);
}

std::string json_quote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (char c : s) {
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    case '\t':
      out += "\\t";
      break;
    default:
      if (std::uint8_t(c) < 0x20) {
        out += "\\u00";
        out += hex_digits[std::uint8_t(c) >> 4];
        out += hex_digits[std::uint8_t(c) & 15];
      } else {
        out += c;
      }
    }
  }
  out += '"';
  return out;
}

std::string sanitize_upstream(std::string_view text, std::size_t max_chars) {
  static const char digits[] = "0123456789abcdef";
  // Bounded by what comes out, not what goes in: an escaped byte takes four characters.
  std::string out;
  out.reserve(std::min(text.size(), max_chars) + 24);
  std::size_t i = 0;
  for (; i < text.size() && out.size() < max_chars; ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c >= 0x7f) {
      out += "\\x";
      out += digits[c >> 4];
      out += digits[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (i < text.size())
    out += "...(" + std::to_string(text.size()) + " bytes)";
  return out;
}

void secure_clear(std::string& s) {
  s.resize(s.capacity());
  if (!s.empty())
    OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

bool is_printable_ascii(std::string_view s) {
  for (char c : s)
    if (c <= 0x20 || c >= 0x7f)
      return false;
  return true;
}

bool is_valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t n = 0;
    std::uint32_t cp = 0;
    if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size())
      return false;
    for (std::size_t k = 1; k <= n; ++k) {
      auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xc0) != 0x80)
        return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    static const std::uint32_t min_of[] = {0, 0x80, 0x800, 0x10000};
    if (cp < min_of[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += n + 1;
  }
  return true;
}

bool is_guid(std::string_view s) {
  if (s.size() != 36)
    return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !is_hex(s[i]))
      return false;
  }
  return true;
}

std::string url_encode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
                      || c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved) {
      out += c;
    } else {
      static constexpr char upper[] = "0123456789ABCDEF";
      out += '%';
      out += upper[std::uint8_t(c) >> 4];
      out += upper[std::uint8_t(c) & 15];
    }
  }
  return out;
}

result<std::string> url_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '+') {
      out += ' ';
    } else if (c == '%') {
      if (i + 2 >= s.size())
        return fail("URL escape at offset " + std::to_string(i) + " is truncated");
      if (!is_hex(s[i + 1]) || !is_hex(s[i + 2]))
        return fail("URL escape at offset " + std::to_string(i) + " is not two hex digits");
      out += char(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

} // namespace msiv2::platform
