#pragma once

// What the libFuzzer targets of tests/fuzz/ share: a fixed binding key (so that seed
// certificates and files certify the key the target expects), the fixed clock the seeds were
// made at, and the input layout "<expectation line>\n<bytes>" of targets whose parser takes a
// value besides the bytes.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "messages/protocol.hpp"

namespace msiv2::fuzz {

/// The Unix time the seed corpora were made at (their certificates are valid around it).
inline constexpr std::int64_t seed_time_s = 1'767'225'600; // 2026-01-01T00:00:00Z

/// The artifact id of the seed certificate file, and the attestation endpoint of the seeds.
inline constexpr const char* seed_certificate_artifact =
  "http://169.254.169.254 system-assigned|attested";
inline constexpr const char* seed_attestation_endpoint = "https://127.0.0.1:8443";

/// The fixed RSA-2048 binding key of the fuzz targets and the seed maker. A test key made for
/// this folder only: it certifies nothing outside the seed corpora.
const key_ref& fixed_key();

/// The input as text.
inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// Splits "<first line>\n<rest>"; without a newline, the first part is empty.
inline std::pair<std::string_view, std::string_view> first_line(std::string_view in) {
  auto nl = in.find('\n');
  if (nl == std::string_view::npos)
    return {std::string_view(), in};
  return {in.substr(0, nl), in.substr(nl + 1)};
}

/// Aborts (a crash libFuzzer reports) when `condition` is false: a property the parser
/// promises was broken.
void require(bool condition, const char* what);

} // namespace msiv2::fuzz
