#include "actors/cert_issuer.hpp"

#include <strings.h>

#include <algorithm>
#include <string>
#include <utility>

#include <caf/send.hpp>

#include "actors/imds_parse.hpp"
#include "actors/persisted.hpp"
#include "io/endpoint_trust.hpp"
#include "io/json.hpp"
#include "messages/errors.hpp"
#include "platform/binding.hpp"
#include "platform/csr.hpp"
#include "platform/encoding.hpp"
#include "platform/x509.hpp"

namespace msiv2 {

namespace {

using self_ptr = cert_issuer::stateful_pointer<cert_issuer_state>;
using flight = cert_issuer_state::flight;
using std::chrono::milliseconds;

constexpr const char* metadata_path = "/metadata/identity/getplatformmetadata?cred-api-version=2.0";
constexpr const char* issue_path = "/metadata/identity/issuecredential?cred-api-version=2.0";

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && ::strncasecmp(a.data(), b.data(), a.size()) == 0;
}

std::string selector(const managed_identity& id) {
  switch (id.kind) {
    case identity_kind::system_assigned: return {};
    case identity_kind::client_id: return "&client_id=" + platform::url_encode(id.id);
    case identity_kind::object_id: return "&object_id=" + platform::url_encode(id.id);
    case identity_kind::resource_id: return "&mi_res_id=" + platform::url_encode(id.id);
  }
  return {};
}

std::string status_label(const io::http_response& r) {
  return r.ok() ? std::to_string(r.status) : io::to_string(r.error);
}

caf::actor_clock::time_point time_of(deadline d) {
  return caf::actor_clock::time_point(std::chrono::nanoseconds(d.ns));
}

milliseconds left_of(self_ptr self, deadline d) {
  return std::chrono::duration_cast<milliseconds>(d.left(self->clock().now()));
}

/// Bound of a request() to a peer: the config's, or what is left of the deadline.
milliseconds peer_timeout(self_ptr self, deadline d) {
  return std::max(milliseconds(1),
                  std::min(self->state.deps->config.actor_request_timeout, left_of(self, d)));
}

flight* find_flight(self_ptr self, const std::string& key, std::uint64_t id) {
  auto i = self->state.flights.find(key);
  return i != self->state.flights.end() && i->second.id == id ? &i->second : nullptr;
}

/// issuecredential's answer for flight `f` (see read_credential_answer); the token endpoint
/// it names must be on `token_hosts`.
result<credential> read_credential(const io::http_response& r, const flight& f,
                                   std::int64_t now_s, const std::vector<std::string>& token_hosts,
                                   bool& key_mismatch) {
  credential_expectation want{f.identity, *f.metadata, *f.key, f.attestation.has_value(),
                              token_hosts};
  return read_credential_answer(r.body, want, now_s, &key_mismatch);
}

void send_current(self_ptr self, const std::string& key);
void continue_flight(self_ptr self, const std::string& key);
void mint(self_ptr self, const std::string& key);
void store(self_ptr self, const std::string& key, credential_ptr cred);

// -- the certificate file ----------------------------------------------------------------------

std::string artifact_id(self_ptr self, const std::string& key) {
  return persisted::certificate_artifact_id(self->state.deps->config.imds_base_url, key);
}

/// The certificate file of `key` for the binding key `key_id` (review M6: named with the key).
std::string file_name(self_ptr self, const std::string& key, const std::string& key_id) {
  return persisted::certificate_file_name(artifact_id(self, key), key_id);
}

/// Counts a file of flight `f` this process could not use and logs why, once per file and
/// reason.
void refused_file(self_ptr self, const std::string& key, const flight& f,
                  const std::string& reason) {
  auto& st = self->state;
  st.deps->stats->add("msiv2_persistence_errors_total{artifact=\"certificate\"}");
  auto name = file_name(self, key, f.key->key_id);
  auto& last = st.refusals_logged[name];
  if (last == reason)
    return;
  last = reason;
  st.deps->log->write(platform::log_level::warning, "cert_issuer",
                      "certificate file " + st.deps->files->directory() + "/" + name + " for " +
                        key + " not used: " + reason);
}

/// The certificate a file holds, when this flight may adopt it: it certifies the flight's key,
/// matches the metadata and is not the refused one. Refusals are counted and logged; `bad`
/// tells that the file should go (when ours to delete, under the lock).
std::optional<credential> usable_from_file(self_ptr self, const std::string& key, const flight& f,
                                           const platform::file_read& r, bool& bad) {
  auto& st = self->state;
  bad = false;
  if (r.status == platform::read_status::missing)
    return std::nullopt;
  if (r.status == platform::read_status::refused) {
    refused_file(self, key, f, r.reason);
    return std::nullopt;
  }
  auto d = persisted::decode_certificate(r.bytes, artifact_id(self, key), *f.key,
                                         st.deps->wall->now_s(),
                                         st.deps->config.token_endpoint_hosts);
  if (!d) {
    bad = true;
    refused_file(self, key, f, d.reason);
    return std::nullopt;
  }
  auto& c = *d.value;
  if (!iequals(c.client_id, f.metadata->client_id) || !iequals(c.tenant_id, f.metadata->tenant_id)) {
    bad = true;
    refused_file(self, key, f, "it is for client " + c.client_id +
                              " but getplatformmetadata now says " + f.metadata->client_id +
                              " (identity reassigned)");
    return std::nullopt;
  }
  if ((!f.refused_x5t.empty() && c.x5t_s256 == f.refused_x5t) || st.refused.count(c.x5t_s256) > 0) {
    bad = true; // the token endpoint refused it: not counted as a file error
    return std::nullopt;
  }
  if (c.attested != (st.deps->attestation != nullptr)) {
    bad = true;
    refused_file(self, key, f, "its attested flag does not match this module's configuration");
    return std::nullopt;
  }
  c.identity = f.identity;
  c.metadata = *f.metadata;
  return std::move(c);
}

/// Puts a certificate read from the file into the memory cache (own renewal plan and timer).
void adopt(self_ptr self, const std::string& key, flight& f, credential c) {
  auto& st = self->state;
  st.deps->stats->add("msiv2_cache_hits_total{artifact=\"certificate\",source=\"disk\"}");
  auto ptr = std::make_shared<const credential>(std::move(c));
  store(self, key, ptr);
  f.adopted = true;
  st.deps->log->write(platform::log_level::info, "cert_issuer",
                      to_string(f.identity) + ": binding certificate " + ptr->x5t_s256 +
                        " adopted from the cache directory");
}

/// Writes the new certificate of flight `f` (under its lock when it has one); the callers are
/// not kept waiting for it.
void persist(self_ptr self, const std::string& key, const credential& c, artifact_lock_ptr lock) {
  auto& st = self->state;
  if (!st.deps->files)
    return;
  // The callback must not hold `deps` (which holds the store): a store kept alive by its own
  // queued job would never be joined at shutdown, and the write could be lost at exit.
  auto stats = st.deps->stats;
  auto log = st.deps->log;
  auto name = file_name(self, key, c.key.key_id);
  st.deps->files->write(
    name, persisted::encode_certificate(c, artifact_id(self, key), st.deps->wall->now_ms()),
    std::move(lock), [stats, log, name](result<void> r) {
      if (r)
        return;
      stats->add("msiv2_persistence_errors_total{artifact=\"certificate\"}");
      log->write(platform::log_level::warning, "cert_issuer",
                 "writing the certificate file " + name + " failed: " + r.error());
    });
}

/// Mints for flight `f`, first taking the file's writer lock and re-reading the file when
/// persistence is on (another process may have renewed meanwhile).
void lock_then_mint(self_ptr self, const std::string& key) {
  auto& st = self->state;
  auto& f = st.flights.at(key);
  if (!st.deps->files) {
    mint(self, key);
    return;
  }
  f.at = flight::phase::locking;
  auto wait = std::max(milliseconds(1), std::min(st.deps->config.lock_wait, left_of(self, f.due)));
  auto hdl = caf::actor_cast<cert_issuer>(self);
  auto fid = f.id;
  st.deps->files->lock_and_read(file_name(self, key, f.key->key_id), wait,
                                [hdl, fid](artifact_lock_ptr lock, platform::file_read r) {
                                  caf::anon_send(hdl, lock_atom::value, fid, std::move(lock),
                                                 std::move(r));
                                });
}

/// The writer lock (or null: not had in time) and the re-read came back.
void on_locked(self_ptr self, const std::string& key, artifact_lock_ptr lock,
               const platform::file_read& r) {
  auto& st = self->state;
  auto& f = st.flights.at(key);
  f.lock = std::move(lock);
  if (!f.lock)
    st.deps->log->write(platform::log_level::warning, "cert_issuer",
                        to_string(f.identity) +
                          ": the certificate file's writer lock was not had in time; going "
                          "ahead without it");
  bool bad = false;
  auto c = usable_from_file(self, key, f, r, bad);
  auto mine = st.cache.find(key);
  auto now = st.deps->wall->now_ms();
  if (c && (mine == st.cache.end() || c->not_before_ms > mine->second.cred->not_before_ms ||
            (c->not_before_ms == mine->second.cred->not_before_ms &&
             c->not_after_ms > mine->second.cred->not_after_ms))) {
    // Another process renewed while this one waited: no upstream call.
    adopt(self, key, f, std::move(*c));
    auto& e = st.cache.at(key);
    auto state = e.plan.at(now);
    if (state != platform::freshness::expired) {
      auto cred = e.cred;
      auto waiters = std::move(f.waiters);
      f.waiters.clear();
      for (auto& w : waiters)
        w.promise.deliver(cred);
      if (state == platform::freshness::fresh) {
        st.flights.erase(key); // drops the lock
        return;
      }
      f.background = true;
    }
  } else if (bad && f.lock) {
    st.deps->files->remove(file_name(self, key, f.key->key_id), f.lock);
  }
  mint(self, key);
}

/// The unlocked read of the certificate file came back.
void on_disk(self_ptr self, const std::string& key, platform::file_read& r) {
  auto& f = self->state.flights.at(key);
  f.disk_pending = false;
  f.disk = std::move(r);
  continue_flight(self, key);
}

void count(self_ptr self, const char* upstream, const io::http_response& r) {
  self->state.deps->stats->add(std::string("msiv2_upstream_requests_total{upstream=\"") +
                               upstream + "\",status=\"" + status_label(r) + "\"}");
}

// The identity in the key comes from the embedder: hashed, like renewal_gauge_name, so that no
// label carries its text (review L1).
std::string gauge(const char* what, const std::string& key) {
  return std::string("msiv2_") + what + "_seconds{artifact=\"certificate\",id=\"" +
         platform::hex_lower(platform::sha256(key)).substr(0, 12) + "\"}";
}

void evict_entry(self_ptr self, const std::string& key) {
  auto& st = self->state;
  if (st.cache.erase(key) == 0)
    return;
  st.deps->stats->erase_gauge(gauge("expiry", key));
  st.deps->stats->erase_gauge(gauge("renewal", key));
  if (st.peers && st.peers->timer)
    caf::anon_send(st.peers->timer, cancel_atom::value, key);
}

void finish(self_ptr self, const std::string& key, credential_ptr cred) {
  auto& st = self->state;
  auto f = std::move(st.flights[key]);
  st.flights.erase(key);
  for (auto& w : f.waiters)
    w.promise.deliver(cred);
}

void fail_flight(self_ptr self, const std::string& key, caf::error err) {
  auto& st = self->state;
  auto f = std::move(st.flights[key]);
  st.flights.erase(key);
  st.deps->log->write(platform::log_level::warning, "cert_issuer",
                      to_string(f.identity) + ": " + render(err));
  for (auto& w : f.waiters)
    w.promise.deliver(err);
  // A failed renewal never drops a usable certificate: try again later, before it expires.
  auto i = st.cache.find(key);
  if (i == st.cache.end() || !st.peers || !st.peers->timer)
    return;
  auto now = st.deps->wall->now_ms();
  if (i->second.plan.at(now) == platform::freshness::expired)
    return;
  // Full jitter up to 30 s << (n-1) (io::renewal_retry_delay): certificates whose renewals
  // failed together do not retry together (review H3).
  auto n = std::min(++i->second.failed_renewals, 6);
  auto at = now + io::renewal_retry_delay(n, std::chrono::milliseconds(30'000),
                                          std::chrono::milliseconds(std::int64_t{30'000} << 5),
                                          st.deps->draw)
                    .count();
  if (at < i->second.plan.usable_until_ms)
    caf::anon_send(st.peers->timer, schedule_atom::value, key, at,
                   caf::actor_cast<caf::actor>(self));
}

/// Ends the wait for an HTTP answer that cannot be retried, or schedules the retry. True
/// when a retry was scheduled.
bool retry_later(self_ptr self, flight& f, const io::http_response& r) {
  auto& st = self->state;
  auto delay = io::next_retry_delay(io::retry_leg::imds, f.retries, r, st.deps->draw,
                                    st.deps->wall->now_s());
  if (!delay || self->clock().now() + *delay >= time_of(f.due))
    return false;
  st.deps->stats->add("msiv2_retries_total{upstream=\"imds\"}");
  f.attempt = ++st.next_id;
  self->delayed_send(self, *delay, caf::tick_atom::value, f.attempt);
  return true;
}

/// `otherwise`, or deadline_exceeded when the transfer timed out because the flight's deadline
/// bounded it (send_current clips the transfer timeout to what is left; a few ms of slack cover
/// the truncation to whole milliseconds).
error_code timeout_or(self_ptr self, const flight& f, const io::http_response& r,
                      error_code otherwise) {
  return r.timed_out() && left_of(self, f.due) <= milliseconds(5) ? error_code::deadline_exceeded
                                                                  : otherwise;
}

void send_current(self_ptr self, const std::string& key) {
  auto& st = self->state;
  auto& f = st.flights.at(key);
  auto& cfg = st.deps->config;
  f.attempt = ++st.next_id;
  io::http_request req;
  bool issuing = f.at == flight::phase::issuing;
  req.method = issuing ? "POST" : "GET";
  req.url = cfg.imds_base_url + (issuing ? issue_path : metadata_path) + selector(f.identity);
  if (issuing && f.bypass_cache)
    req.url += "&bypass_cache=true";
  req.headers.set("Metadata", "true");
  req.headers.set("x-ms-client-request-id", f.request_id);
  add_client_telemetry(req.headers);
  if (issuing) {
    req.headers.set("Content-Type", "application/json; charset=utf-8");
    req.body = f.issue_body;
  }
  req.timeout = std::max(milliseconds(1), std::min(cfg.imds_timeout, left_of(self, f.due)));
  // The mtls_pop path has no probe in front of it: until IMDS answered once, its short
  // connect timeout applies here, so a host without IMDS learns it as fast as from the probe.
  req.connect_timeout = std::min(st.imds_answered ? req.connect_timeout : cfg.probe_connect_timeout,
                                 req.timeout);
  auto hdl = caf::actor_cast<cert_issuer>(self);
  auto id = f.attempt;
  st.deps->transport->send(std::move(req), [hdl, id](io::http_response r) {
    caf::anon_send(hdl, http_atom::value, id, std::move(r));
  });
}

void on_metadata(self_ptr self, const std::string& key, io::http_response& r) {
  auto& st = self->state;
  auto& f = st.flights.at(key);
  count(self, "imds_metadata", r);
  auto corr = correlation_of(r.body, f.request_id);
  if (r.ok())
    st.imds_answered = true;
  if (!r.ok() && !st.imds_answered) {
    // Nothing ever answered here: retried as the probe is (a refused connection is final),
    // then "no IMDS" rather than a metadata failure.
    auto delay = io::next_retry_delay(io::retry_leg::imds_probe, f.retries, r, st.deps->draw,
                                      st.deps->wall->now_s());
    if (delay && self->clock().now() + *delay < time_of(f.due)) {
      st.deps->stats->add("msiv2_retries_total{upstream=\"imds\"}");
      f.attempt = ++st.next_id;
      self->delayed_send(self, *delay, caf::tick_atom::value, f.attempt);
      return;
    }
    fail_flight(self, key,
                make_msiv2_error(timeout_or(self, f, r, error_code::imds_unavailable),
                                 "getplatformmetadata at " + st.deps->config.imds_base_url +
                                   " got " + upstream_says(r) + " after " +
                                   std::to_string(f.retries.attempts) +
                                   " attempt(s): no usable IMDS here (not an Azure VM, or IMDS "
                                   "is down; AZURE_POD_IDENTITY_AUTHORITY_HOST selects another "
                                   "one)",
                                 0, corr));
    return;
  }
  if (r.ok() && r.status == 200) {
    auto meta = read_metadata_answer(r);
    if (meta && st.deps->attestation) {
      // The key's attestation request goes there: trusted no more than the token endpoint.
      auto endpoint = io::check_endpoint(meta->attestation_endpoint,
                                         st.deps->config.attestation_endpoint_hosts,
                                         "getplatformmetadata response: attestationEndpoint");
      if (!endpoint)
        meta = endpoint.fail();
      else
        meta->attestation_endpoint = std::move(*endpoint);
    }
    if (!meta) {
      fail_flight(self, key, make_msiv2_error(error_code::metadata_failed, meta.error(), 200, corr));
      return;
    }
    f.metadata = std::move(*meta);
    continue_flight(self, key);
    return;
  }
  if (r.ok() && r.status == 400 && contains_ignoring_case(r.body, "identity")) {
    fail_flight(self, key,
                make_msiv2_error(error_code::identity_not_found,
                                 "IMDS does not know the identity " + to_string(f.identity) +
                                   " (" + upstream_says(r) +
                                   "); check that it is assigned to this VM",
                                 400, corr));
    return;
  }
  if (retry_later(self, f, r))
    return;
  if (r.ok() && r.status == 404)
    fail_flight(self, key,
                make_msiv2_error(error_code::v1_only_host,
                                 "getplatformmetadata answered 404: this host only has IMDS v1, so "
                                 "mTLS PoP tokens cannot be had here (bearer tokens can)",
                                 404, corr));
  else
    fail_flight(self, key,
                make_msiv2_error(timeout_or(self, f, r, error_code::metadata_failed),
                                 "getplatformmetadata failed for " + to_string(f.identity) + ": " +
                                   upstream_says(r) + " after " +
                                   std::to_string(f.retries.attempts) + " attempt(s)",
                                 r.ok() ? r.status : 0, corr));
}

void store(self_ptr self, const std::string& key, credential_ptr cred) {
  auto& st = self->state;
  // Renewal follows token_not_after when the certificate has one (it is useless for tokens
  // after it, though notAfter is later).
  auto plan = platform::plan_lifecycle(cred->not_before_ms, cred->usable_until_ms(), std::nullopt,
                                       st.deps->draw);
  st.cache[key] = cert_issuer_state::entry{cred, plan, 0};
  st.deps->stats->set_gauge(gauge("expiry", key), static_cast<double>(plan.valid_until_ms) / 1000);
  st.deps->stats->set_gauge(gauge("renewal", key), static_cast<double>(plan.renew_at_ms) / 1000);
  if (st.peers && st.peers->timer)
    caf::anon_send(st.peers->timer, schedule_atom::value, key, plan.renew_at_ms,
                   caf::actor_cast<caf::actor>(self));
}

void on_issue(self_ptr self, const std::string& key, io::http_response& r) {
  auto& st = self->state;
  auto& f = st.flights.at(key);
  count(self, "imds_issue", r);
  auto corr = correlation_of(r.body, f.request_id);
  if (r.ok())
    st.imds_answered = true;
  if (r.ok() && r.status == 200) {
    bool key_mismatch = false;
    auto cred = read_credential(r, f, st.deps->wall->now_s(),
                                st.deps->config.token_endpoint_hosts, key_mismatch);
    if (!cred) {
      if (key_mismatch && st.peers && st.peers->keys)
        self->request(st.peers->keys, st.deps->config.actor_request_timeout, rotate_atom::value,
                      f.key->key_id)
          .then([](key_ref&) {}, [](caf::error&) {});
      fail_flight(self, key,
                  make_msiv2_error(error_code::issuance_refused, cred.error(), 200, corr));
      return;
    }
    auto ptr = std::make_shared<const credential>(std::move(*cred));
    store(self, key, ptr);
    st.deps->log->write(platform::log_level::info, "cert_issuer",
                        to_string(f.identity) + ": new binding certificate " + ptr->x5t_s256 +
                          " for key " + ptr->key.key_id +
                          (f.lock ? " (written under the lock)" : ""));
    auto lock = std::move(f.lock);
    finish(self, key, ptr);
    persist(self, key, *ptr, std::move(lock));
    return;
  }
  if (r.ok() && r.status == 400 && st.deps->attestation && f.attestation && !f.reattested &&
      contains_ignoring_case(r.body, "attestation")) {
    // The issuer refused our attestation token: drop it, attest again once, retry once.
    f.reattested = true;
    st.deps->stats->add("msiv2_remediations_total");
    if (st.peers && st.peers->attestation)
      caf::anon_send(st.peers->attestation, evict_atom::value, f.metadata->attestation_endpoint,
                     f.key->key_id);
    f.attestation.reset();
    mint(self, key);
    return;
  }
  if (retry_later(self, f, r))
    return;
  fail_flight(self, key,
              make_msiv2_error(timeout_or(self, f, r, error_code::issuance_refused),
                               "issuecredential refused a certificate for " + to_string(f.identity) +
                                 ": " + upstream_says(r),
                               r.ok() ? r.status : 0, corr));
}

void issue(self_ptr self, const std::string& key) {
  auto& st = self->state;
  auto& f = st.flights.at(key);
  f.at = flight::phase::issuing;
  if (!st.csr_public || st.csr_public_key_id != f.key->key_id) {
    auto pub = platform::prepare_csr_public_key(f.key->spki_der);
    if (!pub) {
      fail_flight(self, key,
                  make_msiv2_error(error_code::key_failed,
                                   "the binding key's public key does not decode: " +
                                     pub.error()));
      return;
    }
    st.csr_public = std::move(*pub);
    st.csr_public_key_id = f.key->key_id;
  }
  auto csr = platform::build_csr(f.key->key->get(), *st.csr_public, f.metadata->client_id,
                                 f.metadata->tenant_id, f.metadata->cuid_json);
  if (!csr) {
    fail_flight(self, key,
                make_msiv2_error(error_code::key_failed,
                                 "the binding key could not sign the CSR: " + csr.error()));
    return;
  }
  std::string body = "{\"csr\":" + platform::json_quote(platform::base64_encode(*csr));
  if (f.attestation)
    body += ",\"attestation_token\":" + platform::json_quote(f.attestation->jwt);
  body += "}";
  f.issue_body = std::move(body);
  f.retries = {};
  send_current(self, key);
}

void mint(self_ptr self, const std::string& key) {
  auto& st = self->state;
  auto& f = st.flights.at(key);
  if (!st.deps->attestation) {
    issue(self, key);
    return;
  }
  if (!st.peers || !st.peers->attestation) {
    fail_flight(self, key, make_msiv2_error(error_code::internal_failure,
                                            "cert_issuer has no attestation_cache to ask"));
    return;
  }
  f.at = flight::phase::attesting;
  attestation_request req;
  req.endpoint = f.metadata->attestation_endpoint;
  req.client_id = f.metadata->client_id;
  req.key = *f.key;
  req.due = f.due;
  req.refuse_cached = f.reattested;
  req.correlation_id = f.request_id;
  auto fid = f.id;
  self->request(st.peers->attestation, peer_timeout(self, f.due), attest_atom::value, req)
    .then(
      [=](attestation_token& t) {
        if (auto* g = find_flight(self, key, fid)) {
          g->attestation = std::move(t);
          issue(self, key);
        }
      },
      [=](caf::error& e) {
        if (find_flight(self, key, fid))
          fail_flight(self, key, std::move(e));
      });
}

void continue_flight(self_ptr self, const std::string& key) {
  auto& st = self->state;
  auto& f = st.flights.at(key);
  if (!f.metadata || !f.key || f.disk_pending || f.at != flight::phase::metadata)
    return;
  if (f.disk) {
    // No usable certificate in memory when the flight began: the file's may do.
    auto r = std::move(*f.disk);
    f.disk.reset();
    auto i = st.cache.find(key);
    bool usable = i != st.cache.end() &&
                  i->second.plan.at(st.deps->wall->now_ms()) != platform::freshness::expired &&
                  i->second.cred->key.key_id == f.key->key_id;
    bool bad = false;
    if (!usable)
      if (auto c = usable_from_file(self, key, f, r, bad))
        adopt(self, key, f, std::move(*c));
  }
  if (auto i = st.cache.find(key); i != st.cache.end()) {
    const auto& c = *i->second.cred;
    if (!iequals(c.client_id, f.metadata->client_id) || !iequals(c.tenant_id, f.metadata->tenant_id)) {
      st.deps->log->write(platform::log_level::warning, "cert_issuer",
                          to_string(f.identity) +
                            ": identity reassigned (clientId/tenantId changed): certificate evicted");
      evict_entry(self, key);
    } else if (c.key.key_id != f.key->key_id) {
      evict_entry(self, key); // certifies a key that is no longer ours
    } else {
      auto state = i->second.plan.at(st.deps->wall->now_ms());
      if (state != platform::freshness::expired) {
        if (!f.adopted)
          st.deps->stats->add("msiv2_cache_hits_total{artifact=\"certificate\"}");
        auto cred = i->second.cred;
        auto waiters = std::move(f.waiters);
        f.waiters.clear();
        for (auto& w : waiters)
          w.promise.deliver(cred);
        if (state == platform::freshness::fresh) {
          st.flights.erase(key);
          return;
        }
        f.background = true; // due: serve it and renew behind the callers' backs
      }
      st.deps->stats->add("msiv2_renewals_total{artifact=\"certificate\"}");
    }
  }
  lock_then_mint(self, key);
}

void start_flight(self_ptr self, const std::string& key, managed_identity identity, deadline due,
                  bool background, const std::string& correlation_id) {
  auto& st = self->state;
  auto& f = st.flights[key];
  f.id = ++st.next_id;
  f.identity = std::move(identity);
  f.background = background;
  // The caller's correlation id (one per token request); a background renewal gets its own.
  f.request_id = correlation_id.empty() ? platform::uuid_v4() : correlation_id;
  f.due = due;
  send_current(self, key);
  bool read_disk = false;
  if (st.deps->files) {
    auto i = st.cache.find(key);
    read_disk = i == st.cache.end() ||
                i->second.plan.at(st.deps->wall->now_ms()) == platform::freshness::expired;
    // The file is named with the key: it is read once the key is known (still while the
    // metadata call is in flight), and another process may have a certificate in it.
    f.disk_pending = read_disk;
  }
  // The key is asked for while the metadata call is in flight (protocol.md §0, steps 1 and 2).
  auto fid = f.id;
  self->request(st.peers->keys, peer_timeout(self, due), caf::get_atom::value)
    .then(
      [=](key_ref& k) {
        if (auto* g = find_flight(self, key, fid)) {
          g->key = std::move(k);
          if (read_disk) {
            auto hdl = caf::actor_cast<cert_issuer>(self);
            self->state.deps->files->read(file_name(self, key, g->key->key_id),
                                          [hdl, fid](platform::file_read r) {
                                            caf::anon_send(hdl, disk_atom::value, fid,
                                                           std::move(r));
                                          });
          }
          continue_flight(self, key);
        }
      },
      [=](caf::error& e) {
        if (find_flight(self, key, fid))
          fail_flight(self, key, std::move(e));
      });
}

} // namespace

std::string certificate_cache_key(const managed_identity& id, bool attested) {
  return to_string(id) + (attested ? "|attested" : "|plain");
}

void cert_issuer_state::fail_all(const caf::error& err) {
  auto all = std::move(flights);
  flights.clear();
  for (auto& [key, f] : all)
    for (auto& w : f.waiters)
      if (w.promise.pending())
        w.promise.deliver(err);
}

cert_issuer_state::~cert_issuer_state() {
  fail_all(make_msiv2_error(error_code::shutting_down,
                            "cert_issuer stopped before the certificate was ready"));
}

cert_issuer::behavior_type cert_issuer_impl(cert_issuer::stateful_pointer<cert_issuer_state> self,
                                            deps_ptr deps) {
  self->state.deps = std::move(deps);
  return {
    [=](caf::get_atom, credential_request& req) -> caf::result<credential_ptr> {
      auto& st = self->state;
      auto left = req.due.left(self->clock().now());
      if (left.count() <= 0)
        return make_msiv2_error(error_code::deadline_exceeded,
                                "the deadline passed before a certificate could be had");
      if (!st.peers || !st.peers->keys)
        return make_msiv2_error(error_code::internal_failure, "cert_issuer is not wired yet");
      auto key = certificate_cache_key(req.identity, st.deps->attestation != nullptr);
      bool bypass = false;
      if (!req.refused_x5t.empty()) {
        st.refused.insert(req.refused_x5t);
        auto i = st.cache.find(key);
        if (i != st.cache.end() && i->second.cred->x5t_s256 == req.refused_x5t) {
          evict_entry(self, key);
          bypass = true;
        }
      }
      if (auto f = st.flights.find(key); f != st.flights.end() && f->second.metadata) {
        // A renewal past its metadata call is under way: a usable certificate is served
        // rather than made to wait for the new one.
        auto i = st.cache.find(key);
        if (i != st.cache.end() &&
            i->second.plan.at(st.deps->wall->now_ms()) != platform::freshness::expired) {
          st.deps->stats->add("msiv2_cache_hits_total{artifact=\"certificate\"}");
          return i->second.cred;
        }
      }
      cert_issuer_state::waiter w;
      w.id = ++st.next_id;
      w.due = req.due;
      w.promise = self->make_response_promise<credential_ptr>();
      auto promise = w.promise;
      self->delayed_send(self, left, caf::timeout_atom::value, w.id);
      auto i = st.flights.find(key);
      if (i == st.flights.end()) {
        auto& f = st.flights[key];
        f.waiters.push_back(std::move(w));
        f.bypass_cache = bypass;
        if (bypass)
          f.refused_x5t = req.refused_x5t;
        start_flight(self, key, req.identity, req.due, false, req.correlation_id);
      } else {
        auto& f = i->second;
        f.waiters.push_back(std::move(w));
        f.due = std::max(f.due, req.due, [](deadline a, deadline b) { return a < b; });
        f.bypass_cache = f.bypass_cache || bypass;
        if (bypass)
          f.refused_x5t = req.refused_x5t;
      }
      return promise;
    },
    [=](evict_atom, const managed_identity& id) {
      evict_entry(self, certificate_cache_key(id, false));
      evict_entry(self, certificate_cache_key(id, true));
    },
    [=](renew_atom, const std::string& key) {
      auto& st = self->state;
      auto i = st.cache.find(key);
      if (i == st.cache.end() || st.flights.count(key) > 0 || !st.peers || !st.peers->keys)
        return;
      auto due = deadline::at(self->clock().now() + st.deps->config.actor_request_timeout);
      start_flight(self, key, i->second.cred->identity, due, true, {});
    },
    [=](http_atom, std::uint64_t id, io::http_response& r) {
      for (auto& [key, f] : self->state.flights) {
        if (f.attempt != id)
          continue;
        auto k = key; // the handlers may erase the flight
        if (f.at == flight::phase::metadata)
          on_metadata(self, k, r);
        else if (f.at == flight::phase::issuing)
          on_issue(self, k, r);
        return;
      }
    },
    [=](disk_atom, std::uint64_t fid, platform::file_read& r) {
      for (auto& [key, f] : self->state.flights)
        if (f.id == fid) {
          if (f.disk_pending) {
            auto k = key;
            on_disk(self, k, r);
          }
          return;
        }
    },
    [=](lock_atom, std::uint64_t fid, artifact_lock_ptr& lock, platform::file_read& r) {
      // A stale answer (its flight ended) drops its lock with the message.
      for (auto& [key, f] : self->state.flights)
        if (f.id == fid) {
          if (f.at == flight::phase::locking) {
            auto k = key;
            on_locked(self, k, std::move(lock), r);
          }
          return;
        }
    },
    [=](caf::tick_atom, std::uint64_t id) {
      for (auto& [key, f] : self->state.flights)
        if (f.attempt == id) {
          auto k = key;
          send_current(self, k);
          return;
        }
    },
    [=](caf::timeout_atom, std::uint64_t waiter_id) {
      for (auto& [key, f] : self->state.flights) {
        auto w = std::find_if(f.waiters.begin(), f.waiters.end(),
                              [&](const cert_issuer_state::waiter& x) { return x.id == waiter_id; });
        if (w == f.waiters.end())
          continue;
        w->promise.deliver(make_msiv2_error(error_code::deadline_exceeded,
                                            "no binding certificate for " + to_string(f.identity) +
                                              " before the deadline",
                                            0, f.request_id));
        f.waiters.erase(w);
        return; // the flight goes on: its certificate is cached for the next caller
      }
    },
    [=](wire_atom, wiring_ptr w) { self->state.peers = std::move(w); },
  };
}

} // namespace msiv2
