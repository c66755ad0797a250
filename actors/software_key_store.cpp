#include "actors/software_key_store.hpp"

#include <cerrno>
#include <cstring>
#include <system_error>

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include "actors/persisted.hpp"
#include "platform/binding.hpp"
#include "platform/encoding.hpp"
#include "platform/files.hpp"
#include "platform/keys.hpp"

namespace msiv2 {

result<key_ref> software_key_ref(platform::pkey_ptr key) {
  auto spki = platform::public_key_der(key.get());
  if (!spki)
    return fail("exporting the public key: " + spki.error());
  auto id = platform::key_id(key.get());
  if (!id)
    return fail("computing the key id: " + id.error());
  key_ref ref;
  ref.spki_der = std::move(*spki);
  ref.key_id = *id;
  ref.key = std::make_shared<const binding_key>(std::move(key), std::move(*id));
  return ref;
}

result<key_ref> make_software_key() {
  auto key = platform::generate_rsa_key_raced(2048);
  if (!key)
    return fail("generating an RSA-2048 key: " + key.error());
  if (auto proven = platform::prove_key_signs(key->get()); !proven)
    return fail("the new key cannot sign: " + proven.error());
  return software_key_ref(std::move(*key));
}

void purge_orphan_artifacts(const platform::private_dir& dir, const std::string& key_id,
                            platform::log_sink& log, const char* component) {
  std::vector<std::string> names;
  // A description of its own (a dup would share the offset of the kept descriptor).
  int own = ::openat(dir.fd(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR* d = own < 0 ? nullptr : ::fdopendir(own);
  if (d == nullptr) {
    if (own >= 0)
      ::close(own);
    log.write(platform::log_level::warning, component,
              "listing " + dir.path() + " for orphans: " + std::strerror(errno));
    return;
  }
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    bool ours = (name.rfind("cert-", 0) == 0 || name.rfind("attestation-", 0) == 0) &&
                name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0;
    if (ours)
      names.push_back(std::move(name));
  }
  ::closedir(d);
  for (auto& name : names) {
    auto lock = platform::lock_in(dir, name + ".lock");
    if (!lock || !*lock)
      continue; // busy (or refused): its reader treats the orphan as a miss
    auto r = platform::read_private_file(dir, name);
    if (r.status != platform::read_status::ok)
      continue;
    if (persisted::key_id_of(r.bytes) == key_id)
      continue;
    if (auto gone = platform::remove_file(dir, name); gone)
      log.write(platform::log_level::info, component,
                "deleted " + dir.path() + "/" + name + ": made for another key");
    else
      log.write(platform::log_level::warning, component, gone.error());
  }
}

std::shared_ptr<const platform::private_dir> open_key_dir(const std::string& cache_dir,
                                                          platform::log_sink& log,
                                                          const char* component) {
  if (cache_dir.empty())
    return nullptr;
  auto opened = platform::private_dir::open(cache_dir);
  if (!opened) {
    log.write(platform::log_level::warning, component,
              "the binding key stays in this process only: " + opened.error());
    return nullptr;
  }
  return std::make_shared<const platform::private_dir>(std::move(*opened));
}

software_key_store::software_key_store() : software_key_store(key_store_settings{}) {}

software_key_store::software_key_store(key_store_settings settings)
  : s_(std::make_shared<shared>()) {
  if (!settings.log)
    settings.log = platform::null_log_sink();
  s_->settings = std::move(settings);
  s_->dir = open_key_dir(s_->settings.cache_dir, *s_->settings.log, "software_key_store");
  worker_ = std::thread([s = s_] { run(s); });
}

software_key_store::~software_key_store() {
  {
    std::lock_guard<std::mutex> guard(s_->mtx);
    s_->stopping = true;
  }
  s_->cv.notify_all();
  // The last owner may let go from inside a `done` on the worker itself: it cannot join
  // itself, and the worker keeps `shared` alive on its own.
  if (worker_.get_id() == std::this_thread::get_id())
    worker_.detach();
  else
    worker_.join();
}

void software_key_store::load_or_create(std::function<void(result<key_ref>)> done) {
  enqueue([s = s_.get(), done = std::move(done)] { done(s->current_or_create()); });
}

void software_key_store::rotate(std::string key_id, std::function<void(result<key_ref>)> done) {
  enqueue([s = s_.get(), key_id = std::move(key_id), done = std::move(done)] {
    done(s->rotate_from(key_id));
  });
}

void software_key_store::enqueue(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> guard(s_->mtx);
    s_->jobs.push_back(std::move(job));
  }
  s_->cv.notify_one();
}

void software_key_store::run(std::shared_ptr<shared> s) {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(s->mtx);
      s->cv.wait(lock, [&] { return s->stopping || !s->jobs.empty(); });
      if (s->jobs.empty())
        return; // stopping, and every call made so far was answered
      job = std::move(s->jobs.front());
      s->jobs.pop_front();
    }
    job();
  }
}

void software_key_store::shared::log(platform::log_level level, const std::string& message) {
  settings.log->write(level, "software_key_store", message);
}

std::optional<key_ref> software_key_store::shared::read_file(const std::string& boot_id,
                                                             std::string& why,
                                                             std::string* file_key_id) {
  auto path = dir->path() + "/" + persisted::key_file_name;
  auto r = platform::read_private_file(*dir, persisted::key_file_name, 64 * 1024);
  // The file's bytes and its PEM are cleared however this returns (review M5).
  struct clear_on_exit {
    std::string* s = nullptr;
    ~clear_on_exit() {
      if (s != nullptr)
        platform::secure_clear(*s);
    }
  } clear_bytes{&r.bytes};
  if (r.status == platform::read_status::missing) {
    why = path + " does not exist";
    return std::nullopt;
  }
  if (r.status == platform::read_status::refused) {
    why = r.reason;
    return std::nullopt;
  }
  auto f = persisted::decode_key_file(r.bytes);
  clear_on_exit clear_pem{f ? &f.value->pem : nullptr};
  if (!f) {
    why = path + ": " + f.reason;
    return std::nullopt;
  }
  if (file_key_id != nullptr)
    *file_key_id = f.value->key_id;
  if ((r.mode & 077) != 0) {
    why = path + " is readable by other users than its owner (mode " +
          std::to_string((r.mode >> 6) & 7) + std::to_string((r.mode >> 3) & 7) +
          std::to_string(r.mode & 7) + "): not trusted";
    return std::nullopt;
  }
  if (f.value->boot_id != boot_id) {
    why = path + " is from another boot (" + f.value->boot_id + ", now " + boot_id + ")";
    return std::nullopt;
  }
  auto key = platform::private_key_from_pem(f.value->pem);
  if (!key) {
    why = path + ": the key does not parse";
    return std::nullopt;
  }
  if (auto signs = platform::prove_key_signs(key->get()); !signs) {
    why = path + ": the key cannot sign: " + signs.error();
    return std::nullopt;
  }
  auto ref = software_key_ref(std::move(*key));
  if (!ref) {
    why = path + ": " + ref.error();
    return std::nullopt;
  }
  if (ref->key_id != f.value->key_id) {
    why = path + ": its header names key " + f.value->key_id + " but the key is " + ref->key_id;
    return std::nullopt;
  }
  return std::move(*ref);
}

result<key_ref> software_key_store::shared::create_and_write(const std::string& boot_id,
                                                             bool write) {
  auto made = make_software_key();
  if (!made)
    return fail("software key store: " + made.error());
  if (write) {
    auto bytes = persisted::encode_key(made->key->get(), boot_id, made->key_id);
    if (!bytes) {
      log(platform::log_level::warning, bytes.error());
    } else if (auto w = platform::write_secret_file(*dir, persisted::key_file_name, *bytes);
               !w) {
      log(platform::log_level::warning,
          "the binding key stays in this process only: " + w.error());
    } else {
      log(platform::log_level::info, "new binding key " + made->key_id + " written to " +
                                       dir->path() + "/" + persisted::key_file_name);
      purge_orphan_artifacts(*dir, made->key_id, *settings.log, "software_key_store");
    }
    if (bytes)
      platform::secure_clear(*bytes);
  }
  return made;
}

result<key_ref> software_key_store::shared::current_or_create() {
  if (current)
    return *current;
  if (!dir) {
    auto made = make_software_key();
    if (!made)
      return fail("software key store: " + made.error());
    current = std::move(*made);
    return *current;
  }
  auto boot = platform::read_boot_id(settings.boot_id_path);
  if (!boot) {
    log(platform::log_level::warning,
        "the binding key stays in this process only: " + boot.error());
    auto made = make_software_key();
    if (!made)
      return fail("software key store: " + made.error());
    current = std::move(*made);
    return *current;
  }
  std::string why;
  if (auto k = read_file(*boot, why)) {
    current = std::move(*k);
    return *current;
  }
  auto lock = platform::lock_in(*dir, std::string(persisted::key_lock_name) + ".lock",
                                 settings.lock_wait);
  bool held = lock && *lock;
  if (held) {
    // Another process may have made the key while this one waited.
    if (auto k = read_file(*boot, why)) {
      current = std::move(*k);
      return *current;
    }
  } else {
    log(platform::log_level::warning,
        "the binding-key lock was not had in time (" +
          (lock ? std::string("busy") : lock.error()) +
          "): this process goes ahead with a key of its own, not shared");
  }
  if (why.find("does not exist") == std::string::npos)
    log(platform::log_level::warning, "binding key file replaced: " + why);
  auto made = create_and_write(*boot, held);
  if (!made)
    return made;
  current = std::move(*made);
  return *current;
}

result<key_ref> software_key_store::shared::rotate_from(const std::string& failed_id) {
  if (!dir) {
    if (current && current->key_id == failed_id)
      current.reset();
    return current_or_create();
  }
  if (current && current->key_id != failed_id)
    return *current; // already rotated away from it
  auto boot = platform::read_boot_id(settings.boot_id_path);
  if (!boot) {
    current.reset();
    return current_or_create();
  }
  auto lock = platform::lock_in(*dir, std::string(persisted::key_lock_name) + ".lock",
                                 settings.lock_wait);
  bool held = lock && *lock;
  if (held) {
    std::string why;
    std::string file_key;
    if (auto k = read_file(*boot, why, &file_key); k && k->key_id != failed_id) {
      // Another process rotated already: share its key.
      current = std::move(*k);
      return *current;
    }
  }
  log(platform::log_level::warning, "rotating the binding key away from " + failed_id);
  auto made = create_and_write(*boot, held);
  if (!made)
    return made;
  current = std::move(*made);
  return *current;
}

} // namespace msiv2
