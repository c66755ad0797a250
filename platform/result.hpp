#pragma once

// A value or an error message a person can act on. Used by platform/, io/ and tools/ for
// every operation that can fail on bad input or a failing environment (no exceptions).

#include <string>
#include <utility>
#include <variant>

namespace msiv2 {

/// An error: one message naming what was wrong (never a secret).
struct failure {
  std::string message;
};

/// Makes a failure from a message.
inline failure fail(std::string message) {
  return failure{std::move(message)};
}

/// Either a T or a failure.
template <class T>
class result {
public:
  result(T value) : v_(std::move(value)) {}
  result(failure f) : v_(std::move(f)) {}

  /// True when a value is held.
  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  /// The value; only valid when ok().
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  /// The error message; only valid when !ok().
  const std::string& error() const { return std::get<1>(v_).message; }
  /// The failure; only valid when !ok().
  const failure& fail() const { return std::get<1>(v_); }

private:
  std::variant<T, failure> v_;
};

/// A result without a value.
template <>
class result<void> {
public:
  result() = default;
  result(failure f) : ok_(false), f_(std::move(f)) {}

  bool ok() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  const std::string& error() const { return f_.message; }
  const failure& fail() const { return f_; }

private:
  bool ok_ = true;
  failure f_;
};

/// Success for result<void>.
inline result<void> ok() {
  return {};
}

} // namespace msiv2
