#include "tests/support/swtpm.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <thread>
#include <vector>

#include <boost/test/unit_test.hpp>

#ifndef MSIV2_SWTPM_SCRIPT
#error "MSIV2_SWTPM_SCRIPT (the path of tools/swtpm.sh) must be defined"
#endif

namespace msiv2::test {

namespace {

using namespace std::chrono_literals;

bool on_path(const char* tool) {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    auto end = dirs.find(':', start);
    if (end == std::string::npos)
      end = dirs.size();
    auto candidate = dirs.substr(start, end - start) + "/" + tool;
    if (::access(candidate.c_str(), X_OK) == 0)
      return true;
    start = end + 1;
  }
  return false;
}

// Runs a command through the shell and returns its stdout (stderr goes to ours) and exit code.
std::pair<int, std::string> shell(const std::string& command) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr)
    return {-1, out};
  char buf[512];
  while (std::fgets(buf, sizeof buf, p) != nullptr)
    out += buf;
  int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string quoted(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'')
      q += "'\\''";
    else
      q += c;
  }
  return q + "'";
}

// True when a TCP socket can be bound to 127.0.0.1:port right now.
bool port_free(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

bool accepts_connections(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// Waits up to `limit` for `pid` (our child) to exit; true when it did (and was reaped).
bool reap_within(pid_t pid, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int status = 0;
    auto r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD))
      return true;
    if (std::chrono::steady_clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(10ms);
  }
}

} // namespace

bool swtpm::installed() {
  for (const char* tool : {"swtpm", "swtpm_setup", "swtpm_ioctl", "swtpm_localca"})
    if (!on_path(tool))
      return false;
  return true;
}

void swtpm::require_installed() {
  if (installed())
    return;
  std::fprintf(stderr,
               "SKIP: swtpm is not installed (swtpm, swtpm_setup, swtpm_ioctl, swtpm_localca "
               "not all on PATH): the TPM tests need it; tools/setup.sh installs swtpm and "
               "swtpm-tools\n");
  std::fflush(stderr);
  std::_Exit(77);
}

swtpm& swtpm::shared() {
  require_installed();
  static std::unique_ptr<swtpm> instance = std::make_unique<swtpm>();
  return *instance;
}

swtpm::swtpm() : dir_("swtpm") {
  auto [code, out] = shell(quoted(MSIV2_SWTPM_SCRIPT) + " init " + quoted(dir_.path()));
  BOOST_REQUIRE_MESSAGE(code == 0, "tools/swtpm.sh init " << dir_.path() << " exited " << code);
  auto at = out.find("MSIV2_TPM_EK_CA=");
  BOOST_REQUIRE_MESSAGE(at != std::string::npos, "tools/swtpm.sh init printed no EK CA: " << out);
  auto end = out.find('\n', at);
  ek_ca_ = out.substr(at + 16, end == std::string::npos ? std::string::npos : end - at - 16);
  start();
}

swtpm::~swtpm() {
  // No Boost macros here: the shared instance is destroyed after the test framework ended.
  if (pid_ <= 0)
    return;
  shell("swtpm_ioctl --tcp 127.0.0.1:" + std::to_string(ctrl_port()) + " -s >/dev/null 2>&1");
  if (!reap_within(pid_, 10s)) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  pid_ = -1;
}

std::string swtpm::tcti() const {
  return "swtpm:host=127.0.0.1,port=" + std::to_string(server_port_);
}

platform::tpm_config swtpm::config() const {
  platform::tpm_config cfg;
  cfg.tcti = tcti();
  cfg.backoff = std::chrono::milliseconds(10);
  return cfg;
}

bool swtpm::try_start(int port) {
  if (!port_free(port) || !port_free(port + 1))
    return false;
  auto state = dir_ / "tpmstate";
  auto log = dir_ / "swtpm.log";
  std::vector<std::string> args = {
    "swtpm", "socket", "--tpm2", "--tpmstate", "dir=" + state,
    "--server", "type=tcp,port=" + std::to_string(port) + ",bindaddr=127.0.0.1",
    "--ctrl", "type=tcp,port=" + std::to_string(port + 1) + ",bindaddr=127.0.0.1",
    "--flags", "not-need-init,startup-clear"};
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  BOOST_REQUIRE_MESSAGE(log_fd >= 0, "cannot open " << log);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  BOOST_REQUIRE_MESSAGE(pid >= 0, "fork failed");
  if (pid == 0) {
    // swtpm dies with the test process, whatever way it ends.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent)
      ::_exit(127);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0)
      ::dup2(devnull, 0);
    ::execvp("swtpm", argv.data());
    ::_exit(127);
  }
  ::close(log_fd);
  auto deadline = std::chrono::steady_clock::now() + 15s;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid)
      return false; // lost the ports to someone else, or swtpm failed: see swtpm.log
    if (accepts_connections(port + 1) && accepts_connections(port)) {
      pid_ = pid;
      server_port_ = port;
      return true;
    }
    std::this_thread::sleep_for(10ms);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  BOOST_FAIL("swtpm did not listen on 127.0.0.1:" << port << " within 15 s (log " << log << ")");
  return false;
}

void swtpm::start() {
  BOOST_REQUIRE_MESSAGE(pid_ <= 0, "swtpm already runs (pid " << pid_ << ")");
  if (server_port_ != 0) {
    // Same ports as before, so TCTI strings stay valid; a just-killed listener may need a moment.
    for (int i = 0; i < 100; ++i) {
      if (try_start(server_port_))
        return;
      std::this_thread::sleep_for(50ms);
    }
    BOOST_FAIL("cannot restart swtpm on 127.0.0.1:" << server_port_ << " (log "
                                                   << (dir_ / "swtpm.log") << ")");
  }
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> pick(10000, 29999);
  for (int i = 0; i < 50; ++i)
    if (try_start(pick(rng) * 2))
      return;
  BOOST_FAIL("cannot start swtpm on any free port pair (log " << (dir_ / "swtpm.log") << ")");
}

void swtpm::stop() {
  if (pid_ <= 0)
    return;
  auto [code, out] =
    shell("swtpm_ioctl --tcp 127.0.0.1:" + std::to_string(ctrl_port()) + " -s 2>&1");
  BOOST_TEST_MESSAGE("swtpm_ioctl -s exited " << code << " " << out);
  if (!reap_within(pid_, 10s)) {
    BOOST_TEST_MESSAGE("swtpm " << pid_ << " ignored swtpm_ioctl -s for 10 s: SIGKILL");
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  pid_ = -1;
}

void swtpm::kill() {
  if (pid_ <= 0)
    return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void swtpm::restart() {
  stop();
  start();
}

void swtpm::kill_and_restart() {
  kill();
  start();
}

void swtpm::replace_with_new_tpm() {
  stop();
  std::error_code ec;
  std::filesystem::remove_all(dir_ / "tpmstate", ec);
  BOOST_REQUIRE_MESSAGE(!ec, "cannot remove " << (dir_ / "tpmstate") << ": " << ec.message());
  auto [code, out] = shell(quoted(MSIV2_SWTPM_SCRIPT) + " init " + quoted(dir_.path()));
  BOOST_REQUIRE_MESSAGE(code == 0, "tools/swtpm.sh init exited " << code << ": " << out);
  start();
}

} // namespace msiv2::test
