#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <future>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scheduler/coordinator.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include "actors/system.hpp"

#include "actors/interfaces.hpp"

BOOST_AUTO_TEST_SUITE(actors_runtime_test)

BOOST_AUTO_TEST_CASE(stats_registry_accumulates_counters_and_replaces_gauges) {
  msiv2::stats_registry r;
  r.add("a_total");
  r.add("a_total", 4);
  r.set_gauge("g", 1.5);
  r.set_gauge("g", 2.5);
  auto s = r.snapshot();
  BOOST_CHECK_EQUAL(s.counters["a_total"], 5u);
  BOOST_CHECK_EQUAL(s.gauges["g"], 2.5);
  r.erase_gauge("g");
  BOOST_CHECK(r.snapshot().gauges.empty());
}

BOOST_AUTO_TEST_CASE(environment_overrides_imds_host_and_kill_switch) {
  setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:1234/", 1);
  setenv("MSIV2_DISABLE_V2", "1", 1);
  auto cfg = msiv2::module_config::from_environment();
  unsetenv("AZURE_POD_IDENTITY_AUTHORITY_HOST");
  unsetenv("MSIV2_DISABLE_V2");
  BOOST_CHECK_EQUAL(cfg.imds_base_url, "http://127.0.0.1:1234");
  BOOST_CHECK(!cfg.v2_enabled);
  BOOST_CHECK(msiv2::module_config::from_environment().v2_enabled);
}

// Review L7: the kill switch fails closed.
BOOST_AUTO_TEST_CASE(kill_switch_disables_v2_for_every_yes_spelling_and_any_unknown_value) {
  for (const char* on : {"1", "true", "TRUE", "True", "yes", "YES", "on", "On", " 1 "}) {
    setenv("MSIV2_DISABLE_V2", on, 1);
    auto cfg = msiv2::module_config::from_environment();
    BOOST_CHECK_MESSAGE(!cfg.v2_enabled, "MSIV2_DISABLE_V2='" << on << "' left v2 enabled");
    BOOST_CHECK(cfg.environment_warnings.empty());
  }
  for (const char* off : {"0", "false", "FALSE", "no", "off", ""}) {
    setenv("MSIV2_DISABLE_V2", off, 1);
    BOOST_CHECK_MESSAGE(msiv2::module_config::from_environment().v2_enabled,
                        "MSIV2_DISABLE_V2='" << off << "' disabled v2");
  }
  for (const char* odd : {"2", "disable", "yess", "tru"}) {
    setenv("MSIV2_DISABLE_V2", odd, 1);
    auto cfg = msiv2::module_config::from_environment();
    BOOST_CHECK_MESSAGE(!cfg.v2_enabled, "MSIV2_DISABLE_V2='" << odd << "' left v2 enabled");
    BOOST_REQUIRE_EQUAL(cfg.environment_warnings.size(), 1u);
    BOOST_CHECK(cfg.environment_warnings[0].find("v2 (mtls_pop) is disabled") != std::string::npos);
  }
  unsetenv("MSIV2_DISABLE_V2");
}

BOOST_AUTO_TEST_CASE(trusted_hosts_from_the_environment_join_both_endpoint_lists) {
  setenv("MSIV2_TRUSTED_HOSTS", "127.0.0.1, sim.test", 1);
  auto cfg = msiv2::module_config::from_environment();
  unsetenv("MSIV2_TRUSTED_HOSTS");
  for (const auto* list : {&cfg.token_endpoint_hosts, &cfg.attestation_endpoint_hosts}) {
    BOOST_CHECK(std::count(list->begin(), list->end(), "127.0.0.1") == 1);
    BOOST_CHECK(std::count(list->begin(), list->end(), "sim.test") == 1);
  }
  BOOST_CHECK(std::count(cfg.token_endpoint_hosts.begin(), cfg.token_endpoint_hosts.end(),
                         "mtlsauth.microsoft.com") == 1);
  auto plain = msiv2::module_config::from_environment();
  BOOST_CHECK(std::count(plain.token_endpoint_hosts.begin(), plain.token_endpoint_hosts.end(),
                         "127.0.0.1") == 0);
}

BOOST_AUTO_TEST_CASE(the_environment_config_makes_the_key_eagerly_unless_told_not_to) {
  BOOST_CHECK(!msiv2::module_config{}.eager_key);
  unsetenv("MSIV2_EAGER_KEY");
  BOOST_CHECK(msiv2::module_config::from_environment().eager_key);
  for (const char* off : {"0", "false"}) {
    setenv("MSIV2_EAGER_KEY", off, 1);
    BOOST_CHECK_MESSAGE(!msiv2::module_config::from_environment().eager_key, off);
  }
  setenv("MSIV2_EAGER_KEY", "1", 1);
  BOOST_CHECK(msiv2::module_config::from_environment().eager_key);
  unsetenv("MSIV2_EAGER_KEY");
}

namespace {

/// One scheduler thread; actor A starts a ping-pong of `rounds` messages with B and, just
/// before, sends one message to C from the same worker. Returns the ping-pong round at which
/// C first ran: the number of jobs that overtook C in the worker's queue.
int round_when_bystander_ran(caf::actor_system_config& cfg, int rounds) {
  cfg.set("logger.file-verbosity", caf::atom("quiet"));
  cfg.set("logger.console-verbosity", caf::atom("quiet"));
  caf::actor_system sys{cfg};
  auto played = std::make_shared<std::atomic<int>>(0);
  auto seen = std::make_shared<std::promise<int>>();
  auto done = std::make_shared<std::promise<void>>();
  auto bystander = sys.spawn(
    [=](caf::event_based_actor*, int) -> caf::behavior {
      return {
        [=](caf::ok_atom) { seen->set_value(played->load()); },
        [](caf::get_atom) { return caf::ok_atom::value; },
      };
    },
    0);
  auto player = [=](caf::event_based_actor* self, int) -> caf::behavior {
    return {
      [=](int n, caf::actor peer) {
        if (n == 0)
          self->send(bystander, caf::ok_atom::value);
        if (n == rounds) {
          done->set_value();
          return;
        }
        played->store(n + 1);
        self->send(peer, n + 1, caf::actor{self});
      },
      [](caf::get_atom) { return caf::ok_atom::value; },
    };
  };
  auto a = sys.spawn(player, 0);
  auto b = sys.spawn(player, 0);
  { // All three initialised and waiting for messages: none is still queued from its spawn.
    caf::scoped_actor self{sys};
    for (auto& x : {bystander, a, b})
      self->request(x, caf::infinite, caf::get_atom::value)
        .receive([](caf::ok_atom) {},
                 [](caf::error& e) { BOOST_FAIL("warm-up: " + caf::to_string(e)); });
  }
  caf::anon_send(a, 0, b);
  auto f = done->get_future();
  BOOST_REQUIRE(f.wait_for(std::chrono::minutes(1)) == std::future_status::ready);
  auto s = seen->get_future();
  BOOST_REQUIRE(s.wait_for(std::chrono::minutes(1)) == std::future_status::ready);
  return s.get();
}

} // namespace

BOOST_AUTO_TEST_CASE(the_module_scheduler_runs_jobs_in_the_order_they_became_runnable) {
  caf::actor_system_config cfg;
  msiv2::apply_defaults(cfg, 1);
  // C was made runnable before the ping-pong's first message, so it runs before it.
  BOOST_CHECK_EQUAL(round_when_bystander_ran(cfg, 10000), 1);
}

BOOST_AUTO_TEST_CASE(caf_stock_stealing_lets_a_ping_pong_starve_a_queued_actor) {
  // The behaviour apply_defaults replaces: stock CAF 0.17 puts each newly runnable job at the
  // front of the worker's queue, so C waits for the whole ping-pong (with one worker nobody
  // steals it; with two, the idle one steals only every 5th 50 us poll).
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", 1);
  BOOST_CHECK_EQUAL(round_when_bystander_ran(cfg, 10000), 10000);
}

BOOST_AUTO_TEST_CASE(apply_defaults_loads_the_fair_scheduler_once_and_leaves_other_policies) {
  using fair = caf::scheduler::coordinator<msiv2::fair_work_stealing>;
  {
    caf::actor_system_config cfg;
    msiv2::apply_defaults(cfg, 2);
    msiv2::apply_defaults(cfg, 2);
    BOOST_CHECK_EQUAL(cfg.module_factories.size(), 1u);
    cfg.set("logger.console-verbosity", caf::atom("quiet"));
    caf::actor_system sys{cfg};
    BOOST_CHECK(dynamic_cast<fair*>(&sys.scheduler()) != nullptr);
    BOOST_CHECK_EQUAL(sys.scheduler().num_workers(), 2u);
  }
  for (auto policy : {caf::atom("sharing"), caf::atom("testing")}) {
    caf::actor_system_config cfg;
    cfg.set("scheduler.policy", policy);
    msiv2::apply_defaults(cfg, 2);
    BOOST_CHECK(cfg.module_factories.empty());
  }
}

BOOST_AUTO_TEST_SUITE_END()

#include <caf/typed_event_based_actor.hpp>

#include "tests/support/actor_fixture.hpp"

namespace {

using echo_after = caf::typed_actor<
  caf::replies_to<caf::get_atom, std::int32_t>::with<std::int32_t>,
  caf::reacts_to<caf::ok_atom, std::int32_t>>;

struct echo_after_state {
  std::vector<caf::typed_response_promise<std::int32_t>> pending;
};

/// Answers n * 2 after n seconds of virtual time.
/// (The unused int: CAF 0.17.6 trips UBSan when spawning a function actor without arguments.)
echo_after::behavior_type echo_after_impl(echo_after::stateful_pointer<echo_after_state> self, int) {
  return {
    [=](caf::get_atom, std::int32_t n) -> caf::result<std::int32_t> {
      self->state.pending.push_back(self->make_response_promise<std::int32_t>());
      self->delayed_send(self, std::chrono::seconds(n), caf::ok_atom::value, n);
      return self->state.pending.back();
    },
    [=](caf::ok_atom, std::int32_t n) {
      for (auto& rp : self->state.pending)
        rp.deliver(n * 2);
      self->state.pending.clear();
    },
  };
}

} // namespace

BOOST_AUTO_TEST_SUITE(actors_runtime_test) // reopened: CTest runs one suite per file

BOOST_AUTO_TEST_CASE(virtual_time_drives_delayed_answers_and_wall_time) {
  msiv2::test::actor_fixture f;
  auto a = f.keep(f.sys.spawn(echo_after_impl, 0));
  auto wall0 = f.wall_ms();
  auto got = f.request<std::int32_t>(a, caf::get_atom::value, std::int32_t{1800});
  f.run();
  BOOST_CHECK(!got->answered());
  f.advance(std::chrono::seconds(1799));
  BOOST_CHECK(!got->answered());
  f.advance(std::chrono::seconds(1));
  BOOST_REQUIRE(got->value);
  BOOST_CHECK_EQUAL(*got->value, 3600);
  BOOST_CHECK_EQUAL(f.wall_ms() - wall0, 1800 * 1000);
}

BOOST_AUTO_TEST_CASE(inline_key_store_creates_once_and_rotates_on_demand) {
  msiv2::test::actor_fixture f;
  std::string first;
  f.keys->load_or_create([&](msiv2::result<msiv2::key_ref> k) { first = k->key_id; });
  f.keys->load_or_create([&](msiv2::result<msiv2::key_ref> k) { BOOST_CHECK_EQUAL(k->key_id, first); });
  std::string second;
  f.keys->rotate(first, [&](msiv2::result<msiv2::key_ref> k) { second = k->key_id; });
  BOOST_CHECK_EQUAL(f.keys->creates, 2);
  BOOST_CHECK_NE(first, second);
  BOOST_CHECK_EQUAL(first.size(), 64u);
}

BOOST_AUTO_TEST_SUITE_END()
