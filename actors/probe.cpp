#include "actors/probe.hpp"

#include <algorithm>
#include <string>

#include <caf/send.hpp>

#include "messages/errors.hpp"
#include "platform/encoding.hpp"

namespace msiv2 {

namespace {

using std::chrono::milliseconds;

constexpr const char* v2_path = "/metadata/identity/getplatformmetadata?cred-api-version=2.0";
constexpr const char* v1_path = "/metadata/identity/oauth2/token?api-version=2018-02-01";

std::string status_label(const io::http_response& r) {
  return r.ok() ? std::to_string(r.status) : io::to_string(r.error);
}

std::string outcome_text(const io::http_response& r) {
  if (r.ok())
    return "HTTP " + std::to_string(r.status);
  return std::string(io::to_string(r.error)) + " (" + r.error_message + ")";
}

} // namespace

void probe_state::fail_all(const caf::error& err) {
  auto pending = std::move(waiters);
  waiters.clear();
  for (auto& w : pending)
    if (w.promise.pending())
      w.promise.deliver(err);
}

probe_state::~probe_state() {
  fail_all(make_msiv2_error(error_code::shutting_down,
                            "the IMDS probe stopped before it had an answer"));
}

probe::behavior_type probe_impl(probe::stateful_pointer<probe_state> self, deps_ptr deps) {
  self->state.deps = deps;

  auto latest_due = [=] {
    deadline latest;
    for (auto& w : self->state.waiters)
      latest = std::max(latest, w.due, [](deadline a, deadline b) { return a < b; });
    return latest;
  };

  auto finish = [=](std::optional<imds_source> src, caf::error err, bool remember) {
    auto& st = self->state;
    st.current = probe_state::stage::idle;
    ++st.attempt; // drops answers and timers of this probe still on their way
    auto pending = std::move(st.waiters);
    st.waiters.clear();
    if (src) {
      st.source = src;
      for (auto& w : pending)
        w.promise.deliver(*src);
      return;
    }
    if (remember) {
      st.failure = err;
      st.failure_until = self->clock().now() + st.deps->config.transient_probe_ttl;
    }
    for (auto& w : pending)
      w.promise.deliver(err);
  };

  auto send_attempt = [=] {
    auto& st = self->state;
    auto id = ++st.attempt;
    auto left = std::chrono::duration_cast<milliseconds>(latest_due().left(self->clock().now()));
    auto& cfg = st.deps->config;
    io::http_request req;
    req.method = "GET";
    req.url = cfg.imds_base_url + (st.current == probe_state::stage::v2 ? v2_path : v1_path);
    // No Metadata header on purpose: IMDS answers 400, which proves it is there without
    // spending a (throttled) successful call.
    req.headers.set("x-ms-client-request-id", st.request_id);
    req.timeout = std::max(milliseconds(1), std::min(cfg.imds_timeout, left));
    // Short connect timeout until something answered: a host without IMDS learns it fast.
    auto connect = st.answered ? cfg.imds_timeout : cfg.probe_connect_timeout;
    req.connect_timeout = std::min(connect, req.timeout);
    auto hdl = caf::actor_cast<probe>(self);
    st.deps->transport->send(std::move(req), [hdl, id](io::http_response r) {
      caf::anon_send(hdl, http_atom::value, id, std::move(r));
    });
  };

  return {
    [=](probe_atom, deadline due) -> caf::result<imds_source> {
      auto& st = self->state;
      auto now = self->clock().now();
      if (st.source) {
        st.deps->stats->add("msiv2_cache_hits_total{artifact=\"probe\"}");
        return *st.source;
      }
      if (st.failure && now < st.failure_until)
        return st.failure;
      auto left = due.left(now);
      if (left.count() <= 0)
        return make_msiv2_error(error_code::deadline_exceeded,
                                "the deadline passed before IMDS could be probed");
      probe_state::waiter w;
      w.id = ++st.next_waiter;
      w.due = due;
      w.promise = self->make_response_promise<imds_source>();
      auto promise = w.promise;
      st.waiters.push_back(std::move(w));
      self->delayed_send(self, left, caf::timeout_atom::value, st.waiters.back().id);
      if (st.current == probe_state::stage::idle) {
        st.current = probe_state::stage::v2;
        st.retries = {};
        st.answered = false;
        st.request_id = platform::uuid_v4(); // one id for every leg of this probe
        send_attempt();
      }
      return promise;
    },
    [=](http_atom, std::uint64_t id, io::http_response& r) {
      auto& st = self->state;
      if (id != st.attempt || st.current == probe_state::stage::idle)
        return;
      bool v2 = st.current == probe_state::stage::v2;
      const char* upstream = v2 ? "imds_probe_v2" : "imds_probe_v1";
      st.deps->stats->add(std::string("msiv2_upstream_requests_total{upstream=\"") + upstream +
                          "\",status=\"" + status_label(r) + "\"}");
      if (r.ok()) {
        st.answered = true;
        if (r.status == 400) {
          finish(v2 ? imds_source::v2 : imds_source::v1_only, {}, false);
          return;
        }
        if (v2 && r.status == 404) {
          // The v2 path is unknown here: is there a v1 IMDS at all?
          st.current = probe_state::stage::v1;
          st.retries = {};
          send_attempt();
          return;
        }
      }
      auto delay = io::next_retry_delay(io::retry_leg::imds_probe, st.retries, r, st.deps->draw,
                                        st.deps->wall->now_s());
      auto path = v2 ? "getplatformmetadata" : "oauth2/token (v1)";
      if (!delay) {
        finish(std::nullopt,
               make_msiv2_error(error_code::imds_unavailable,
                                std::string("IMDS probe of ") + path + " at " +
                                  st.deps->config.imds_base_url + " got " + outcome_text(r) +
                                  " after " + std::to_string(st.retries.attempts) +
                                  " attempt(s): no usable IMDS here (not an Azure VM, or IMDS is "
                                  "down; AZURE_POD_IDENTITY_AUTHORITY_HOST selects another one)",
                                r.ok() ? r.status : 0),
               true);
        return;
      }
      if (self->clock().now() + *delay >= caf::actor_clock::time_point(
                                             std::chrono::nanoseconds(latest_due().ns))) {
        // Not cached: a caller with more time left probes again.
        finish(std::nullopt,
               make_msiv2_error(error_code::deadline_exceeded,
                                std::string("IMDS probe of ") + path + " got " + outcome_text(r) +
                                  " and the next retry would end past the deadline",
                                r.ok() ? r.status : 0),
               false);
        return;
      }
      st.deps->stats->add("msiv2_retries_total{upstream=\"imds_probe\"}");
      self->delayed_send(self, *delay, caf::tick_atom::value, ++st.attempt);
    },
    [=](caf::tick_atom, std::uint64_t id) {
      auto& st = self->state;
      if (id == st.attempt && st.current != probe_state::stage::idle)
        send_attempt();
    },
    [=](caf::timeout_atom, std::uint64_t waiter_id) {
      auto& st = self->state;
      auto i = std::find_if(st.waiters.begin(), st.waiters.end(),
                            [&](const probe_state::waiter& w) { return w.id == waiter_id; });
      if (i == st.waiters.end())
        return;
      i->promise.deliver(make_msiv2_error(error_code::deadline_exceeded,
                                          "IMDS did not answer the probe before the deadline"));
      st.waiters.erase(i);
      if (st.waiters.empty() && st.current != probe_state::stage::idle) {
        // Nobody waits any more: drop this probe; the next caller starts a fresh one.
        st.current = probe_state::stage::idle;
        ++st.attempt;
      }
    },
    [=](wire_atom, wiring_ptr w) { self->state.peers = std::move(w); },
  };
}

} // namespace msiv2
