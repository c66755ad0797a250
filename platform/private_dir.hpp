#pragma once

// The cache directory held open (review M9): opened once after prepare_private_dir checked it,
// then every read, write, rename, removal and lock of its files goes through its descriptors,
// never through its path again. The same rules as the path-based calls of files.hpp (0600,
// O_NOFOLLOW, one link, atomic replace). Blocks like them: worker threads only.

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "platform/files.hpp"
#include "platform/result.hpp"

namespace msiv2::platform {

/// A private cache directory opened once, after prepare_private_dir checked it: every later
/// read, write, rename, removal and lock of its files goes through the descriptor (openat,
/// renameat, unlinkat, linkat), never through the path again. A directory renamed away and a
/// symlink or another directory put at its path afterwards change nothing: the files still go
/// into the directory that was checked (review M9). Move-only; closes on destruction.
class private_dir {
public:
  private_dir(private_dir&& other) noexcept;
  private_dir& operator=(private_dir&& other) noexcept;
  private_dir(const private_dir&) = delete;
  private_dir& operator=(const private_dir&) = delete;
  ~private_dir();

  /// prepare_private_dir(`path`), then opens `path` and `path`/locks (O_DIRECTORY|O_NOFOLLOW)
  /// and checks the opened directories themselves (fstat: a directory, ours, not writable by
  /// group or others), so what is kept is what was checked. The error names the path.
  static result<private_dir> open(const std::string& path);

  /// The path it was opened at (for messages; never used to reach a file).
  const std::string& path() const noexcept { return path_; }
  /// The directory's descriptor.
  int fd() const noexcept { return fd_; }
  /// The descriptor of its locks/ subdirectory.
  int locks_fd() const noexcept { return locks_fd_; }

private:
  private_dir(std::string path, int fd, int locks_fd)
    : path_(std::move(path)), fd_(fd), locks_fd_(locks_fd) {}
  void close() noexcept;
  std::string path_;
  int fd_ = -1;
  int locks_fd_ = -1;
};

/// The same four operations on a directory held open (private_dir): `name` is reached from
/// the descriptor, never through the directory's path.
file_read read_private_file(const private_dir& dir, const std::string& name,
                            std::size_t max_bytes = 1 << 20);
result<void> write_file_atomically(const private_dir& dir, const std::string& name,
                                   std::string_view bytes);
result<void> write_secret_file(const private_dir& dir, const std::string& name,
                               std::string_view bytes);
result<void> remove_file(const private_dir& dir, const std::string& name);

/// An flock on the lock file `name` in `dir`'s locks/ directory, reached from its descriptor:
/// one attempt when `wait` is zero, else attempts until `wait` passed (file_lock::acquire).
/// nullopt: another process holds it. Errors name the directory's path.
result<std::optional<file_lock>> lock_in(const private_dir& dir, const std::string& name,
                                         std::chrono::milliseconds wait = {});

} // namespace msiv2::platform
