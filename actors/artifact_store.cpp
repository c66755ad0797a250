#include "actors/artifact_store.hpp"

#include <openssl/crypto.h>

#include <optional>
#include <utility>

#include "platform/private_dir.hpp"

namespace msiv2 {

namespace {

constexpr const char* component = "artifact_store";

/// How often the worker retries the pending lock waits (non-blocking flock each time).
constexpr std::chrono::milliseconds lock_poll_interval{3};

} // namespace

/// Shared by the store and its worker thread: the worker keeps it alive on its own, so the
/// last owner of the store may let go from inside a callback running on the worker.
struct file_artifact_store::impl {
  using clock = std::chrono::steady_clock;
  using lock_done = std::function<void(artifact_lock_ptr, platform::file_read)>;

  /// A lock_and_read waiting for its lock.
  struct pending_wait {
    std::string name;
    clock::time_point started;
    clock::time_point deadline;
    lock_done done;
  };

  impl(std::string d, std::shared_ptr<platform::log_sink> l, bool inl)
    : dir(std::move(d)), log(l ? std::move(l) : platform::null_log_sink()), inline_mode(inl) {
    // Held open from here on: every file is reached from the descriptor of the directory that
    // was checked, never through the path again (review M9).
    if (auto opened = platform::private_dir::open(dir); opened)
      held.emplace(std::move(*opened));
    else
      log->write(platform::log_level::error, component,
                 "every read, write and lock will fail: " + opened.error());
  }

  const std::string dir;
  /// `dir` opened and checked (empty when that failed: every operation then fails).
  std::optional<platform::private_dir> held;
  const std::shared_ptr<platform::log_sink> log;
  const bool inline_mode;

  std::mutex mtx;
  std::condition_variable cv;
  std::deque<std::function<void()>> jobs;
  std::list<pending_wait> waits;
  bool stopping = false;
  bool exiting = false; ///< the process is exiting: lock waits give up at once
  bool busy = false;    ///< the worker is running a job or polling waits
  /// A wait was added since the last poll: it is tried at once, not at the next poll (an
  /// uncontended lock is then had without sitting out the rest of another wait's interval).
  bool new_wait = false;
  std::condition_variable idle_cv;
  std::thread worker;

  /// The workers still alive, so that the process does not exit with writes queued. A store
  /// can outlive main(): a queued callback may hold the last reference to its owner (and so to
  /// the store), and then no destructor waits for the worker. At exit the registry lets every
  /// live worker finish what it was given (bounded), instead of the kernel killing it with a
  /// write queued whose lock the process held: the next process would find no file.
  struct registry {
    std::mutex mtx;
    std::list<std::weak_ptr<impl>> live;
    ~registry() {
      std::list<std::weak_ptr<impl>> all;
      {
        std::lock_guard<std::mutex> guard(mtx);
        all.swap(live);
      }
      const auto deadline = clock::now() + std::chrono::seconds(5);
      for (auto& weak : all)
        if (auto s = weak.lock())
          s->drain_until(deadline);
    }
  };
  static registry& workers() {
    // The workers use OpenSSL (random temp-file names), so OpenSSL's own at-exit cleanup must
    // run after the drain. Handlers run in reverse order of registration: initializing OpenSSL
    // here, before the registry exists, registers its cleanup first, so it runs last.
    static const bool openssl_ready = OPENSSL_init_crypto(0, nullptr) == 1;
    (void)openssl_ready;
    static registry r;
    return r;
  }

  /// Gives up every lock wait and waits until the queue is empty (at most until `deadline`).
  void drain_until(clock::time_point deadline) {
    std::unique_lock<std::mutex> lock(mtx);
    exiting = true;
    cv.notify_all();
    idle_cv.wait_until(lock, deadline, [&] { return jobs.empty() && waits.empty() && !busy; });
  }

  std::string unusable() const { return "cache directory " + dir + " could not be opened"; }

  platform::file_read read_now(const std::string& name) const {
    if (!held) {
      platform::file_read r;
      r.status = platform::read_status::refused;
      r.reason = unusable();
      return r;
    }
    return platform::read_private_file(*held, name);
  }

  result<std::optional<platform::file_lock>> lock_once(const std::string& name) const {
    if (!held)
      return fail(unusable());
    return platform::lock_in(*held, name + ".lock");
  }

  result<std::optional<platform::file_lock>> lock_waiting(const std::string& name,
                                                          std::chrono::milliseconds wait) const {
    if (!held)
      return fail(unusable());
    return platform::lock_in(*held, name + ".lock", wait);
  }

  /// One non-blocking attempt: the lock, or null when another process holds it. A refused
  /// lock file (symlink, foreign, writable) counts as "not had": the caller goes ahead alone.
  /// `gave_up` is set when retrying is pointless.
  artifact_lock_ptr try_lock(const std::string& name, bool& gave_up) const {
    auto attempt = lock_once(name);
    if (!attempt) {
      log->write(platform::log_level::warning, component,
                 "going ahead without the writer lock: " + attempt.error());
      gave_up = true;
      return nullptr;
    }
    if (!attempt->has_value())
      return nullptr;
    return std::make_shared<artifact_lock>(std::move(**attempt), name);
  }

  result<void> write_now(const std::string& name, const std::string& bytes) const {
    auto written = held ? platform::write_file_atomically(*held, name, bytes)
                        : result<void>(fail(unusable()));
    if (!written)
      log->write(platform::log_level::warning, component, written.error());
    return written;
  }

  void remove_now(const std::string& name) const {
    if (auto removed = held ? platform::remove_file(*held, name) : result<void>(fail(unusable()));
        !removed)
      log->write(platform::log_level::warning, component, removed.error());
  }

  void enqueue(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> guard(mtx);
      jobs.push_back(std::move(job));
    }
    cv.notify_one();
  }

  void add_wait(pending_wait w) {
    {
      std::lock_guard<std::mutex> guard(mtx);
      waits.push_back(std::move(w));
      new_wait = true;
    }
    cv.notify_one();
  }

  /// Tries every pending wait once (outside the mutex); answers those that got their lock,
  /// ran out of time, or (when stopping) all of them.
  void poll_waits(bool give_up_all) {
    std::list<pending_wait> batch;
    {
      std::lock_guard<std::mutex> guard(mtx);
      batch.splice(batch.end(), waits);
    }
    const auto now = clock::now();
    for (auto i = batch.begin(); i != batch.end();) {
      artifact_lock_ptr lock;
      bool gave_up = give_up_all;
      if (!give_up_all)
        lock = try_lock(i->name, gave_up);
      if (lock || gave_up || now >= i->deadline) {
        const auto waited =
          std::chrono::duration_cast<std::chrono::milliseconds>(now - i->started).count();
        log->write(platform::log_level::debug, component,
                   (lock ? "writer lock of " + i->name + " had after "
                         : "going ahead without the writer lock of " + i->name + " after ") +
                     std::to_string(waited) + " ms" +
                     (lock || gave_up ? "" : give_up_all ? " (store stopping)" : " (wait bound)"));
        auto done = std::move(i->done);
        auto name = std::move(i->name);
        i = batch.erase(i);
        done(std::move(lock), read_now(name));
      } else {
        ++i;
      }
    }
    if (!batch.empty()) {
      std::lock_guard<std::mutex> guard(mtx);
      waits.splice(waits.begin(), batch); // older waits stay first
    }
  }

  static void run(std::shared_ptr<impl> self) {
    auto next_poll = clock::now();
    for (;;) {
      std::function<void()> job;
      bool poll = false;
      bool give_up = false;
      {
        std::unique_lock<std::mutex> lock(self->mtx);
        self->busy = false;
        for (;;) {
          const bool giving_up = self->stopping || self->exiting;
          if (!self->waits.empty() &&
              (giving_up || self->new_wait || clock::now() >= next_poll)) {
            poll = true;
            give_up = giving_up;
            self->new_wait = false;
            break;
          }
          if (!self->jobs.empty()) {
            job = std::move(self->jobs.front());
            self->jobs.pop_front();
            break;
          }
          self->idle_cv.notify_all();
          if (self->stopping)
            return; // every call made so far was answered
          if (self->waits.empty())
            self->cv.wait(lock);
          else
            self->cv.wait_until(lock, next_poll);
        }
        self->busy = true;
      }
      if (poll) {
        self->poll_waits(give_up);
        next_poll = clock::now() + lock_poll_interval;
      } else {
        job();
      }
    }
  }
};

std::shared_ptr<file_artifact_store> file_artifact_store::create(
    std::string dir, std::shared_ptr<platform::log_sink> log, bool inline_mode) {
  return std::shared_ptr<file_artifact_store>(
      new file_artifact_store(std::move(dir), std::move(log), inline_mode));
}

file_artifact_store::file_artifact_store(std::string dir, std::shared_ptr<platform::log_sink> log,
                                         bool inline_mode)
  : dir_(std::move(dir)), impl_(std::make_shared<impl>(dir_, std::move(log), inline_mode)) {
  if (!inline_mode) {
    auto& reg = impl::workers();
    {
      std::lock_guard<std::mutex> guard(reg.mtx);
      reg.live.remove_if([](const std::weak_ptr<impl>& w) { return w.expired(); });
      reg.live.push_back(impl_);
    }
    impl_->worker = std::thread([s = impl_] { impl::run(s); });
  }
}

file_artifact_store::~file_artifact_store() {
  if (impl_->inline_mode)
    return;
  {
    std::lock_guard<std::mutex> guard(impl_->mtx);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  // The last owner may let go from inside a `done` on the worker itself: it cannot join
  // itself, and the worker keeps `impl` alive until it has answered everything.
  if (impl_->worker.get_id() == std::this_thread::get_id())
    impl_->worker.detach();
  else
    impl_->worker.join();
}

void file_artifact_store::read(std::string name, std::function<void(platform::file_read)> done) {
  if (impl_->inline_mode) {
    done(impl_->read_now(name));
    return;
  }
  impl_->enqueue([s = impl_.get(), name = std::move(name), done = std::move(done)] {
    done(s->read_now(name));
  });
}

void file_artifact_store::lock_and_read(
    std::string name, std::chrono::milliseconds wait,
    std::function<void(artifact_lock_ptr, platform::file_read)> done) {
  if (impl_->inline_mode) {
    artifact_lock_ptr lock;
    auto attempt = impl_->lock_waiting(name, wait);
    if (!attempt)
      impl_->log->write(platform::log_level::warning, component,
                        "going ahead without the writer lock: " + attempt.error());
    else if (attempt->has_value())
      lock = std::make_shared<artifact_lock>(std::move(**attempt), name);
    done(std::move(lock), impl_->read_now(name));
    return;
  }
  const auto now = impl::clock::now();
  impl_->add_wait(
    {std::move(name), now, now + std::max(wait, std::chrono::milliseconds(0)), std::move(done)});
}

void file_artifact_store::write(std::string name, std::string bytes, artifact_lock_ptr held,
                                std::function<void(result<void>)> done) {
  auto job = [s = impl_.get(), name = std::move(name), bytes = std::move(bytes),
              held = std::move(held), done = std::move(done)]() mutable {
    auto written = s->write_now(name, bytes);
    held.reset(); // unlock only once the rename is durable
    if (done)
      done(std::move(written));
  };
  if (impl_->inline_mode)
    job();
  else
    impl_->enqueue(std::move(job));
}

void file_artifact_store::remove(std::string name, artifact_lock_ptr held) {
  auto job = [s = impl_.get(), name = std::move(name), held = std::move(held)]() mutable {
    s->remove_now(name);
    held.reset();
  };
  if (impl_->inline_mode)
    job();
  else
    impl_->enqueue(std::move(job));
}

std::shared_ptr<artifact_store> open_artifact_store(const std::string& dir,
                                                    const std::shared_ptr<platform::log_sink>& log) {
  if (dir.empty())
    return nullptr;
  if (auto prepared = platform::prepare_private_dir(dir); !prepared) {
    if (log)
      log->write(platform::log_level::error, component,
                 "persistence off: " + prepared.error() + "; caches stay in memory");
    return nullptr;
  }
  if (log)
    log->write(platform::log_level::info, component, "persisting artifacts in " + dir);
  return file_artifact_store::create(dir, log);
}

} // namespace msiv2
