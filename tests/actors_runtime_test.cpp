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

BOOST_AUTO_TEST_SUITE_END()
