#pragma once

namespace msiv2 {

/// The module's version string ("0.1.0").
const char* version() noexcept;

} // namespace msiv2
