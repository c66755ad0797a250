#pragma once

// artifact_store: the actors' asynchronous door to the cache directory (architecture.md,
// "Across processes on one machine"). Reads never lock; a writer takes the artifact's lock
// (bounded wait), re-reads, calls upstream only when still needed, writes, unlocks. Every
// blocking step (lock polling, fsync) runs on the store's worker thread, never on an actor
// thread; `done` callbacks run there too (actors forward them to themselves with anon_send).
//
// File names come from platform::artifact_file_name; locks live in `<dir>/locks/<name>.lock`.

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <caf/allowed_unsafe_message_type.hpp>

#include "msiv2/platform/files.hpp"
#include "msiv2/platform/log.hpp"
#include "msiv2/platform/result.hpp"

namespace msiv2 {

/// A held writer lock on one artifact. Dropping the last reference releases it (a process
/// that dies releases it through the kernel).
class artifact_lock {
public:
  explicit artifact_lock(platform::file_lock lock, std::string name)
    : lock_(std::move(lock)), name_(std::move(name)) {}
  const std::string& name() const noexcept { return name_; }

private:
  platform::file_lock lock_;
  std::string name_;
};

using artifact_lock_ptr = std::shared_ptr<artifact_lock>;

/// The asynchronous cache-directory interface the actors use.
class artifact_store {
public:
  virtual ~artifact_store() = default;

  /// The directory this store writes to.
  virtual const std::string& directory() const noexcept = 0;

  /// Reads `name` without locking.
  virtual void read(std::string name, std::function<void(platform::file_read)> done) = 0;

  /// Takes the writer lock of `name`, waiting at most `wait`, then re-reads `name`. `lock` is
  /// null when the lock could not be had in time (or the lock file was refused): the caller
  /// goes ahead alone. The read happens in both cases.
  virtual void lock_and_read(std::string name, std::chrono::milliseconds wait,
                             std::function<void(artifact_lock_ptr lock, platform::file_read)> done) = 0;

  /// Writes `bytes` to `name` atomically, then drops `held` (so the lock is released after the
  /// rename is durable). `done` (optional) gets the outcome.
  virtual void write(std::string name, std::string bytes, artifact_lock_ptr held,
                     std::function<void(result<void>)> done = {}) = 0;

  /// Deletes `name` (ours, found bad or orphaned), then drops `held`.
  virtual void remove(std::string name, artifact_lock_ptr held) = 0;
};

/// The cache-directory store: one worker thread runs reads, writes and removals in order;
/// lock waits are polled (a new wait at once, then a non-blocking flock every few milliseconds)
/// so that one artifact's wait never holds up another's work. Thread-safe.
class file_artifact_store final : public artifact_store,
                                  public std::enable_shared_from_this<file_artifact_store> {
public:
  /// A store on `dir`, which prepare_private_dir already accepted. `inline_mode` runs every
  /// call on the caller's thread (unit tests on CAF's test scheduler: deterministic, real files).
  static std::shared_ptr<file_artifact_store> create(std::string dir,
                                                     std::shared_ptr<platform::log_sink> log,
                                                     bool inline_mode = false);
  /// Finishes the calls already made (lock waits give up at once: null lock), then stops.
  ~file_artifact_store() override;

  const std::string& directory() const noexcept override { return dir_; }
  void read(std::string name, std::function<void(platform::file_read)> done) override;
  void lock_and_read(std::string name, std::chrono::milliseconds wait,
                     std::function<void(artifact_lock_ptr, platform::file_read)> done) override;
  void write(std::string name, std::string bytes, artifact_lock_ptr held,
             std::function<void(result<void>)> done = {}) override;
  void remove(std::string name, artifact_lock_ptr held) override;

private:
  file_artifact_store(std::string dir, std::shared_ptr<platform::log_sink> log, bool inline_mode);
  struct impl;
  std::string dir_;
  std::shared_ptr<impl> impl_;
};

/// The persistence of a module, from its configuration: a prepared cache directory and a
/// file_artifact_store on it, or null (memory only) when `dir` is empty or refused; a refusal
/// is logged at error level with the reason naming the path.
std::shared_ptr<artifact_store> open_artifact_store(const std::string& dir,
                                                    const std::shared_ptr<platform::log_sink>& log);

} // namespace msiv2

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(msiv2::artifact_lock_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(msiv2::platform::file_read)
