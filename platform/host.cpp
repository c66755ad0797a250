#include "platform/host.hpp"

#include <sys/utsname.h>

namespace msiv2::platform {

const std::string& os_description() {
  static const std::string text = [] {
    utsname u{};
    if (::uname(&u) != 0)
      return std::string("unknown");
    return std::string(u.sysname) + " " + u.release;
  }();
  return text;
}

} // namespace msiv2::platform
