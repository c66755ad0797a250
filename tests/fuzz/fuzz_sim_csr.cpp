// The simulator's issuecredential request checks (sim::detail::read_issue_request) against its
// default configuration's first identity.

#include <cstddef>
#include <cstdint>

#include "platform/csr.hpp"
#include "tests/fuzz/fuzz_common.hpp"
#include "tools/sim/authority_support.hpp"
#include "tools/sim/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace msiv2;
  static const sim::detail::csr_expectation want = [] {
    sim::config cfg;
    return sim::detail::csr_expectation{cfg.system_identity.client_id, cfg.tenant_id,
                                        platform::cu_id_json({cfg.vm_id, cfg.vmss_id})};
  }();
  auto req = sim::detail::read_issue_request(fuzz::as_text(data, size), want);
  if (req)
    fuzz::require(req->subject_key != nullptr, "an accepted CSR has a public key");
  return 0;
}
