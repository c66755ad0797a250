// The persisted file formats, as another process of the user (or anyone who can write the
// cache directory) may leave them: decode_certificate, decode_attestation, decode_key_file,
// key_id_of, and private_key_from_pem on a key file's PEM. Ids are those of the seed files.

#include <cstddef>
#include <cstdint>
#include <string>

#include "actors/persisted.hpp"
#include "io/endpoint_trust.hpp"
#include "platform/keys.hpp"
#include "tests/fuzz/fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace msiv2;
  auto bytes = fuzz::as_text(data, size);
  const auto& key = fuzz::fixed_key();
  auto cert = persisted::decode_certificate(bytes, fuzz::seed_certificate_artifact, key,
                                            fuzz::seed_time_s + 60, io::loopback_hosts());
  if (cert) {
    fuzz::require(cert.reason.empty(), "an adopted file has no refusal reason");
    fuzz::require(cert.value->key.spki_der == key.spki_der, "an adopted file certifies our key");
    fuzz::require(cert.value->not_after_ms > (fuzz::seed_time_s + 60) * 1000,
                  "an adopted certificate is not expired");
  } else {
    fuzz::require(!cert.reason.empty(), "a refusal says why");
  }
  auto att = persisted::decode_attestation(bytes, fuzz::seed_attestation_endpoint, key.key_id,
                                           (fuzz::seed_time_s + 60) * 1000);
  if (att)
    fuzz::require(att.value->expires_at_ms > (fuzz::seed_time_s + 60) * 1000,
                  "an adopted attestation is not expired");
  (void)persisted::key_id_of(bytes);
  if (auto file = persisted::decode_key_file(bytes))
    (void)platform::private_key_from_pem(file.value->pem);
  return 0;
}
