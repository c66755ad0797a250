#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <ctime>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "platform/encoding.hpp"
#include "platform/files.hpp"
#include "platform/private_dir.hpp"
#include "tests/support/temp_dir.hpp"

using namespace msiv2::platform;
namespace fs = std::filesystem;
using msiv2::test::child_holding_lock;
using msiv2::test::kill_and_reap;

namespace {

template <class R>
std::string why(const R& r) {
  return r.ok() ? std::string() : r.error();
}

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

/// Sets (or unsets, with nullopt) environment variables and restores them at scope exit.
class env_guard {
public:
  void set(const char* name, std::optional<std::string> value) {
    if (saved_.end() == std::find_if(saved_.begin(), saved_.end(),
                                      [&](const auto& s) { return s.first == name; })) {
      const char* old = std::getenv(name);
      saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
    }
    if (value)
      ::setenv(name, value->c_str(), 1);
    else
      ::unsetenv(name);
  }
  ~env_guard() {
    for (auto& [name, value] : saved_) {
      if (value)
        ::setenv(name.c_str(), value->c_str(), 1);
      else
        ::unsetenv(name.c_str());
    }
  }

private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

void write_plain(const std::string& path, const std::string& content, mode_t mode = 0600) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
  BOOST_REQUIRE_EQUAL(::chmod(path.c_str(), mode), 0);
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  BOOST_REQUIRE_EQUAL(::lstat(path.c_str(), &st), 0);
  return st.st_mode & 07777;
}

/// Names in `dir` starting with `prefix`.
std::vector<std::string> entries_with_prefix(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    auto name = e.path().filename().string();
    if (name.compare(0, prefix.size(), prefix) == 0)
      out.push_back(name);
  }
  return out;
}

/// A pid that no process has (a child that already exited and was reaped).
pid_t dead_pid() {
  pid_t pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0)
    ::_exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return pid;
}

} // namespace

BOOST_AUTO_TEST_SUITE(platform_files_test)

// --- cache directory from the environment -------------------------------------------------

BOOST_AUTO_TEST_CASE(cache_dir_prefers_msiv2_cache_dir_then_xdg_runtime_dir_then_home) {
  env_guard env;
  env.set("MSIV2_CACHE_DIR", std::string("/var/tmp/msiv2-x/"));
  env.set("XDG_RUNTIME_DIR", std::string("/run/user/4242"));
  env.set("HOME", std::string("/home/someone"));
  auto dir = cache_dir_from_environment();
  BOOST_REQUIRE_MESSAGE(dir.ok(), why(dir));
  BOOST_REQUIRE(dir->has_value());
  BOOST_TEST(**dir == "/var/tmp/msiv2-x");

  env.set("MSIV2_CACHE_DIR", std::nullopt);
  dir = cache_dir_from_environment();
  BOOST_REQUIRE_MESSAGE(dir.ok(), why(dir));
  BOOST_TEST(dir->value() == "/run/user/4242/msiv2");

  env.set("MSIV2_CACHE_DIR", std::string("")); // empty counts as unset
  env.set("XDG_RUNTIME_DIR", std::nullopt);
  dir = cache_dir_from_environment();
  BOOST_REQUIRE_MESSAGE(dir.ok(), why(dir));
  BOOST_TEST(dir->value() == "/home/someone/.cache/msiv2");
}

BOOST_AUTO_TEST_CASE(cache_dir_none_turns_persistence_off) {
  env_guard env;
  env.set("MSIV2_CACHE_DIR", std::string("none"));
  auto dir = cache_dir_from_environment();
  BOOST_REQUIRE_MESSAGE(dir.ok(), why(dir));
  BOOST_TEST(!dir->has_value());
}

BOOST_AUTO_TEST_CASE(cache_dir_relative_path_or_nothing_set_is_an_error_naming_the_variable) {
  env_guard env;
  env.set("MSIV2_CACHE_DIR", std::string("relative/dir"));
  auto dir = cache_dir_from_environment();
  BOOST_REQUIRE(!dir.ok());
  BOOST_TEST(contains(dir.error(), "MSIV2_CACHE_DIR"));
  BOOST_TEST(contains(dir.error(), "relative/dir"));

  env.set("MSIV2_CACHE_DIR", std::nullopt);
  env.set("XDG_RUNTIME_DIR", std::string("run/user"));
  dir = cache_dir_from_environment();
  BOOST_REQUIRE(!dir.ok());
  BOOST_TEST(contains(dir.error(), "XDG_RUNTIME_DIR"));

  env.set("XDG_RUNTIME_DIR", std::nullopt);
  env.set("HOME", std::string("home"));
  dir = cache_dir_from_environment();
  BOOST_REQUIRE(!dir.ok());
  BOOST_TEST(contains(dir.error(), "HOME"));

  env.set("HOME", std::nullopt);
  dir = cache_dir_from_environment();
  BOOST_REQUIRE(!dir.ok());
  BOOST_TEST(contains(dir.error(), "MSIV2_CACHE_DIR"));
}

// --- prepare_private_dir -------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(prepare_creates_missing_dirs_0700_with_a_locks_dir) {
  msiv2::test::temp_dir tmp{"files-test"};
  const std::string dir = tmp / "a/b/msiv2";
  auto made = prepare_private_dir(dir);
  BOOST_REQUIRE_MESSAGE(made.ok(), why(made));
  BOOST_TEST(mode_of(dir) == 0700u);
  BOOST_TEST(mode_of(dir + "/locks") == 0700u);
  BOOST_TEST(fs::is_directory(dir + "/locks"));
  // Idempotent: a second call accepts what the first made.
  made = prepare_private_dir(dir);
  BOOST_TEST(made.ok(), why(made));
}

BOOST_AUTO_TEST_CASE(prepare_refuses_group_or_world_writable_dir_without_chmod) {
  msiv2::test::temp_dir tmp{"files-test"};
  for (mode_t mode : {0770u, 0707u, 0777u}) {
    char name[16];
    std::snprintf(name, sizeof name, "d%04o", static_cast<unsigned>(mode));
    const std::string dir = tmp / name;
    BOOST_REQUIRE_EQUAL(::mkdir(dir.c_str(), 0700), 0);
    BOOST_REQUIRE_EQUAL(::chmod(dir.c_str(), mode), 0);
    auto made = prepare_private_dir(dir);
    BOOST_REQUIRE(!made.ok());
    BOOST_TEST_MESSAGE(made.error());
    BOOST_TEST(contains(made.error(), dir));
    BOOST_TEST(contains(made.error(), "writable by group or others"));
    BOOST_TEST(contains(made.error(), "chmod 700"));
    BOOST_TEST(mode_of(dir) == mode); // never chmod-ed
  }
}

// Review M9: whoever can rename an ancestor can swap the cache directory.
BOOST_AUTO_TEST_CASE(prepare_refuses_an_ancestor_others_can_write_without_the_sticky_bit) {
  msiv2::test::temp_dir tmp{"files-test"};
  const std::string shared = tmp / "shared";
  BOOST_REQUIRE_EQUAL(::mkdir(shared.c_str(), 0700), 0);
  BOOST_REQUIRE_EQUAL(::chmod(shared.c_str(), 0777), 0);
  auto made = prepare_private_dir(shared + "/x/msiv2");
  BOOST_REQUIRE(!made.ok());
  BOOST_TEST(contains(made.error(), "ancestor " + shared), made.error());
  BOOST_TEST(contains(made.error(), "without the sticky bit"));
  // Sticky, as /tmp is: fine.
  BOOST_REQUIRE_EQUAL(::chmod(shared.c_str(), 01777), 0);
  auto sticky = prepare_private_dir(shared + "/y/msiv2");
  BOOST_TEST(sticky.ok(), why(sticky));
}

BOOST_AUTO_TEST_CASE(prepare_refuses_a_symlinked_dir_even_to_a_good_one) {
  msiv2::test::temp_dir tmp{"files-test"};
  const std::string real = tmp / "real";
  BOOST_REQUIRE(prepare_private_dir(real).ok());
  const std::string link = tmp / "link";
  BOOST_REQUIRE_EQUAL(::symlink(real.c_str(), link.c_str()), 0);
  auto made = prepare_private_dir(link);
  BOOST_REQUIRE(!made.ok());
  BOOST_TEST(contains(made.error(), link));
  BOOST_TEST(contains(made.error(), "symlink"));
}

BOOST_AUTO_TEST_CASE(prepare_refuses_a_symlinked_locks_dir) {
  msiv2::test::temp_dir tmp{"files-test"};
  const std::string dir = tmp / "c";
  const std::string elsewhere = tmp / "elsewhere";
  BOOST_REQUIRE_EQUAL(::mkdir(dir.c_str(), 0700), 0);
  BOOST_REQUIRE_EQUAL(::mkdir(elsewhere.c_str(), 0700), 0);
  BOOST_REQUIRE_EQUAL(::symlink(elsewhere.c_str(), (dir + "/locks").c_str()), 0);
  auto made = prepare_private_dir(dir);
  BOOST_REQUIRE(!made.ok());
  BOOST_TEST(contains(made.error(), dir + "/locks"));
  BOOST_TEST(contains(made.error(), "symlink"));
}

BOOST_AUTO_TEST_CASE(prepare_refuses_a_file_where_the_dir_should_be) {
  msiv2::test::temp_dir tmp{"files-test"};
  const std::string path = tmp / "file";
  write_plain(path, "x");
  auto made = prepare_private_dir(path);
  BOOST_REQUIRE(!made.ok());
  BOOST_TEST(contains(made.error(), path));
  BOOST_TEST(contains(made.error(), "not a directory"));
}

BOOST_AUTO_TEST_CASE(prepare_refuses_a_dir_owned_by_another_user) {
  if (::geteuid() != 0) {
    BOOST_TEST_MESSAGE("skipped: chown to another uid needs root (running as uid "
                       << ::geteuid() << ")");
    return;
  }
  msiv2::test::temp_dir tmp{"files-test"};
  const std::string dir = tmp / "foreign";
  BOOST_REQUIRE_EQUAL(::mkdir(dir.c_str(), 0700), 0);
  BOOST_REQUIRE_EQUAL(::chown(dir.c_str(), 65534, 65534), 0);
  auto made = prepare_private_dir(dir);
  BOOST_REQUIRE(!made.ok());
  BOOST_TEST(contains(made.error(), dir));
  BOOST_TEST(contains(made.error(), "owned by uid 65534"));
}

// --- reads ---------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(read_gives_content_and_mode_of_a_private_file_and_missing_when_absent) {
  msiv2::test::temp_dir tmp{"files-test"};
  write_plain(tmp / "good", "hello", 0600);
  auto r = read_private_file(tmp.path(), "good");
  BOOST_REQUIRE_MESSAGE(r.status == read_status::ok, r.reason);
  BOOST_TEST(r.bytes == "hello");
  BOOST_TEST(r.mode == 0600u);
  write_plain(tmp / "empty", "", 0600);
  r = read_private_file(tmp.path(), "empty");
  BOOST_REQUIRE_MESSAGE(r.status == read_status::ok, r.reason);
  BOOST_TEST(r.bytes.empty());
  r = read_private_file(tmp.path(), "absent");
  BOOST_TEST((r.status == read_status::missing));
}

BOOST_AUTO_TEST_CASE(read_refuses_a_symlink_even_to_a_good_file) {
  msiv2::test::temp_dir tmp{"files-test"};
  write_plain(tmp / "good", "hello", 0600);
  BOOST_REQUIRE_EQUAL(::symlink((tmp / "good").c_str(), (tmp / "link").c_str()), 0);
  auto r = read_private_file(tmp.path(), "link");
  BOOST_REQUIRE((r.status == read_status::refused));
  BOOST_TEST(r.bytes.empty());
  BOOST_TEST(contains(r.reason, tmp / "link"));
  BOOST_TEST(contains(r.reason, "symlink"));
}

// Review L6: only what the module itself writes (0600, one link) is trusted.
BOOST_AUTO_TEST_CASE(read_refuses_files_open_to_group_or_others) {
  msiv2::test::temp_dir tmp{"files-test"};
  for (mode_t mode : {0602u, 0620u, 0666u, 0644u, 0640u, 0604u}) {
    const std::string name = "w" + std::to_string(mode);
    write_plain(tmp / name, "data", mode);
    auto r = read_private_file(tmp.path(), name);
    BOOST_REQUIRE((r.status == read_status::refused));
    BOOST_TEST(contains(r.reason, tmp / name));
    BOOST_TEST(contains(r.reason, "open to group or others"), r.reason);
  }
}

BOOST_AUTO_TEST_CASE(read_refuses_a_file_with_more_than_one_hard_link) {
  msiv2::test::temp_dir tmp{"files-test"};
  write_plain(tmp / "cert-x.json", "{}", 0600);
  BOOST_REQUIRE_EQUAL(::link((tmp / "cert-x.json").c_str(), (tmp / "elsewhere").c_str()), 0);
  auto r = read_private_file(tmp.path(), "cert-x.json");
  BOOST_REQUIRE((r.status == read_status::refused));
  BOOST_TEST(contains(r.reason, "2 hard links"), r.reason);
  BOOST_REQUIRE_EQUAL(::unlink((tmp / "elsewhere").c_str()), 0);
  BOOST_TEST((read_private_file(tmp.path(), "cert-x.json").status == read_status::ok));
}

BOOST_AUTO_TEST_CASE(read_refuses_a_fifo_without_hanging) {
  msiv2::test::temp_dir tmp{"files-test"};
  BOOST_REQUIRE_EQUAL(::mkfifo((tmp / "fifo").c_str(), 0600), 0);
  auto r = read_private_file(tmp.path(), "fifo");
  BOOST_REQUIRE((r.status == read_status::refused));
  BOOST_TEST(contains(r.reason, "not a regular file"));
  // A directory is refused the same way.
  BOOST_REQUIRE_EQUAL(::mkdir((tmp / "sub").c_str(), 0700), 0);
  r = read_private_file(tmp.path(), "sub");
  BOOST_TEST((r.status == read_status::refused));
}

BOOST_AUTO_TEST_CASE(read_refuses_a_file_over_the_size_limit) {
  msiv2::test::temp_dir tmp{"files-test"};
  write_plain(tmp / "big", std::string(101, 'x'), 0600);
  auto r = read_private_file(tmp.path(), "big", 100);
  BOOST_REQUIRE((r.status == read_status::refused));
  BOOST_TEST(contains(r.reason, "too large"));
  r = read_private_file(tmp.path(), "big", 101);
  BOOST_TEST((r.status == read_status::ok));
}

BOOST_AUTO_TEST_CASE(read_refuses_a_file_owned_by_another_user) {
  if (::geteuid() != 0) {
    BOOST_TEST_MESSAGE("skipped: chown to another uid needs root (running as uid "
                       << ::geteuid() << ")");
    return;
  }
  msiv2::test::temp_dir tmp{"files-test"};
  write_plain(tmp / "foreign", "data", 0600);
  BOOST_REQUIRE_EQUAL(::chown((tmp / "foreign").c_str(), 65534, 65534), 0);
  auto r = read_private_file(tmp.path(), "foreign");
  BOOST_REQUIRE((r.status == read_status::refused));
  BOOST_TEST(contains(r.reason, "owned by uid 65534"));
}

BOOST_AUTO_TEST_CASE(file_names_with_separators_are_refused) {
  msiv2::test::temp_dir tmp{"files-test"};
  for (const char* name : {"", ".", "..", "../x", "a/b"}) {
    auto r = read_private_file(tmp.path(), name);
    BOOST_TEST((r.status == read_status::refused), "read of '" << name << "'");
    BOOST_TEST(!write_file_atomically(tmp.path(), name, "x").ok(), "write of '" << name << "'");
    BOOST_TEST(!remove_file(tmp.path(), name).ok(), "remove of '" << name << "'");
  }
}

// --- atomic writes -------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(atomic_write_creates_0600_even_under_umask_0_and_replaces) {
  msiv2::test::temp_dir tmp{"files-test"};
  mode_t old_umask = ::umask(0);
  auto written = write_file_atomically(tmp.path(), "art.json", "first");
  ::umask(old_umask);
  BOOST_REQUIRE_MESSAGE(written.ok(), why(written));
  BOOST_TEST(mode_of(tmp / "art.json") == 0600u);
  auto r = read_private_file(tmp.path(), "art.json");
  BOOST_REQUIRE_MESSAGE(r.status == read_status::ok, r.reason);
  BOOST_TEST(r.bytes == "first");

  written = write_file_atomically(tmp.path(), "art.json", std::string(300000, 'z'));
  BOOST_REQUIRE_MESSAGE(written.ok(), why(written));
  r = read_private_file(tmp.path(), "art.json");
  BOOST_REQUIRE_MESSAGE(r.status == read_status::ok, r.reason);
  BOOST_TEST(r.bytes == std::string(300000, 'z'));
  BOOST_TEST(entries_with_prefix(tmp.path(), ".").empty(), "a temp file was left behind");
}

BOOST_AUTO_TEST_CASE(atomic_write_replaces_a_symlink_instead_of_writing_through_it) {
  msiv2::test::temp_dir tmp{"files-test"};
  write_plain(tmp / "target", "keep", 0600);
  BOOST_REQUIRE_EQUAL(::symlink((tmp / "target").c_str(), (tmp / "art.json").c_str()), 0);
  auto written = write_file_atomically(tmp.path(), "art.json", "new");
  BOOST_REQUIRE_MESSAGE(written.ok(), why(written));
  BOOST_TEST(read_private_file(tmp.path(), "target").bytes == "keep");
  BOOST_TEST(read_private_file(tmp.path(), "art.json").bytes == "new");
}

BOOST_AUTO_TEST_CASE(atomic_write_into_a_missing_dir_names_the_path) {
  msiv2::test::temp_dir tmp{"files-test"};
  auto written = write_file_atomically(tmp / "nope", "art.json", "x");
  BOOST_REQUIRE(!written.ok());
  BOOST_TEST(contains(written.error(), tmp / "nope/art.json"));
  BOOST_TEST(contains(written.error(), std::strerror(ENOENT)));
}

// Review L5: temps are swept by age, whatever their pid says: pid 1 is always "alive" (a
// reused pid kept a dead writer's temp forever), and a fresh temp of a "dead" pid may be a
// live writer in another pid namespace.
BOOST_AUTO_TEST_CASE(atomic_write_sweeps_old_temp_files_and_keeps_fresh_ones) {
  msiv2::test::temp_dir tmp{"files-test"};
  const std::string old_alive = ".art.json.tmp.1.0011223344556677";
  const std::string fresh_dead = ".art.json.tmp." + std::to_string(dead_pid()) + ".8899aabbccddeeff";
  const std::string old_other = ".other.json.tmp.1.00";
  write_plain(tmp / old_alive, "partial");
  write_plain(tmp / fresh_dead, "partial");
  write_plain(tmp / old_other, "partial");
  for (const auto& name : {old_alive, old_other}) {
    struct timespec times[2] = {{::time(nullptr) - 120, 0}, {::time(nullptr) - 120, 0}};
    BOOST_REQUIRE_EQUAL(::utimensat(AT_FDCWD, (tmp / name).c_str(), times, AT_SYMLINK_NOFOLLOW), 0);
  }
  auto written = write_file_atomically(tmp.path(), "art.json", "x");
  BOOST_REQUIRE_MESSAGE(written.ok(), why(written));
  BOOST_TEST(!fs::exists(tmp / old_alive));
  BOOST_TEST(fs::exists(tmp / fresh_dead)); // may be a live writer in another pid namespace
  BOOST_TEST(fs::exists(tmp / old_other));  // another artifact's: swept by its own writes
}

BOOST_AUTO_TEST_CASE(remove_deletes_a_file_or_a_symlink_itself_and_missing_is_fine) {
  msiv2::test::temp_dir tmp{"files-test"};
  write_plain(tmp / "target", "keep", 0600);
  BOOST_REQUIRE_EQUAL(::symlink((tmp / "target").c_str(), (tmp / "link").c_str()), 0);
  BOOST_TEST(remove_file(tmp.path(), "link").ok());
  BOOST_TEST(!fs::exists(fs::symlink_status(tmp / "link")));
  BOOST_TEST(fs::exists(tmp / "target"));
  BOOST_TEST(remove_file(tmp.path(), "target").ok());
  BOOST_TEST(!fs::exists(tmp / "target"));
  BOOST_TEST(remove_file(tmp.path(), "target").ok());
}

// --- SIGKILL at random points while persisting ----------------------------------------------

namespace {

std::uint64_t fnv1a(std::string_view bytes) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

/// A self-validating payload: "MSIV2KILL <seq> <body length> <fnv1a of body>\n" + body.
std::string make_payload(std::uint64_t seq) {
  const std::size_t size = (seq % 2 == 0) ? 16 * 1024 : 200 * 1024;
  std::string body(size, '\0');
  for (std::size_t i = 0; i < size; ++i)
    body[i] = static_cast<char>('a' + (seq * 7 + i) % 26);
  char header[96];
  std::snprintf(header, sizeof header, "MSIV2KILL %llu %zu %016llx\n",
                static_cast<unsigned long long>(seq), size,
                static_cast<unsigned long long>(fnv1a(body)));
  return header + body;
}

/// Empty when `bytes` is one whole payload, else what is wrong with it.
std::string payload_problem(const std::string& bytes) {
  auto nl = bytes.find('\n');
  if (nl == std::string::npos)
    return "no header line (" + std::to_string(bytes.size()) + " bytes)";
  unsigned long long seq = 0, sum = 0;
  std::size_t len = 0;
  if (std::sscanf(bytes.c_str(), "MSIV2KILL %llu %zu %llx\n", &seq, &len, &sum) != 3)
    return "bad header '" + bytes.substr(0, nl) + "'";
  std::string_view body(bytes);
  body.remove_prefix(nl + 1);
  if (body.size() != len)
    return "seq " + std::to_string(seq) + ": body has " + std::to_string(body.size())
           + " bytes, header says " + std::to_string(len);
  if (fnv1a(body) != sum)
    return "seq " + std::to_string(seq) + ": checksum mismatch";
  return {};
}

/// Forks a writer that calls write(make_payload(seq)) for seq = iteration * 1,000,000, +1, ...
/// until it is killed, and kills it with SIGKILL after a random delay of up to 12 ms. The
/// writer says (through a pipe) when its first write is done and the delay starts then, so a
/// slow start (a loaded machine, a sanitizer's fork) cannot eat the delay: every kill lands
/// while it rewrites the file. Fails the test when the writer stopped by itself.
template <class Write>
void kill_a_writer_while_it_rewrites(int iteration, std::mt19937& rng, Write write) {
  std::uniform_int_distribution<int> delay_us(0, 12000);
  int started_pipe[2];
  BOOST_REQUIRE(::pipe(started_pipe) == 0);
  pid_t pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    ::alarm(10); // never outlive a parent that failed to kill us
    ::close(started_pipe[0]);
    for (std::uint64_t seq = static_cast<std::uint64_t>(iteration) * 1000000;; ++seq) {
      if (!write(make_payload(seq)))
        ::_exit(3);
      if (started_pipe[1] >= 0) {
        const char one = 1;
        if (::write(started_pipe[1], &one, 1) != 1)
          ::_exit(4);
        ::close(started_pipe[1]);
        started_pipe[1] = -1;
      }
    }
  }
  ::close(started_pipe[1]);
  char byte = 0;
  const auto got = ::read(started_pipe[0], &byte, 1);
  ::close(started_pipe[0]);
  BOOST_REQUIRE_MESSAGE(got == 1, "iteration " << iteration << ": the writer never finished a write");
  ::usleep(static_cast<useconds_t>(delay_us(rng)));
  ::kill(pid, SIGKILL);
  int status = 0;
  BOOST_REQUIRE_EQUAL(::waitpid(pid, &status, 0), pid);
  BOOST_REQUIRE_MESSAGE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                        "iteration " << iteration << ": the writer stopped by itself (status "
                                     << status << ")");
}

} // namespace

BOOST_AUTO_TEST_CASE(writer_killed_at_random_points_never_leaves_a_partial_file) {
  msiv2::test::temp_dir tmp{"files-test"};
  const std::string name = "artifact.json";
  const auto started = std::chrono::steady_clock::now();
  std::random_device rd;
  const unsigned seed = rd();
  BOOST_TEST_MESSAGE("random delay seed " << seed);
  std::mt19937 rng(seed);
  constexpr int iterations = 200;
  bool seen = false;
  int complete_reads = 0;
  for (int i = 0; i < iterations; ++i) {
    kill_a_writer_while_it_rewrites(i, rng, [&](const std::string& payload) {
      return write_file_atomically(tmp.path(), name, payload).ok();
    });
    auto r = read_private_file(tmp.path(), name);
    if (r.status == read_status::missing) {
      BOOST_REQUIRE_MESSAGE(!seen, "iteration " << i << ": the file vanished after it existed");
      continue;
    }
    BOOST_REQUIRE_MESSAGE(r.status == read_status::ok, "iteration " << i << ": " << r.reason);
    seen = true;
    auto problem = payload_problem(r.bytes);
    BOOST_REQUIRE_MESSAGE(problem.empty(), "iteration " << i << ": partial file: " << problem);
    ++complete_reads;
  }
  const auto elapsed = std::chrono::steady_clock::now() - started;
  BOOST_TEST_MESSAGE(iterations << " kills, " << complete_reads << " complete reads, "
                     << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()
                     << " ms");
  // Every writer finished a write before it was killed: the file is whole every time.
  BOOST_TEST(complete_reads == iterations);
  BOOST_TEST((elapsed < std::chrono::seconds(30)));
  // Killed writers' temps stay until they are stale_temp_age (60 s) old, then the next write
  // sweeps them (review L5: by age, not by pid). Age them rather than wait.
  auto temps = entries_with_prefix(tmp.path(), "." + name + ".tmp.");
  BOOST_TEST(temps.size() <= static_cast<std::size_t>(iterations));
  for (const auto& t : temps) {
    struct timespec old[2] = {{::time(nullptr) - 120, 0}, {::time(nullptr) - 120, 0}};
    ::utimensat(AT_FDCWD, (tmp / t).c_str(), old, AT_SYMLINK_NOFOLLOW);
  }
  // And the next process recovers: it writes, and no garbage stays.
  auto written = write_file_atomically(tmp.path(), name, make_payload(1));
  BOOST_REQUIRE_MESSAGE(written.ok(), why(written));
  BOOST_TEST(payload_problem(read_private_file(tmp.path(), name).bytes).empty());
  BOOST_TEST(entries_with_prefix(tmp.path(), "." + name + ".tmp.").empty());
}

// Review M5: a secret (the binding key) never has a name before it is complete, so a writer
// killed at any point leaves no file holding part or all of it, under any name.
BOOST_AUTO_TEST_CASE(secret_writer_killed_at_random_points_leaves_no_temp_file_at_all) {
  msiv2::test::temp_dir tmp{"files-test"};
  const std::string name = "binding-key.pem";
  std::random_device rd;
  const unsigned seed = rd();
  BOOST_TEST_MESSAGE("random delay seed " << seed);
  std::mt19937 rng(seed);
  constexpr int iterations = 60;
  int complete_reads = 0;
  for (int i = 0; i < iterations; ++i) {
    kill_a_writer_while_it_rewrites(i, rng, [&](const std::string& payload) {
      return write_secret_file(tmp.path(), name, payload).ok();
    });
    // Every entry of the directory is the secret itself, complete, or nothing.
    for (const auto& entry : entries_with_prefix(tmp.path(), ""))
      BOOST_REQUIRE_MESSAGE(entry == name, "iteration " << i << ": left behind: " << entry);
    auto r = read_private_file(tmp.path(), name);
    if (r.status == read_status::missing)
      continue; // killed between replacing the old one and linking the new one
    BOOST_REQUIRE_MESSAGE(r.status == read_status::ok, "iteration " << i << ": " << r.reason);
    BOOST_TEST(r.mode == 0600u);
    auto problem = payload_problem(r.bytes);
    BOOST_REQUIRE_MESSAGE(problem.empty(), "iteration " << i << ": partial file: " << problem);
    ++complete_reads;
  }
  BOOST_TEST(complete_reads > iterations / 2, "the writers hardly ever got to write");
}

// --- locks ---------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(two_locks_in_one_process_conflict_and_release_lets_the_other_in) {
  msiv2::test::temp_dir tmp{"files-test"};
  const std::string path = tmp / "a.lock";
  auto first = file_lock::try_acquire(path);
  BOOST_REQUIRE_MESSAGE(first.ok(), why(first));
  BOOST_REQUIRE(first->has_value());
  BOOST_TEST((*first)->held());
  BOOST_TEST(mode_of(path) == 0600u);

  auto second = file_lock::try_acquire(path);
  BOOST_REQUIRE_MESSAGE(second.ok(), why(second));
  BOOST_TEST(!second->has_value());

  (*first)->release();
  BOOST_TEST(!(*first)->held());
  second = file_lock::try_acquire(path);
  BOOST_REQUIRE_MESSAGE(second.ok(), why(second));
  BOOST_TEST(second->has_value());

  // Moving keeps it held; destroying releases it.
  {
    file_lock moved = std::move(**second);
    BOOST_TEST(moved.held());
    BOOST_TEST(!file_lock::try_acquire(path)->has_value());
  }
  BOOST_TEST(file_lock::try_acquire(path)->has_value());
}

BOOST_AUTO_TEST_CASE(acquire_gives_up_within_its_bound) {
  msiv2::test::temp_dir tmp{"files-test"};
  const std::string path = tmp / "a.lock";
  auto holder = file_lock::try_acquire(path);
  BOOST_REQUIRE(holder.ok() && holder->has_value());
  const auto started = std::chrono::steady_clock::now();
  auto waited = file_lock::acquire(path, std::chrono::milliseconds(150));
  const auto elapsed = std::chrono::steady_clock::now() - started;
  BOOST_REQUIRE_MESSAGE(waited.ok(), why(waited));
  BOOST_TEST(!waited->has_value());
  BOOST_TEST((elapsed >= std::chrono::milliseconds(150)));
  BOOST_TEST((elapsed < std::chrono::milliseconds(1000)));
}

BOOST_AUTO_TEST_CASE(a_lock_held_by_a_killed_child_is_taken_over) {
  msiv2::test::temp_dir tmp{"files-test"};
  const std::string path = tmp / "a.lock";
  pid_t child = child_holding_lock(path);
  auto attempt = file_lock::try_acquire(path);
  BOOST_REQUIRE_MESSAGE(attempt.ok(), why(attempt));
  BOOST_TEST(!attempt->has_value(), "the child's lock was not seen");
  kill_and_reap(child);
  const auto started = std::chrono::steady_clock::now();
  attempt = file_lock::acquire(path, std::chrono::seconds(2));
  BOOST_REQUIRE_MESSAGE(attempt.ok(), why(attempt));
  BOOST_TEST(attempt->has_value());
  BOOST_TEST((std::chrono::steady_clock::now() - started < std::chrono::milliseconds(100)));
}

BOOST_AUTO_TEST_CASE(lock_files_are_checked_like_reads) {
  msiv2::test::temp_dir tmp{"files-test"};
  write_plain(tmp / "target", "", 0600);
  BOOST_REQUIRE_EQUAL(::symlink((tmp / "target").c_str(), (tmp / "link.lock").c_str()), 0);
  auto attempt = file_lock::try_acquire(tmp / "link.lock");
  BOOST_REQUIRE(!attempt.ok());
  BOOST_TEST(contains(attempt.error(), tmp / "link.lock"));
  BOOST_TEST(contains(attempt.error(), "symlink"));

  write_plain(tmp / "open.lock", "", 0666);
  attempt = file_lock::try_acquire(tmp / "open.lock");
  BOOST_REQUIRE(!attempt.ok());
  BOOST_TEST(contains(attempt.error(), "open to group or others"));
}

// --- the cache directory held open (review M9) ----------------------------------------------

BOOST_AUTO_TEST_CASE(a_held_directory_swapped_for_a_symlink_still_gets_every_file_and_lock) {
  msiv2::test::temp_dir tmp{"files-test"};
  const std::string dir = tmp / "cache";
  auto held = private_dir::open(dir);
  BOOST_REQUIRE_MESSAGE(held.ok(), why(held));
  BOOST_TEST(held->path() == dir);
  // Someone renames the checked directory away and puts a symlink to a directory of theirs
  // (here: another empty one of ours) at its path.
  BOOST_REQUIRE_EQUAL(::rename(dir.c_str(), (tmp / "moved").c_str()), 0);
  BOOST_REQUIRE_EQUAL(::mkdir((tmp / "planted").c_str(), 0700), 0);
  BOOST_REQUIRE_EQUAL(::mkdir((tmp / "planted/locks").c_str(), 0700), 0);
  BOOST_REQUIRE_EQUAL(::symlink((tmp / "planted").c_str(), dir.c_str()), 0);

  auto w = write_file_atomically(*held, "cert-a.json", "certificate");
  BOOST_REQUIRE_MESSAGE(w.ok(), why(w));
  auto sw = write_secret_file(*held, "binding-key.pem", "key");
  BOOST_REQUIRE_MESSAGE(sw.ok(), why(sw));
  auto lock = lock_in(*held, "cert-a.json.lock");
  BOOST_REQUIRE_MESSAGE(lock.ok(), why(lock));
  BOOST_TEST(lock->has_value());
  auto r = read_private_file(*held, "cert-a.json");
  BOOST_TEST((r.status == read_status::ok));
  BOOST_TEST(r.bytes == "certificate");

  // Everything went into the directory that was checked, nothing into the planted one.
  BOOST_TEST(mode_of(tmp / "moved/cert-a.json") == 0600u);
  BOOST_TEST(mode_of(tmp / "moved/binding-key.pem") == 0600u);
  BOOST_TEST(mode_of(tmp / "moved/locks/cert-a.json.lock") == 0600u);
  BOOST_TEST(fs::is_empty(tmp / "planted/locks"));
  BOOST_TEST(entries_with_prefix(tmp / "planted", "").size() == 1u); // locks/ only

  auto gone = remove_file(*held, "cert-a.json");
  BOOST_REQUIRE_MESSAGE(gone.ok(), why(gone));
  BOOST_TEST(!fs::exists(tmp / "moved/cert-a.json"));
  // The path-based calls, by contrast, resolve the path again: they land in the planted one.
  auto by_path = write_file_atomically(dir, "other.json", "x");
  BOOST_REQUIRE_MESSAGE(by_path.ok(), why(by_path));
  BOOST_TEST(fs::exists(tmp / "planted/other.json"));
}

BOOST_AUTO_TEST_CASE(opening_a_held_directory_checks_what_it_opened) {
  msiv2::test::temp_dir tmp{"files-test"};
  // A symlink at the path is refused, even to a good directory.
  BOOST_REQUIRE_EQUAL(::mkdir((tmp / "real").c_str(), 0700), 0);
  BOOST_REQUIRE_EQUAL(::symlink((tmp / "real").c_str(), (tmp / "link").c_str()), 0);
  auto linked = private_dir::open(tmp / "link");
  BOOST_REQUIRE(!linked.ok());
  BOOST_TEST(contains(linked.error(), "symlink"));
  // A group-writable directory is refused and named.
  BOOST_REQUIRE_EQUAL(::mkdir((tmp / "open").c_str(), 0700), 0);
  BOOST_REQUIRE_EQUAL(::chmod((tmp / "open").c_str(), 0770), 0);
  auto open = private_dir::open(tmp / "open");
  BOOST_REQUIRE(!open.ok());
  BOOST_TEST(contains(open.error(), tmp / "open"));
  // A held directory moves with its descriptors.
  auto a = private_dir::open(tmp / "good");
  BOOST_REQUIRE_MESSAGE(a.ok(), why(a));
  private_dir b = std::move(*a);
  BOOST_TEST(b.fd() >= 0);
  BOOST_TEST(b.locks_fd() >= 0);
  BOOST_TEST(b.path() == tmp / "good");
}

// --- boot id and names ----------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(read_boot_id_trims_and_names_the_path_on_errors) {
  msiv2::test::temp_dir tmp{"files-test"};
  write_plain(tmp / "boot_id", "  6f1c2a4e-1d2b-4c3d-9e8f-0a1b2c3d4e5f \n", 0644);
  auto id = read_boot_id(tmp / "boot_id");
  BOOST_REQUIRE_MESSAGE(id.ok(), why(id));
  BOOST_TEST(*id == "6f1c2a4e-1d2b-4c3d-9e8f-0a1b2c3d4e5f");

  write_plain(tmp / "empty", "\n", 0644);
  id = read_boot_id(tmp / "empty");
  BOOST_REQUIRE(!id.ok());
  BOOST_TEST(contains(id.error(), tmp / "empty"));

  id = read_boot_id(tmp / "missing");
  BOOST_REQUIRE(!id.ok());
  BOOST_TEST(contains(id.error(), tmp / "missing"));

  if (fs::exists("/proc/sys/kernel/random/boot_id")) {
    id = read_boot_id();
    BOOST_REQUIRE_MESSAGE(id.ok(), why(id));
    BOOST_TEST(id->size() == 36u);
  }
}

BOOST_AUTO_TEST_CASE(artifact_file_name_is_prefix_dash_32_hex_of_sha256_and_suffix) {
  auto name = artifact_file_name("cert", "identity=abc;attested=1", ".json");
  BOOST_TEST(name == "cert-" + hex_lower(sha256("identity=abc;attested=1")).substr(0, 32)
                         + ".json");
  BOOST_TEST(name.size() == 5u + 32u + 5u);
  BOOST_TEST(name.find('/') == std::string::npos);
  BOOST_TEST(artifact_file_name("cert", "identity=abd;attested=1", ".json") != name);
  BOOST_TEST(artifact_file_name("cert", "../../etc/passwd", "").find('/') == std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
