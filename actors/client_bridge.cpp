#include "actors/client_bridge.hpp"

#include <utility>
#include <vector>

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

} // namespace

caf::behavior client_bridge_impl(caf::stateful_actor<client_bridge_state>* self,
                                 token_service service, client_bridge_options options) {
  return {
    [=](token_request& req, pending_callback& cb) {
      auto& st = self->state;
      if (st.closing) {
        cb.fn(make_msiv2_error(error_code::shutting_down, "the client is shutting down"));
        return;
      }
      auto id = ++st.next_id;
      st.calls.emplace(id, client_bridge_state::call{
                             std::move(cb.fn),
                             self->clock().now() + req.timeout + options.answer_margin});
      self->request(service, caf::infinite, std::move(req))
        .then([=](token_result& t) { finish(self, id, std::move(t)); },
              [=](caf::error& e) { finish(self, id, std::move(e)); });
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
