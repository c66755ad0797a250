#include <boost/test/unit_test.hpp>

#include <caf/sec.hpp>

#include "messages/errors.hpp"
#include "messages/token.hpp"

using namespace msiv2;

BOOST_AUTO_TEST_SUITE(messages_errors_test)

BOOST_AUTO_TEST_CASE(error_round_trips_code_description_status_and_correlation_id) {
  auto err = make_msiv2_error(error_code::v1_only_host,
                              "this host only has IMDS v1; mTLS PoP tokens need IMDS v2", 404,
                              "abc-123");
  auto info = describe(err);
  BOOST_CHECK(info.code == error_code::v1_only_host);
  BOOST_CHECK_EQUAL(info.description, "this host only has IMDS v1; mTLS PoP tokens need IMDS v2");
  BOOST_CHECK_EQUAL(info.http_status, 404);
  BOOST_CHECK_EQUAL(info.correlation_id, "abc-123");
  BOOST_CHECK_EQUAL(render(err), "v1_only_host: this host only has IMDS v1; mTLS PoP tokens "
                                 "need IMDS v2 (HTTP 404, correlation id abc-123)");
}

BOOST_AUTO_TEST_CASE(error_compares_equal_to_its_code) {
  caf::error err = make_msiv2_error(error_code::throttled, "retry after 5 s");
  BOOST_CHECK(err == error_code::throttled);
  BOOST_CHECK(err != error_code::token_refused);
}

BOOST_AUTO_TEST_CASE(foreign_error_describes_as_internal_failure) {
  caf::error err = caf::make_error(caf::sec::request_timeout);
  auto info = describe(err);
  BOOST_CHECK(info.code == error_code::internal_failure);
  BOOST_CHECK(!info.description.empty());
}

BOOST_AUTO_TEST_CASE(identity_text_names_the_selector) {
  BOOST_CHECK_EQUAL(to_string(managed_identity::system()), "system-assigned");
  BOOST_CHECK_EQUAL(to_string(managed_identity::by_client_id("c")), "client_id=c");
  BOOST_CHECK_EQUAL(to_string(managed_identity::by_resource_id("/s/r")), "resource_id=/s/r");
  BOOST_CHECK(managed_identity::by_object_id("x") != managed_identity::by_client_id("x"));
}

BOOST_AUTO_TEST_CASE(binding_strengths_are_ordered_weakest_first_and_round_trip_as_text) {
  BOOST_CHECK(binding_strength::bearer < binding_strength::software_key);
  BOOST_CHECK(binding_strength::software_key < binding_strength::hardware_key);
  BOOST_CHECK(binding_strength::hardware_key < binding_strength::attested_hardware_key);
  for (auto s : {binding_strength::bearer, binding_strength::software_key,
                 binding_strength::hardware_key, binding_strength::attested_hardware_key}) {
    binding_strength back = binding_strength::bearer;
    BOOST_CHECK(parse_binding_strength(to_string(s), back));
    BOOST_CHECK(back == s);
  }
  BOOST_CHECK_EQUAL(to_string(binding_strength::attested_hardware_key), "attested_hardware_key");
  binding_strength untouched = binding_strength::hardware_key;
  BOOST_CHECK(!parse_binding_strength("tpm", untouched));
  BOOST_CHECK(untouched == binding_strength::hardware_key);
}

BOOST_AUTO_TEST_CASE(binding_too_weak_has_its_own_name) {
  BOOST_CHECK_EQUAL(to_string(error_code::binding_too_weak), "binding_too_weak");
  BOOST_CHECK(describe(make_msiv2_error(error_code::binding_too_weak, "x")).code ==
              error_code::binding_too_weak);
}

BOOST_AUTO_TEST_SUITE_END()

#include <limits>

#include "messages/protocol.hpp"

BOOST_AUTO_TEST_SUITE(messages_errors_test) // reopened: CTest runs one suite per file

BOOST_AUTO_TEST_CASE(prometheus_text_groups_each_family_under_one_help_and_type_line) {
  msiv2::stats_snapshot s;
  s.counters["msiv2_upstream_requests_total{upstream=\"imds_metadata\",status=\"200\"}"] = 3;
  s.counters["msiv2_upstream_requests_total{upstream=\"token\",status=\"200\"}"] = 1;
  s.counters["msiv2_cache_hits_total"] = 7;
  s.gauges["msiv2_certificate_expiry_seconds{identity=\"system-assigned\"}"] = 1.7e9;
  auto text = msiv2::to_prometheus(s);
  BOOST_CHECK_EQUAL(text,
                    "# HELP msiv2_cache_hits_total Artifacts served from memory or from the "
                    "cache directory.\n"
                    "# TYPE msiv2_cache_hits_total counter\n"
                    "msiv2_cache_hits_total 7\n"
                    "# HELP msiv2_upstream_requests_total HTTP calls to IMDS, attestation and "
                    "the token endpoint.\n"
                    "# TYPE msiv2_upstream_requests_total counter\n"
                    "msiv2_upstream_requests_total{upstream=\"imds_metadata\",status=\"200\"} 3\n"
                    "msiv2_upstream_requests_total{upstream=\"token\",status=\"200\"} 1\n"
                    "# HELP msiv2_certificate_expiry_seconds msiv2 gauge.\n"
                    "# TYPE msiv2_certificate_expiry_seconds gauge\n"
                    "msiv2_certificate_expiry_seconds{identity=\"system-assigned\"} 1700000000\n");
}

BOOST_AUTO_TEST_CASE(prometheus_text_spells_non_finite_gauges_as_the_format_does) {
  msiv2::stats_snapshot s;
  s.gauges["msiv2_cached_tokens"] = std::numeric_limits<double>::quiet_NaN();
  s.gauges["msiv2_token_flights"] = std::numeric_limits<double>::infinity();
  auto text = msiv2::to_prometheus(s);
  BOOST_CHECK(text.find("\nmsiv2_cached_tokens NaN\n") != std::string::npos);
  BOOST_CHECK(text.find("\nmsiv2_token_flights +Inf\n") != std::string::npos);
  BOOST_CHECK(text.find("# HELP msiv2_token_flights Token acquisitions in flight") !=
              std::string::npos);
}

BOOST_AUTO_TEST_CASE(deadline_reports_time_left_on_any_clock) {
  using namespace std::chrono;
  auto now = steady_clock::time_point{} + seconds(10);
  auto d = msiv2::deadline::at(now + milliseconds(250));
  BOOST_CHECK(d.left(now) == milliseconds(250));
  BOOST_CHECK(d.left(now + seconds(1)) < nanoseconds(0));
}

BOOST_AUTO_TEST_SUITE_END()
