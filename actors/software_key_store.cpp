#include "actors/software_key_store.hpp"

#include <utility>

#include "platform/binding.hpp"
#include "platform/keys.hpp"

namespace msiv2 {

result<key_ref> make_software_key() {
  auto key = platform::generate_rsa_key(2048);
  if (!key)
    return fail("generating an RSA-2048 key: " + key.error());
  if (auto proven = platform::prove_key_signs(key->get()); !proven)
    return fail("the new key cannot sign: " + proven.error());
  auto spki = platform::public_key_der(key->get());
  if (!spki)
    return fail("exporting the public key: " + spki.error());
  auto id = platform::key_id(key->get());
  if (!id)
    return fail("computing the key id: " + id.error());
  key_ref ref;
  ref.spki_der = std::move(*spki);
  ref.key_id = *id;
  ref.key = std::make_shared<const binding_key>(std::move(*key), std::move(*id));
  return ref;
}

software_key_store::software_key_store()
  : s_(std::make_shared<shared>()), worker_([s = s_] { run(s); }) {}

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
    if (s->current && s->current->key_id == key_id)
      s->current.reset();
    done(s->current_or_create());
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

result<key_ref> software_key_store::shared::current_or_create() {
  if (!current) {
    auto made = make_software_key();
    if (!made)
      return fail("software key store: " + made.error());
    current = std::move(*made);
  }
  return *current;
}

} // namespace msiv2
