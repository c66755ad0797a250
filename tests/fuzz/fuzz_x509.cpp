// Certificates: inspect_certificate and validate_binding_certificate (DER, against the fixed
// key and the simulator's default client id) and pem_certificates (PEM bundles).

#include <cstddef>
#include <cstdint>

#include "platform/x509.hpp"
#include "tests/fuzz/fuzz_common.hpp"
#include "tools/sim/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace msiv2;
  static const std::string client_id = sim::config{}.system_identity.client_id;
  auto text = fuzz::as_text(data, size);
  if (auto info = platform::inspect_certificate(text)) {
    fuzz::require(info->x5t_s256 == platform::x5t_s256(text), "x5t#S256 is of the whole DER");
    (void)platform::validate_binding_certificate(*info, fuzz::fixed_key().spki_der, client_id,
                                                 fuzz::seed_time_s + 60);
  }
  if (auto certs = platform::pem_certificates(text))
    for (const auto& der : *certs)
      (void)platform::inspect_certificate(der);
  return 0;
}
