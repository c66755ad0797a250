#pragma once

// RSA-2048 keys for the platform tests, generated once per test binary run (key generation
// costs real time), and the small checks those tests share.
//
//   auto sig = msiv2::platform::sign_pss_sha256(msiv2::test::test_key(), "data");
//   BOOST_REQUIRE_MESSAGE(sig.ok(), msiv2::test::error_text(sig));

#include <optional>
#include <string>
#include <string_view>

#include "platform/openssl.hpp"

namespace msiv2::test {

/// The error of a failed result, empty when it holds a value.
template <class R>
std::string error_text(const R& r) {
  return r.ok() ? std::string() : r.error();
}

/// True when `haystack` contains `needle`.
inline bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

/// The string member `key` of the JSON object `json`, or nothing (not JSON, not an object, no
/// such member, not a string).
std::optional<std::string> json_string(std::string_view json, std::string_view key);

/// A key pair, the same for the whole run.
EVP_PKEY* test_key();
/// A second key pair, unrelated to test_key().
EVP_PKEY* other_key();

} // namespace msiv2::test
