#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <iostream>
#include <cstdlib>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "actors/artifact_store.hpp"
#include "actors/runtime.hpp"
#include "platform/files.hpp"
#include "tests/support/temp_dir.hpp"

using namespace msiv2;
using platform::file_read;
using platform::read_status;
namespace fs = std::filesystem;
using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;
using msiv2::test::child_holding_lock;

namespace {

template <class R>
std::string why(const R& r) {
  return r.ok() ? std::string() : r.error();
}

/// A prepared cache directory under /tmp (mkdtemp), removed at scope exit.
class cache_dir {
public:
  cache_dir() {
    auto prepared = platform::prepare_private_dir(tmp_.path());
    BOOST_REQUIRE_MESSAGE(prepared.ok(), why(prepared));
  }
  const std::string& path() const { return tmp_.path(); }
  std::string lock_path(const std::string& name) const { return path() + "/locks/" + name + ".lock"; }

private:
  msiv2::test::temp_dir tmp_{"store-test"};
};

/// Keeps every line for the test to look at.
class recording_log : public platform::log_sink {
public:
  void write(platform::log_level level, std::string_view component,
             std::string_view message) override {
    std::lock_guard<std::mutex> guard(mtx_);
    lines_.push_back(std::string(platform::to_string(level)) + " " + std::string(component) + ": "
                     + std::string(message));
  }
  std::vector<std::string> lines() const {
    std::lock_guard<std::mutex> guard(mtx_);
    return lines_;
  }

private:
  mutable std::mutex mtx_;
  std::vector<std::string> lines_;
};

struct lock_outcome {
  artifact_lock_ptr lock;
  file_read read;
  steady::time_point at;
};

template <class T>
T wait_for(std::future<T>& f, milliseconds bound = milliseconds(5000)) {
  BOOST_REQUIRE_MESSAGE(f.wait_for(bound) == std::future_status::ready,
                        "no answer within " << bound.count() << " ms");
  return f.get();
}

file_read read_sync(artifact_store& store, const std::string& name) {
  std::promise<file_read> p;
  auto f = p.get_future();
  store.read(name, [&p](file_read r) { p.set_value(std::move(r)); });
  return wait_for(f);
}

result<void> write_sync(artifact_store& store, const std::string& name, std::string bytes,
                        artifact_lock_ptr held = nullptr) {
  std::promise<result<void>> p;
  auto f = p.get_future();
  store.write(name, std::move(bytes), std::move(held),
              [&p](result<void> r) { p.set_value(std::move(r)); });
  return wait_for(f);
}

/// Starts a lock_and_read; the future gets the outcome.
std::future<lock_outcome> lock_and_read_async(artifact_store& store, const std::string& name,
                                              milliseconds wait) {
  auto p = std::make_shared<std::promise<lock_outcome>>();
  auto f = p->get_future();
  store.lock_and_read(name, wait, [p](artifact_lock_ptr lock, file_read r) {
    p->set_value({std::move(lock), std::move(r), steady::now()});
  });
  return f;
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  BOOST_REQUIRE_EQUAL(::lstat(path.c_str(), &st), 0);
  return st.st_mode & 07777;
}

bool lock_is_free(const std::string& path) {
  auto attempt = platform::file_lock::try_acquire(path);
  BOOST_REQUIRE_MESSAGE(attempt.ok(), why(attempt));
  return attempt->has_value();
}

platform::file_lock hold(const std::string& path) {
  auto attempt = platform::file_lock::try_acquire(path);
  BOOST_REQUIRE_MESSAGE(attempt.ok(), why(attempt));
  BOOST_REQUIRE(attempt->has_value());
  return std::move(**attempt);
}

} // namespace

BOOST_AUTO_TEST_SUITE(actors_artifact_store_test)

// First in the suite: it forks, and no other test's thread exists yet.
BOOST_AUTO_TEST_CASE(writes_queued_when_the_process_exits_still_land) {
  cache_dir dir;
  std::cout.flush();
  std::fflush(nullptr);
  pid_t pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    ::alarm(20);
    msiv2::test::no_leak_check_in_this_child();
    auto store = file_artifact_store::create(dir.path(), platform::null_log_sink());
    // A slow job first, so the write is still queued when exit() starts; the write's callback
    // holds the last reference to the store, so no destructor would wait for the worker.
    store->read("slow.json", [](file_read) { std::this_thread::sleep_for(milliseconds(300)); });
    store->write("cert-exit.json", "landed", nullptr, [keep = store](result<void>) {});
    store.reset();
    std::exit(0);
  }
  int status = 0;
  BOOST_REQUIRE_EQUAL(::waitpid(pid, &status, 0), pid);
  BOOST_TEST((WIFEXITED(status) && WEXITSTATUS(status) == 0), "child status " << status);
  auto r = platform::read_private_file(dir.path(), "cert-exit.json");
  BOOST_TEST((r.status == read_status::ok), "the queued write was lost at exit: " << r.reason);
  BOOST_TEST(r.bytes == "landed");
}

BOOST_AUTO_TEST_CASE(reads_writes_and_removes_on_the_worker) {
  cache_dir dir;
  auto store = file_artifact_store::create(dir.path(), platform::null_log_sink());
  BOOST_TEST(store->directory() == dir.path());
  BOOST_TEST((read_sync(*store, "cert-a.json").status == read_status::missing));

  auto written = write_sync(*store, "cert-a.json", "{\"v\":1}");
  BOOST_REQUIRE_MESSAGE(written.ok(), why(written));
  auto r = read_sync(*store, "cert-a.json");
  BOOST_REQUIRE_MESSAGE(r.status == read_status::ok, r.reason);
  BOOST_TEST(r.bytes == "{\"v\":1}");
  BOOST_TEST(r.mode == 0600u);

  store->remove("cert-a.json", nullptr);
  // One worker runs the calls in order: the read sees the removal.
  BOOST_TEST((read_sync(*store, "cert-a.json").status == read_status::missing));
}

BOOST_AUTO_TEST_CASE(inline_mode_answers_on_the_callers_thread_before_returning) {
  cache_dir dir;
  auto store = file_artifact_store::create(dir.path(), platform::null_log_sink(), true);
  const auto me = std::this_thread::get_id();
  bool written = false;
  store->write("att-x.json", "jwt-file", nullptr, [&](result<void> r) {
    BOOST_TEST(r.ok());
    BOOST_TEST((std::this_thread::get_id() == me));
    written = true;
  });
  BOOST_TEST(written);
  bool read = false;
  store->read("att-x.json", [&](file_read r) {
    BOOST_TEST((r.status == read_status::ok));
    BOOST_TEST(r.bytes == "jwt-file");
    read = true;
  });
  BOOST_TEST(read);
  bool locked = false;
  store->lock_and_read("att-x.json", milliseconds(100), [&](artifact_lock_ptr lock, file_read r) {
    BOOST_REQUIRE(lock);
    BOOST_TEST(lock->name() == "att-x.json");
    BOOST_TEST(r.bytes == "jwt-file");
    BOOST_TEST(!lock_is_free(dir.lock_path("att-x.json")));
    store->remove("att-x.json", std::move(lock));
    locked = true;
  });
  BOOST_TEST(locked);
  BOOST_TEST(lock_is_free(dir.lock_path("att-x.json")));
  BOOST_TEST(!fs::exists(dir.path() + "/att-x.json"));
}

BOOST_AUTO_TEST_CASE(write_under_the_lock_releases_it_once_written) {
  cache_dir dir;
  auto store = file_artifact_store::create(dir.path(), platform::null_log_sink());
  auto f = lock_and_read_async(*store, "cert-b.json", milliseconds(1000));
  auto got = wait_for(f);
  BOOST_REQUIRE(got.lock);
  BOOST_TEST((got.read.status == read_status::missing));
  BOOST_TEST(!lock_is_free(dir.lock_path("cert-b.json")));
  BOOST_TEST(mode_of(dir.lock_path("cert-b.json")) == 0600u);

  auto written = write_sync(*store, "cert-b.json", "new", std::move(got.lock));
  BOOST_REQUIRE_MESSAGE(written.ok(), why(written));
  BOOST_TEST(lock_is_free(dir.lock_path("cert-b.json")));
  BOOST_TEST(read_sync(*store, "cert-b.json").bytes == "new");
}

BOOST_AUTO_TEST_CASE(lock_and_read_times_out_with_a_null_lock_but_still_reads) {
  cache_dir dir;
  for (bool inline_mode : {false, true}) {
    BOOST_TEST_CONTEXT("inline_mode " << inline_mode) {
      auto store = file_artifact_store::create(dir.path(), platform::null_log_sink(), inline_mode);
      BOOST_REQUIRE(platform::write_file_atomically(dir.path(), "cert-c.json", "old").ok());
      auto other = hold(dir.lock_path("cert-c.json"));
      const auto started = steady::now();
      auto f = lock_and_read_async(*store, "cert-c.json", milliseconds(150));
      auto got = wait_for(f);
      BOOST_TEST(!got.lock);
      BOOST_REQUIRE_MESSAGE(got.read.status == read_status::ok, got.read.reason);
      BOOST_TEST(got.read.bytes == "old");
      BOOST_TEST((got.at - started >= milliseconds(150)));
      BOOST_TEST((got.at - started < milliseconds(1500)));
    }
  }
}

BOOST_AUTO_TEST_CASE(a_lock_held_by_a_killed_child_is_had_right_after_the_kill) {
  cache_dir dir;
  // Fork before the store's worker thread exists.
  pid_t child = child_holding_lock(dir.lock_path("cert-d.json"));
  auto store = file_artifact_store::create(dir.path(), platform::null_log_sink());
  auto f = lock_and_read_async(*store, "cert-d.json", milliseconds(10000));
  BOOST_TEST((f.wait_for(milliseconds(200)) == std::future_status::timeout),
             "the lock was had while the child held it");
  const auto killed_at = steady::now();
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  auto got = wait_for(f, milliseconds(2000));
  BOOST_REQUIRE(got.lock);
  BOOST_TEST((got.at - killed_at < milliseconds(500)));
}

BOOST_AUTO_TEST_CASE(one_artifacts_wait_never_blocks_another_artifact) {
  cache_dir dir;
  auto store = file_artifact_store::create(dir.path(), platform::null_log_sink());
  BOOST_REQUIRE(platform::write_file_atomically(dir.path(), "cert-f.json", "f").ok());
  auto held_e = hold(dir.lock_path("cert-e.json"));
  auto waiting_e = lock_and_read_async(*store, "cert-e.json", milliseconds(10000));
  auto waiting_e2 = lock_and_read_async(*store, "cert-e.json", milliseconds(10000));

  const auto started = steady::now();
  auto got_f = lock_and_read_async(*store, "cert-f.json", milliseconds(10000));
  auto f = wait_for(got_f, milliseconds(3000)); // far below the 10 s wait on cert-e
  BOOST_REQUIRE(f.lock);
  BOOST_TEST(f.read.bytes == "f");
  BOOST_TEST(read_sync(*store, "cert-f.json").bytes == "f"); // plain work goes on too
  auto written = write_sync(*store, "cert-f.json", "f2", std::move(f.lock));
  BOOST_TEST(written.ok());
  BOOST_TEST((steady::now() - started < milliseconds(3000)));
  BOOST_TEST((waiting_e.wait_for(milliseconds(0)) == std::future_status::timeout));

  // Released: one of the two waiters gets it, then the other once the first lets go.
  held_e.release();
  auto e1 = wait_for(waiting_e, milliseconds(5000));
  BOOST_REQUIRE(e1.lock);
  BOOST_TEST((waiting_e2.wait_for(milliseconds(50)) == std::future_status::timeout));
  e1.lock.reset();
  auto e2 = wait_for(waiting_e2, milliseconds(5000));
  BOOST_TEST(e2.lock);
}

BOOST_AUTO_TEST_CASE(a_new_lock_wait_is_tried_at_once_not_at_the_next_poll) {
  // A cold start takes the certificate's lock, then the attestation's a moment later: the
  // second must not sit out the rest of the first one's poll interval (3 ms).
  cache_dir dir;
  auto store = file_artifact_store::create(dir.path(), platform::null_log_sink());
  const int n = 40;
  const auto started = steady::now();
  for (int i = 0; i < n; ++i) {
    auto f = lock_and_read_async(*store, "cert-n" + std::to_string(i) + ".json",
                                 milliseconds(10000));
    auto got = wait_for(f);
    BOOST_REQUIRE(got.lock);
  }
  // Waiting for the poll interval each time would take n * 3 ms at least.
  const auto took = steady::now() - started;
  BOOST_TEST((took < milliseconds(2 * n)),
             "took " << std::chrono::duration_cast<milliseconds>(took).count() << " ms");
}

BOOST_AUTO_TEST_CASE(destroying_the_store_answers_pending_waits_with_a_null_lock) {
  cache_dir dir;
  BOOST_REQUIRE(platform::write_file_atomically(dir.path(), "cert-g.json", "g").ok());
  auto held = hold(dir.lock_path("cert-g.json"));
  auto store = file_artifact_store::create(dir.path(), platform::null_log_sink());
  auto f = lock_and_read_async(*store, "cert-g.json", milliseconds(60000));
  std::promise<result<void>> wrote;
  auto wrote_f = wrote.get_future();
  store->write("cert-h.json", "h", nullptr, [&](result<void> r) { wrote.set_value(r); });
  const auto started = steady::now();
  store.reset();
  BOOST_TEST((steady::now() - started < milliseconds(2000)));
  BOOST_REQUIRE((f.wait_for(milliseconds(0)) == std::future_status::ready));
  auto got = f.get();
  BOOST_TEST(!got.lock);
  BOOST_TEST(got.read.bytes == "g");
  BOOST_REQUIRE((wrote_f.wait_for(milliseconds(0)) == std::future_status::ready));
  BOOST_TEST(wrote_f.get().ok()); // queued work is finished, not dropped
  BOOST_TEST(fs::exists(dir.path() + "/cert-h.json"));
}

BOOST_AUTO_TEST_CASE(a_store_released_from_its_own_callback_does_not_deadlock) {
  cache_dir dir;
  auto store = file_artifact_store::create(dir.path(), platform::null_log_sink());
  std::promise<void> let_go, finished;
  auto let_go_f = let_go.get_future().share();
  auto finished_f = finished.get_future();
  std::promise<file_read> later;
  auto later_f = later.get_future();
  store->read("x.json", [keep = store, let_go_f, &finished](file_read) mutable {
    let_go_f.wait();
    keep.reset(); // the last owner: the store is destroyed on its own worker
    finished.set_value();
  });
  store->read("y.json", [&later](file_read r) { later.set_value(std::move(r)); });
  store.reset();
  let_go.set_value();
  BOOST_REQUIRE((finished_f.wait_for(milliseconds(5000)) == std::future_status::ready));
  // The call queued behind it is still answered.
  auto r = wait_for(later_f);
  BOOST_TEST((r.status == read_status::missing));
}

BOOST_AUTO_TEST_CASE(files_go_to_the_checked_directory_after_its_path_is_swapped) {
  msiv2::test::temp_dir root{"store-test"};
  const std::string dir = root / "cache";
  auto store = open_artifact_store(dir, platform::null_log_sink());
  BOOST_REQUIRE(store);
  // The checked directory is renamed away and a symlink to another directory takes its path.
  BOOST_REQUIRE_EQUAL(::rename(dir.c_str(), (root / "moved").c_str()), 0);
  BOOST_REQUIRE_EQUAL(::mkdir((root / "planted").c_str(), 0700), 0);
  BOOST_REQUIRE_EQUAL(::mkdir((root / "planted/locks").c_str(), 0700), 0);
  BOOST_REQUIRE_EQUAL(::symlink((root / "planted").c_str(), dir.c_str()), 0);

  std::promise<std::pair<bool, std::string>> locked;
  store->lock_and_read("cert-a.json", milliseconds(1000), [&](artifact_lock_ptr lock, file_read) {
    bool had = lock != nullptr;
    store->write("cert-a.json", "certificate", std::move(lock), [&, had](result<void> r) {
      locked.set_value({had, r.ok() ? std::string() : r.error()});
    });
  });
  auto locked_f = locked.get_future();
  auto got = wait_for(locked_f);
  BOOST_TEST(got.first);
  BOOST_TEST(got.second == "");
  BOOST_TEST(read_sync(*store, "cert-a.json").bytes == "certificate");
  BOOST_TEST(fs::exists(root / "moved/cert-a.json"));
  BOOST_TEST(fs::exists(root / "moved/locks/cert-a.json.lock"));
  BOOST_TEST(!fs::exists(root / "planted/cert-a.json"));
  BOOST_TEST(fs::is_empty(root / "planted/locks"));
}

BOOST_AUTO_TEST_CASE(open_artifact_store_refuses_a_bad_dir_and_logs_why) {
  cache_dir dir;
  auto log = std::make_shared<recording_log>();
  BOOST_TEST(!open_artifact_store("", log));
  BOOST_TEST(log->lines().empty());

  auto good = open_artifact_store(dir.path() + "/sub", log);
  BOOST_REQUIRE(good);
  BOOST_TEST(good->directory() == dir.path() + "/sub");

  const std::string open_dir = dir.path() + "/open";
  BOOST_REQUIRE_EQUAL(::mkdir(open_dir.c_str(), 0700), 0);
  BOOST_REQUIRE_EQUAL(::chmod(open_dir.c_str(), 0777), 0);
  BOOST_TEST(!open_artifact_store(open_dir, log));
  auto lines = log->lines();
  BOOST_REQUIRE(!lines.empty());
  const auto& last = lines.back();
  BOOST_TEST_MESSAGE(last);
  BOOST_TEST(last.rfind("error artifact_store: persistence off: ", 0) == 0u);
  BOOST_TEST(last.find(open_dir) != std::string::npos);
  BOOST_TEST(last.find("caches stay in memory") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_refused_lock_file_means_going_ahead_alone_with_a_warning) {
  cache_dir dir;
  auto log = std::make_shared<recording_log>();
  const std::string elsewhere = dir.path() + "/elsewhere";
  BOOST_REQUIRE(platform::write_file_atomically(dir.path(), "elsewhere", "").ok());
  BOOST_REQUIRE_EQUAL(::symlink(elsewhere.c_str(), dir.lock_path("cert-i.json").c_str()), 0);
  auto store = file_artifact_store::create(dir.path(), log);
  const auto started = steady::now();
  auto f = lock_and_read_async(*store, "cert-i.json", milliseconds(10000));
  auto got = wait_for(f, milliseconds(2000));
  BOOST_TEST(!got.lock);
  BOOST_TEST((got.at - started < milliseconds(1000))); // no point waiting for it
  auto lines = log->lines();
  auto warning = std::find_if(lines.begin(), lines.end(), [](const std::string& l) {
    return l.rfind("warning artifact_store: ", 0) == 0;
  });
  BOOST_REQUIRE(warning != lines.end());
  BOOST_TEST(warning->find(dir.lock_path("cert-i.json")) != std::string::npos, *warning);
  BOOST_TEST(warning->find("symlink") != std::string::npos, *warning);
}

BOOST_AUTO_TEST_CASE(module_config_from_environment_fills_cache_dir_or_says_why_not) {
  const char* old = std::getenv("MSIV2_CACHE_DIR");
  const std::optional<std::string> saved = old ? std::optional<std::string>(old) : std::nullopt;

  ::setenv("MSIV2_CACHE_DIR", "/var/tmp/msiv2-cfg", 1);
  auto cfg = module_config::from_environment();
  BOOST_TEST(cfg.cache_dir == "/var/tmp/msiv2-cfg");
  BOOST_TEST(cfg.cache_dir_error.empty());

  ::setenv("MSIV2_CACHE_DIR", "none", 1);
  cfg = module_config::from_environment();
  BOOST_TEST(cfg.cache_dir.empty());
  BOOST_TEST(cfg.cache_dir_error.empty()); // memory only was asked for: nothing to report

  ::setenv("MSIV2_CACHE_DIR", "not/absolute", 1);
  cfg = module_config::from_environment();
  BOOST_TEST(cfg.cache_dir.empty());
  BOOST_TEST(cfg.cache_dir_error.find("MSIV2_CACHE_DIR") != std::string::npos);

  if (saved)
    ::setenv("MSIV2_CACHE_DIR", saved->c_str(), 1);
  else
    ::unsetenv("MSIV2_CACHE_DIR");
}

BOOST_AUTO_TEST_SUITE_END()
