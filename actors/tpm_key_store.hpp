#pragma once

// The key_store whose binding key lives in a TPM 2.0 (platform/tpm_key, platform/tpm_provider):
// an RSA-2048 sign-only key the TPM generated and never lets out. The key is kept as a
// TPM-wrapped blob in the user's private cache directory (binding-key.tpm, 0600): useless
// without this TPM and its owner seed, private to the user like the rest of the cache, and not
// tied to the boot: after a reboot the same key (same key id) loads again, so the persisted
// binding certificate is adopted. (A TPM persistent handle would be shared by every user of
// the machine, needs owner authorization to create, and there are only a few of them.)
//
// Before a key is handed out it passes a self-test: one RSASSA-PSS SHA-256 signature made in
// the TPM and verified in software with salt length 32 (protocol.md; TLS 1.3). A TPM that
// fails it, or that cannot be reached, makes the store fail with key_failed and a message
// naming the TPM, the device and group, or the TCTI. A key the TPM refuses to load (its owner
// seed was cleared, another TPM, a damaged blob) is replaced by a new one, the certificate and
// attestation files of the old key are deleted, and one log line says why.
//
// Selection (module_config::key_store): `tpm` uses this store and never falls back; `auto`
// gives it a software fallback: when the TPM is missing or unusable at the first key request,
// the store says so in the log and hands every call to the software store from then on.
//
// One worker thread runs every TPM operation (they block); `done` runs on it, in call order.

#include <atomic>
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
#include "platform/tpm.hpp"
#include "platform/tpm_key.hpp"

namespace msiv2 {

/// Where and how tpm_key_store keeps its key.
struct tpm_key_store_settings {
  /// The TPM to use (TCTI, retries).
  platform::tpm_config tpm;
  /// A directory prepare_private_dir accepted; empty: the key lives in this process only (a
  /// new TPM key per process).
  std::string cache_dir;
  /// Longest wait for another process's "binding-key" lock before going ahead alone (long: a
  /// TPM makes one key at a time, in seconds; msiv2::client uses at least 60 s).
  std::chrono::milliseconds lock_wait{60000};
  /// Where the choice, replacements and refusals are logged (null: nowhere).
  std::shared_ptr<platform::log_sink> log;
  /// `auto` mode: the store to use when the TPM is missing or unusable (null: `tpm` mode,
  /// failures are errors).
  std::shared_ptr<key_store> fallback;
};

/// A key_store backed by a TPM. Thread-safe.
class tpm_key_store final : public key_store {
public:
  explicit tpm_key_store(tpm_key_store_settings settings);
  /// Finishes the calls already made, then stops the worker.
  ~tpm_key_store() override;

  tpm_key_store(const tpm_key_store&) = delete;
  tpm_key_store& operator=(const tpm_key_store&) = delete;

  /// The TPM key from the cache directory when the TPM still loads it and it passes the
  /// self-test, else a new one (written for the other processes).
  void load_or_create(std::function<void(result<key_ref>)> done) override;
  /// Drops `key_id` when it is the current key and makes a new TPM key; otherwise answers the
  /// current key.
  void rotate(std::string key_id, std::function<void(result<key_ref>)> done) override;
  /// hardware_key once the TPM gave a key (or in `tpm` mode); software_key when `auto` fell
  /// back, or has not decided yet (the weaker of what it may give).
  binding_strength strength() const override;

private:
  struct shared {
    std::mutex mtx;
    std::condition_variable cv;
    std::deque<std::function<void()>> jobs;
    bool stopping = false;
    tpm_key_store_settings settings;
    /// settings.cache_dir held open (null: this process only).
    std::shared_ptr<const platform::private_dir> dir;
    std::optional<key_ref> current; // worker thread only
    enum class mode { undecided, tpm, fallback };
    std::atomic<mode> chosen{mode::undecided};

    void run_load(std::function<void(result<key_ref>)> done);
    void run_rotate(const std::string& key_id, std::function<void(result<key_ref>)> done);
    result<key_ref> current_or_create();
    result<key_ref> rotate_from(const std::string& failed_id);
    /// The key in the file when the TPM loads it and it passes the self-test. nullopt with
    /// `why` when there is none or the TPM refuses it (`replace` true: make a new one); a
    /// failure when the TPM cannot be used at all.
    result<std::optional<key_ref>> read_file(std::string& why, bool& replace);
    result<key_ref> create_and_write(bool write);
    void log(platform::log_level level, const std::string& message);
  };

  void enqueue(std::function<void()> job);
  static void run(std::shared_ptr<shared> s);

  std::shared_ptr<shared> s_;
  std::thread worker_;
};

/// A key_ref for a TPM key (SPKI and key id from a software copy of its public half). With
/// `self_test`, proven first: one PSS SHA-256 signature in the TPM that verifies in software
/// with salt 32. A new key is tested; a key read back from its file is not (the process that
/// made it tested it on this same TPM, and the file's key loading proves it is that TPM), which
/// keeps the first token after a reboot at one TPM signature: the TLS handshake's.
result<key_ref> tpm_key_ref(const platform::tpm_config& cfg, const platform::tpm_key_blob& blob,
                            bool self_test = true);

/// The cache file name of the TPM key blob.
inline constexpr const char* tpm_key_file_name = "binding-key.tpm";

} // namespace msiv2
