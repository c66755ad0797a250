#pragma once

// token_snapshot: the lock-free read path of the access-token cache (issue 16).
//
// token_service stays the only writer of cached tokens. After every change to its cache (a
// token added or renewed, an entry evicted or dropped as expired, a restart) it publishes an
// immutable view of the cache here, before it answers anything that depends on the change.
// Readers on any thread (msiv2::client::try_cached, and get_token before it sends anything)
// look a request up in that view without a message and without a lock the writer holds.
//
// Structure. A view ("top") is an immutable array of `shard_count` immutable shards, each a
// vector of (hash, token) sorted by hash. A change copies the one shard it touches and the
// array of shard pointers (copy-on-write), never the whole cache, so filling a cache of n
// tokens costs O(n * (shard_count + n / shard_count)) pointer copies, not O(n^2) token copies.
// Changes are staged and published together by commit(), once per batch (an eviction of
// every token of a certificate is one publication).
//
// Reading. Every reader thread keeps its own reference to the last view it used, with that
// view's version. A read loads the current version (acquire); when it equals the thread's,
// the thread's view is used as is: no lock, no reference count, no write to shared memory.
// Otherwise the thread takes the current view under `mtx_`, which the writer holds only to
// swap one shared_ptr (the old view is released after the unlock): once per publication per
// thread, never per read.
//
// Memory ordering (why a reader never gets a token once its eviction is done):
// 1. The writer (one actor: its handlers run one at a time, each happens-before the next)
//    builds view V(n+1) completely, stores it into `current_` under `mtx_`, then stores
//    n+1 into `version_` with release order. Versions only grow.
// 2. "The eviction is done" means commit() returned; anything that happens after that store
//    (the caller got token_service's answer, or was otherwise synchronized with it) reads
//    `version_` >= n+1 by write-read coherence.
// 3. A reader uses its cached view only when that view's own version equals the version it
//    loaded, so it uses a view >= V(n+1). Otherwise it locks `mtx_` and copies `current_`,
//    which is >= V(n+1) because the store into `current_` is sequenced before the release
//    store of n+1, which the reader's acquire load synchronizes with (and the mutex orders the
//    two accesses to `current_` themselves).
// 4. A view and its shards and tokens are immutable after publication (except `last_used_ms`,
//    a relaxed atomic), and were fully built before the release store / unlock the reader
//    synchronizes with, so reading them races with nothing.
// Tokens past their refresh time are not served (the reader compares with the module's wall
// clock; token_service renews them and judges expiry), so no publication is needed when a
// token merely ages.
//
// A thread keeps the last view it read alive until it reads again (any token_snapshot) or
// exits: at most one view per thread, and never served after a newer one is published.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "msiv2/messages/token.hpp"

namespace msiv2 {

/// One cached token as readers see it. Immutable once published, except last_used_ms.
struct published_token {
  managed_identity identity; ///< normalized, as token_service keyed it
  std::string resource;      ///< normalized (no trailing "/.default")
  token_type type = token_type::mtls_pop;
  /// The token, with source = cache.
  token_result result;
  /// Served by readers while wall time < renew_at_ms (afterwards only token_service serves it,
  /// and starts its renewal).
  std::int64_t renew_at_ms = 0;
  /// The strongest binding_strength a request may ask for (token_request::min_binding) and
  /// still be served this token: the key store's strength for an mtls_pop token, bearer for a
  /// bearer token. Readers miss on a stronger minimum, so the request goes to token_service,
  /// which refuses it with binding_too_weak as for a request that finds no token.
  binding_strength binding = binding_strength::bearer;
  /// Wall ms of the last use: every hit stores it (readers on any thread and token_service,
  /// relaxed, only forward). token_service's idle/LRU eviction reads it from the cache entry's
  /// token (`entry.token->last_used_ms.load(std::memory_order_relaxed)`) when it decides what
  /// to drop or whether an idle token is worth renewing: hits served here count as use. A
  /// renewal copies it into the new token (a renewal is not a use).
  mutable std::atomic<std::int64_t> last_used_ms{0};
  /// token_snapshot::hash_of(identity, resource, type).
  std::size_t hash = 0;

  /// True when this is the token of that (normalized) request key.
  bool matches(const managed_identity& id, std::string_view res, token_type t) const noexcept {
    return type == t && identity.kind == id.kind && resource == res && identity.id == id.id;
  }
  /// Records a use at `now_ms` (a store only when the time moved: no cache-line traffic
  /// between threads reading the same token within one millisecond).
  void touch(std::int64_t now_ms) const noexcept {
    if (last_used_ms.load(std::memory_order_relaxed) < now_ms)
      last_used_ms.store(now_ms, std::memory_order_relaxed);
  }
};

using published_token_ptr = std::shared_ptr<const published_token>;

/// The published view of token_service's cache: one writer (token_service), any number of
/// reader threads. See the header comment for the design and the memory-ordering argument.
class token_snapshot {
public:
  /// Shards of a view (a change copies one shard and this many pointers).
  static constexpr std::size_t shard_count = 64;

  token_snapshot();
  token_snapshot(const token_snapshot&) = delete;
  token_snapshot& operator=(const token_snapshot&) = delete;

  /// The key hash of a normalized request key.
  static std::size_t hash_of(const managed_identity& id, std::string_view resource,
                             token_type type) noexcept;

  // Reader side (any thread).

  /// The token published for `req` if it is still before its refresh time at `now_ms`; empty
  /// for a miss, a request with claims or force_refresh, or one token_service would refuse
  /// (non-positive timeout, a min_binding stronger than the token's binding). The request is keyed as token_service keys it (a trailing
  /// "/.default" of the resource is ignored); nothing else is validated, because only
  /// validated keys are ever published. A hit is counted and marks the token used.
  std::optional<token_result> find(const token_request& req, std::int64_t now_ms) const;
  /// Hits served by find() so far.
  std::uint64_t hits() const noexcept;
  /// The version of the current view (grows by one per commit()).
  std::uint64_t version() const noexcept { return version_.load(std::memory_order_acquire); }

  // Writer side (token_service only, one at a time).

  /// Stages `tok` (replacing the token of the same key).
  void put(published_token_ptr tok);
  /// Stages the removal of `tok` (the same object put() staged), if it is still there: a
  /// newer token of the same key is left alone.
  void erase(const published_token& tok);
  /// Stages the removal of every token.
  void clear();
  /// Publishes what was staged since the last commit (nothing to do when nothing was).
  void commit();
  /// Tokens in the staged view.
  std::size_t size() const noexcept { return staged_size_; }

private:
  using slot = std::pair<std::size_t, published_token_ptr>;
  using shard = std::vector<slot>;
  using shard_ptr = std::shared_ptr<const shard>;
  struct view {
    std::uint64_t version = 0;
    std::array<shard_ptr, shard_count> shards;
  };
  using view_ptr = std::shared_ptr<const view>;

  /// The view this thread may read (see "Reading").
  const view& current_view() const;
  /// The staged copy of shard `i`, copied from the published one on the first change.
  shard& writable(std::size_t i);

  /// Distinguishes snapshots in a thread's cached view (an address can be reused).
  const std::uint64_t id_;
  mutable std::mutex mtx_;
  view_ptr current_;               ///< guarded by mtx_
  std::atomic<std::uint64_t> version_{0};
  struct alignas(64) counter {
    std::atomic<std::uint64_t> n{0};
  };
  static constexpr std::size_t hit_stripes = 8;
  mutable std::array<counter, hit_stripes> hits_;

  // Writer-only state.
  std::array<std::shared_ptr<shard>, shard_count> staged_; ///< null: unchanged since commit
  std::array<shard_ptr, shard_count> committed_;           ///< the shards of current_
  std::size_t staged_size_ = 0;
  std::uint64_t next_version_ = 1;
  bool dirty_ = false;
};

} // namespace msiv2
