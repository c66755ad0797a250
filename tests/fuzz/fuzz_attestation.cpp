// The attestation service's answers: read_keyguard_answer (the first line is the key id the
// JWT must name) and attestation_refusal (the text a person reads for a refused answer).

#include <cstddef>
#include <cstdint>
#include <string>

#include "actors/keyguard_attestation.hpp"
#include "io/http.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace msiv2;
  auto [key_id, body] = fuzz::first_line(fuzz::as_text(data, size));
  auto token = read_keyguard_answer(body, std::string(key_id));
  if (token) {
    fuzz::require(!token->jwt.empty(), "an accepted answer has a JWT");
    fuzz::require(token->issued_at_ms == 0 || token->issued_at_ms < token->expires_at_ms,
                  "iat is before exp");
  }
  io::http_response refused;
  refused.status = 400;
  refused.body = std::string(body);
  auto text = attestation_refusal("https://127.0.0.1:8443", refused, "TPM challenge");
  fuzz::require(text.rfind("attestation service ", 0) == 0, "a refusal names the service");
  return 0;
}
