#include "tools/swtpm_process.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#ifndef MSIV2_SWTPM_SCRIPT
#error "MSIV2_SWTPM_SCRIPT (the path of tools/swtpm.sh) must be defined"
#endif

namespace msiv2::tools {

namespace {

using namespace std::chrono_literals;

// The absolute path of `tool` on $PATH, empty when it is not there.
std::string on_path(const char* tool) {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    auto end = dirs.find(':', start);
    if (end == std::string::npos)
      end = dirs.size();
    auto candidate = dirs.substr(start, end - start) + "/" + tool;
    if (::access(candidate.c_str(), X_OK) == 0)
      return candidate;
    start = end + 1;
  }
  return {};
}

std::string script_path() {
  const char* env = std::getenv("MSIV2_SWTPM_SCRIPT");
  return env != nullptr && *env != '\0' ? env : MSIV2_SWTPM_SCRIPT;
}

std::string quoted(const std::string& s) {
  std::string q = "'";
  for (char c : s)
    q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs `command` through the shell; its exit code and stdout (stderr goes to ours).
std::pair<int, std::string> shell(const std::string& command) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr)
    return {-1, out};
  char buf[512];
  while (std::fgets(buf, sizeof buf, p) != nullptr)
    out += buf;
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

sockaddr_in loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

bool port_free(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  auto a = loopback(port);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

bool accepts_connections(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  auto a = loopback(port);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// Waits up to `limit` for our child `pid` to exit; true when it did (and was reaped).
bool reap_within(pid_t pid, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int status = 0;
    const auto r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD))
      return true;
    if (std::chrono::steady_clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(10ms);
  }
}

} // namespace

std::string swtpm_process::unavailable() {
  for (const char* tool : {"swtpm", "swtpm_setup", "swtpm_ioctl", "swtpm_localca"})
    if (on_path(tool).empty())
      return std::string(tool) + " is not on PATH (Debian: apt-get install swtpm swtpm-tools; "
                                 "tools/setup.sh installs them)";
  const auto script = script_path();
  if (::access(script.c_str(), R_OK) != 0)
    return "tools/swtpm.sh is not at " + script + " (set MSIV2_SWTPM_SCRIPT to its path)";
  return {};
}

result<std::unique_ptr<swtpm_process>> swtpm_process::start(const std::string& dir) {
  if (auto why = unavailable(); !why.empty())
    return fail(why);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return fail("cannot create " + dir + ": " + std::strerror(errno));
  auto [code, out] = shell("bash " + quoted(script_path()) + " init " + quoted(dir));
  if (code != 0)
    return fail("tools/swtpm.sh init " + dir + " exited " + std::to_string(code) +
                " (its message is on stderr)");
  const auto at = out.find("MSIV2_TPM_EK_CA=");
  if (at == std::string::npos)
    return fail("tools/swtpm.sh init printed no MSIV2_TPM_EK_CA line: " + out);
  const auto end = out.find('\n', at);
  std::unique_ptr<swtpm_process> p(new swtpm_process());
  p->dir_ = dir;
  p->ek_ca_ = out.substr(at + 16, end == std::string::npos ? std::string::npos : end - at - 16);
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> pick(10000, 29999);
  std::string last;
  for (int i = 0; i < 50; ++i) {
    auto started = p->spawn(pick(rng) * 2);
    if (started)
      return p;
    last = started.error();
  }
  return fail("cannot start swtpm on a free 127.0.0.1 port pair: " + last);
}

swtpm_process::~swtpm_process() { (void)stop(); }

std::string swtpm_process::tcti() const {
  return "swtpm:host=127.0.0.1,port=" + std::to_string(port_);
}

result<void> swtpm_process::spawn(int port) {
  if (!port_free(port) || !port_free(port + 1))
    return fail("ports " + std::to_string(port) + "/" + std::to_string(port + 1) + " are in use");
  const std::string exe = on_path("swtpm");
  if (exe.empty())
    return fail("swtpm is not on PATH");
  std::vector<std::string> args = {
    "swtpm", "socket", "--tpm2", "--tpmstate", "dir=" + dir_ + "/tpmstate",
    "--server", "type=tcp,port=" + std::to_string(port) + ",bindaddr=127.0.0.1",
    "--ctrl", "type=tcp,port=" + std::to_string(port + 1) + ",bindaddr=127.0.0.1",
    "--flags", "not-need-init,startup-clear"};
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log = dir_ + "/swtpm.log";
  const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0)
    return fail("cannot open " + log + ": " + std::strerror(errno));
  const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log_fd);
    if (devnull >= 0)
      ::close(devnull);
    return fail(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    // swtpm dies with this process, whatever way it ends.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent)
      ::_exit(127);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    if (devnull >= 0)
      ::dup2(devnull, 0);
    ::execv(exe.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(log_fd);
  if (devnull >= 0)
    ::close(devnull);
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid)
      return fail("swtpm exited at once on ports " + std::to_string(port) + "/" +
                  std::to_string(port + 1) + " (log " + log + ")");
    if (accepts_connections(port + 1) && accepts_connections(port)) {
      pid_ = pid;
      port_ = port;
      return ok();
    }
    std::this_thread::sleep_for(10ms);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return fail("swtpm did not listen on 127.0.0.1:" + std::to_string(port) + " within 15 s (log " +
              log + ")");
}

result<void> swtpm_process::stop() {
  if (pid_ <= 0)
    return ok();
  const pid_t pid = pid_;
  pid_ = -1;
  shell("swtpm_ioctl --tcp 127.0.0.1:" + std::to_string(port_ + 1) + " -s >/dev/null 2>&1");
  if (reap_within(pid, 10s))
    return ok();
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return fail("swtpm (pid " + std::to_string(pid) +
              ") ignored swtpm_ioctl -s for 10 s and was killed: its last state may be lost");
}

result<void> swtpm_process::start_again() {
  if (pid_ > 0)
    return fail("swtpm already runs (pid " + std::to_string(pid_) + ")");
  // The same ports, so TCTI strings stay valid; a just-stopped listener may need a moment.
  std::string last;
  for (int i = 0; i < 100; ++i) {
    auto started = spawn(port_);
    if (started)
      return ok();
    last = started.error();
    std::this_thread::sleep_for(50ms);
  }
  return fail("cannot restart swtpm on 127.0.0.1:" + std::to_string(port_) + ": " + last);
}

} // namespace msiv2::tools
