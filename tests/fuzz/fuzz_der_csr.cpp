// DER and CSRs (the simulator's side of issuecredential): the der::reader over nested TLVs,
// decode_oid, parse_csr and verify_csr_signature.

#include <cstddef>
#include <cstdint>

#include "platform/csr.hpp"
#include "platform/der.hpp"
#include "tests/fuzz/fuzz_common.hpp"

namespace {

void walk(std::string_view in, int depth) {
  msiv2::platform::der::reader r(in);
  while (!r.done()) {
    auto n = r.next();
    if (!n)
      return;
    msiv2::fuzz::require(n->content.size() < n->whole.size(), "a TLV is longer than its value");
    if (n->tag == 0x06)
      (void)msiv2::platform::der::decode_oid(n->content);
    if ((n->tag & 0x20) != 0 && depth < 16)
      walk(n->content, depth + 1);
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto text = msiv2::fuzz::as_text(data, size);
  walk(text, 0);
  if (auto csr = msiv2::platform::parse_csr(text))
    (void)msiv2::platform::verify_csr_signature(*csr);
  return 0;
}
