#include "messages/version.hpp"

namespace msiv2 {

const char* version() noexcept {
  return "0.1.0";
}

} // namespace msiv2
