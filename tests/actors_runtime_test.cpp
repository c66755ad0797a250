#include <boost/test/unit_test.hpp>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

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

BOOST_AUTO_TEST_SUITE(actors_fixture_test)

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
