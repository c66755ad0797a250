#pragma once

// The production key_store for software keys: an RSA-2048 key made on a worker thread (key
// generation takes tens of milliseconds and must never run on an actor thread), proven to sign
// before it is handed out. With a cache directory the key is shared by this user's processes
// for one boot (architecture.md, "Across processes on one machine"): binding-key.pem (0600)
// holds it tagged with the boot id; a file from another boot, readable by others, unparsable
// or whose key cannot sign is replaced under the "binding-key" lock, and the certificate and
// attestation files of the replaced key (orphans) are deleted. The worker thread may block
// (file locks, fsync).

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "actors/runtime.hpp"
#include "platform/private_dir.hpp"
#include "platform/log.hpp"

namespace msiv2 {

/// Where and how software_key_store persists its key.
struct key_store_settings {
  /// A directory prepare_private_dir accepted (with its locks/ subdirectory); empty: the key
  /// lives in memory only.
  std::string cache_dir;
  /// Where the boot id is read.
  std::string boot_id_path = "/proc/sys/kernel/random/boot_id";
  /// Longest wait for another process's "binding-key" lock before going ahead alone.
  std::chrono::milliseconds lock_wait{10000};
  /// Where refusals and replacements are logged (null: nowhere).
  std::shared_ptr<platform::log_sink> log;
};

/// A software key_store with one worker thread. Thread-safe; every `done` runs on the worker
/// thread, in the order the calls were made.
class software_key_store final : public key_store {
public:
  /// Memory only.
  software_key_store();
  /// Persisted per `settings` (memory only when its cache_dir is empty).
  explicit software_key_store(key_store_settings settings);
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
    key_store_settings settings;
    /// settings.cache_dir held open (null: memory only).
    std::shared_ptr<const platform::private_dir> dir;

    result<key_ref> current_or_create();
    /// Rotates away from `failed_id` (the current key, or the file's).
    result<key_ref> rotate_from(const std::string& failed_id);
    /// The file's key when it may be used in this boot, else nullopt (`why` says why).
    std::optional<key_ref> read_file(const std::string& boot_id, std::string& why,
                                     std::string* file_key_id = nullptr);
    /// Makes a key, writes it (under the held lock) and deletes the orphans it leaves.
    result<key_ref> create_and_write(const std::string& boot_id, bool write);
    void log(platform::log_level level, const std::string& message);
  };

  void enqueue(std::function<void()> job);
  static void run(std::shared_ptr<shared> s);

  std::shared_ptr<shared> s_;
  std::thread worker_;
};

/// Deletes the cert-*.json and attestation-*.json files in `dir` that belong to another key
/// than `key_id` (orphans), each under its own lock when that lock is free (a busy one is
/// skipped: readers treat orphans as misses anyway); logs each deletion as `component`.
void purge_orphan_artifacts(const platform::private_dir& dir, const std::string& key_id,
                            platform::log_sink& log, const char* component);

/// The key stores' cache directory, opened once and used by descriptor from then on
/// (platform::private_dir, review M9); null, with a warning logged as `component`, when
/// `cache_dir` is empty or refused (the key then lives in this process only).
std::shared_ptr<const platform::private_dir> open_key_dir(const std::string& cache_dir,
                                                          platform::log_sink& log,
                                                          const char* component);

/// Makes a new RSA-2048 binding key (two generations raced on 2+ cores:
/// platform::generate_rsa_key_raced) and proves it signs (platform::prove_key_signs).
result<key_ref> make_software_key();
/// A key_ref for an existing key (computes its SPKI and key id).
result<key_ref> software_key_ref(platform::pkey_ptr key);

} // namespace msiv2
