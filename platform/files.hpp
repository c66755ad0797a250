#pragma once

// Private files shared by the processes of one user on one machine (architecture.md, "Across
// processes on one machine" and "Security"): the cache directory and its checks, atomic
// writes, reads that never follow a symlink nor trust a foreign or writable file, flock-based
// single-writer locks, and the boot id. Everything here blocks (fsync, lock polling): call it
// from worker threads, never from an actor's scheduler thread.

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>

#include "msiv2/platform/result.hpp"

namespace msiv2::platform {

/// Where persisted artifacts go, from the environment: $MSIV2_CACHE_DIR, else
/// $XDG_RUNTIME_DIR/msiv2, else $HOME/.cache/msiv2. MSIV2_CACHE_DIR=none turns persistence
/// off (nullopt). A relative path, or no variable set at all, is an error naming the variable.
result<std::optional<std::string>> cache_dir_from_environment();

/// Makes `dir` a private cache directory: creates what is missing (mode 0700, parents
/// included), then checks `dir` and `dir/locks`: each a real directory (not a symlink), owned
/// by the effective user, neither group- nor world-writable. An existing directory is never
/// chmod-ed. The error names the path and what is wrong with it.
result<void> prepare_private_dir(const std::string& dir);

/// True when `path` (or, when it does not exist yet, its nearest existing ancestor) lives on a
/// memory file system (tmpfs, ramfs): what it holds is gone at power-off and is in no disk
/// image or backup. False for anything else, and when nothing can be statfs-ed.
bool on_memory_filesystem(const std::string& path);

/// What reading a cache file found.
enum class read_status {
  ok,      ///< `bytes` holds the content
  missing, ///< no such file
  refused, ///< there is something, but not a file we trust: `reason` says what
};

/// The outcome of read_private_file.
struct file_read {
  read_status status = read_status::missing;
  std::string bytes;
  std::string reason; ///< names the path and what is wrong (refused only)
  mode_t mode = 0;    ///< permission bits of the file (ok only)
};

/// Reads `dir/name` without following symlinks (O_NOFOLLOW): a symlink, a non-regular file, a
/// file owned by another user, a group/world-writable file or one larger than `max_bytes` is
/// refused. Never throws; an I/O error is `refused` with its errno text.
file_read read_private_file(const std::string& dir, const std::string& name,
                            std::size_t max_bytes = 1 << 20);

/// Replaces `dir/name` atomically: a temp file created O_CREAT|O_EXCL|O_NOFOLLOW 0600 in `dir`,
/// write, fsync, rename over `dir/name`, fsync `dir`. A reader sees the old or the new content,
/// never a mix, whatever moment the writer dies at. On failure the temp file is removed and
/// the error names the path and the errno text.
result<void> write_file_atomically(const std::string& dir, const std::string& name,
                                   std::string_view bytes);

/// Writes a secret (the binding key) as `dir/name`, 0600, so that it never has a name before it
/// is complete: an unnamed O_TMPFILE in `dir`, written and fsync-ed, replaces `dir/name` by
/// unlink + linkat, then `dir` is fsync-ed. A writer killed at any point leaves the old file,
/// the new one, or (killed between unlink and link) none: never a temp file holding the
/// secret (review M5). Where O_TMPFILE is unsupported it falls back to write_file_atomically.
/// Readers may see the file missing for a moment: callers write it under its lock, and a
/// reader that finds it missing takes the lock before it makes another.
result<void> write_secret_file(const std::string& dir, const std::string& name,
                               std::string_view bytes);

/// Removes `dir/name` (a symlink is removed itself, never its target). Missing is success.
result<void> remove_file(const std::string& dir, const std::string& name);

/// An exclusive flock(2) on a lock file: released by release(), the destructor, or the kernel
/// when the process dies. Move-only.
class file_lock {
public:
  file_lock() = default;
  file_lock(file_lock&& other) noexcept;
  file_lock& operator=(file_lock&& other) noexcept;
  file_lock(const file_lock&) = delete;
  file_lock& operator=(const file_lock&) = delete;
  ~file_lock();

  /// One non-blocking attempt on `path` (created 0600 when missing, opened O_NOFOLLOW, checked
  /// like read_private_file). nullopt: another process holds it.
  static result<std::optional<file_lock>> try_acquire(const std::string& path);
  /// Attempts until `wait` has passed (polls with short growing sleeps: blocks the caller).
  /// nullopt: not had in time.
  static result<std::optional<file_lock>> acquire(const std::string& path,
                                                  std::chrono::milliseconds wait);

  bool held() const noexcept { return fd_ >= 0; }
  /// Unlocks and closes now.
  void release() noexcept;

private:
  explicit file_lock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

/// The kernel's boot id (one line, trimmed): a new value means the machine rebooted.
result<std::string> read_boot_id(const std::string& path = "/proc/sys/kernel/random/boot_id");

/// A file-name-safe name for an artifact id: `prefix` + "-" + the first 32 hex digits of the
/// SHA-256 of `artifact_id` + `suffix` (e.g. "cert-3fa2....json").
std::string artifact_file_name(std::string_view prefix, std::string_view artifact_id,
                               std::string_view suffix);

} // namespace msiv2::platform
