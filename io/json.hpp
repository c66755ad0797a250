#pragma once

// JSON reading helpers on simdjson On-Demand, shared by every response parser.

#include <string>
#include <string_view>

#include "platform/result.hpp"

namespace msiv2::io {

/// Copies `text` into a buffer with simdjson's padding and checks it is one JSON object;
/// the error names `what` ("getplatformmetadata response: not a JSON object").
result<void> check_json_object(std::string_view text, std::string_view what);

} // namespace msiv2::io
