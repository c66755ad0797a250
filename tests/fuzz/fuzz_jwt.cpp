// JWTs: read_jwt_claims, split_jwt, parse_jwt_claims, and verify_jwt_rs256 with the fixed key.

#include <cstddef>
#include <cstdint>

#include "platform/binding.hpp"
#include "platform/jwt.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace msiv2;
  auto text = fuzz::as_text(data, size);
  auto claims = platform::read_jwt_claims(text);
  auto parts = platform::split_jwt(text);
  if (claims)
    fuzz::require(parts.ok(), "claims are read only from a well-formed JWT");
  if (parts) {
    (void)platform::verify_jwt_rs256(*parts, fuzz::fixed_key().key->get());
    auto again = platform::parse_jwt_claims(parts->payload_json);
    fuzz::require(again.ok() == claims.ok(), "read_jwt_claims is split_jwt + parse_jwt_claims");
  }
  (void)platform::parse_jwt_claims(text);
  return 0;
}
