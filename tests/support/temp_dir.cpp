#include "tests/support/temp_dir.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <vector>

#include <boost/test/unit_test.hpp>

namespace {

bool leak_check_off = false;

} // namespace

// LeakSanitizer asks this (a weak hook of its runtime) before its at-exit check; without the
// sanitizer nobody calls it.
extern "C" int __lsan_is_turned_off();
extern "C" int __lsan_is_turned_off() {
  return leak_check_off ? 1 : 0;
}

namespace msiv2::test {

void no_leak_check_in_this_child() {
  leak_check_off = true;
}

temp_dir::temp_dir(const std::string& tag) {
  std::string tmpl = "/tmp/msiv2-" + tag + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  BOOST_REQUIRE_MESSAGE(::mkdtemp(buf.data()) != nullptr,
                        "mkdtemp " << tmpl << ": " << std::strerror(errno));
  path_ = buf.data();
}

temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

pid_t child_holding_lock(const std::string& path) {
  int fds[2];
  BOOST_REQUIRE_EQUAL(::pipe(fds), 0);
  pid_t pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    char ok = (fd >= 0 && ::flock(fd, LOCK_EX) == 0) ? '1' : '0';
    (void)!::write(fds[1], &ok, 1);
    ::alarm(30);
    for (;;)
      ::pause();
  }
  ::close(fds[1]);
  char ok = '0';
  BOOST_REQUIRE_EQUAL(::read(fds[0], &ok, 1), 1);
  ::close(fds[0]);
  BOOST_REQUIRE_MESSAGE(ok == '1', "the child could not lock " << path);
  return pid;
}

void kill_and_reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
}

machine_dir::machine_dir(const std::string& tag, const std::string& boot_id) : root(tag) {
  set_boot_id(boot_id);
}

void machine_dir::set_boot_id(const std::string& id) const {
  std::ofstream(boot_id_file, std::ios::trunc) << id << "\n";
}

std::vector<std::string> machine_dir::files(const std::string& prefix) const {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(cache, ec)) {
    auto name = e.path().filename().string();
    if (name.rfind(prefix, 0) == 0)
      out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

} // namespace msiv2::test
