#include "actors/tpm_key_store.hpp"

#include <utility>

#include "actors/persisted.hpp"
#include "actors/software_key_store.hpp"
#include "platform/binding.hpp"
#include "platform/files.hpp"
#include "platform/keys.hpp"
#include "platform/tpm_key.hpp"
#include "platform/tpm_provider.hpp"

namespace msiv2 {

result<key_ref> tpm_key_ref(const platform::tpm_config& cfg, const platform::tpm_key_blob& blob,
                            bool self_test) {
  auto key = platform::tpm_pkey(cfg, blob);
  if (!key)
    return key.fail();
  if (!self_test)
    return software_key_ref(std::move(*key));
  // The self-test: PSS with salt 32 is what the CSR and TLS 1.3 need; a TPM that signs PSS with
  // another salt length (some may use the maximum) would make certificates and handshakes fail
  // later and far from the cause.
  if (auto proven = platform::prove_key_signs(key->get()); !proven)
    return fail("the TPM key failed its self-test (an RSASSA-PSS SHA-256 signature made in the "
                "TPM, verified in software with salt length 32): "
                + proven.error());
  return software_key_ref(std::move(*key));
}

tpm_key_store::tpm_key_store(tpm_key_store_settings settings) : s_(std::make_shared<shared>()) {
  if (!settings.log)
    settings.log = platform::null_log_sink();
  s_->settings = std::move(settings);
  s_->dir = open_key_dir(s_->settings.cache_dir, *s_->settings.log, "tpm_key_store");
  worker_ = std::thread([s = s_] { run(s); });
}

tpm_key_store::~tpm_key_store() {
  {
    std::lock_guard<std::mutex> guard(s_->mtx);
    s_->stopping = true;
  }
  s_->cv.notify_all();
  if (worker_.get_id() == std::this_thread::get_id())
    worker_.detach();
  else
    worker_.join();
}

void tpm_key_store::load_or_create(std::function<void(result<key_ref>)> done) {
  enqueue([s = s_.get(), done = std::move(done)]() mutable { s->run_load(std::move(done)); });
}

void tpm_key_store::rotate(std::string key_id, std::function<void(result<key_ref>)> done) {
  enqueue([s = s_.get(), key_id = std::move(key_id), done = std::move(done)]() mutable {
    s->run_rotate(key_id, std::move(done));
  });
}

binding_strength tpm_key_store::strength() const {
  switch (s_->chosen.load()) {
    case shared::mode::tpm: return binding_strength::hardware_key;
    case shared::mode::fallback: return s_->settings.fallback->strength();
    case shared::mode::undecided: break;
  }
  return s_->settings.fallback ? binding_strength::software_key : binding_strength::hardware_key;
}

void tpm_key_store::enqueue(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> guard(s_->mtx);
    s_->jobs.push_back(std::move(job));
  }
  s_->cv.notify_one();
}

void tpm_key_store::run(std::shared_ptr<shared> s) {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(s->mtx);
      s->cv.wait(lock, [&] { return s->stopping || !s->jobs.empty(); });
      if (s->jobs.empty())
        return;
      job = std::move(s->jobs.front());
      s->jobs.pop_front();
    }
    job();
  }
}

void tpm_key_store::shared::log(platform::log_level level, const std::string& message) {
  settings.log->write(level, "tpm_key_store", message);
}

void tpm_key_store::shared::run_load(std::function<void(result<key_ref>)> done) {
  if (chosen.load() == mode::fallback) {
    settings.fallback->load_or_create(std::move(done));
    return;
  }
  auto k = current_or_create();
  if (k) {
    if (chosen.exchange(mode::tpm) != mode::tpm)
      log(platform::log_level::info, "binding keys are held by the TPM at " + settings.tpm.tcti
                                       + " (key " + k->key_id + ")");
    done(std::move(k));
    return;
  }
  if (settings.fallback && chosen.load() == mode::undecided) {
    chosen = mode::fallback;
    log(platform::log_level::warning,
        "key store auto: using software keys, the TPM is not usable: " + k.error());
    settings.fallback->load_or_create(std::move(done));
    return;
  }
  done(fail("TPM key store: " + k.error()));
}

void tpm_key_store::shared::run_rotate(const std::string& key_id,
                                       std::function<void(result<key_ref>)> done) {
  if (chosen.load() == mode::fallback) {
    settings.fallback->rotate(key_id, std::move(done));
    return;
  }
  auto k = rotate_from(key_id);
  if (!k) {
    done(fail("TPM key store: " + k.error()));
    return;
  }
  done(std::move(k));
}

result<std::optional<key_ref>> tpm_key_store::shared::read_file(std::string& why, bool& replace) {
  replace = false;
  auto path = dir->path() + "/" + tpm_key_file_name;
  auto r = platform::read_private_file(*dir, tpm_key_file_name, 64 * 1024);
  if (r.status == platform::read_status::missing) {
    why = path + " does not exist";
    replace = true;
    return std::optional<key_ref>();
  }
  if (r.status == platform::read_status::refused) {
    why = r.reason;
    replace = true;
    return std::optional<key_ref>();
  }
  auto blob = platform::decode_tpm_key_blob(r.bytes);
  if (!blob) {
    why = path + ": " + blob.error();
    replace = true;
    return std::optional<key_ref>();
  }
  // The TPM must answer (an unreachable TPM is an error, or the software store under `auto`;
  // the file is kept), but the key is not loaded here: its first signature (the TLS handshake
  // of the first token call) is the load check. A TPM that refuses it there (cleared owner
  // seed, another TPM) marks the key unusable; the token exchange then re-mints, the key
  // manager asks rotate(), and rotate_from() replaces it. Loading it here too cost one more TPM
  // operation (connect, storage key, load, flush) on every start, after a reboot ahead of the
  // first token.
  if (auto reachable = platform::probe_tpm(settings.tpm); !reachable)
    return reachable.fail(); // the TPM is unreachable or broken: keep the file
  auto ref = tpm_key_ref(settings.tpm, *blob, /*self_test=*/false);
  if (!ref)
    return ref.fail();
  return std::optional<key_ref>(std::move(*ref));
}

result<key_ref> tpm_key_store::shared::create_and_write(bool write) {
  auto blob = platform::create_tpm_binding_key(settings.tpm);
  if (!blob)
    return blob.fail();
  auto ref = tpm_key_ref(settings.tpm, *blob);
  if (!ref)
    return ref;
  if (write) {
    if (auto w = platform::write_file_atomically(*dir, tpm_key_file_name,
                                                 platform::encode_tpm_key_blob(*blob));
        !w) {
      log(platform::log_level::warning,
          "the TPM binding key stays in this process only: " + w.error());
    } else {
      log(platform::log_level::info, "new TPM binding key " + ref->key_id + " written to "
                                       + dir->path() + "/" + tpm_key_file_name);
      purge_orphan_artifacts(*dir, ref->key_id, *settings.log, "tpm_key_store");
    }
  }
  return ref;
}

result<key_ref> tpm_key_store::shared::current_or_create() {
  if (current)
    return *current;
  if (!dir) {
    auto made = create_and_write(false);
    if (!made)
      return made;
    current = std::move(*made);
    return *current;
  }
  std::string why;
  bool replace = false;
  auto found = read_file(why, replace);
  if (!found)
    return found.fail();
  if (*found) {
    current = std::move(**found);
    return *current;
  }
  auto lock = platform::lock_in(*dir, std::string(persisted::key_lock_name) + ".lock",
                                 settings.lock_wait);
  bool held = lock && *lock;
  if (held) {
    // Another process may have made the key while this one waited.
    found = read_file(why, replace);
    if (!found)
      return found.fail();
    if (*found) {
      current = std::move(**found);
      return *current;
    }
  } else {
    log(platform::log_level::warning,
        "the binding-key lock was not had in time ("
          + (lock ? std::string("busy") : lock.error())
          + "): this process goes ahead with a TPM key of its own, not shared");
  }
  if (why.find("does not exist") == std::string::npos)
    log(platform::log_level::warning, "TPM binding key replaced: " + why);
  auto made = create_and_write(held);
  if (!made)
    return made;
  current = std::move(*made);
  return *current;
}

result<key_ref> tpm_key_store::shared::rotate_from(const std::string& failed_id) {
  if (current && current->key_id != failed_id)
    return *current;
  if (!dir) {
    current.reset();
    return current_or_create();
  }
  auto lock = platform::lock_in(*dir, std::string(persisted::key_lock_name) + ".lock",
                                 settings.lock_wait);
  bool held = lock && *lock;
  if (held) {
    std::string why;
    bool replace = false;
    auto found = read_file(why, replace);
    if (found && *found && (*found)->key_id != failed_id) {
      current = std::move(**found);
      return *current;
    }
  }
  if (current && current->key_id == failed_id && current->key && current->key->unusable())
    log(platform::log_level::warning,
        "TPM binding key replaced: the TPM no longer loads this key (" + failed_id
          + "; the TPM was cleared or replaced): making a new one");
  else
    log(platform::log_level::warning, "rotating the TPM binding key away from " + failed_id);
  auto made = create_and_write(held);
  if (!made)
    return made;
  current = std::move(*made);
  return *current;
}

} // namespace msiv2
