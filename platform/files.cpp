#include "platform/files.hpp"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <thread>
#include <utility>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "platform/encoding.hpp"
#include "platform/private_dir.hpp"

namespace msiv2::platform {

namespace {

/// A temp file older than this has no live writer (writes take milliseconds; see
/// sweep_stale_temps).
constexpr std::chrono::seconds stale_temp_age{60};

std::string errno_text(int err) {
  return std::strerror(err);
}

std::string octal_mode(mode_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

/// Closes a descriptor on scope exit (EINTR on close is not retried: Linux frees the fd).
class fd_guard {
public:
  explicit fd_guard(int fd) : fd_(fd) {}
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  ~fd_guard() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }

private:
  int fd_;
};

std::string join(const std::string& dir, const std::string& name) {
  if (!dir.empty() && dir.back() == '/')
    return dir + name;
  return dir + "/" + name;
}

/// A file name inside the cache directory: no separators, no "." / "..", not empty.
std::string bad_name(const std::string& dir, std::string_view name) {
  if (name.empty())
    return "empty file name in " + dir;
  if (name == "." || name == ".." || name.find('/') != std::string_view::npos
      || name.find('\0') != std::string_view::npos)
    return "invalid file name '" + std::string(name) + "' in " + dir
           + " (must be a plain name without '/')";
  return {};
}

/// Why an open file is not one we trust (empty when it is): not a regular file, owned by
/// another user, readable or writable by group or others (we write every file 0600), or with
/// more than one hard link (someone linked it in from elsewhere). `what` names it
/// ("cache file /x/y").
std::string untrusted(const struct stat& st, const std::string& what) {
  if (!S_ISREG(st.st_mode))
    return what + " is not a regular file";
  if (st.st_uid != ::geteuid())
    return what + " is owned by uid " + std::to_string(st.st_uid) + ", not by this user (uid "
           + std::to_string(::geteuid()) + ")";
  if ((st.st_mode & 077) != 0)
    return what + " is open to group or others (mode " + octal_mode(st.st_mode) +
           "); the module writes its files 0600";
  if (st.st_nlink != 1)
    return what + " has " + std::to_string(st.st_nlink) +
           " hard links; a file of the module has exactly one";
  return {};
}

/// Checks one directory of the cache with lstat: a real directory, ours, not writable by
/// group or others.
result<void> check_private_dir(const std::string& path, const char* what) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0)
    return fail(std::string(what) + " " + path + ": " + errno_text(errno));
  if (S_ISLNK(st.st_mode))
    return fail(std::string(what) + " " + path
                + " is a symlink; refusing to follow it (use the real path)");
  if (!S_ISDIR(st.st_mode))
    return fail(std::string(what) + " " + path + " exists but is not a directory");
  if (st.st_uid != ::geteuid())
    return fail(std::string(what) + " " + path + " is owned by uid " + std::to_string(st.st_uid)
                + ", not by this user (uid " + std::to_string(::geteuid()) + ")");
  if ((st.st_mode & 022) != 0)
    return fail(std::string(what) + " " + path + " is writable by group or others (mode "
                + octal_mode(st.st_mode) + "); fix with chmod 700");
  return ok();
}

/// Checks every ancestor of `dir` (its parent resolved with realpath, then each component up
/// to "/"): owned by root or this user, and not writable by others unless sticky (/tmp).
/// Whoever can rename an ancestor can swap the cache directory for one of their own (review
/// M9; OpenSSH's StrictModes checks the same).
result<void> check_ancestors(const std::string& dir) {
  auto slash = dir.rfind('/');
  std::string parent = slash == 0 ? "/" : dir.substr(0, slash);
  char resolved[PATH_MAX];
  if (::realpath(parent.c_str(), resolved) == nullptr)
    return fail("cache directory " + dir + ": resolving its parent " + parent + ": " +
                errno_text(errno));
  std::string path = resolved;
  for (;;) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0)
      return fail("cache directory " + dir + ": ancestor " + path + ": " + errno_text(errno));
    if (st.st_uid != 0 && st.st_uid != ::geteuid())
      return fail("cache directory " + dir + ": its ancestor " + path + " is owned by uid " +
                  std::to_string(st.st_uid) + ", who could replace the cache directory; use a "
                  "directory whose ancestors belong to root or to this user");
    if ((st.st_mode & S_IWOTH) != 0 && (st.st_mode & S_ISVTX) == 0)
      return fail("cache directory " + dir + ": its ancestor " + path +
                  " is writable by others without the sticky bit (mode " + octal_mode(st.st_mode) +
                  "), so anyone could replace the cache directory");
    if (path == "/")
      return ok();
    auto up = path.rfind('/');
    path = up == 0 ? "/" : path.substr(0, up);
  }
}

/// mkdir 0700 that accepts an existing entry (checked afterwards by the caller).
result<void> make_dir(const std::string& path, const char* what) {
  if (::mkdir(path.c_str(), 0700) == 0 || errno == EEXIST)
    return ok();
  return fail("creating " + std::string(what) + " " + path + ": " + errno_text(errno));
}

result<void> write_all(int fd, std::string_view bytes) {
  const char* p = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return fail(errno_text(errno));
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  return ok();
}

result<void> fsync_dir(int dfd, const std::string& dir) {
  if (::fsync(dfd) != 0 && errno != EINVAL) // some file systems cannot fsync a directory
    return fail("fsync of directory " + dir + ": " + errno_text(errno));
  return ok();
}

/// Opens `dir` for the path-based entry points (its last component not followed).
int open_dir(const std::string& dir) {
  return ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/// Why a directory held open is not one we keep (empty when it is): not a directory, another
/// user's, writable by group or others.
std::string untrusted_dir(int fd, const std::string& path, const char* what) {
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return "fstat of " + std::string(what) + " " + path + ": " + errno_text(errno);
  if (!S_ISDIR(st.st_mode))
    return std::string(what) + " " + path + " is not a directory";
  if (st.st_uid != ::geteuid())
    return std::string(what) + " " + path + " is owned by uid " + std::to_string(st.st_uid) +
           ", not by this user (uid " + std::to_string(::geteuid()) + ")";
  if ((st.st_mode & 022) != 0)
    return std::string(what) + " " + path + " is writable by group or others (mode " +
           octal_mode(st.st_mode) + "); fix with chmod 700";
  return {};
}

/// Deletes temp files of `name` (".<name>.tmp.<pid>.<random>") last modified more than
/// stale_temp_age ago, whoever wrote them: a writer killed between create and rename leaves
/// nothing behind for long. By age, not by pid: a reused pid (or another user's, EPERM) kept a
/// dead writer's temp forever, and in another pid namespace a live writer looked dead (review
/// L5). Writers write under the artifact's lock, so a temp that old has no live writer.
void sweep_stale_temps(int dfd, const std::string& name) {
  // A description of its own: a dup would share the directory offset with `dfd`.
  int own = ::openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (own < 0)
    return;
  DIR* d = ::fdopendir(own);
  if (d == nullptr) {
    ::close(own);
    return;
  }
  const std::string prefix = "." + name + ".tmp.";
  while (struct dirent* e = ::readdir(d)) {
    std::string_view entry(e->d_name);
    if (entry.size() <= prefix.size() || entry.compare(0, prefix.size(), prefix) != 0)
      continue;
    std::string_view rest = entry.substr(prefix.size());
    auto dot = rest.find('.');
    if (dot == std::string_view::npos || dot == 0)
      continue;
    std::string pid_text(rest.substr(0, dot));
    char* end = nullptr;
    long pid = std::strtol(pid_text.c_str(), &end, 10);
    if (end == nullptr || *end != '\0' || pid <= 0)
      continue;
    struct stat st {};
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
      continue;
    if (::time(nullptr) - st.st_mtime > stale_temp_age.count())
      ::unlinkat(::dirfd(d), e->d_name, 0);
  }
  ::closedir(d);
}

std::string trim(std::string s) {
  const char* ws = " \t\r\n";
  auto b = s.find_first_not_of(ws);
  if (b == std::string::npos)
    return {};
  auto e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

/// The value of `var` when it is set and not empty.
std::optional<std::string> env(const char* var) {
  const char* v = std::getenv(var);
  if (v == nullptr || *v == '\0')
    return std::nullopt;
  return std::string(v);
}

std::string strip_trailing_slashes(std::string s) {
  while (s.size() > 1 && s.back() == '/')
    s.pop_back();
  return s;
}

} // namespace

result<std::optional<std::string>> cache_dir_from_environment() {
  if (auto dir = env("MSIV2_CACHE_DIR")) {
    if (*dir == "none")
      return std::optional<std::string>{};
    if ((*dir)[0] != '/')
      return fail("MSIV2_CACHE_DIR must be an absolute path (or \"none\" for memory only), got '"
                  + *dir + "'");
    return std::optional<std::string>{strip_trailing_slashes(*dir)};
  }
  if (auto xdg = env("XDG_RUNTIME_DIR")) {
    if ((*xdg)[0] != '/')
      return fail("XDG_RUNTIME_DIR must be an absolute path, got '" + *xdg
                  + "' (set MSIV2_CACHE_DIR to choose the cache directory)");
    return std::optional<std::string>{join(strip_trailing_slashes(*xdg), "msiv2")};
  }
  if (auto home = env("HOME")) {
    if ((*home)[0] != '/')
      return fail("HOME must be an absolute path, got '" + *home
                  + "' (set MSIV2_CACHE_DIR to choose the cache directory)");
    return std::optional<std::string>{join(strip_trailing_slashes(*home), ".cache/msiv2")};
  }
  return fail("no cache directory: none of MSIV2_CACHE_DIR, XDG_RUNTIME_DIR and HOME is set "
              "(set MSIV2_CACHE_DIR to a directory, or to \"none\" for memory only)");
}

bool on_memory_filesystem(const std::string& path_in) {
  std::string path = strip_trailing_slashes(path_in);
  for (;;) {
    struct statfs fs {};
    if (::statfs(path.c_str(), &fs) == 0) {
      auto type = static_cast<unsigned long>(fs.f_type);
      return type == static_cast<unsigned long>(TMPFS_MAGIC) ||
             type == static_cast<unsigned long>(RAMFS_MAGIC);
    }
    if (errno != ENOENT)
      return false;
    auto slash = path.rfind('/');
    if (slash == std::string::npos || path == "/")
      return false;
    path = slash == 0 ? "/" : path.substr(0, slash);
  }
}

result<void> prepare_private_dir(const std::string& dir_in) {
  if (dir_in.empty())
    return fail("cache directory: empty path");
  const std::string dir = strip_trailing_slashes(dir_in);
  // Missing parents first (existing ones are left as they are: only `dir` is ours).
  for (std::size_t pos = dir.find('/', 1); pos != std::string::npos; pos = dir.find('/', pos + 1)) {
    if (auto made = make_dir(dir.substr(0, pos), "parent of cache directory"); !made)
      return made;
  }
  if (auto made = make_dir(dir, "cache directory"); !made)
    return made;
  if (auto checked = check_private_dir(dir, "cache directory"); !checked)
    return checked;
  if (auto ancestors = check_ancestors(dir); !ancestors)
    return ancestors;
  const std::string locks = join(dir, "locks");
  if (auto made = make_dir(locks, "lock directory"); !made)
    return made;
  return check_private_dir(locks, "lock directory");
}

namespace {

file_read read_at(int dfd, const std::string& dir, const std::string& name,
                  std::size_t max_bytes) {
  file_read out;
  if (auto bad = bad_name(dir, name); !bad.empty()) {
    out.status = read_status::refused;
    out.reason = bad;
    return out;
  }
  const std::string path = join(dir, name);
  const std::string what = "cache file " + path;
  // O_NONBLOCK: opening a FIFO planted in the directory must not hang the reader.
  int fd = ::openat(dfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) {
      out.status = read_status::missing;
      return out;
    }
    out.status = read_status::refused;
    out.reason = err == ELOOP ? what + " is a symlink; not followed"
                              : "opening " + what + ": " + errno_text(err);
    return out;
  }
  fd_guard guard(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    out.status = read_status::refused;
    out.reason = "fstat of " + what + ": " + errno_text(errno);
    return out;
  }
  if (auto why = untrusted(st, what); !why.empty()) {
    out.status = read_status::refused;
    out.reason = why;
    return out;
  }
  if (static_cast<std::uint64_t>(st.st_size) > max_bytes) {
    out.status = read_status::refused;
    out.reason = what + " is too large (" + std::to_string(st.st_size) + " bytes, limit "
                 + std::to_string(max_bytes) + ")";
    return out;
  }
  std::string bytes;
  bytes.resize(static_cast<std::size_t>(st.st_size) + 1);
  std::size_t have = 0;
  for (;;) {
    if (have == bytes.size()) {
      if (have > max_bytes) // it grew past the limit while we read
        break;
      // Grown by copy, and the old buffer cleared: it may hold part of a key (review M5).
      std::string bigger(std::min(bytes.size() * 2, max_bytes + 1), '\0');
      std::memcpy(bigger.data(), bytes.data(), have);
      secure_clear(bytes);
      bytes.swap(bigger);
    }
    ssize_t n = ::read(fd, bytes.data() + have, bytes.size() - have);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      out.status = read_status::refused;
      out.reason = "reading " + what + ": " + errno_text(errno);
      return out;
    }
    if (n == 0)
      break;
    have += static_cast<std::size_t>(n);
  }
  if (have > max_bytes) {
    secure_clear(bytes);
    out.status = read_status::refused;
    out.reason = what + " is too large (more than " + std::to_string(max_bytes) + " bytes)";
    return out;
  }
  bytes.resize(have);
  out.status = read_status::ok;
  out.bytes = std::move(bytes);
  out.mode = st.st_mode & 07777;
  return out;
}

result<void> write_atomically_at(int dfd, const std::string& dir, const std::string& name,
                                 std::string_view bytes) {
  if (auto bad = bad_name(dir, name); !bad.empty())
    return fail("writing: " + bad);
  const std::string path = join(dir, name);
  sweep_stale_temps(dfd, name);
  const std::string tmp_name = "." + name + ".tmp." + std::to_string(::getpid()) + "."
                               + hex_lower(random_bytes(8));
  const std::string tmp = join(dir, tmp_name);
  int fd = ::openat(dfd, tmp_name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    0600);
  if (fd < 0)
    return fail("writing " + path + ": creating temp file " + tmp + ": " + errno_text(errno));
  fd_guard guard(fd);
  auto cleanup = [&](const std::string& what, int err) {
    ::unlinkat(dfd, tmp_name.c_str(), 0);
    return fail("writing " + path + ": " + what + ": " + errno_text(err));
  };
  // The umask can only take bits away; make the mode exactly 0600 whatever it is.
  if (::fchmod(fd, 0600) != 0)
    return cleanup("fchmod 0600 of the temp file", errno);
  if (auto written = write_all(fd, bytes); !written) {
    ::unlinkat(dfd, tmp_name.c_str(), 0);
    return fail("writing " + path + ": writing the temp file: " + written.error());
  }
  if (::fsync(fd) != 0)
    return cleanup("fsync of the temp file", errno);
  if (::close(guard.release()) != 0)
    return cleanup("closing the temp file", errno);
  if (::renameat(dfd, tmp_name.c_str(), dfd, name.c_str()) != 0)
    return cleanup("renaming the temp file over it", errno);
  if (auto synced = fsync_dir(dfd, dir); !synced)
    return fail("writing " + path + ": " + synced.error());
  return ok();
}

result<void> write_secret_at(int dfd, const std::string& dir, const std::string& name,
                             std::string_view bytes) {
  if (auto bad = bad_name(dir, name); !bad.empty())
    return fail("writing: " + bad);
  const std::string path = join(dir, name);
  int fd = ::openat(dfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) {
    int err = errno;
    if (err == EOPNOTSUPP || err == EISDIR || err == EINVAL)
      return write_atomically_at(dfd, dir, name, bytes); // no O_TMPFILE on this file system
    return fail("writing " + path + ": creating an unnamed temp file in " + dir + ": " +
                errno_text(err));
  }
  fd_guard guard(fd);
  if (::fchmod(fd, 0600) != 0)
    return fail("writing " + path + ": fchmod 0600: " + errno_text(errno));
  if (auto written = write_all(fd, bytes); !written)
    return fail("writing " + path + ": " + written.error());
  if (::fsync(fd) != 0)
    return fail("writing " + path + ": fsync: " + errno_text(errno));
  if (::unlinkat(dfd, name.c_str(), 0) != 0 && errno != ENOENT)
    return fail("writing " + path + ": removing the old file: " + errno_text(errno));
  // linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH; the /proc link of the descriptor does not.
  const std::string self = "/proc/self/fd/" + std::to_string(fd);
  if (::linkat(AT_FDCWD, self.c_str(), dfd, name.c_str(), AT_SYMLINK_FOLLOW) != 0)
    return fail("writing " + path + ": linking the new file: " + errno_text(errno));
  if (auto synced = fsync_dir(dfd, dir); !synced)
    return fail("writing " + path + ": " + synced.error());
  return ok();
}

result<void> remove_at(int dfd, const std::string& dir, const std::string& name) {
  if (auto bad = bad_name(dir, name); !bad.empty())
    return fail("removing: " + bad);
  if (::unlinkat(dfd, name.c_str(), 0) != 0 && errno != ENOENT)
    return fail("removing " + join(dir, name) + ": " + errno_text(errno));
  return ok();
}

/// Runs `op` on `dir` opened for the call (the path-based entry points); a directory that
/// cannot be opened fails naming the file (`dir`/`name`).
template <class Op>
auto with_dir(const std::string& dir, const std::string& name, Op op) -> decltype(op(-1)) {
  int dfd = open_dir(dir);
  if (dfd < 0)
    return fail("writing " + join(dir, name) + ": opening its directory: " + errno_text(errno));
  fd_guard guard(dfd);
  return op(dfd);
}

} // namespace

private_dir::private_dir(private_dir&& other) noexcept
  : path_(std::move(other.path_)),
    fd_(std::exchange(other.fd_, -1)),
    locks_fd_(std::exchange(other.locks_fd_, -1)) {}

private_dir& private_dir::operator=(private_dir&& other) noexcept {
  if (this != &other) {
    close();
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    locks_fd_ = std::exchange(other.locks_fd_, -1);
  }
  return *this;
}

private_dir::~private_dir() {
  close();
}

void private_dir::close() noexcept {
  if (fd_ >= 0)
    ::close(std::exchange(fd_, -1));
  if (locks_fd_ >= 0)
    ::close(std::exchange(locks_fd_, -1));
}

result<private_dir> private_dir::open(const std::string& path_in) {
  if (auto prepared = prepare_private_dir(path_in); !prepared)
    return fail(prepared.error());
  const std::string path = strip_trailing_slashes(path_in);
  // O_NOFOLLOW: a symlink put at the path since the check is refused, and whatever is opened
  // is checked again through its descriptor.
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return fail("opening cache directory " + path + ": " + errno_text(errno));
  fd_guard dir_guard(fd);
  if (auto why = untrusted_dir(fd, path, "cache directory"); !why.empty())
    return fail(why);
  const std::string locks = join(path, "locks");
  int lfd = ::openat(fd, "locks", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (lfd < 0)
    return fail("opening lock directory " + locks + ": " + errno_text(errno));
  fd_guard locks_guard(lfd);
  if (auto why = untrusted_dir(lfd, locks, "lock directory"); !why.empty())
    return fail(why);
  return private_dir(path, dir_guard.release(), locks_guard.release());
}

file_read read_private_file(const std::string& dir, const std::string& name,
                            std::size_t max_bytes) {
  int dfd = open_dir(dir);
  if (dfd < 0) {
    int err = errno;
    file_read out;
    if (err == ENOENT)
      return out; // missing
    out.status = read_status::refused;
    out.reason = "opening directory " + dir + ": " + errno_text(err);
    return out;
  }
  fd_guard guard(dfd);
  return read_at(dfd, dir, name, max_bytes);
}

file_read read_private_file(const private_dir& dir, const std::string& name,
                            std::size_t max_bytes) {
  return read_at(dir.fd(), dir.path(), name, max_bytes);
}

result<void> write_file_atomically(const std::string& dir, const std::string& name,
                                   std::string_view bytes) {
  return with_dir(dir, name, [&](int dfd) { return write_atomically_at(dfd, dir, name, bytes); });
}

result<void> write_file_atomically(const private_dir& dir, const std::string& name,
                                   std::string_view bytes) {
  return write_atomically_at(dir.fd(), dir.path(), name, bytes);
}

result<void> write_secret_file(const std::string& dir, const std::string& name,
                               std::string_view bytes) {
  return with_dir(dir, name, [&](int dfd) { return write_secret_at(dfd, dir, name, bytes); });
}

result<void> write_secret_file(const private_dir& dir, const std::string& name,
                               std::string_view bytes) {
  return write_secret_at(dir.fd(), dir.path(), name, bytes);
}

result<void> remove_file(const std::string& dir, const std::string& name) {
  int dfd = open_dir(dir);
  if (dfd < 0) {
    if (errno == ENOENT)
      return ok(); // no directory, no file
    return fail("removing " + join(dir, name) + ": opening the directory: " + errno_text(errno));
  }
  fd_guard guard(dfd);
  return remove_at(dfd, dir, name);
}

result<void> remove_file(const private_dir& dir, const std::string& name) {
  return remove_at(dir.fd(), dir.path(), name);
}

file_lock::file_lock(file_lock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

file_lock& file_lock::operator=(file_lock&& other) noexcept {
  if (this != &other) {
    release();
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

file_lock::~file_lock() {
  release();
}

void file_lock::release() noexcept {
  // Closing the last descriptor of the open file description drops the flock.
  if (fd_ >= 0)
    ::close(std::exchange(fd_, -1));
}

result<std::optional<file_lock>> file_lock::try_acquire(const std::string& path) {
  if (path.empty())
    return fail("lock file: empty path");
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0600);
  if (fd < 0) {
    int err = errno;
    if (err == ELOOP)
      return fail("lock file " + path + " is a symlink; not followed");
    return fail("opening lock file " + path + ": " + errno_text(err));
  }
  fd_guard guard(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return fail("fstat of lock file " + path + ": " + errno_text(errno));
  if (auto why = untrusted(st, "lock file " + path); !why.empty())
    return fail(why);
  for (;;) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0)
      return std::optional<file_lock>{file_lock(guard.release())};
    if (errno == EINTR)
      continue;
    if (errno == EWOULDBLOCK)
      return std::optional<file_lock>{};
    return fail("flock of lock file " + path + ": " + errno_text(errno));
  }
}

result<std::optional<file_lock>> file_lock::acquire(const std::string& path,
                                                    std::chrono::milliseconds wait) {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + wait;
  std::chrono::milliseconds pause{1};
  for (;;) {
    auto attempt = try_acquire(path);
    if (!attempt || attempt->has_value())
      return attempt;
    auto now = clock::now();
    if (now >= deadline)
      return attempt; // nullopt: not had in time
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    std::this_thread::sleep_for(std::min(pause, left + std::chrono::milliseconds(1)));
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
}

result<std::optional<file_lock>> lock_in(const private_dir& dir, const std::string& name,
                                         std::chrono::milliseconds wait) {
  if (auto bad = bad_name(dir.path() + "/locks", name); !bad.empty())
    return fail("lock file: " + bad);
  // Through the descriptor of the held locks/ directory (its /proc link resolves to that very
  // directory, wherever it was moved); errors name the directory's own path.
  const std::string via = "/proc/self/fd/" + std::to_string(dir.locks_fd());
  auto attempt = wait.count() > 0 ? file_lock::acquire(via + "/" + name, wait)
                                  : file_lock::try_acquire(via + "/" + name);
  if (!attempt) {
    std::string message = attempt.error();
    for (auto at = message.find(via); at != std::string::npos; at = message.find(via))
      message.replace(at, via.size(), dir.path() + "/locks");
    return fail(message);
  }
  return attempt;
}

result<std::string> read_boot_id(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    return fail("reading boot id from " + path + ": " + errno_text(errno));
  fd_guard guard(fd);
  std::string text;
  char buf[256];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return fail("reading boot id from " + path + ": " + errno_text(errno));
    }
    if (n == 0)
      break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > 1024)
      return fail("boot id file " + path + " is too large (more than 1024 bytes)");
  }
  text = trim(std::move(text));
  if (text.empty())
    return fail("boot id file " + path + " is empty");
  if (text.find_first_of(" \t\r\n") != std::string::npos)
    return fail("boot id file " + path + " holds more than one line or word");
  return text;
}

std::string artifact_file_name(std::string_view prefix, std::string_view artifact_id,
                               std::string_view suffix) {
  std::string out(prefix);
  out += '-';
  out += hex_lower(sha256(artifact_id)).substr(0, 32);
  out += suffix;
  return out;
}

} // namespace msiv2::platform
