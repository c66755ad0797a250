#pragma once

// Scratch directories and lock holders for the tests that use real files: a fresh directory
// under /tmp removed with its content at scope exit (so no test touches ~/.cache), and a
// forked process holding an flock (another process of the same machine, as the kernel sees it).

#include <string>
#include <vector>

#include <sys/types.h>

namespace msiv2::test {

/// A fresh directory /tmp/msiv2-<tag>-XXXXXX (mkdtemp: 0700), removed with its content at
/// scope exit.
class temp_dir {
public:
  explicit temp_dir(const std::string& tag = "test");
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::string& path() const { return path_; }
  /// path() + "/" + name.
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

private:
  std::string path_;
};

/// One machine as msiv2-token processes see it: a cache directory (not created: the runtime
/// makes it) and a boot id file, in a temp_dir tagged `tag`.
struct machine_dir {
  machine_dir(const std::string& tag, const std::string& boot_id);
  temp_dir root;
  std::string cache = root / "cache";
  std::string boot_id_file = root / "boot_id";

  /// Writes `id` into the boot id file (a reboot, as the runtime sees it).
  void set_boot_id(const std::string& id) const;
  /// Names in the cache directory that start with `prefix`, sorted.
  std::vector<std::string> files(const std::string& prefix) const;
};

/// Forks a child (call it before the test starts threads of its own) that takes an flock on
/// `path` with plain syscalls, reports it through a pipe, then sleeps until killed (at most
/// 30 s). Returns its pid once it holds the lock.
pid_t child_holding_lock(const std::string& path);

/// Call in a forked child that will leave through exit() (to run the at-exit handlers under
/// test): turns LeakSanitizer's at-exit check off for that child. The parent's other threads
/// do not exist in the child, so what only their stacks referenced would be reported as leaks.
void no_leak_check_in_this_child();

/// SIGKILLs `pid` and reaps it.
void kill_and_reap(pid_t pid);

} // namespace msiv2::test
