#include "tests/support/test_keys.hpp"

#include <boost/test/unit_test.hpp>
#include <simdjson.h>

#include "platform/keys.hpp"

namespace msiv2::test {

namespace {

platform::pkey_ptr make_key() {
  auto k = platform::generate_rsa_key(2048);
  BOOST_REQUIRE_MESSAGE(k.ok(), error_text(k));
  return std::move(*k);
}

} // namespace

std::optional<std::string> json_string(std::string_view json, std::string_view key) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(simdjson::padded_string(json)).get(root) != simdjson::SUCCESS)
    return std::nullopt;
  std::string_view v;
  if (root[key].get_string().get(v) != simdjson::SUCCESS)
    return std::nullopt;
  return std::string(v);
}

EVP_PKEY* test_key() {
  static platform::pkey_ptr key = make_key();
  return key.get();
}

EVP_PKEY* other_key() {
  static platform::pkey_ptr key = make_key();
  return key.get();
}

} // namespace msiv2::test
