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

BOOST_AUTO_TEST_SUITE_END()
