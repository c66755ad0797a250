#pragma once

// The log sink an embedder provides. The module writes structured, levelled lines to it and
// never a token, a JWT or key material (tests grep for them).

#include <memory>
#include <string_view>

namespace msiv2::platform {

/// Severity of a log line.
enum class log_level { debug = 0, info = 1, warning = 2, error = 3 };

/// Lower-case name of a level ("warning").
const char* to_string(log_level level) noexcept;

/// Receives the module's log lines; called from module threads, must be thread-safe and fast.
class log_sink {
public:
  virtual ~log_sink() = default;
  /// One line: `component` is the actor or layer ("cert_issuer"), `message` the text.
  virtual void write(log_level level, std::string_view component, std::string_view message) = 0;
};

/// A sink that drops everything.
std::shared_ptr<log_sink> null_log_sink();
/// A sink that writes "level component: message" lines to stderr at `min_level` and above.
std::shared_ptr<log_sink> stderr_log_sink(log_level min_level = log_level::info);

} // namespace msiv2::platform
