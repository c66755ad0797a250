// client_bridge on CAF's test scheduler: every get_token callback runs exactly once (answer,
// error, deadline, shutdown), and the bridge arms no timer per call.

#include <boost/test/unit_test.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <caf/response_promise.hpp>
#include <caf/send.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/system_messages.hpp>

#include "actors/client_bridge.hpp"
#include "messages/errors.hpp"
#include "tests/support/actor_fixture.hpp"

using namespace std::chrono_literals;
using msiv2::error_code;

namespace {

/// A stand-in for the module: answers "ok/..." resources with a token, "fail" with an error,
/// and holds "hold" requests until the test releases them.
struct fake_service_state {
  std::vector<caf::response_promise> held;
  int seen = 0;
};

using release_atom = caf::atom_constant<caf::atom("release")>;

caf::behavior fake_service(caf::stateful_actor<fake_service_state>* self, std::string tag) {
  return {
    [=](msiv2::token_request& req) -> caf::result<msiv2::token_result> {
      ++self->state.seen;
      if (req.resource == "hold") {
        self->state.held.push_back(self->make_response_promise());
        return caf::delegated<msiv2::token_result>();
      }
      if (req.resource == "crash") { // dies unanswered; what waits in its mailbox bounces
        self->quit(caf::exit_reason::kill);
        return caf::delegated<msiv2::token_result>();
      }
      if (req.resource == "fail")
        return msiv2::make_msiv2_error(error_code::token_refused, "refused by the fake");
      msiv2::token_result t;
      t.access_token = tag + "-token-for-" + req.resource;
      return t;
    },
    [=](release_atom) {
      for (auto& p : self->state.held) {
        msiv2::token_result t;
        t.access_token = "late";
        p.deliver(t);
      }
      self->state.held.clear();
    },
  };
}

/// A stand-in for the supervisor: delegates token requests to its current service (or says
/// it is restarting), and names the current service in its wiring.
struct fake_supervisor_state {
  caf::actor current;
  int requests = 0;
};

using set_atom = caf::atom_constant<caf::atom("set")>;

caf::behavior fake_supervisor(caf::stateful_actor<fake_supervisor_state>* self, caf::actor first) {
  self->state.current = first;
  return {
    [=](msiv2::token_request& req) -> caf::result<msiv2::token_result> {
      ++self->state.requests;
      if (!self->state.current)
        return msiv2::make_msiv2_error(error_code::internal_failure, "restarting");
      return self->delegate(caf::actor_cast<msiv2::token_service>(self->state.current),
                            std::move(req));
    },
    [=](caf::get_atom) {
      auto w = std::make_shared<msiv2::wiring>();
      w->service = caf::actor_cast<msiv2::token_service>(self->state.current);
      return msiv2::wiring_ptr{w};
    },
    [=](set_atom, caf::actor next) { self->state.current = std::move(next); },
  };
}

struct bridge_fixture : msiv2::test::actor_fixture {
  caf::actor service;
  caf::actor module;
  caf::actor bridge;
  /// Every callback invocation, in order.
  std::shared_ptr<std::vector<msiv2::token_outcome>> got =
    std::make_shared<std::vector<msiv2::token_outcome>>();

  bridge_fixture() {
    service = keep(sys.spawn(fake_service, std::string("A")));
    module = keep(sys.spawn(fake_supervisor, service));
    msiv2::client_bridge_options o; // margin 1 s, sweep every 1 s, lookups 100 ms apart
    bridge = keep(sys.spawn(msiv2::client_bridge_impl,
                            caf::actor_cast<msiv2::supervisor>(module), o));
    run();
  }

  void call(std::string resource, std::chrono::milliseconds timeout = 30s) {
    msiv2::token_request r;
    r.resource = std::move(resource);
    r.timeout = timeout;
    auto sink = got;
    caf::anon_send(bridge, std::move(r),
                   msiv2::pending_callback{[sink](msiv2::token_outcome o) {
                     sink->push_back(std::move(o));
                   }});
  }
  /// Calls "ok/0" .. "ok/<n-1>" (the fake token_service answers each with its own token).
  void call_ok(int n) {
    for (int i = 0; i < n; ++i)
      call("ok/" + std::to_string(i));
  }

  int service_calls(const caf::actor& a) {
    return dynamic_cast<caf::stateful_actor<fake_service_state>*>(
             caf::actor_cast<caf::abstract_actor*>(a))->state.seen;
  }
  int module_calls() {
    return dynamic_cast<caf::stateful_actor<fake_supervisor_state>*>(
             caf::actor_cast<caf::abstract_actor*>(module))->state.requests;
  }

  error_code code(std::size_t i) const {
    BOOST_REQUIRE(i < got->size());
    BOOST_REQUIRE(!(*got)[i]);
    return msiv2::describe((*got)[i].error()).code;
  }
};

} // namespace

BOOST_AUTO_TEST_SUITE(actors_client_bridge_test)

BOOST_AUTO_TEST_CASE(answers_each_call_once_and_arms_no_timer_per_call) {
  bridge_fixture f;
  f.call_ok(200);
  f.run();
  BOOST_REQUIRE_EQUAL(f.got->size(), 200u);
  for (int i = 0; i < 200; ++i) {
    BOOST_REQUIRE((*f.got)[i]);
    BOOST_CHECK_EQUAL((*f.got)[i]->access_token, "A-token-for-ok/" + std::to_string(i));
  }
  // 200 calls armed one sweep tick, not 200 request timeouts (the other entry is the bound
  // on the bridge's one wiring lookup at start).
  BOOST_CHECK_LE(f.sched.clock().schedule().size(), 2u);
  f.advance(1s); // the sweep finds nothing outstanding and stops
  BOOST_CHECK(f.sched.clock().schedule().empty());
  BOOST_CHECK_EQUAL(f.got->size(), 200u);
}

BOOST_AUTO_TEST_CASE(an_error_reply_reaches_the_callback) {
  bridge_fixture f;
  f.call("fail");
  f.run();
  BOOST_REQUIRE_EQUAL(f.got->size(), 1u);
  BOOST_CHECK(f.code(0) == error_code::token_refused);
}

BOOST_AUTO_TEST_CASE(an_unanswered_call_gets_deadline_exceeded_after_timeout_and_margin) {
  bridge_fixture f;
  f.call("hold", 5s);
  f.run();
  f.advance(5s);
  BOOST_CHECK(f.got->empty()); // the margin is still running
  f.advance(1s);
  BOOST_REQUIRE_EQUAL(f.got->size(), 1u);
  BOOST_CHECK(f.code(0) == error_code::deadline_exceeded);
  // A reply that comes after the sweep answered is dropped: the callback ran once.
  caf::anon_send(f.service, release_atom::value);
  f.run();
  BOOST_CHECK_EQUAL(f.got->size(), 1u);
  f.advance(2s);
  BOOST_CHECK(f.sched.clock().schedule().empty());
}

BOOST_AUTO_TEST_CASE(a_slow_answer_within_the_margin_is_delivered) {
  bridge_fixture f;
  f.call("hold", 5s);
  f.call("ok/x");
  f.run();
  BOOST_REQUIRE_EQUAL(f.got->size(), 1u);
  f.advance(5s);
  caf::anon_send(f.service, release_atom::value);
  f.run();
  BOOST_REQUIRE_EQUAL(f.got->size(), 2u);
  BOOST_REQUIRE((*f.got)[1]);
  BOOST_CHECK_EQUAL((*f.got)[1]->access_token, "late");
  f.advance(5s);
  BOOST_CHECK_EQUAL(f.got->size(), 2u);
}

BOOST_AUTO_TEST_CASE(close_answers_what_is_outstanding_with_shutting_down_and_quits) {
  bridge_fixture f;
  f.call("hold");
  f.call("hold");
  f.call("ok/y");
  f.run();
  BOOST_REQUIRE_EQUAL(f.got->size(), 1u);
  auto down = std::make_shared<bool>(false);
  f.bridge->attach_functor([down] { *down = true; });
  caf::anon_send(f.bridge, msiv2::close_atom::value);
  f.run();
  BOOST_REQUIRE_EQUAL(f.got->size(), 3u);
  BOOST_CHECK(f.code(1) == error_code::shutting_down);
  BOOST_CHECK(f.code(2) == error_code::shutting_down);
  BOOST_CHECK(*down);
  // The held requests answered later change nothing.
  caf::anon_send(f.service, release_atom::value);
  f.run();
  BOOST_CHECK_EQUAL(f.got->size(), 3u);
}

BOOST_AUTO_TEST_CASE(calls_go_straight_to_token_service_not_through_the_supervisor) {
  bridge_fixture f;
  f.call_ok(10);
  f.run();
  BOOST_REQUIRE_EQUAL(f.got->size(), 10u);
  BOOST_CHECK_EQUAL(f.service_calls(f.service), 10);
  BOOST_CHECK_EQUAL(f.module_calls(), 0);
}

BOOST_AUTO_TEST_CASE(after_token_service_died_calls_go_through_the_supervisor_then_to_its_successor) {
  bridge_fixture f;
  caf::anon_send_exit(f.service, caf::exit_reason::kill);
  caf::anon_send(f.module, set_atom::value, caf::actor{}); // restarting: no service yet
  f.run();
  // No token_service known: through the supervisor, which is restarting it.
  f.call("ok/1");
  f.run();
  BOOST_REQUIRE_EQUAL(f.got->size(), 1u);
  BOOST_CHECK(f.code(0) == error_code::internal_failure);
  BOOST_CHECK_EQUAL(f.module_calls(), 1);
  // The successor is up; the bridge learns it at its next lookup (at most one per 100 ms).
  auto b = f.keep(f.sys.spawn(fake_service, std::string("B")));
  caf::anon_send(f.module, set_atom::value, b);
  f.run();
  f.call("ok/2"); // through the supervisor (delegated to B), and a lookup is due
  f.run();
  f.advance(100ms);
  f.call("ok/3"); // a lookup: B
  f.run();
  f.call("ok/4"); // straight to B
  f.run();
  BOOST_REQUIRE_EQUAL(f.got->size(), 4u);
  for (std::size_t i = 1; i < 4; ++i) {
    BOOST_REQUIRE((*f.got)[i]);
    BOOST_CHECK_EQUAL((*f.got)[i]->access_token.substr(0, 2), "B-");
  }
  BOOST_CHECK_EQUAL(f.service_calls(b), 3);
  BOOST_CHECK_EQUAL(f.module_calls(), 3); // ok/1 to ok/3; ok/4 went straight to B
}

BOOST_AUTO_TEST_CASE(a_call_bounced_by_a_dying_token_service_is_sent_again_through_the_supervisor) {
  bridge_fixture f;
  auto b = f.keep(f.sys.spawn(fake_service, std::string("B")));
  caf::anon_send(f.module, set_atom::value, b);
  f.run();
  // Both calls go to A; A dies on the first with the second still in its mailbox.
  f.call("crash", 5s);
  f.call("ok/x");
  f.run();
  BOOST_REQUIRE_EQUAL(f.got->size(), 1u);
  BOOST_REQUIRE((*f.got)[0]);
  BOOST_CHECK_EQUAL((*f.got)[0]->access_token, "B-token-for-ok/x");
  BOOST_CHECK_EQUAL(f.module_calls(), 1);
  // The call A took down with it was never answered: the sweep answers it at its deadline.
  f.advance(6s);
  BOOST_REQUIRE_EQUAL(f.got->size(), 2u);
  BOOST_CHECK(f.code(1) == error_code::deadline_exceeded);
}

BOOST_AUTO_TEST_SUITE_END()
