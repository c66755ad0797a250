// The simulator's configuration (parse_config over the defaults, then validate_config) and
// its fault specs (parse_fault_spec, shared with the admin API).

#include <cstddef>
#include <cstdint>

#include "tests/fuzz/fuzz_common.hpp"
#include "tools/sim/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace msiv2;
  auto text = fuzz::as_text(data, size);
  if (auto cfg = sim::parse_config(text))
    (void)sim::validate_config(*cfg);
  (void)sim::parse_fault_spec(text);
  return 0;
}
