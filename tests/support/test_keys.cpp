#include "tests/support/test_keys.hpp"

#include <boost/test/unit_test.hpp>

#include "platform/keys.hpp"

namespace msiv2::test {

namespace {

platform::pkey_ptr make_key() {
  auto k = platform::generate_rsa_key(2048);
  BOOST_REQUIRE_MESSAGE(k.ok(), error_text(k));
  return std::move(*k);
}

} // namespace

EVP_PKEY* test_key() {
  static platform::pkey_ptr key = make_key();
  return key.get();
}

EVP_PKEY* other_key() {
  static platform::pkey_ptr key = make_key();
  return key.get();
}

} // namespace msiv2::test
