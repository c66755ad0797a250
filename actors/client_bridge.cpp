#include "actors/client_bridge.hpp"

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include <caf/sec.hpp>
#include <caf/system_messages.hpp>

#include "actors/token_service.hpp"
#include "messages/errors.hpp"

namespace msiv2 {

namespace {

using self_ptr = caf::stateful_actor<client_bridge_state>*;

/// Runs the callback of call `id` once with `out` (a call already answered is ignored).
void finish(self_ptr self, std::uint64_t id, token_outcome out) {
  auto& calls = self->state.calls;
  auto i = calls.find(id);
  if (i == calls.end())
    return; // answered by the sweep or by close already
  auto fn = std::move(i->second.fn);
  calls.erase(i);
  fn(std::move(out));
  if (self->state.closing && calls.empty())
    self->quit();
}

/// Asks the supervisor which token_service is current (at most once per lookup_interval).
void look_up(self_ptr self, const supervisor& module, const client_bridge_options& o) {
  auto& st = self->state;
  auto now = self->clock().now();
  if (st.looking || now < st.next_lookup)
    return;
  st.looking = true;
  st.next_lookup = now + o.lookup_interval;
  self->request(module, o.lookup_interval * 10, caf::get_atom::value)
    .then(
      [=](wiring_ptr& w) {
        self->state.looking = false;
        if (!w || !w->service || w->service == self->state.direct)
          return;
        self->state.direct = w->service;
        self->monitor(w->service); // a dead one is reported at once
      },
      [=](caf::error&) { self->state.looking = false; });
}

/// Sends call `id`'s request to `dest`; a bounce from a dead direct target goes again through
/// the supervisor.
void forward(self_ptr self, std::uint64_t id, token_request req, const token_service& dest,
             bool via_direct, const supervisor& module) {
  self->request(dest, caf::infinite, std::move(req))
    .then([=](token_result& t) { finish(self, id, std::move(t)); },
          [=](caf::error& e) {
            if (via_direct && e == caf::sec::request_receiver_down) {
              auto i = self->state.calls.find(id);
              if (i != self->state.calls.end() && i->second.resend) {
                auto again = std::move(*i->second.resend);
                i->second.resend.reset();
                forward(self, id, std::move(again), caf::actor_cast<token_service>(module),
                        false, module);
                return;
              }
            }
            if (e == caf::sec::request_receiver_down) // the supervisor itself is gone
              e = make_msiv2_error(error_code::shutting_down, "the module has stopped");
            finish(self, id, std::move(e));
          });
}

} // namespace

caf::behavior client_bridge_impl(caf::stateful_actor<client_bridge_state>* self,
                                 supervisor module, client_bridge_options options) {
  self->set_down_handler([=](caf::down_msg& dm) {
    if (self->state.direct && dm.source == self->state.direct.address())
      self->state.direct = nullptr; // calls go through the supervisor until a new lookup
  });
  look_up(self, module, options);
  return {
    [=](token_request& req, pending_callback& cb) {
      auto& st = self->state;
      if (st.closing) {
        cb.fn(make_msiv2_error(error_code::shutting_down, "the client is shutting down"));
        return;
      }
      auto id = ++st.next_id;
      auto i = st.calls
                 .emplace(id, client_bridge_state::call{
                                std::move(cb.fn),
                                self->clock().now()
                                  + std::min<std::chrono::nanoseconds>(req.timeout,
                                                                       max_request_timeout)
                                  + options.answer_margin,
                                std::nullopt})
                 .first;
      if (st.direct) {
        i->second.resend = req;
        forward(self, id, std::move(req), st.direct, true, module);
      } else {
        forward(self, id, std::move(req), caf::actor_cast<token_service>(module), false, module);
        look_up(self, module, options);
      }
      if (!st.sweeping) {
        st.sweeping = true;
        self->delayed_send(self, options.sweep_interval, sweep_atom::value);
      }
    },
    [=](sweep_atom) {
      auto& st = self->state;
      auto now = self->clock().now();
      std::vector<std::uint64_t> late;
      for (auto& [id, c] : st.calls)
        if (c.due <= now)
          late.push_back(id);
      for (auto id : late)
        finish(self, id,
               make_msiv2_error(error_code::deadline_exceeded,
                                "no answer from the module within the request's timeout; "
                                "retry with a longer timeout"));
      st.sweeping = !st.calls.empty();
      if (st.sweeping)
        self->delayed_send(self, options.sweep_interval, sweep_atom::value);
    },
    [=](close_atom) {
      auto& st = self->state;
      st.closing = true;
      // The client stops the module first, so an answer still missing now never comes.
      auto calls = std::move(st.calls);
      st.calls.clear();
      for (auto& [id, c] : calls)
        c.fn(make_msiv2_error(error_code::shutting_down,
                              "the client shut down before the module answered"));
      self->quit();
    },
  };
}

} // namespace msiv2
