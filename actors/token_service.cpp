#include "actors/token_service.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <limits>
#include <string_view>

#include <caf/actor_cast.hpp>
#include <caf/sec.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "io/retry.hpp"
#include "messages/errors.hpp"
#include "platform/encoding.hpp"

namespace msiv2 {

namespace {

using state = token_service_state;
using self_ptr = token_service::stateful_pointer<token_service_state>;

constexpr std::string_view default_suffix = "/.default";

const std::string& hits_key() {
  static const std::string k = "msiv2_cache_hits_total{artifact=\"access_token\"}";
  return k;
}
const std::string& misses_key() {
  static const std::string k = "msiv2_cache_misses_total{artifact=\"access_token\"}";
  return k;
}
const std::string& renewals_key() {
  static const std::string k = "msiv2_renewals_total{artifact=\"access_token\"}";
  return k;
}
const std::string& evictions_key() {
  static const std::string k = "msiv2_token_evictions_total";
  return k;
}
const std::string& lapses_key() {
  static const std::string k = "msiv2_token_lapses_total";
  return k;
}

bool bad_char(unsigned char c) noexcept {
  return c <= 0x20 || c == 0x7f;
}

bool has_bad_char(const std::string& s) noexcept {
  return std::any_of(s.begin(), s.end(), [](char c) { return bad_char(static_cast<unsigned char>(c)); });
}

/// "scheme:rest" per RFC 3986 (https://..., api://..., urn:...).
bool looks_like_uri(const std::string& s) noexcept {
  auto colon = s.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 >= s.size())
    return false;
  if (!std::isalpha(static_cast<unsigned char>(s[0])))
    return false;
  for (std::size_t i = 1; i < colon; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (!std::isalnum(c) && c != '+' && c != '-' && c != '.')
      return false;
  }
  return true;
}

bool starts_with_nocase(const std::string& s, std::string_view prefix) noexcept {
  if (s.size() < prefix.size())
    return false;
  for (std::size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i])
      return false;
  return true;
}

caf::error invalid(std::string what) {
  return make_msiv2_error(error_code::invalid_request, std::move(what));
}

/// Writes the flight key of `req` into `out`: "token\n<kind><id>\n<resource>\n<type>\n<claims>".
/// The identity part ("<kind><id>") starts at offset 6.
void make_flight_key(const token_request& req, std::string& out) {
  out.assign("token\n");
  out.push_back(static_cast<char>('0' + static_cast<int>(req.identity.kind)));
  out.append(req.identity.id);
  out.push_back('\n');
  out.append(req.resource);
  out.push_back('\n');
  out.push_back(static_cast<char>('0' + static_cast<int>(req.type)));
  out.push_back('\n');
  out.append(req.claims);
}

constexpr std::size_t identity_offset = 6;

/// The parts of a cache key (flight key + '\n' + x5t#S256, see make_flight_key): views into it.
/// Only keys of cacheable requests (no claims) are parsed; identities and resources hold no
/// '\n' (normalize_token_request refuses control characters).
struct cache_key_parts {
  std::string_view flight_key;  ///< everything before the last '\n'
  std::string_view identity;    ///< "<kind><id>", as identity_of() writes it
  std::string_view resource;
  token_type type = token_type::mtls_pop;
  std::string_view x5t;         ///< empty for bearer

  explicit cache_key_parts(std::string_view key) {
    auto last = key.rfind('\n');
    flight_key = key.substr(0, last);
    x5t = key.substr(last + 1);
    auto id_end = key.find('\n', identity_offset);
    identity = key.substr(identity_offset, id_end - identity_offset);
    auto res_end = key.find('\n', id_end + 1);
    resource = key.substr(id_end + 1, res_end - id_end - 1);
    type = static_cast<token_type>(key[res_end + 1] - '0');
  }

  /// The request that renews this entry.
  token_request request(const std::vector<std::string>& client_capabilities) const {
    token_request r;
    r.identity.kind = static_cast<identity_kind>(identity.front() - '0');
    r.identity.id.assign(identity.substr(1));
    r.resource.assign(resource);
    r.type = type;
    r.client_capabilities = client_capabilities;
    return r;
  }
};

void identity_of(const token_request& req, std::string& out) {
  out.clear();
  out.push_back(static_cast<char>('0' + static_cast<int>(req.identity.kind)));
  out.append(req.identity.id);
}

/// How long a request() to a peer may take: what is left of `due`, capped by the configured
/// bound, at least 1 ms (a zero timeout means "none" to CAF).
std::chrono::milliseconds request_timeout(self_ptr self, deadline due) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(due.left(self->clock().now()));
  auto cap = self->state.deps->config.actor_request_timeout;
  return std::max(std::chrono::milliseconds(1), std::min(left, cap));
}

const char* peer_name(state::stage s) {
  switch (s) {
    case state::stage::probe: return "probe";
    case state::stage::certs: return "cert_issuer";
    case state::stage::exchanger: return "token_exchanger";
  }
  return "peer";
}

/// A peer's failure as the caller sees it: msiv2 errors pass unchanged, CAF's own are
/// translated into something a person can act on.
caf::error translate(const caf::error& err, state::stage at) {
  if (err.category() == caf::atom("msiv2"))
    return err;
  if (err == caf::sec::request_timeout)
    return make_msiv2_error(error_code::deadline_exceeded,
                            std::string("no answer from ") + peer_name(at)
                              + " before the request's deadline; retry with a longer timeout or "
                                "check the IMDS and token endpoint health");
  return make_msiv2_error(error_code::internal_failure,
                          std::string("the ") + peer_name(at) + " actor failed while serving "
                            "this request (" + caf::to_string(err) + "); retry");
}

void cancel_timer(self_ptr self, const std::string& cache_key) {
  auto& w = self->state.wires;
  if (w && w->timer)
    self->send(w->timer, cancel_atom::value, cache_key);
}

/// The cache-size gauge: O(1), kept current on every change.
void note_cache_size(self_ptr self) {
  auto& st = self->state;
  st.deps->stats->set_gauge("msiv2_cached_tokens", static_cast<double>(st.cache.size()));
}

/// Every gauge, the earliest expiry and renewal among them by a scan of the cache: only when
/// someone asks for the stats, so that adding a token stays O(1) however many are cached.
void update_gauges(self_ptr self) {
  auto& st = self->state;
  note_cache_size(self);
  std::int64_t expires = std::numeric_limits<std::int64_t>::max();
  std::int64_t renews = expires;
  for (auto& [k, e] : st.cache) {
    expires = std::min(expires, e.token->result.expires_on);
    renews = std::min(renews, e.life.renew_at_ms / 1000);
  }
  if (st.cache.empty()) {
    st.deps->stats->erase_gauge("msiv2_expiry_seconds{artifact=\"access_token\"}");
    st.deps->stats->erase_gauge("msiv2_renewal_seconds{artifact=\"access_token\"}");
  } else {
    st.deps->stats->set_gauge("msiv2_expiry_seconds{artifact=\"access_token\"}",
                              static_cast<double>(expires));
    st.deps->stats->set_gauge("msiv2_renewal_seconds{artifact=\"access_token\"}",
                              static_cast<double>(renews));
  }
}

/// Publishes the staged changes of the snapshot (before anything that depends on them is
/// answered).
void publish(self_ptr self) {
  if (auto& snap = self->state.deps->snapshot)
    snap->commit();
}

/// Drops a cached token; `publish_now` false when the caller publishes a batch itself.
void erase_entry(self_ptr self, const std::string& cache_key, bool publish_now = true) {
  auto& st = self->state;
  cancel_timer(self, cache_key);
  auto i = st.cache.find(cache_key);
  if (i == st.cache.end())
    return;
  if (auto& snap = st.deps->snapshot)
    snap->erase(*i->second.token);
  st.lru.erase(i->second.lru_at);
  st.cache.erase(i);
  if (publish_now)
    publish(self);
}

/// When the token of `e` was last served: by token_service or by a lock-free reader of the
/// snapshot (published_token::touch). The one place the LRU and idle decisions read it.
std::int64_t last_used_ms(const state::entry& e) {
  return e.token->last_used_ms.load(std::memory_order_relaxed);
}

/// Drops least recently used tokens until the cache is within module_config::max_cached_tokens
/// (review H1), staging their removal from the snapshot (the caller publishes). `keep` (the
/// entry just added) is never dropped. The candidate is the entry placed for the oldest use.
/// If it was used since (a hit: published_token::touch), it is placed again for that use and
/// the next candidate is looked at. Otherwise its last use is its placement time, and every
/// other entry was placed for (and so last used at) a time no earlier: it is the least
/// recently used, and goes. At most one re-placement per cached token per call (then the
/// candidate goes whatever readers did meanwhile). Returns how many were dropped.
std::size_t enforce_bound(self_ptr self, const std::string* keep) {
  auto& st = self->state;
  auto bound = std::max<std::size_t>(1, st.deps->config.max_cached_tokens);
  auto replacements = st.cache.size();
  std::size_t dropped = 0;
  while (st.cache.size() > bound) {
    // Two entries at least (the bound is at least 1): one of them is not `keep`.
    auto oldest = st.lru.begin();
    if (oldest->second == keep)
      ++oldest;
    const std::string* victim = oldest->second;
    auto& e = st.cache.find(*victim)->second;
    auto used = last_used_ms(e);
    if (used > oldest->first && replacements > 0) {
      --replacements;
      st.lru.erase(oldest);
      e.lru_at = st.lru.emplace(used, victim); // after the entries placed for the same time
      continue;
    }
    erase_entry(self, std::string(*victim), false);
    ++dropped;
  }
  if (dropped > 0)
    st.deps->stats->add(evictions_key(), dropped);
  return dropped;
}

/// A new certificate for an identity makes its older tokens unreachable: drop them.
void note_x5t(self_ptr self, const std::string& identity_key, const std::string& x5t) {
  auto& st = self->state;
  auto& known = st.x5t_by_identity[identity_key];
  if (known == x5t)
    return;
  known = x5t;
  std::vector<std::string> stale;
  for (auto& [k, e] : st.cache) {
    cache_key_parts p(k);
    if (p.identity == identity_key && p.type == token_type::mtls_pop && p.x5t != x5t)
      stale.push_back(k);
  }
  for (auto& k : stale)
    erase_entry(self, k, false);
  if (!stale.empty()) {
    publish(self);
    note_cache_size(self);
  }
}

void start_chain(self_ptr self, const std::string& key);

caf::error v1_only_error() {
  return make_msiv2_error(error_code::v1_only_host,
                          "this host only has IMDS v1 (getplatformmetadata answered 404): mTLS "
                          "PoP tokens cannot be had here (never downgraded); ask for a bearer "
                          "token",
                          404);
}

/// The flight for `key`, created (not started yet) unless one runs; second = created.
std::pair<state::flight*, bool> ensure_flight(self_ptr self, const std::string& key,
                                              const token_request& req, deadline due,
                                              const std::string& renews) {
  auto& flights = *self->state.flights;
  auto [i, created] = flights.try_emplace(key);
  auto& fl = i->second;
  if (!created) {
    if (fl.renews.empty())
      fl.renews = renews;
    return {&fl, false};
  }
  fl.id = self->state.next_id++;
  fl.request = req;
  fl.request.force_refresh = false;
  // One correlation id for every leg of this flight: the caller's, or a new one (a background
  // renewal always gets its own).
  if (fl.request.correlation_id.empty())
    fl.request.correlation_id = platform::uuid_v4();
  fl.correlation_id = fl.request.correlation_id;
  identity_of(req, fl.identity_key);
  fl.due = due;
  fl.renews = renews;
  return {&fl, true};
}

void fail_flight(self_ptr self, const std::string& key, std::uint64_t id, const caf::error& err);
void finish_flight(self_ptr self, const std::string& key, std::uint64_t id, token_result res,
                   const std::string& x5t);

/// Looks up the flight `key` if it is still the one numbered `id`.
state::flight* live_flight(self_ptr self, const std::string& key, std::uint64_t id) {
  auto& flights = *self->state.flights;
  auto i = flights.find(key);
  return i != flights.end() && i->second.id == id ? &i->second : nullptr;
}

/// A step timed out for the first caller's deadline while a later caller still waits: run the
/// step again for that caller (the chain continues for the others).
bool retry_step(self_ptr self, const std::string& key, std::uint64_t id, const caf::error& err) {
  if (err != caf::sec::request_timeout)
    return false;
  auto* fl = live_flight(self, key, id);
  if (!fl)
    return false;
  auto now = self->clock().now();
  return std::any_of(fl->waiters.begin(), fl->waiters.end(),
                     [&](const state::waiter& w) { return w.due.left(now).count() > 0; });
}

void exchange(self_ptr self, const std::string& key, std::uint64_t id, credential_ptr cred) {
  auto* fl = live_flight(self, key, id);
  if (!fl)
    return;
  auto& w = self->state.wires;
  fl->at = state::stage::exchanger;
  fl->waiting_on = caf::actor_cast<caf::actor_addr>(w->exchanger);
  std::string x5t = cred ? cred->x5t_s256 : std::string{};
  self
    ->request(w->exchanger, request_timeout(self, fl->due), exchange_atom::value,
              exchange_request{fl->request, cred, fl->due})
    .then([=](token_result& res) { finish_flight(self, key, id, std::move(res), x5t); },
          [=](caf::error& err) {
            if (retry_step(self, key, id, err))
              exchange(self, key, id, cred);
            else
              fail_flight(self, key, id, translate(err, state::stage::exchanger));
          });
}

void get_credential(self_ptr self, const std::string& key, std::uint64_t id) {
  auto* fl = live_flight(self, key, id);
  if (!fl)
    return;
  auto& w = self->state.wires;
  fl->at = state::stage::certs;
  fl->waiting_on = caf::actor_cast<caf::actor_addr>(w->certs);
  self
    ->request(w->certs, request_timeout(self, fl->due), caf::get_atom::value,
              credential_request{fl->request.identity, fl->due, {}, fl->correlation_id})
    .then(
      [=](credential_ptr& cred) {
        auto* f = live_flight(self, key, id);
        if (!f)
          return;
        if (!cred) {
          fail_flight(self, key, id,
                      make_msiv2_error(error_code::internal_failure,
                                       "cert_issuer answered without a credential; retry"));
          return;
        }
        // getplatformmetadata answered 200: this is an IMDS v2 host.
        self->state.source = imds_source::v2;
        self->state.unavailable = caf::error{};
        note_x5t(self, f->identity_key, cred->x5t_s256);
        exchange(self, key, id, std::move(cred));
      },
      [=](caf::error& err) {
        if (retry_step(self, key, id, err)) {
          get_credential(self, key, id);
          return;
        }
        auto& st = self->state;
        if (err == error_code::v1_only_host) {
          st.source = imds_source::v1_only; // later mtls_pop requests fail at once
        } else if (err == error_code::imds_unavailable) {
          st.unavailable = err;
          st.unavailable_until = self->clock().now() + st.deps->config.transient_probe_ttl;
        }
        fail_flight(self, key, id, translate(err, state::stage::certs));
      });
}

void start_chain(self_ptr self, const std::string& key) {
  auto& fl = (*self->state.flights)[key];
  auto id = fl.id;
  if (fl.request.type == token_type::bearer) {
    // protocol.md §8: a bearer request may use v1.
    exchange(self, key, id, nullptr);
    return;
  }
  if (self->state.source == imds_source::v1_only) {
    fail_flight(self, key, id, v1_only_error());
    return;
  }
  // No probe in front of an mtls_pop request (as MSAL .NET): cert_issuer's getplatformmetadata
  // call tells v2 (200) from v1-only (404) and no IMDS at all (connection refused or no answer
  // within the probe's short connect timeout).
  get_credential(self, key, id);
}

/// Schedules the next attempt of a failed renewal while the old token is still usable.
void retry_renewal(self_ptr self, const std::string& cache_key) {
  auto& st = self->state;
  auto i = st.cache.find(cache_key);
  if (i == st.cache.end())
    return;
  auto& e = i->second;
  auto now = st.deps->wall->now_ms();
  if (now >= e.life.usable_until_ms) {
    erase_entry(self, cache_key);
    note_cache_size(self);
    return;
  }
  ++e.failed_renewals;
  // Full jitter (io::renewal_retry_delay): tokens whose renewals failed together (an outage)
  // do not retry together (review H3).
  auto& cfg = st.deps->config;
  auto delay_ms = io::renewal_retry_delay(e.failed_renewals, cfg.renewal_retry_base,
                                          cfg.renewal_retry_cap, st.deps->draw)
                    .count();
  delay_ms = std::min<std::int64_t>(delay_ms, e.life.usable_until_ms - now);
  self->delayed_send(self, std::chrono::milliseconds(delay_ms), renew_atom::value, cache_key);
}

void fail_flight(self_ptr self, const std::string& key, std::uint64_t id, const caf::error& err) {
  auto& flights = *self->state.flights;
  auto i = flights.find(key);
  if (i == flights.end() || i->second.id != id)
    return;
  auto fl = std::move(i->second);
  flights.erase(i);
  auto info = describe(err);
  self->state.deps->stats->add(std::string("msiv2_token_errors_total{code=\"")
                               + to_string(info.code) + "\"}");
  // Every error about a request names its correlation id (the upstream's own when it sent
  // one, else ours).
  caf::error out = info.correlation_id.empty()
                     ? make_msiv2_error(info.code, info.description, info.http_status,
                                        fl.correlation_id)
                     : err;
  for (auto& w : fl.waiters)
    w.promise.deliver(out);
  if (!fl.renews.empty()) {
    // A failed renewal never replaces a usable token.
    self->state.deps->log->write(platform::log_level::warning, "token_service",
                                 "access token renewal failed, keeping the current token: "
                                   + render(out));
    retry_renewal(self, fl.renews);
  }
}

void finish_flight(self_ptr self, const std::string& key, std::uint64_t id, token_result res,
                   const std::string& x5t) {
  auto& st = self->state;
  auto& flights = *st.flights;
  auto i = flights.find(key);
  if (i == flights.end() || i->second.id != id)
    return;
  auto fl = std::move(i->second);
  flights.erase(i);
  auto now = st.deps->wall->now_ms();
  std::optional<std::int64_t> refresh_in;
  if (res.refresh_on > 0 && res.refresh_on * 1000 > now)
    refresh_in = res.refresh_on * 1000 - now;
  auto life = platform::plan_lifecycle(now, res.expires_on * 1000, refresh_in, st.deps->draw);
  res.refresh_on = life.renew_at_ms / 1000;
  res.source = token_source::network;
  bool cacheable = fl.request.claims.empty() && life.at(now) != platform::freshness::expired;
  if (cacheable && fl.request.type == token_type::mtls_pop) {
    auto known = st.x5t_by_identity.find(fl.identity_key);
    cacheable = known != st.x5t_by_identity.end() && known->second == x5t;
  }
  if (cacheable) {
    auto cache_key = key + "\n" + x5t;
    auto [at, created] = st.cache.try_emplace(cache_key);
    auto& e = at->second;
    // A token someone waited for (or a first acquisition) is used now; a background renewal
    // is not a use: the renewed token keeps the last use of the one it replaces, also when
    // its key changed with a new certificate (the old entry is gone then).
    std::int64_t used = now;
    if (fl.waiters.empty() && !fl.renews.empty())
      used = e.token ? last_used_ms(e) : fl.renews_last_used_ms;
    if (created)
      e.lru_at = st.lru.emplace(used, &at->first);
    auto tok = std::make_shared<published_token>();
    tok->identity = fl.request.identity;
    tok->resource = fl.request.resource;
    tok->type = fl.request.type;
    tok->result = res;
    tok->result.source = token_source::cache;
    tok->renew_at_ms = life.renew_at_ms;
    // What check_binding lets a request ask of this token (the key store and the attestation
    // provider are fixed for the module's life).
    tok->binding = tok->type == token_type::mtls_pop
                     ? module_binding_strength(st.deps->keys.get(), st.deps->attestation.get())
                     : binding_strength::bearer;
    tok->last_used_ms.store(used, std::memory_order_relaxed);
    tok->hash = token_snapshot::hash_of(tok->identity, tok->resource, tok->type);
    e.token = tok;
    e.life = life;
    e.client_capabilities = fl.request.client_capabilities;
    e.failed_renewals = 0;
    if (st.wires && st.wires->timer)
      self->send(st.wires->timer, schedule_atom::value, cache_key, life.renew_at_ms,
                 caf::actor_cast<caf::actor>(self));
    if (auto& snap = st.deps->snapshot)
      snap->put(std::move(tok));
    // Over the bound: the least recently used tokens go, from the snapshot too, in the same
    // publication as the new token and before anyone is answered.
    if (created)
      enforce_bound(self, &at->first);
    publish(self);
    note_cache_size(self);
  }
  for (auto& w : fl.waiters)
    w.promise.deliver(res);
}

/// Adds a caller to the flight of `key` (starting it when none runs).
caf::result<token_result> join(self_ptr self, const std::string& key, const token_request& req,
                               deadline due, const std::string& renews) {
  auto& st = self->state;
  auto [fl, created] = ensure_flight(self, key, req, due, renews);
  // Later steps are bounded by the most patient caller.
  fl->due = std::max(fl->due, due);
  auto rp = self->make_response_promise<token_result>();
  auto wid = st.next_id++;
  fl->waiters.push_back(state::waiter{rp, due, wid});
  auto left = due.left(self->clock().now());
  self->delayed_send(self, std::max(left, std::chrono::nanoseconds(0)), caf::timeout_atom::value,
                     key, wid);
  // Started after the waiter joined: a chain may fail at once (v1-only host).
  if (created)
    start_chain(self, key);
  return rp;
}

/// Starts one background renewal of a cached token (no caller waits for it). A request that
/// finds the token due (`front_end`) leaves it to the backoff after a failed renewal.
void renew(self_ptr self, const std::string& cache_key, bool front_end) {
  auto& st = self->state;
  auto i = st.cache.find(cache_key);
  if (i == st.cache.end() || !st.wires || (front_end && i->second.failed_renewals > 0))
    return;
  auto last_used = last_used_ms(i->second);
  if (!front_end) {
    // Nobody asked for it within the idle window (review H1): no background renewal and no
    // retry. It is served while usable (a request that finds it due renews it: that is a use)
    // and dropped when it is not.
    auto now = st.deps->wall->now_ms();
    if (now - last_used >= st.deps->config.token_idle_window.count()) {
      if (now >= i->second.life.usable_until_ms) {
        st.deps->stats->add(lapses_key());
        erase_entry(self, cache_key);
        note_cache_size(self);
        return;
      }
      // No retry pending any more: a request that finds it due may renew it again.
      i->second.failed_renewals = 0;
      if (st.wires->timer)
        self->send(st.wires->timer, schedule_atom::value, cache_key,
                   i->second.life.usable_until_ms, caf::actor_cast<caf::actor>(self));
      return;
    }
  }
  cache_key_parts parts(i->first);
  std::string fkey(parts.flight_key);
  if (!front_end && i->second.failed_renewals > 0 && st.flights->count(fkey) == 0
      && st.deps->retries && !st.deps->retries->take_retry(self->clock().now())) {
    // A retry of a failed renewal, and the process's retry budget is spent: no upstream call
    // now; the next backoff step tries again while the token is still usable (review H3).
    st.deps->stats->add("msiv2_retries_refused_total{artifact=\"access_token\"}");
    retry_renewal(self, cache_key);
    return;
  }
  if (auto f = st.flights->find(fkey); f != st.flights->end()) {
    f->second.renews = cache_key;
    f->second.renews_last_used_ms = last_used;
    return;
  }
  st.deps->stats->add(renewals_key());
  auto due = deadline::at(self->clock().now() + st.deps->config.actor_request_timeout);
  auto req = parts.request(i->second.client_capabilities);
  req.timeout = st.deps->config.actor_request_timeout;
  ensure_flight(self, fkey, req, due, cache_key).first->renews_last_used_ms = last_used;
  start_chain(self, fkey);
}

/// After a restart of a peer, flights waiting on its old incarnation would only end at their
/// deadline: fail them now so callers can retry.
void rewire(self_ptr self, wiring_ptr w) {
  auto& st = self->state;
  st.wires = std::move(w);
  if (!st.wires)
    return;
  std::vector<std::pair<std::string, std::uint64_t>> broken;
  for (auto& [k, fl] : *st.flights) {
    caf::actor_addr now;
    switch (fl.at) {
      case state::stage::probe: now = caf::actor_cast<caf::actor_addr>(st.wires->probe_actor); break;
      case state::stage::certs: now = caf::actor_cast<caf::actor_addr>(st.wires->certs); break;
      case state::stage::exchanger: now = caf::actor_cast<caf::actor_addr>(st.wires->exchanger); break;
    }
    if (fl.waiting_on && fl.waiting_on != now)
      broken.emplace_back(k, fl.id);
  }
  for (auto& [k, id] : broken) {
    auto* fl = live_flight(self, k, id);
    fail_flight(self, k, id,
                make_msiv2_error(error_code::internal_failure,
                                 std::string("the ") + peer_name(fl->at)
                                   + " actor restarted while serving this request; retry"));
  }
}

/// What a store's keys lack for `want`, for people.
std::string missing_for(binding_strength want, binding_strength have) {
  if (have < binding_strength::hardware_key)
    return want == binding_strength::attested_hardware_key
             ? "a hardware key store (TPM) with an attestation provider"
             : "a hardware key store (TPM)";
  return "an attestation provider for the hardware key";
}

/// binding_too_weak when this host cannot give the binding the request asks for at least
/// (checked before anything is minted or sent: never a silent downgrade), else none.
caf::error check_binding(self_ptr self, const token_request& req) {
  if (req.min_binding == binding_strength::bearer)
    return {};
  if (req.type == token_type::bearer)
    return make_msiv2_error(error_code::binding_too_weak,
                            std::string("a bearer token is bound to nothing, but the request "
                                        "asks for at least ") +
                              to_string(req.min_binding) +
                              "; ask for an mtls_pop token instead");
  const auto& deps = *self->state.deps;
  auto have = module_binding_strength(deps.keys.get(), deps.attestation.get());
  if (have >= req.min_binding)
    return {};
  return make_msiv2_error(error_code::binding_too_weak,
                          std::string("the request asks for at least ") +
                            to_string(req.min_binding) + " but this host's key store gives " +
                            to_string(have) + "; missing: " +
                            missing_for(req.min_binding, have));
}

/// The capability answer for a probe outcome.
host_capabilities capabilities_for(self_ptr self, std::optional<imds_source> src,
                                   const caf::error& err) {
  auto& st = self->state;
  host_capabilities caps;
  if (!src) {
    caps.imds = imds_availability::none;
    caps.detail = "no IMDS: " + render(err);
    return caps;
  }
  if (*src == imds_source::v1_only) {
    caps.imds = imds_availability::v1_only;
    caps.detail = "IMDS v1 only (getplatformmetadata answered 404): bearer tokens only, no "
                  "binding certificates";
    return caps;
  }
  caps.imds = imds_availability::v2;
  if (!st.deps->config.v2_enabled) {
    caps.detail = "IMDS v2 is turned off here (MSIV2_DISABLE_V2): bearer tokens only";
    return caps;
  }
  caps.strongest = module_binding_strength(st.deps->keys.get(), st.deps->attestation.get());
  switch (caps.strongest) {
    case binding_strength::bearer:
      caps.detail = "no key store is configured: bearer tokens only";
      break;
    case binding_strength::software_key:
      caps.detail = "IMDS v2 with a software key (held in memory or a file); missing for "
                    "hardware_key: a hardware key store (TPM)";
      break;
    case binding_strength::hardware_key:
      caps.detail = "IMDS v2 with a hardware key; missing for attested_hardware_key: an "
                    "attestation provider for it";
      break;
    case binding_strength::attested_hardware_key:
      caps.detail = "IMDS v2 with a hardware key and its attestation (TPM key attestation)";
      break;
  }
  return caps;
}

} // namespace

bool is_guid(const std::string& s) noexcept {
  if (s.size() != 36)
    return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-')
        return false;
    } else if (!std::isxdigit(static_cast<unsigned char>(s[i]))) {
      return false;
    }
  }
  return true;
}

caf::error normalize_token_request(token_request& req) {
  auto& r = req.resource;
  if (r.size() >= default_suffix.size()
      && r.compare(r.size() - default_suffix.size(), default_suffix.size(), default_suffix) == 0)
    r.resize(r.size() - default_suffix.size());
  if (r.empty())
    return invalid("the resource is empty: name the audience of the token, e.g. "
                   "\"https://management.azure.com\"");
  if (has_bad_char(r))
    return invalid("the resource contains whitespace or control characters");
  if (!platform::is_valid_utf8(r))
    return invalid("the resource is not valid UTF-8");
  if (!looks_like_uri(r) && !is_guid(r))
    return invalid("the resource \"" + r + "\" is neither a URI (\"https://...\", \"api://...\") "
                   "nor an application id (GUID)");
  switch (req.identity.kind) {
    case identity_kind::system_assigned:
      if (!req.identity.id.empty())
        return invalid("a system-assigned identity takes no id; use a user-assigned selector");
      break;
    case identity_kind::client_id:
    case identity_kind::object_id:
      if (!is_guid(req.identity.id))
        return invalid(std::string("the ")
                       + (req.identity.kind == identity_kind::client_id ? "client id" : "object id")
                       + " must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)");
      break;
    case identity_kind::resource_id:
      if (!starts_with_nocase(req.identity.id, "/subscriptions/")
          || req.identity.id.size() <= std::string_view("/subscriptions/").size()
          || has_bad_char(req.identity.id))
        return invalid("the resource id must be an ARM id "
                       "(\"/subscriptions/<id>/resourcegroups/<rg>/providers/"
                       "Microsoft.ManagedIdentity/userAssignedIdentities/<name>\")");
      // ARM ids are ASCII; anything else could not round-trip through the certificate file
      // (review L12).
      if (!platform::is_printable_ascii(req.identity.id))
        return invalid("the resource id must be printable ASCII (an ARM id "
                       "(\"/subscriptions/<id>/resourcegroups/<rg>/providers/"
                       "Microsoft.ManagedIdentity/userAssignedIdentities/<name>\")");
      break;
    default:
      return invalid("unknown identity kind");
  }
  if (req.type != token_type::mtls_pop && req.type != token_type::bearer)
    return invalid("unknown token type");
  if (req.timeout.count() <= 0)
    return invalid("the timeout must be positive");
  if (req.correlation_id.size() > 128 || has_bad_char(req.correlation_id))
    return invalid("the correlation id must be at most 128 characters without whitespace or "
                   "control characters (it goes into HTTP headers)");
  if (req.min_binding > binding_strength::attested_hardware_key)
    return invalid("unknown binding strength in min_binding");
  return {};
}

token_service::behavior_type
token_service_impl(token_service::stateful_pointer<token_service_state> self, deps_ptr deps) {
  self->state.deps = std::move(deps);
  // A new incarnation starts with an empty cache: readers stop seeing the old one's tokens.
  if (auto& snap = self->state.deps->snapshot) {
    snap->clear();
    snap->commit();
  }
  // Answer every waiter when the actor stops, whatever the reason (pitfall 4).
  auto flights = self->state.flights;
  self->attach_functor([=](const caf::error& reason) {
    bool shutdown = !reason || reason == caf::exit_reason::user_shutdown
                    || reason == caf::exit_reason::normal;
    auto err = shutdown
                 ? make_msiv2_error(error_code::shutting_down,
                                    "the module is shutting down; the request was not finished")
                 : make_msiv2_error(error_code::internal_failure,
                                    "token_service stopped unexpectedly (" + caf::to_string(reason)
                                      + "); retry");
    for (auto& [k, fl] : *flights)
      for (auto& w : fl.waiters)
        w.promise.deliver(err);
    flights->clear();
  });
  return {
    [=](token_request& req) -> caf::result<token_result> {
      auto& st = self->state;
      if (auto err = normalize_token_request(req)) {
        st.deps->stats->add("msiv2_token_errors_total{code=\"invalid_request\"}");
        return err;
      }
      if (req.type == token_type::mtls_pop && !st.deps->config.v2_enabled)
        return make_msiv2_error(error_code::v2_disabled,
                                "IMDS v2 is turned off (MSIV2_DISABLE_V2): mTLS PoP tokens are "
                                "refused, never downgraded; ask for a bearer token or re-enable v2");
      if (!st.wires)
        return make_msiv2_error(error_code::internal_failure,
                                "token_service is not wired to its peers yet; retry");
      if (auto err = check_binding(self, req))
        return err;
      if (req.type == token_type::mtls_pop && st.source == imds_source::v1_only)
        return v1_only_error();
      if (req.type == token_type::mtls_pop && st.unavailable &&
          self->clock().now() < st.unavailable_until)
        return st.unavailable;
      make_flight_key(req, st.key_buf);
      if (req.claims.empty() && !req.force_refresh) {
        auto flight_len = st.key_buf.size();
        bool known = true;
        st.key_buf.push_back('\n');
        if (req.type == token_type::mtls_pop) {
          st.identity_buf.assign(st.key_buf, identity_offset, 1 + req.identity.id.size());
          auto x = st.x5t_by_identity.find(st.identity_buf);
          if (x == st.x5t_by_identity.end())
            known = false;
          else
            st.key_buf.append(x->second);
        }
        if (known) {
          auto i = st.cache.find(st.key_buf);
          if (i != st.cache.end()) {
            auto& e = i->second;
            auto now_ms = st.deps->wall->now_ms();
            switch (e.life.at(now_ms)) {
              case platform::freshness::fresh: {
                st.deps->stats->add(hits_key());
                e.token->touch(now_ms);
                return e.token->result;
              }
              case platform::freshness::due: {
                st.deps->stats->add(hits_key());
                e.token->touch(now_ms);
                token_result out = e.token->result;
                renew(self, i->first, true);
                return out;
              }
              case platform::freshness::expired:
                // Unusable: callers wait for a new one below.
                erase_entry(self, i->first);
                note_cache_size(self);
                break;
            }
          }
        }
        st.key_buf.resize(flight_len);
      }
      st.deps->stats->add(misses_key());
      auto now = self->clock().now();
      auto due = deadline::at(now + req.timeout);
      // The renewal (if any) is of the entry the lookup found expired.
      std::string key = st.key_buf;
      return join(self, key, req, due, {});
    },
    [=](stats_atom) -> stats_snapshot {
      update_gauges(self);
      auto snap = self->state.deps->stats->snapshot();
      if (auto& published = self->state.deps->snapshot)
        if (auto n = published->hits(); n > 0)
          snap.counters[hits_key()] += n; // hits served without a message
      snap.gauges["msiv2_token_flights"] = static_cast<double>(self->state.flights->size());
      return snap;
    },
    [=](capabilities_atom) -> caf::result<host_capabilities> {
      auto& st = self->state;
      if (!st.wires || !st.wires->probe_actor)
        return make_msiv2_error(error_code::internal_failure,
                                "token_service is not wired to its peers yet; retry");
      auto rp = self->make_response_promise<host_capabilities>();
      auto due = deadline::at(self->clock().now() + st.deps->config.imds_timeout);
      self->request(st.wires->probe_actor, request_timeout(self, due), probe_atom::value, due)
        .then(
          [=](imds_source src) mutable {
            if (src == imds_source::v1_only || !self->state.source)
              self->state.source = src;
            rp.deliver(capabilities_for(self, src, {}));
          },
          [=](caf::error& err) mutable {
            rp.deliver(capabilities_for(self, std::nullopt, translate(err, state::stage::probe)));
          });
      return rp;
    },
    [=](evict_atom, const std::string& x5t) {
      // The token endpoint said a token is not bound to this certificate (AADSTS500181):
      // drop every cached token bound to it.
      auto& st = self->state;
      std::vector<std::string> bound;
      for (auto& [k, e] : st.cache)
        if (!x5t.empty() && cache_key_parts(k).x5t == x5t)
          bound.push_back(k);
      // One publication for all of them, before this handler returns: the exchanger sent this
      // before its answer to the request that met the refusal (same sender, so it is handled
      // first), hence a reader synchronized with any answer after it sees none of them.
      for (auto& k : bound)
        erase_entry(self, k, false);
      if (!bound.empty()) {
        publish(self);
        note_cache_size(self);
        st.deps->log->write(platform::log_level::warning, "token_service",
                            "dropped " + std::to_string(bound.size()) +
                              " cached token(s) bound to certificate " + x5t +
                              ": the token endpoint said they are not bound to it");
      }
    },
    [=](renew_atom, const std::string& cache_key) { renew(self, cache_key, false); },
    [=](wire_atom, wiring_ptr w) { rewire(self, std::move(w)); },
    [=](caf::timeout_atom, const std::string& key, std::uint64_t wid) {
      auto& flights = *self->state.flights;
      auto i = flights.find(key);
      if (i == flights.end())
        return;
      auto& ws = i->second.waiters;
      auto w = std::find_if(ws.begin(), ws.end(), [&](const state::waiter& x) { return x.id == wid; });
      if (w == ws.end())
        return;
      w->promise.deliver(make_msiv2_error(
        error_code::deadline_exceeded,
        "no token within the request's timeout (the upstream chain is still running; a retry "
        "may be served from it)",
        0, i->second.correlation_id));
      ws.erase(w);
    },
  };
}

} // namespace msiv2
