#include "actors/token_snapshot.hpp"

#include <algorithm>
#include <functional>

namespace msiv2 {

namespace {

constexpr std::string_view default_suffix = "/.default";

std::atomic<std::uint64_t> next_snapshot_id{1};

/// The view a thread read last, and of which snapshot (see "Reading" in the header).
struct thread_view {
  std::uint64_t owner = 0;
  std::uint64_t version = 0;
  std::shared_ptr<const void> keep; ///< owns `view`
  const void* view = nullptr;
};

thread_view& this_thread_view() {
  thread_local thread_view tv;
  return tv;
}

std::size_t this_thread_stripe(std::size_t stripes) {
  static std::atomic<std::size_t> next{0};
  thread_local std::size_t stripe = next.fetch_add(1, std::memory_order_relaxed) % stripes;
  return stripe;
}

template <class Shard>
auto first_of(Shard& s, std::size_t h) {
  return std::lower_bound(s.begin(), s.end(), h,
                          [](const auto& slot, std::size_t x) { return slot.first < x; });
}

} // namespace

token_snapshot::token_snapshot() : id_(next_snapshot_id.fetch_add(1, std::memory_order_relaxed)) {
  auto empty = std::make_shared<const shard>();
  auto v = std::make_shared<view>();
  v->version = 0;
  v->shards.fill(empty);
  committed_ = v->shards;
  current_ = std::move(v);
}

std::size_t token_snapshot::hash_of(const managed_identity& id, std::string_view resource,
                                    token_type type) noexcept {
  std::size_t h = std::hash<std::string_view>{}(resource);
  h ^= std::hash<std::string_view>{}(id.id) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  h ^= (static_cast<std::size_t>(id.kind) << 8 | static_cast<std::size_t>(type)) * 0x100000001b3ULL;
  return h;
}

const token_snapshot::view& token_snapshot::current_view() const {
  auto& tv = this_thread_view();
  auto v = version_.load(std::memory_order_acquire);
  if (tv.owner != id_ || tv.version != v) {
    view_ptr fresh;
    {
      std::lock_guard<std::mutex> g{mtx_};
      fresh = current_;
    }
    tv.owner = id_;
    tv.version = fresh->version;
    tv.view = fresh.get();
    tv.keep = std::move(fresh); // the previous view is released here, outside the lock
  }
  return *static_cast<const view*>(tv.view);
}

std::optional<token_result> token_snapshot::find(const token_request& req,
                                                 std::int64_t now_ms) const {
  if (!req.claims.empty() || req.force_refresh || req.timeout.count() <= 0)
    return std::nullopt;
  std::string_view res = req.resource;
  if (res.size() >= default_suffix.size()
      && res.compare(res.size() - default_suffix.size(), default_suffix.size(), default_suffix)
           == 0)
    res.remove_suffix(default_suffix.size());
  auto h = hash_of(req.identity, res, req.type);
  const shard& s = *current_view().shards[h % shard_count];
  for (auto i = first_of(s, h); i != s.end() && i->first == h; ++i) {
    const published_token& tok = *i->second;
    if (!tok.matches(req.identity, res, req.type))
      continue;
    if (now_ms >= tok.renew_at_ms)
      return std::nullopt; // due: token_service serves it and starts the renewal
    if (req.min_binding > tok.binding)
      return std::nullopt; // token_service answers binding_too_weak
    tok.touch(now_ms);
    hits_[this_thread_stripe(hit_stripes)].n.fetch_add(1, std::memory_order_relaxed);
    return tok.result;
  }
  return std::nullopt;
}

std::uint64_t token_snapshot::hits() const noexcept {
  std::uint64_t n = 0;
  for (auto& c : hits_)
    n += c.n.load(std::memory_order_relaxed);
  return n;
}

token_snapshot::shard& token_snapshot::writable(std::size_t i) {
  if (!staged_[i])
    staged_[i] = std::make_shared<shard>(*committed_[i]);
  dirty_ = true;
  return *staged_[i];
}

void token_snapshot::put(published_token_ptr tok) {
  if (!tok)
    return;
  auto h = tok->hash;
  auto& s = writable(h % shard_count);
  auto i = first_of(s, h);
  for (auto j = i; j != s.end() && j->first == h; ++j) {
    if (j->second->matches(tok->identity, tok->resource, tok->type)) {
      j->second = std::move(tok);
      return;
    }
  }
  s.emplace(i, h, std::move(tok));
  ++staged_size_;
}

void token_snapshot::erase(const published_token& tok) {
  auto h = tok.hash;
  auto idx = h % shard_count;
  auto is_it = [&](const slot& x) { return x.first == h && x.second.get() == &tok; };
  // Look in the committed shard first: erasing an absent token copies nothing.
  const shard& look = staged_[idx] ? *staged_[idx] : *committed_[idx];
  auto found = first_of(look, h);
  while (found != look.end() && found->first == h && !is_it(*found))
    ++found;
  if (found == look.end() || !is_it(*found))
    return;
  auto& s = writable(idx);
  for (auto i = first_of(s, h); i != s.end() && i->first == h; ++i)
    if (i->second.get() == &tok) {
      s.erase(i);
      --staged_size_;
      return;
    }
}

void token_snapshot::clear() {
  if (staged_size_ == 0)
    return;
  for (auto& s : staged_)
    s = std::make_shared<shard>();
  staged_size_ = 0;
  dirty_ = true;
}

void token_snapshot::commit() {
  if (!dirty_)
    return;
  auto v = std::make_shared<view>();
  v->version = next_version_++;
  for (std::size_t i = 0; i < shard_count; ++i) {
    if (staged_[i])
      committed_[i] = std::move(staged_[i]);
    staged_[i].reset();
    v->shards[i] = committed_[i];
  }
  dirty_ = false;
  view_ptr old;
  {
    std::lock_guard<std::mutex> g{mtx_};
    old = std::move(current_);
    current_ = std::move(v);
  }
  version_.store(next_version_ - 1, std::memory_order_release);
  // `old` is released here, after the unlock (a reader may still hold it: then it lives on).
}

} // namespace msiv2
