#pragma once

// Facts about the machine the module runs on, read once.

#include <string>

namespace msiv2::platform {

/// The kernel's name and release ("Linux 6.1.0-18-amd64"), read once with uname(2); "unknown"
/// when uname fails.
const std::string& os_description();

} // namespace msiv2::platform
