#pragma once

// An artifact_store for unit tests of actors: the "files" live in a map and every call is
// answered inline (deterministic under CAF's test scheduler). A test can act as another
// process of the same user: write, corrupt or delete a file at any moment, hold an artifact's
// lock (our lock_and_read then waits until the test lets go or gives up), refuse every lock
// (the wait "timed out"), or hold back our lock_and_read answers to change files meanwhile.

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "actors/artifact_store.hpp"

namespace msiv2::test {

/// In-memory artifact_store; not thread-safe (the test scheduler runs everything on one
/// thread).
class memory_artifact_store final : public artifact_store {
public:
  memory_artifact_store() = default;

  const std::string& directory() const noexcept override { return dir_; }
  void read(std::string name, std::function<void(platform::file_read)> done) override;
  void lock_and_read(std::string name, std::chrono::milliseconds wait,
                     std::function<void(artifact_lock_ptr, platform::file_read)> done) override;
  void write(std::string name, std::string bytes, artifact_lock_ptr held,
             std::function<void(result<void>)> done = {}) override;
  void remove(std::string name, artifact_lock_ptr held) override;

  // -- the test, as another process ----------------------------------------------------------

  /// The files.
  std::map<std::string, std::string> files;
  /// Names whose read is `refused` (a foreign or symlinked file).
  std::set<std::string> refused;
  /// Every lock_and_read answers a null lock at once (the wait timed out).
  bool refuse_locks = false;
  /// Holds lock_and_read answers back until release_held_back().
  bool hold_back = false;

  /// Another process holds `name`'s lock: our lock_and_read waits.
  void hold(const std::string& name);
  /// The other process lets go of `name`: a waiting lock_and_read gets the lock and re-reads.
  void let_go(const std::string& name);
  /// Every waiting lock_and_read gives up: null lock, then the read.
  void time_out_waits();
  /// Answers the lock_and_read calls held back by `hold_back`.
  void release_held_back();

  /// True while one of our locks on `name` is alive (not dropped yet).
  bool locked_by_us(const std::string& name) const;
  /// How many lock_and_read calls are waiting or held back.
  std::size_t waiting() const { return waiting_.size(); }

  // -- what we did ----------------------------------------------------------------------------

  struct call {
    enum class kind { read, lock_and_read, write, remove } what;
    std::string name;
    bool with_lock = false; ///< write/remove: a held lock came with it
    std::chrono::milliseconds wait{0};
  };
  std::vector<call> calls;
  /// How many calls of `k` on `name` (any name when empty).
  std::size_t count(call::kind k, const std::string& name = {}) const;

private:
  struct waiter {
    std::string name;
    std::function<void(artifact_lock_ptr, platform::file_read)> done;
  };
  platform::file_read read_now(const std::string& name) const;
  artifact_lock_ptr grant(const std::string& name);
  void answer_waiters(bool give_locks);

  std::string dir_ = "/memory";
  std::set<std::string> others_;
  std::map<std::string, std::weak_ptr<artifact_lock>> ours_;
  std::vector<waiter> waiting_;
};

} // namespace msiv2::test
