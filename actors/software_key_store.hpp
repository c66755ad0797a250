#pragma once

// The production key_store for software keys: an in-memory RSA-2048 key made on a worker
// thread (key generation takes tens of milliseconds and must never run on an actor thread),
// proven to sign before it is handed out. Persistence (the per-boot 0600 file) comes later.

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "actors/runtime.hpp"

namespace msiv2 {

/// An in-memory software key_store with one worker thread. Thread-safe; every `done` runs on
/// the worker thread, in the order the calls were made.
class software_key_store final : public key_store {
public:
  software_key_store();
  /// Finishes the calls already made, then stops the worker.
  ~software_key_store() override;

  software_key_store(const software_key_store&) = delete;
  software_key_store& operator=(const software_key_store&) = delete;

  /// The current key, created (and proven) on the first call.
  void load_or_create(std::function<void(result<key_ref>)> done) override;
  /// Drops `key_id` when it is the current key and creates a new one; otherwise answers the
  /// current key.
  void rotate(std::string key_id, std::function<void(result<key_ref>)> done) override;

private:
  // Shared with the worker thread, which may outlive this object by a moment (see the
  // destructor).
  struct shared {
    std::mutex mtx;
    std::condition_variable cv;
    std::deque<std::function<void()>> jobs;
    bool stopping = false;
    std::optional<key_ref> current; // worker thread only

    result<key_ref> current_or_create();
  };

  void enqueue(std::function<void()> job);
  static void run(std::shared_ptr<shared> s);

  std::shared_ptr<shared> s_;
  std::thread worker_;
};

/// Makes a new RSA-2048 binding key and proves it signs (platform::prove_key_signs).
result<key_ref> make_software_key();

} // namespace msiv2
