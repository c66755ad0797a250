#include "tests/support/child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include <boost/test/unit_test.hpp>

extern char** environ;

namespace msiv2::test {

using clock_type = std::chrono::steady_clock;

child_process::child_process(std::vector<std::string> args) {
  BOOST_TEST_REQUIRE(!args.empty());
  int out[2], err[2];
  BOOST_TEST_REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
  BOOST_TEST_REQUIRE(::pipe2(err, O_CLOEXEC) == 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err[1], 2);
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  int rc = ::posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  ::close(err[1]);
  out_fd_ = out[0];
  err_fd_ = err[0];
  BOOST_TEST_REQUIRE(rc == 0, "cannot run " << args[0]);
}

child_process::~child_process() {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  if (out_fd_ >= 0)
    ::close(out_fd_);
  if (err_fd_ >= 0)
    ::close(err_fd_);
}

bool child_process::read_until(std::string_view text, std::chrono::milliseconds timeout) {
  auto deadline = clock_type::now() + timeout;
  while (out_.find(text) == std::string::npos) {
    if (!pump(deadline))
      return out_.find(text) != std::string::npos;
  }
  return true;
}

int child_process::wait(std::chrono::milliseconds timeout) {
  auto deadline = clock_type::now() + timeout;
  while (pump(deadline)) {
  }
  if (out_fd_ >= 0 || err_fd_ >= 0)
    return -1; // timed out with pipes still open
  int status = 0;
  if (::waitpid(pid_, &status, 0) != pid_)
    return -1;
  reaped_ = true;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void child_process::signal(int sig) {
  if (pid_ > 0 && !reaped_)
    ::kill(pid_, sig);
}

bool child_process::pump(clock_type::time_point deadline) {
  if (out_fd_ < 0 && err_fd_ < 0)
    return false;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
  if (left.count() <= 0)
    return false;
  pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
  int n = ::poll(fds, 2, static_cast<int>(left.count()));
  if (n <= 0)
    return n == 0 ? false : errno == EINTR;
  auto drain = [](const pollfd& p, int& fd, std::string& into) {
    if (fd < 0 || (p.revents & (POLLIN | POLLHUP | POLLERR)) == 0)
      return;
    char buf[4096];
    ssize_t got = ::read(fd, buf, sizeof(buf));
    if (got > 0) {
      into.append(buf, static_cast<std::size_t>(got));
    } else {
      ::close(fd);
      fd = -1;
    }
  };
  drain(fds[0], out_fd_, out_);
  drain(fds[1], err_fd_, err_);
  return true;
}

run_result run_process(std::vector<std::string> args, std::chrono::milliseconds timeout) {
  child_process c(std::move(args));
  int code = c.wait(timeout);
  return {code, c.out(), c.err()};
}

} // namespace msiv2::test
