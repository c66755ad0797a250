#pragma once

/// The module's version, major.minor.patch. Written only here: CMakeLists.txt reads it from
/// this line for the project version, msiv2ConfigVersion.cmake, msiv2.pc and the .deb.
#define MSIV2_VERSION "0.1.0"

namespace msiv2 {

/// The module's version string (MSIV2_VERSION of the library that was linked).
const char* version() noexcept;

} // namespace msiv2
