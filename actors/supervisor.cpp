#include "actors/supervisor.hpp"

#include <algorithm>

#include <caf/actor_cast.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>
#include <caf/system_messages.hpp>

#include "actors/attestation_cache.hpp"
#include "actors/cert_issuer.hpp"
#include "actors/key_manager.hpp"
#include "actors/probe.hpp"
#include "actors/renewal_timer.hpp"
#include "actors/token_exchanger.hpp"
#include "actors/token_service.hpp"
#include "messages/errors.hpp"

namespace msiv2 {

namespace {

using self_ptr = supervisor::stateful_pointer<supervisor_state>;

std::size_t idx(actor_role r) {
  return static_cast<std::size_t>(r);
}

template <class Handle>
Handle handle_of(self_ptr self, actor_role r) {
  return caf::actor_cast<Handle>(self->state.children[idx(r)].handle);
}

/// Builds the wiring from the current handles and sends it to every live actor.
void send_wiring(self_ptr self) {
  auto w = std::make_shared<wiring>();
  w->probe_actor = handle_of<probe>(self, actor_role::probe);
  w->keys = handle_of<key_manager>(self, actor_role::keys);
  w->attestation = handle_of<attestation_cache>(self, actor_role::attestation);
  w->certs = handle_of<cert_issuer>(self, actor_role::certs);
  w->exchanger = handle_of<token_exchanger>(self, actor_role::exchanger);
  w->timer = handle_of<renewal_timer>(self, actor_role::timer);
  w->service = handle_of<token_service>(self, actor_role::service);
  self->state.wires = w;
  for (auto& c : self->state.children)
    if (c.alive)
      caf::anon_send(c.handle, wire_atom::value, wiring_ptr{w});
}

void spawn_child(self_ptr self, std::size_t i) {
  auto& st = self->state;
  auto& c = st.children[i];
  auto& make = st.factories.make[i];
  c.handle = make ? make(self->system(), st.deps) : caf::actor{};
  c.alive = static_cast<bool>(c.handle);
  (*st.handles)[i] = c.handle;
  ++c.generation;
  c.started = self->clock().now();
  if (c.alive)
    self->monitor(c.handle);
  else
    st.deps->log->write(platform::log_level::warning, "supervisor",
                        std::string("no ") + to_string(static_cast<actor_role>(i))
                          + " actor in this build; requests that need it fail");
}

void on_down(self_ptr self, const caf::down_msg& dm) {
  auto& st = self->state;
  auto it = std::find_if(st.children.begin(), st.children.end(), [&](const auto& c) {
    return c.alive && caf::actor_cast<caf::actor_addr>(c.handle) == dm.source;
  });
  if (it == st.children.end())
    return;
  auto i = static_cast<std::size_t>(it - st.children.begin());
  auto& c = *it;
  c.alive = false;
  if (st.stopping) {
    if (std::none_of(st.children.begin(), st.children.end(), [](const auto& x) { return x.alive; }))
      self->quit(caf::exit_reason::user_shutdown);
    return;
  }
  // Every actor runs until the supervisor stops it: any other end is a crash.
  auto uptime = self->clock().now() - c.started;
  if (c.backoff.count() == 0 || uptime >= st.policy.stable_after)
    c.backoff = st.policy.initial_backoff;
  else
    c.backoff = std::min(c.backoff * 2, st.policy.max_backoff);
  ++c.restarts;
  st.deps->stats->add(std::string("msiv2_actor_restarts_total{actor=\"")
                      + to_string(static_cast<actor_role>(i)) + "\"}");
  st.deps->log->write(platform::log_level::error, "supervisor",
                      std::string(to_string(static_cast<actor_role>(i))) + " stopped ("
                        + caf::to_string(dm.reason) + "); restarting in "
                        + std::to_string(c.backoff.count()) + " ms");
  self->delayed_send(self, c.backoff, caf::tick_atom::value, static_cast<std::uint32_t>(i),
                     c.generation);
}

caf::error unavailable(self_ptr self) {
  if (self->state.stopping)
    return make_msiv2_error(error_code::shutting_down, "the module is shutting down");
  return make_msiv2_error(error_code::internal_failure,
                          "token_service is restarting after a failure; retry shortly");
}

} // namespace

const char* to_string(actor_role r) noexcept {
  switch (r) {
    case actor_role::probe: return "probe";
    case actor_role::keys: return "key_manager";
    case actor_role::attestation: return "attestation_cache";
    case actor_role::certs: return "cert_issuer";
    case actor_role::exchanger: return "token_exchanger";
    case actor_role::timer: return "renewal_timer";
    case actor_role::service: return "token_service";
  }
  return "unknown";
}

actor_factories actor_factories::defaults() {
  actor_factories f;
  f.make[idx(actor_role::probe)] = [](caf::actor_system& sys, deps_ptr d) {
    return caf::actor_cast<caf::actor>(sys.spawn(probe_impl, std::move(d)));
  };
  f.make[idx(actor_role::keys)] = [](caf::actor_system& sys, deps_ptr d) {
    return caf::actor_cast<caf::actor>(sys.spawn(key_manager_impl, std::move(d)));
  };
  f.make[idx(actor_role::attestation)] = [](caf::actor_system& sys, deps_ptr d) {
    return caf::actor_cast<caf::actor>(sys.spawn(attestation_cache_impl, std::move(d)));
  };
  f.make[idx(actor_role::certs)] = [](caf::actor_system& sys, deps_ptr d) {
    return caf::actor_cast<caf::actor>(sys.spawn(cert_issuer_impl, std::move(d)));
  };
  f.make[idx(actor_role::exchanger)] = [](caf::actor_system& sys, deps_ptr d) {
    return caf::actor_cast<caf::actor>(sys.spawn(token_exchanger_impl, std::move(d)));
  };
  f.make[idx(actor_role::timer)] = [](caf::actor_system& sys, deps_ptr d) {
    return caf::actor_cast<caf::actor>(sys.spawn(renewal_timer_impl, std::move(d)));
  };
  f.make[idx(actor_role::service)] = [](caf::actor_system& sys, deps_ptr d) {
    return caf::actor_cast<caf::actor>(sys.spawn(token_service_impl, std::move(d)));
  };
  return f;
}

supervisor::behavior_type supervisor_impl(supervisor::stateful_pointer<supervisor_state> self,
                                          deps_ptr deps, actor_factories factories,
                                          restart_policy policy) {
  auto& st = self->state;
  st.deps = std::move(deps);
  st.factories = std::move(factories);
  st.policy = policy;
  // Whatever ends the supervisor (even a kill) ends its actors: nothing is left behind to
  // keep the actor_system from shutting down.
  auto handles = st.handles;
  self->attach_functor([=](const caf::error&) {
    for (auto& h : *handles)
      if (h)
        caf::anon_send_exit(h, caf::exit_reason::user_shutdown);
    handles->fill(caf::actor{});
  });
  for (std::size_t i = 0; i < actor_role_count; ++i)
    spawn_child(self, i);
  send_wiring(self);
  self->set_down_handler([=](caf::down_msg& dm) { on_down(self, dm); });
  self->set_exit_handler([=](caf::exit_msg& em) {
    auto& s = self->state;
    if (s.stopping)
      return;
    s.stopping = true;
    // Each actor answers its own pending callers (shutting_down) when it exits.
    bool any = false;
    for (auto& c : s.children)
      if (c.alive) {
        any = true;
        self->send_exit(c.handle, caf::exit_reason::user_shutdown);
      }
    if (!any)
      self->quit(em.reason);
  });
  return {
    [=](token_request& req) -> caf::result<token_result> {
      auto& c = self->state.children[idx(actor_role::service)];
      if (!c.alive || self->state.stopping)
        return unavailable(self);
      return self->delegate(caf::actor_cast<token_service>(c.handle), std::move(req));
    },
    [=](stats_atom) -> caf::result<stats_snapshot> {
      auto& c = self->state.children[idx(actor_role::service)];
      if (!c.alive || self->state.stopping)
        return self->state.deps->stats->snapshot();
      return self->delegate(caf::actor_cast<token_service>(c.handle), stats_atom::value);
    },
    [=](capabilities_atom) -> caf::result<host_capabilities> {
      auto& c = self->state.children[idx(actor_role::service)];
      if (!c.alive || self->state.stopping)
        return unavailable(self);
      return self->delegate(caf::actor_cast<token_service>(c.handle), capabilities_atom::value);
    },
    [=](evict_atom, std::string& x5t) {
      auto& c = self->state.children[idx(actor_role::service)];
      if (c.alive)
        self->send(caf::actor_cast<token_service>(c.handle), evict_atom::value, std::move(x5t));
    },
    [=](renew_atom, std::string& id) {
      auto& c = self->state.children[idx(actor_role::service)];
      if (c.alive)
        self->send(caf::actor_cast<token_service>(c.handle), renew_atom::value, std::move(id));
    },
    [=](wire_atom, wiring_ptr) {
      // The supervisor makes the wiring; it never takes one.
    },
    [=](caf::timeout_atom, const std::string&, std::uint64_t) {
      // token_service's internal timer; never addressed to the supervisor.
    },
    [=](caf::get_atom) { return self->state.wires; },
    [=](caf::tick_atom, std::uint32_t role, std::uint64_t generation) {
      auto& s = self->state;
      if (s.stopping || role >= actor_role_count)
        return;
      auto& c = s.children[role];
      if (c.alive || c.generation != generation)
        return;
      spawn_child(self, role);
      send_wiring(self);
    },
  };
}

module module::start(caf::actor_system& sys, runtime_deps deps, actor_factories factories,
                     restart_policy policy) {
  module m;
  if (!deps.retries)
    deps.retries = std::make_shared<io::retry_governor>(deps.config.retry_policy, deps.draw);
  auto d = std::make_shared<const runtime_deps>(std::move(deps));
  m.supervisor_ = sys.spawn(supervisor_impl, d, std::move(factories), policy);
  m.service_ = m.supervisor_;
  return m;
}

module& module::operator=(module&& other) noexcept {
  if (this != &other) {
    stop();
    supervisor_ = std::move(other.supervisor_);
    service_ = std::move(other.service_);
  }
  return *this;
}

module::~module() {
  stop();
}

void module::stop() {
  if (supervisor_)
    caf::anon_send_exit(supervisor_, caf::exit_reason::user_shutdown);
  supervisor_ = supervisor{};
  service_ = token_service{};
}

} // namespace msiv2
