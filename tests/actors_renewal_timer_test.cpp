#include <boost/test/unit_test.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include "actors/renewal_timer.hpp"
#include "tests/support/actor_fixture.hpp"

using namespace std::chrono_literals;
using msiv2::test::actor_fixture;

namespace {

/// What an owner received: artifact id and the wall time (Unix ms) it arrived.
struct renewal_seen {
  std::string id;
  std::int64_t wall_ms = 0;
};

struct timer_fixture : actor_fixture {
  std::shared_ptr<std::vector<renewal_seen>> seen = std::make_shared<std::vector<renewal_seen>>();
  msiv2::renewal_timer timer;
  caf::actor owner;

  timer_fixture() {
    timer = keep(sys.spawn(msiv2::renewal_timer_impl, deps()));
    // Spawned with arguments: CAF 0.17.6 trips UBSan on argument-less function actors.
    owner = keep(sys.spawn(
      [](caf::event_based_actor*, std::shared_ptr<std::vector<renewal_seen>> rec,
         std::shared_ptr<msiv2::platform::derived_wall_clock> clock) -> caf::behavior {
        return {
          [rec, clock](msiv2::renew_atom, const std::string& id) {
            rec->push_back({id, clock->now_ms()});
          },
        };
      },
      seen, wall));
    run();
  }

  void schedule(const std::string& id, std::int64_t at_ms) {
    caf::anon_send(timer, msiv2::schedule_atom::value, id, at_ms, owner);
    run();
  }
};

} // namespace

BOOST_AUTO_TEST_SUITE(actors_renewal_timer_test)

BOOST_AUTO_TEST_CASE(fires_at_the_wall_time_not_before) {
  timer_fixture f;
  auto at = f.wall_ms() + 60'000;
  f.schedule("certificate/system", at);
  BOOST_CHECK_EQUAL(f.stats->snapshot().gauges.at(msiv2::renewal_gauge_name("artifact")),
                    static_cast<double>(at) / 1000.0);
  f.advance(59'999ms);
  BOOST_CHECK(f.seen->empty());
  f.advance(1ms);
  BOOST_REQUIRE_EQUAL(f.seen->size(), 1u);
  BOOST_CHECK_EQUAL(f.seen->at(0).id, "certificate/system");
  BOOST_CHECK_EQUAL(f.seen->at(0).wall_ms, at);
  // Fired timers are forgotten.
  f.advance(3600s);
  BOOST_CHECK_EQUAL(f.seen->size(), 1u);
  BOOST_CHECK_EQUAL(f.stats->snapshot().gauges.count(msiv2::renewal_gauge_name("artifact")), 0u);
  BOOST_CHECK_EQUAL(f.stats->snapshot().gauges.at(msiv2::scheduled_gauge_name("artifact")), 0.0);
}

BOOST_AUTO_TEST_CASE(reschedule_replaces_the_previous_timer) {
  timer_fixture f;
  auto t0 = f.wall_ms();
  f.schedule("token/a", t0 + 60'000);
  f.schedule("token/a", t0 + 120'000);
  f.advance(60s);
  BOOST_CHECK(f.seen->empty());
  f.advance(60s);
  BOOST_REQUIRE_EQUAL(f.seen->size(), 1u);
  BOOST_CHECK_EQUAL(f.seen->at(0).wall_ms, t0 + 120'000);
  // An earlier target also replaces a later one.
  f.schedule("token/b", t0 + 600'000);
  f.schedule("token/b", t0 + 180'000);
  f.advance(60s);
  BOOST_REQUIRE_EQUAL(f.seen->size(), 2u);
  BOOST_CHECK_EQUAL(f.seen->at(1).id, "token/b");
  f.advance(600s);
  BOOST_CHECK_EQUAL(f.seen->size(), 2u);
}

BOOST_AUTO_TEST_CASE(cancel_drops_the_timer) {
  timer_fixture f;
  f.schedule("attestation/x", f.wall_ms() + 10'000);
  f.schedule("attestation/y", f.wall_ms() + 10'000);
  BOOST_CHECK_EQUAL(f.stats->snapshot().gauges.at(msiv2::scheduled_gauge_name("artifact")), 2.0);
  caf::anon_send(f.timer, msiv2::cancel_atom::value, std::string("attestation/x"));
  f.run();
  BOOST_CHECK_EQUAL(f.stats->snapshot().gauges.at(msiv2::scheduled_gauge_name("artifact")), 1.0);
  f.advance(20s);
  BOOST_REQUIRE_EQUAL(f.seen->size(), 1u);
  BOOST_CHECK_EQUAL(f.seen->at(0).id, "attestation/y");
}

BOOST_AUTO_TEST_CASE(gauges_are_per_kind_however_many_artifacts_are_scheduled) {
  timer_fixture f;
  auto w = std::make_shared<msiv2::wiring>();
  w->service = caf::actor_cast<msiv2::token_service>(f.owner);
  caf::anon_send(f.timer, msiv2::wire_atom::value, msiv2::wiring_ptr(w));
  f.run();
  auto before = f.stats->snapshot().gauges.size();
  // 1,000 token cache keys (identity, resource, type, claims and thumbprint on separate
  // lines): two series for the kind "token", the count and the earliest time (review H1).
  const auto t0 = f.wall_ms();
  for (int i = 0; i < 1000; ++i)
    f.schedule("system\nhttps://r" + std::to_string(i) + ".example\nmtls_pop\n\nx5t",
               t0 + 10'000 + 1000 * (i % 100));
  auto gauges = f.stats->snapshot().gauges;
  BOOST_CHECK_EQUAL(gauges.size(), before + 2);
  BOOST_CHECK_EQUAL(msiv2::renewal_gauge_name("token"), "msiv2_renewal_at_seconds{artifact=\"token\"}");
  BOOST_CHECK_EQUAL(msiv2::scheduled_gauge_name("token"), "msiv2_scheduled_renewals{artifact=\"token\"}");
  BOOST_CHECK_EQUAL(gauges.at(msiv2::scheduled_gauge_name("token")), 1000.0);
  BOOST_CHECK_EQUAL(gauges.at(msiv2::renewal_gauge_name("token")), static_cast<double>(t0 + 10'000) / 1000.0);
  // The owner still gets its raw id back; the earliest moves on as timers fire.
  f.advance(10s);
  BOOST_REQUIRE_EQUAL(f.seen->size(), 10u);
  BOOST_CHECK_EQUAL(f.seen->at(0).id.rfind("system\nhttps://r", 0), 0u);
  gauges = f.stats->snapshot().gauges;
  BOOST_CHECK_EQUAL(gauges.at(msiv2::scheduled_gauge_name("token")), 990.0);
  BOOST_CHECK_EQUAL(gauges.at(msiv2::renewal_gauge_name("token")), static_cast<double>(t0 + 11'000) / 1000.0);
  f.advance(100s);
  BOOST_CHECK_EQUAL(f.seen->size(), 1000u);
  gauges = f.stats->snapshot().gauges;
  BOOST_CHECK_EQUAL(gauges.at(msiv2::scheduled_gauge_name("token")), 0.0);
  BOOST_CHECK_EQUAL(gauges.count(msiv2::renewal_gauge_name("token")), 0u);
}

BOOST_AUTO_TEST_CASE(wall_clock_jump_backwards_rearms_instead_of_firing_early) {
  timer_fixture f;
  auto at = f.wall_ms() + 60'000;
  f.schedule("certificate/system", at);
  f.wall->jump(-30'000);
  f.advance(60s); // the actor clock says it is time; the wall clock says 30 s early
  BOOST_CHECK(f.seen->empty());
  f.advance(29'999ms);
  BOOST_CHECK(f.seen->empty());
  f.advance(1ms);
  BOOST_REQUIRE_EQUAL(f.seen->size(), 1u);
  BOOST_CHECK_EQUAL(f.seen->at(0).wall_ms, at);
}

BOOST_AUTO_TEST_CASE(late_timer_fires_at_once) {
  timer_fixture f;
  f.schedule("token/late", f.wall_ms() - 5'000);
  BOOST_REQUIRE_EQUAL(f.seen->size(), 1u);
  BOOST_CHECK_EQUAL(f.seen->at(0).id, "token/late");
}

BOOST_AUTO_TEST_CASE(wall_clock_jump_forwards_fires_within_a_minute) {
  timer_fixture f;
  auto at = f.wall_ms() + 3'600'000;
  f.schedule("certificate/system", at);
  f.advance(30s);
  f.wall->jump(4'000'000); // a suspended VM woke up after the renewal time
  BOOST_CHECK(f.seen->empty());
  f.advance(30s);
  BOOST_REQUIRE_EQUAL(f.seen->size(), 1u);
  BOOST_CHECK_GE(f.seen->at(0).wall_ms, at);
}

BOOST_AUTO_TEST_CASE(long_timer_fires_exactly_despite_partial_waits) {
  timer_fixture f;
  auto at = f.wall_ms() + 3'600'123;
  f.schedule("certificate/system", at);
  f.advance(3600s);
  BOOST_CHECK(f.seen->empty());
  f.advance(123ms);
  BOOST_REQUIRE_EQUAL(f.seen->size(), 1u);
  BOOST_CHECK_EQUAL(f.seen->at(0).wall_ms, at);
}

BOOST_AUTO_TEST_CASE(many_renewals_keep_one_tick_and_fire_in_time_order) {
  timer_fixture f;
  // 1,000 artifacts due over the next 1,000 s, scheduled out of order.
  const auto base = f.wall_ms();
  for (int i = 0; i < 1000; ++i) {
    int k = (i * 7919) % 1000; // a permutation of 0..999
    f.schedule("token/" + std::to_string(k), base + 1'000 + 1'000 * static_cast<std::int64_t>(k));
  }
  // One pending message in the actor clock, not one per artifact.
  BOOST_CHECK_EQUAL(f.sched.clock().schedule().size(), 1u);
  // Two series for their kind (count and earliest), not one per artifact.
  BOOST_CHECK_EQUAL(f.stats->snapshot().gauges.size(), 2u);
  BOOST_CHECK_EQUAL(f.stats->snapshot().gauges.at(msiv2::scheduled_gauge_name("artifact")), 1000.0);
  // Rescheduling one to be first, and cancelling another, moves the single tick.
  f.schedule("token/500", base + 500);
  caf::anon_send(f.timer, msiv2::cancel_atom::value, std::string("token/0"));
  f.run();
  // CAF 0.17 cannot take a delayed message back: the earlier tick is armed and the old
  // one stays in the clock, stale, until it fires and is ignored.
  BOOST_CHECK_EQUAL(f.sched.clock().schedule().size(), 2u);
  f.advance(500ms);
  BOOST_REQUIRE_EQUAL(f.seen->size(), 1u);
  BOOST_CHECK_EQUAL(f.seen->at(0).id, "token/500");
  BOOST_CHECK_EQUAL(f.seen->at(0).wall_ms, base + 500);
  // Then each at its own time, in order, none early.
  for (int k = 1; k < 1000; ++k) {
    if (k == 500)
      continue;
    auto at = base + 1'000 + 1'000 * static_cast<std::int64_t>(k);
    f.advance(std::chrono::milliseconds(at - f.wall_ms()));
    BOOST_REQUIRE_EQUAL(f.seen->back().id, "token/" + std::to_string(k));
    BOOST_CHECK_EQUAL(f.seen->back().wall_ms, at);
  }
  BOOST_CHECK_EQUAL(f.seen->size(), 999u); // all but the cancelled one
  // Nothing scheduled: the count says 0 and there is no earliest time.
  auto gauges = f.stats->snapshot().gauges;
  BOOST_CHECK_EQUAL(gauges.size(), 1u);
  BOOST_CHECK_EQUAL(gauges.at(msiv2::scheduled_gauge_name("artifact")), 0.0);
  BOOST_CHECK(f.sched.clock().schedule().empty());
}

BOOST_AUTO_TEST_CASE(two_due_at_the_same_time_both_fire) {
  timer_fixture f;
  auto at = f.wall_ms() + 10'000;
  f.schedule("a", at);
  f.schedule("b", at);
  f.advance(10s);
  BOOST_REQUIRE_EQUAL(f.seen->size(), 2u);
}

BOOST_AUTO_TEST_CASE(exit_with_timers_pending_finishes) {
  timer_fixture f;
  f.schedule("a", f.wall_ms() + 3'600'000);
  f.schedule("b", f.wall_ms() + 7'200'000);
  caf::anon_send_exit(f.timer, caf::exit_reason::user_shutdown);
  f.run();
  f.advance(7200s);
  BOOST_CHECK(f.seen->empty());
  // The fixture's destructor stops the rest and must not hang.
}

BOOST_AUTO_TEST_SUITE_END()
