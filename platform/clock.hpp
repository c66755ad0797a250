#pragma once

// Wall time behind an interface. Actors judge certificate and JWT validity against a
// wall_clock (architecture.md "Time"): the real one reads the system clock, so a suspended VM
// or a corrected clock is noticed; the test one follows the CAF test scheduler's virtual clock.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

namespace msiv2::platform {

/// Source of wall time (Unix time).
class wall_clock {
public:
  virtual ~wall_clock() = default;
  /// Unix time in milliseconds.
  virtual std::int64_t now_ms() const = 0;
  /// Unix time in whole seconds.
  std::int64_t now_s() const { return now_ms() / 1000; }
};

/// The system clock.
std::shared_ptr<wall_clock> system_wall_clock();

/// Wall time derived from a monotonic source: `start_unix_ms + (mono() - mono_at_start)`.
/// Under CAF's test scheduler, pass the virtual clock's now() so that advancing virtual time
/// moves wall time too.
class derived_wall_clock : public wall_clock {
public:
  using mono_source = std::function<std::chrono::steady_clock::time_point()>;

  derived_wall_clock(std::int64_t start_unix_ms, mono_source mono);
  std::int64_t now_ms() const override;
  /// Moves wall time by `delta_ms` without touching the monotonic source (a clock correction).
  void jump(std::int64_t delta_ms);

private:
  std::int64_t start_unix_ms_;
  mono_source mono_;
  std::chrono::steady_clock::time_point mono_start_;
  std::int64_t offset_ms_ = 0;
};

} // namespace msiv2::platform
