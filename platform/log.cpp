#include "platform/log.hpp"

#include <cstdio>
#include <mutex>

namespace msiv2::platform {

const char* to_string(log_level level) noexcept {
  switch (level) {
    case log_level::debug: return "debug";
    case log_level::info: return "info";
    case log_level::warning: return "warning";
    case log_level::error: return "error";
  }
  return "unknown";
}

namespace {

class null_sink : public log_sink {
public:
  void write(log_level, std::string_view, std::string_view) override {}
};

class stderr_sink : public log_sink {
public:
  explicit stderr_sink(log_level min) : min_(min) {}
  void write(log_level level, std::string_view component, std::string_view message) override {
    if (level < min_)
      return;
    std::lock_guard<std::mutex> guard(mtx_);
    std::fprintf(stderr, "%s %.*s: %.*s\n", to_string(level), static_cast<int>(component.size()),
                 component.data(), static_cast<int>(message.size()), message.data());
  }

private:
  log_level min_;
  std::mutex mtx_;
};

} // namespace

std::shared_ptr<log_sink> null_log_sink() {
  return std::make_shared<null_sink>();
}

std::shared_ptr<log_sink> stderr_log_sink(log_level min_level) {
  return std::make_shared<stderr_sink>(min_level);
}

} // namespace msiv2::platform
