#include "messages/version.hpp"

namespace msiv2 {

const char* version() noexcept {
  return MSIV2_VERSION;
}

} // namespace msiv2
