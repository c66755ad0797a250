// Encodings and URLs: base64 and base64url (strict: what decodes encodes back to the same
// text), url_decode, split_url and query_param.

#include <cstddef>
#include <cstdint>

#include "io/http.hpp"
#include "platform/encoding.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace msiv2;
  auto text = fuzz::as_text(data, size);
  if (auto b = platform::base64_decode(text))
    fuzz::require(platform::base64_encode(*b) == text, "base64 decoding is canonical");
  if (auto b = platform::base64url_decode(text)) {
    auto again = platform::base64url_decode(platform::base64url_encode(*b));
    fuzz::require(again.ok() && *again == *b, "base64url round-trips");
  }
  if (auto u = platform::url_decode(text)) {
    auto again = platform::url_decode(platform::url_encode(*u));
    fuzz::require(again.ok() && *again == *u, "url encoding round-trips");
  }
  fuzz::require(platform::base64_decode(platform::base64_encode(text)).ok(),
                "what base64_encode writes decodes");
  if (auto parts = io::split_url(text))
    fuzz::require(parts->scheme == "http" || parts->scheme == "https" || !parts->scheme.empty(),
                  "a split URL has a scheme");
  (void)io::query_param(text, "client_id");
  return 0;
}
