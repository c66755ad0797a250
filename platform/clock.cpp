#include "platform/clock.hpp"

namespace msiv2::platform {

namespace {

class system_clock_impl : public wall_clock {
public:
  std::int64_t now_ms() const override {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  }
};

} // namespace

std::shared_ptr<wall_clock> system_wall_clock() {
  static auto instance = std::make_shared<system_clock_impl>();
  return instance;
}

derived_wall_clock::derived_wall_clock(std::int64_t start_unix_ms, mono_source mono)
  : start_unix_ms_(start_unix_ms), mono_(std::move(mono)), mono_start_(mono_()) {
  // nop
}

std::int64_t derived_wall_clock::now_ms() const {
  using namespace std::chrono;
  auto elapsed = duration_cast<milliseconds>(mono_() - mono_start_).count();
  return start_unix_ms_ + elapsed + offset_ms_;
}

void derived_wall_clock::jump(std::int64_t delta_ms) {
  offset_ms_ += delta_ms;
}

} // namespace msiv2::platform
