#pragma once

// A child process for tests that run the real tool binaries: stdout and stderr on pipes,
// bounded reads and waits, SIGKILL on destruction when still running.
//
//   msiv2::test::child_process c({MSIV2_TOKEN_BINARY, "--help"});
//   BOOST_TEST(c.wait(std::chrono::seconds(30)) == 0);
//   BOOST_TEST(c.out().find("usage") != std::string::npos);

#include <sys/types.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

namespace msiv2::test {

class child_process {
public:
  /// Starts args[0] with args (environment inherited). Start failures fail the test.
  explicit child_process(std::vector<std::string> args);
  ~child_process();
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  /// Reads output until stdout contains `text`, both pipes close, or `timeout` passes.
  bool read_until(std::string_view text, std::chrono::milliseconds timeout);
  /// Waits for exit, reading all output; the exit code, or -1 on timeout or death by signal.
  int wait(std::chrono::milliseconds timeout);
  /// Sends `sig` to the child.
  void signal(int sig);
  /// Everything read so far.
  const std::string& out() const { return out_; }
  const std::string& err() const { return err_; }

private:
  bool pump(std::chrono::steady_clock::time_point deadline);

  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  bool reaped_ = false;
  std::string out_, err_;
};

/// What a finished run gave.
struct run_result {
  int code = -1;
  std::string out, err;
};

/// Runs `args` to completion (bounded by `timeout`).
run_result run_process(std::vector<std::string> args,
                       std::chrono::milliseconds timeout = std::chrono::seconds(60));

} // namespace msiv2::test
