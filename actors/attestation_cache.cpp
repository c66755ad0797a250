#include "actors/attestation_cache.hpp"

#include <algorithm>
#include <chrono>

#include <caf/send.hpp>

#include "actors/persisted.hpp"
#include "messages/errors.hpp"
#include "platform/binding.hpp"
#include "platform/encoding.hpp"

namespace msiv2 {

namespace {

using self_ptr = attestation_cache::stateful_pointer<attestation_cache_state>;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

constexpr const char* component = "attestation_cache";

nanoseconds left(self_ptr self, deadline due) {
  return due.left(self->clock().now());
}

std::string expiry_gauge(const attestation_entry& e) {
  return "msiv2_expires_at_seconds{artifact=\"attestation\",key_id=\"" + e.key.key_id + "\"}";
}

void answer_waiters(self_ptr self, attestation_entry& e, caf::expected<attestation_token> r) {
  auto waiters = std::move(e.waiters);
  e.waiters.clear();
  for (auto& [id, w] : waiters) {
    self->state.waiter_keys.erase(id);
    if (r)
      w.rp.deliver(*r);
    else
      w.rp.deliver(r.error());
  }
}

void attempt(self_ptr self, const deps_ptr& deps, const attestation_key& k);
void end_fetch_ok(self_ptr self, const deps_ptr& deps, const attestation_key& k,
                  attestation_token tok, bool adopted);

// -- the attestation file ----------------------------------------------------------------------

std::string file_name(const attestation_key& k) {
  return persisted::attestation_file_name(k.first, k.second);
}

std::string digest(const std::string& jwt) {
  return platform::hex_lower(platform::sha256(jwt));
}

/// A new id for a file operation of `k` (its answer is stale once another operation or
/// attempt started).
std::uint64_t next_op(self_ptr self, const attestation_key& k) {
  auto id = ++self->state.last_id;
  self->state.entries.at(k).attempt = id;
  self->state.attempts[id] = k;
  return id;
}

/// The JWT a file holds when it may be adopted; `bad` tells that the file should go.
std::optional<attestation_token> usable_from_file(self_ptr self, const deps_ptr& deps,
                                                  const attestation_key& k,
                                                  const platform::file_read& r, bool& bad) {
  auto& e = self->state.entries.at(k);
  bad = false;
  if (r.status == platform::read_status::missing)
    return std::nullopt;
  std::string why;
  if (r.status == platform::read_status::refused) {
    why = r.reason;
  } else {
    auto d = persisted::decode_attestation(r.bytes, k.first, k.second, deps->wall->now_ms());
    if (d && e.refused.count(digest(d.value->jwt)) == 0)
      return std::move(*d.value);
    bad = true;
    if (d)
      return std::nullopt; // refused by the issuer: not a file error
    why = d.reason;
  }
  deps->stats->add("msiv2_persistence_errors_total{artifact=\"attestation\"}");
  auto& last = self->state.refusals_logged[file_name(k)];
  if (last != why) {
    last = why;
    deps->log->write(platform::log_level::warning, component,
                     "attestation file " + deps->files->directory() + "/" + file_name(k) +
                       " not used: " + why);
  }
  return std::nullopt;
}

/// Takes the file's writer lock and re-reads it before calling the provider.
void lock_then_attest(self_ptr self, const deps_ptr& deps, const attestation_key& k) {
  auto& e = self->state.entries.at(k);
  auto wait = std::max(milliseconds(1),
                       std::min(deps->config.lock_wait,
                                std::chrono::duration_cast<milliseconds>(left(self, e.fetch_due))));
  auto id = next_op(self, k);
  auto me = caf::actor_cast<attestation_cache>(self);
  deps->files->lock_and_read(file_name(k), wait,
                             [me, id](artifact_lock_ptr lock, platform::file_read r) {
                               caf::anon_send(me, lock_atom::value, id, std::move(lock),
                                              std::move(r));
                             });
}

void on_disk(self_ptr self, const deps_ptr& deps, const attestation_key& k,
             const platform::file_read& r) {
  auto& e = self->state.entries.at(k);
  bool bad = false;
  if (auto t = usable_from_file(self, deps, k, r, bad)) {
    auto plan = platform::plan_lifecycle(t->issued_at_ms, t->expires_at_ms, std::nullopt, deps->draw);
    if (plan.at(deps->wall->now_ms()) == platform::freshness::fresh) {
      end_fetch_ok(self, deps, k, std::move(*t), true);
      return;
    }
    // Due for this process too: it serves the waiters now, and the renewal goes on.
    end_fetch_ok(self, deps, k, std::move(*t), true);
    e.fetching = true;
    e.background = true;
  }
  lock_then_attest(self, deps, k);
}

void on_locked(self_ptr self, const deps_ptr& deps, const attestation_key& k,
               artifact_lock_ptr lock, const platform::file_read& r) {
  auto& e = self->state.entries.at(k);
  e.lock = std::move(lock);
  bool bad = false;
  auto t = usable_from_file(self, deps, k, r, bad);
  if (t && (!e.token || t->issued_at_ms > e.token->issued_at_ms) &&
      platform::plan_lifecycle(t->issued_at_ms, t->expires_at_ms, std::nullopt, deps->draw)
          .at(deps->wall->now_ms()) == platform::freshness::fresh) {
    // Another process attested while this one waited: no provider call.
    e.lock.reset();
    end_fetch_ok(self, deps, k, std::move(*t), true);
    return;
  }
  if (bad && e.lock)
    deps->files->remove(file_name(k), e.lock);
  attempt(self, deps, k);
}

/// Starts a fetch of a new JWT for `k` unless one is in flight (single-flight).
void start_fetch(self_ptr self, const deps_ptr& deps, const attestation_key& k, deadline due,
                 bool background) {
  auto& e = self->state.entries.at(k);
  if (e.fetching) {
    e.fetch_due = std::max(e.fetch_due, due);
    return;
  }
  e.fetching = true;
  e.background = background;
  e.fetch_due = due;
  e.retry = io::retry_state{};
  e.reattested = false;
  if (!deps->files) {
    attempt(self, deps, k);
    return;
  }
  if (e.token) {
    lock_then_attest(self, deps, k); // a renewal: another process may have renewed already
    return;
  }
  auto id = next_op(self, k);
  auto me = caf::actor_cast<attestation_cache>(self);
  deps->files->read(file_name(k), [me, id](platform::file_read r) {
    caf::anon_send(me, disk_atom::value, id, std::move(r));
  });
}

/// The fetch failed for good: callers get attestation_failed, a usable JWT stays.
void end_fetch_failed(self_ptr self, const deps_ptr& deps, const attestation_key& k,
                      caf::error err) {
  auto& e = self->state.entries.at(k);
  e.fetching = false;
  e.attempt = 0;
  e.lock.reset();
  deps->log->write(platform::log_level::warning, component,
                   "attestation of key " + e.key.key_id + " at " + k.first +
                     " failed: " + render(err) +
                     (e.token ? " (the current attestation token stays in use)" : ""));
  answer_waiters(self, e, std::move(err));
}

void end_fetch_ok(self_ptr self, const deps_ptr& deps, const attestation_key& k,
                  attestation_token tok, bool adopted) {
  auto& e = self->state.entries.at(k);
  e.fetching = false;
  e.attempt = 0;
  auto lock = std::move(e.lock);
  const auto now_ms = deps->wall->now_ms();
  if (tok.issued_at_ms == 0 || tok.issued_at_ms > now_ms)
    tok.issued_at_ms = std::min(now_ms, tok.expires_at_ms);
  e.plan = platform::plan_lifecycle(tok.issued_at_ms, tok.expires_at_ms, std::nullopt, deps->draw);
  if (adopted) {
    deps->stats->add("msiv2_cache_hits_total{artifact=\"attestation\",source=\"disk\"}");
  } else {
    if (e.background)
      deps->stats->add("msiv2_renewals_total{artifact=\"attestation\"}");
    if (deps->files) {
      // Written under the lock (when had) after the waiters are answered below.
      // Not `deps` in the callback: it holds the store (see cert_issuer's persist()).
      auto name = file_name(k);
      auto stats = deps->stats;
      auto log = deps->log;
      deps->files->write(name, persisted::encode_attestation(tok, k.first, k.second, now_ms),
                         std::move(lock), [stats, log, name](result<void> r) {
                           if (r)
                             return;
                           stats->add("msiv2_persistence_errors_total{artifact=\"attestation\"}");
                           log->write(platform::log_level::warning, component,
                                      "writing the attestation file " + name +
                                        " failed: " + r.error());
                         });
    }
  }
  e.token = tok;
  deps->stats->set_gauge(expiry_gauge(e), static_cast<double>(tok.expires_at_ms) / 1000.0);
  if (self->state.peers && self->state.peers->timer)
    self->send(self->state.peers->timer, schedule_atom::value, e.timer_id, e.plan.renew_at_ms,
               caf::actor_cast<caf::actor>(self));
  if (e.plan.at(now_ms) == platform::freshness::expired) {
    // Issued already past its usable time (clock skew or a tiny lifetime): use it once.
    deps->log->write(platform::log_level::warning, component,
                     "attestation token for key " + e.key.key_id + " is unusable on arrival");
  }
  answer_waiters(self, e, std::move(tok));
}

void attempt(self_ptr self, const deps_ptr& deps, const attestation_key& k) {
  auto& e = self->state.entries.at(k);
  if (!deps->attestation) {
    end_fetch_failed(self, deps, k,
                     make_msiv2_error(error_code::attestation_failed,
                                      "key attestation was requested but no attestation "
                                      "provider is configured"));
    return;
  }
  auto remaining = std::chrono::duration_cast<milliseconds>(left(self, e.fetch_due));
  if (remaining.count() <= 0) {
    end_fetch_failed(self, deps, k,
                     make_msiv2_error(error_code::deadline_exceeded,
                                      "the deadline passed before the attestation service "
                                      "answered; allow a longer timeout"));
    return;
  }
  auto id = ++self->state.last_id;
  e.attempt = id;
  self->state.attempts[id] = k;
  auto me = caf::actor_cast<attestation_cache>(self);
  deps->attestation->attest(
    e.key, k.first, e.client_id, e.correlation_id,
    std::min(deps->config.upstream_timeout, remaining),
    [me, id](result<attestation_token> r, int status) {
      if (r)
        caf::anon_send(me, caf::put_atom::value, id, std::move(*r));
      else
        caf::anon_send(me, caf::put_atom::value, id,
                       make_msiv2_error(error_code::attestation_failed, r.error(), status),
                       static_cast<std::int32_t>(status));
    });
}

/// The entry of a completed attempt, or null when it is stale.
attestation_entry* current(self_ptr self, std::uint64_t attempt_id, attestation_key& k) {
  auto i = self->state.attempts.find(attempt_id);
  if (i == self->state.attempts.end())
    return nullptr;
  k = i->second;
  self->state.attempts.erase(i);
  auto ei = self->state.entries.find(k);
  if (ei == self->state.entries.end() || ei->second.attempt != attempt_id)
    return nullptr;
  return &ei->second;
}

std::string status_label(int status) {
  return status > 0 ? std::to_string(status) : std::string("transport_error");
}

/// The service refused the key or answered something unusable: not a passing outage, so no
/// retry schedule, but worth one fresh attestation.
bool refused_or_invalid(int status) {
  return status == 200 || (status >= 400 && status < 500 && status != 408 && status != 429);
}

/// Drops the entry `k` (a key rotated away): its renewal, gauge and key handle go with it. An
/// entry with waiters or a fetch under way is left to finish; its renewal drops it later.
bool forget(self_ptr self, const deps_ptr& deps, const attestation_key& k) {
  auto& st = self->state;
  auto i = st.entries.find(k);
  if (i == st.entries.end() || i->second.fetching || !i->second.waiters.empty())
    return false;
  if (st.peers && st.peers->timer)
    self->send(st.peers->timer, cancel_atom::value, i->second.timer_id);
  if (i->second.token)
    deps->stats->erase_gauge(expiry_gauge(i->second));
  st.timer_ids.erase(i->second.timer_id);
  st.entries.erase(i);
  return true;
}

/// The module's key is now `key_id`: entries of every other key are forgotten.
void forget_other_keys(self_ptr self, const deps_ptr& deps, const std::string& key_id) {
  auto& st = self->state;
  if (st.current_key_id == key_id)
    return;
  st.current_key_id = key_id;
  std::vector<attestation_key> old;
  for (const auto& [k, e] : st.entries)
    if (k.second != key_id)
      old.push_back(k);
  for (const auto& k : old)
    if (forget(self, deps, k))
      deps->log->write(platform::log_level::info, component,
                       "forgot the attestation of key " + k.second + " at " + k.first +
                         ": the binding key rotated");
}

} // namespace

attestation_cache::behavior_type
attestation_cache_impl(attestation_cache::stateful_pointer<attestation_cache_state> self,
                       deps_ptr deps) {
  self->set_exit_handler([=](caf::exit_msg& msg) {
    for (auto& [k, e] : self->state.entries)
      answer_waiters(self, e,
                     make_msiv2_error(error_code::shutting_down,
                                      "the attestation cache stopped before the attestation "
                                      "token arrived"));
    self->quit(msg.reason);
  });
  return {
    [=](attest_atom, attestation_request& req) -> caf::result<attestation_token> {
      if (req.endpoint.empty() || req.key.key_id.empty())
        return make_msiv2_error(error_code::invalid_request,
                                "attestation needs an endpoint and a key");
      if (left(self, req.due).count() <= 0)
        return make_msiv2_error(error_code::deadline_exceeded,
                                "the deadline passed before attestation began");
      attestation_key k{req.endpoint, req.key.key_id};
      forget_other_keys(self, deps, req.key.key_id);
      auto& e = self->state.entries[k];
      if (e.timer_id.empty()) {
        e.timer_id = "attestation " + req.endpoint + " " + req.key.key_id;
        self->state.timer_ids[e.timer_id] = k;
      }
      e.key = req.key;
      e.client_id = req.client_id;
      if (!e.fetching)
        e.correlation_id = req.correlation_id.empty() ? platform::uuid_v4() : req.correlation_id;
      if (req.refuse_cached && e.token) {
        e.refused.insert(digest(e.token->jwt));
        e.token.reset();
        deps->stats->erase_gauge(expiry_gauge(e));
      }
      if (e.token) {
        auto now_ms = deps->wall->now_ms();
        switch (e.plan.at(now_ms)) {
          case platform::freshness::fresh:
            deps->stats->add("msiv2_cache_hits_total{artifact=\"attestation\"}");
            return *e.token;
          case platform::freshness::due: {
            deps->stats->add("msiv2_cache_hits_total{artifact=\"attestation\"}");
            auto bound = deadline::at(self->clock().now() +
                                      milliseconds(std::max<std::int64_t>(
                                        e.plan.usable_until_ms - now_ms,
                                        deps->config.upstream_timeout.count())));
            start_fetch(self, deps, k, bound, true);
            return *e.token;
          }
          case platform::freshness::expired:
            e.token.reset();
            break;
        }
      }
      auto id = ++self->state.last_id;
      auto rp = self->make_response_promise<attestation_token>();
      e.waiters[id] = attestation_waiter{rp, req.due};
      self->state.waiter_keys[id] = k;
      self->delayed_send(self, left(self, req.due), caf::timeout_atom::value, id);
      start_fetch(self, deps, k, req.due, false);
      return rp;
    },
    [=](evict_atom, const std::string& endpoint, const std::string& key_id) {
      auto i = self->state.entries.find({endpoint, key_id});
      if (i == self->state.entries.end() || !i->second.token)
        return;
      i->second.refused.insert(digest(i->second.token->jwt)); // the issuer rejected it
      i->second.token.reset();
      deps->stats->erase_gauge(expiry_gauge(i->second));
      if (self->state.peers && self->state.peers->timer)
        self->send(self->state.peers->timer, cancel_atom::value, i->second.timer_id);
    },
    [=](renew_atom, const std::string& timer_id) {
      auto t = self->state.timer_ids.find(timer_id);
      if (t == self->state.timer_ids.end())
        return;
      auto& e = self->state.entries.at(t->second);
      if (!e.token)
        return; // evicted: the next request fetches
      if (!self->state.current_key_id.empty() && e.key.key_id != self->state.current_key_id) {
        forget(self, deps, t->second); // a rotated key: never attested again
        return;
      }
      auto now_ms = deps->wall->now_ms();
      auto bound = deadline::at(self->clock().now() +
                                milliseconds(std::max<std::int64_t>(
                                  e.plan.usable_until_ms - now_ms,
                                  deps->config.upstream_timeout.count())));
      e.correlation_id = platform::uuid_v4(); // a renewal is a request of its own
      start_fetch(self, deps, t->second, bound, true);
    },
    [=](caf::put_atom, std::uint64_t attempt_id, attestation_token& tok) {
      attestation_key k;
      if (current(self, attempt_id, k) == nullptr)
        return;
      deps->stats->add("msiv2_upstream_requests_total{upstream=\"attestation\",status=\"200\"}");
      end_fetch_ok(self, deps, k, std::move(tok), false);
    },
    [=](caf::put_atom, std::uint64_t attempt_id, caf::error& err, std::int32_t status) {
      attestation_key k;
      auto* e = current(self, attempt_id, k);
      if (e == nullptr)
        return;
      deps->stats->add("msiv2_upstream_requests_total{upstream=\"attestation\",status=\"" +
                       status_label(status) + "\"}");
      auto last = status > 0 ? io::http_response::with_status(status)
                             : io::http_response::failure(io::transport_error::timeout, "");
      auto delay = io::next_retry_delay(io::retry_leg::attestation, e->retry, last, deps->draw,
                                        deps->wall->now_s());
      if (delay && nanoseconds(*delay) < left(self, e->fetch_due)) {
        deps->stats->add("msiv2_retries_total{upstream=\"attestation\"}");
        auto retry_id = ++self->state.last_id;
        e->attempt = retry_id;
        self->state.attempts[retry_id] = k;
        self->delayed_send(self, *delay, caf::tick_atom::value, retry_id);
        return;
      }
      if (refused_or_invalid(status)) {
        auto what = describe(err).description;
        if (!e->reattested) {
          // Drop the refused answer and attest once more with a fresh request.
          e->reattested = true;
          deps->stats->add("msiv2_remediations_total");
          deps->log->write(platform::log_level::warning, component,
                           "attestation of key " + e->key.key_id + " at " + k.first +
                             " was refused or unusable (" + what +
                             "); attesting once more with a fresh request");
          attempt(self, deps, k);
          return;
        }
        err = make_msiv2_error(error_code::attestation_failed,
                               what + " (again after one fresh attestation attempt)", status);
      }
      end_fetch_failed(self, deps, k, std::move(err));
    },
    [=](disk_atom, std::uint64_t op, platform::file_read& r) {
      attestation_key k;
      if (current(self, op, k) != nullptr)
        on_disk(self, deps, k, r);
    },
    [=](lock_atom, std::uint64_t op, artifact_lock_ptr& lock, platform::file_read& r) {
      attestation_key k;
      if (current(self, op, k) != nullptr)
        on_locked(self, deps, k, std::move(lock), r);
    },
    [=](caf::tick_atom, std::uint64_t retry_id) {
      attestation_key k;
      if (current(self, retry_id, k) == nullptr)
        return;
      attempt(self, deps, k);
    },
    [=](caf::timeout_atom, std::uint64_t waiter_id) {
      auto i = self->state.waiter_keys.find(waiter_id);
      if (i == self->state.waiter_keys.end())
        return;
      auto& e = self->state.entries.at(i->second);
      self->state.waiter_keys.erase(i);
      auto w = e.waiters.find(waiter_id);
      if (w == e.waiters.end())
        return;
      w->second.rp.deliver(make_msiv2_error(error_code::deadline_exceeded,
                                            "the deadline passed while waiting for the "
                                            "attestation service; allow a longer timeout"));
      e.waiters.erase(w);
    },
    [=](wire_atom, wiring_ptr peers) { self->state.peers = std::move(peers); },
  };
}

} // namespace msiv2
