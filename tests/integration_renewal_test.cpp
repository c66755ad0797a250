// The slow cases of the token runtime against the simulator (a suite of their own so that CTest
// runs them beside integration_faults_test): renewals over real seconds with short lifetimes,
// and the 10 s IMDS 410 schedule.

#include <boost/test/unit_test.hpp>

#include <chrono>
#include <string>
#include <thread>

#include "platform/binding.hpp"
#include "platform/jwt.hpp"
#include "tests/support/sim_runtime_rig.hpp"

namespace {

using namespace std::chrono_literals;
using msiv2::error_code;
using msiv2::managed_identity;
using msiv2::sim::fault_spec;
using msiv2::test::code_of;
using msiv2::test::pop_request;
using msiv2::test::runtime_rig;
using msiv2::test::why;
using msiv2::test::statuses;
using msiv2::test::set_fault;
using msiv2::test::seconds_since;
using msiv2::test::warm_up;
using steady = std::chrono::steady_clock;

const std::string arm = "https://management.azure.com";
const std::string vault = "https://vault.azure.net";


std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}


} // namespace

BOOST_AUTO_TEST_SUITE(integration_renewal_test)

BOOST_AUTO_TEST_CASE(short_lifetimes_renew_tokens_and_certificates_before_expiry) {
  runtime_rig r([](msiv2::sim::config& c) {
    c.token_lifetime = 3s;
    c.cert_lifetime = 6s;
  });
  auto first = r.get(pop_request(arm));
  BOOST_REQUIRE_MESSAGE(first, why(first));
  auto t0 = steady::now();
  int answered = 0;
  int failed = 0;
  std::string last_x5t = first->binding->x5t_s256;
  int cert_changes = 0;
  while (steady::now() - t0 < 10s) {
    auto t = r.get(pop_request(arm, managed_identity::system(), 3s));
    if (!t) {
      ++failed;
      BOOST_TEST_MESSAGE("renewal run: " << why(t));
    } else {
      ++answered;
      BOOST_TEST(t->expires_on > unix_now(), "served an expired token");
      auto claims = msiv2::platform::read_jwt_claims(t->access_token);
      BOOST_TEST((claims && claims->cnf_x5t_s256 == t->binding->x5t_s256));
      if (t->binding->x5t_s256 != last_x5t) {
        ++cert_changes;
        last_x5t = t->binding->x5t_s256;
      }
    }
    std::this_thread::sleep_for(200ms);
  }
  BOOST_TEST(failed == 0);
  BOOST_TEST(answered >= 20);
  BOOST_TEST(r.sim().count("token", 200) >= 4u);
  BOOST_TEST(r.sim().count("token") == r.sim().count("token", 200));
  BOOST_TEST(r.sim().count("imds_issue", 200) >= 2u);
  BOOST_TEST(r.sim().count("imds_issue") == r.sim().count("imds_issue", 200));
  BOOST_TEST(cert_changes >= 1);
}

// The 410 schedule waits 10 s before its retry (protocol.md §9): one such test only.
BOOST_AUTO_TEST_CASE(imds_410_once_succeeds_after_the_10_second_wait) {
  runtime_rig r;
  warm_up(r);
  set_fault(r, "imds_metadata", statuses({410}));
  auto t0 = steady::now();
  auto t = r.get(pop_request(vault, managed_identity::system(), 20s));
  BOOST_REQUIRE_MESSAGE(t, why(t));
  BOOST_TEST(r.sim().count("imds_metadata", 410) == 1);
  BOOST_TEST(r.sim().count("imds_metadata", 200) == 2);
  BOOST_TEST(seconds_since(t0) >= 8.0);
  BOOST_TEST(seconds_since(t0) < 15.0);
}

BOOST_AUTO_TEST_SUITE_END()
