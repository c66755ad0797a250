#include "tests/support/memory_artifact_store.hpp"

#include <utility>

namespace msiv2::test {

platform::file_read memory_artifact_store::read_now(const std::string& name) const {
  platform::file_read r;
  if (refused.count(name) > 0) {
    r.status = platform::read_status::refused;
    r.reason = dir_ + "/" + name + ": refused by the test (as if foreign or a symlink)";
    return r;
  }
  auto i = files.find(name);
  if (i == files.end()) {
    r.status = platform::read_status::missing;
    return r;
  }
  r.status = platform::read_status::ok;
  r.bytes = i->second;
  r.mode = 0600;
  return r;
}

artifact_lock_ptr memory_artifact_store::grant(const std::string& name) {
  auto lock = std::make_shared<artifact_lock>(platform::file_lock{}, name);
  ours_[name] = lock;
  return lock;
}

bool memory_artifact_store::locked_by_us(const std::string& name) const {
  auto i = ours_.find(name);
  return i != ours_.end() && !i->second.expired();
}

void memory_artifact_store::read(std::string name, std::function<void(platform::file_read)> done) {
  calls.push_back({call::kind::read, name, false, {}});
  done(read_now(name));
}

void memory_artifact_store::lock_and_read(
  std::string name, std::chrono::milliseconds wait,
  std::function<void(artifact_lock_ptr, platform::file_read)> done) {
  calls.push_back({call::kind::lock_and_read, name, false, wait});
  if (refuse_locks) {
    done(nullptr, read_now(name));
    return;
  }
  if (hold_back || others_.count(name) > 0 || locked_by_us(name)) {
    waiting_.push_back({std::move(name), std::move(done)});
    return;
  }
  auto lock = grant(name);
  done(std::move(lock), read_now(name));
}

void memory_artifact_store::write(std::string name, std::string bytes, artifact_lock_ptr held,
                                  std::function<void(result<void>)> done) {
  calls.push_back({call::kind::write, name, held != nullptr, {}});
  files[name] = std::move(bytes);
  held.reset();
  if (done)
    done(ok());
}

void memory_artifact_store::remove(std::string name, artifact_lock_ptr held) {
  calls.push_back({call::kind::remove, name, held != nullptr, {}});
  files.erase(name);
}

void memory_artifact_store::hold(const std::string& name) {
  others_.insert(name);
}

void memory_artifact_store::let_go(const std::string& name) {
  others_.erase(name);
  answer_waiters(true);
}

void memory_artifact_store::time_out_waits() {
  answer_waiters(false);
}

void memory_artifact_store::release_held_back() {
  hold_back = false;
  answer_waiters(true);
}

void memory_artifact_store::answer_waiters(bool give_locks) {
  auto all = std::move(waiting_);
  waiting_.clear();
  for (auto& w : all) {
    if (give_locks && (hold_back || others_.count(w.name) > 0 || locked_by_us(w.name))) {
      waiting_.push_back(std::move(w));
      continue;
    }
    auto lock = give_locks ? grant(w.name) : nullptr;
    w.done(std::move(lock), read_now(w.name));
  }
}

std::size_t memory_artifact_store::count(call::kind k, const std::string& name) const {
  std::size_t n = 0;
  for (auto& c : calls)
    n += c.what == k && (name.empty() || c.name == name) ? 1 : 0;
  return n;
}

} // namespace msiv2::test
