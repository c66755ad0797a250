// io::json_object: parse, then every accessor on every member, one level of nested objects.

#include <cstddef>
#include <cstdint>

#include "io/json.hpp"
#include "tests/fuzz/fuzz_common.hpp"

namespace {

void read_all(const msiv2::io::json_object& doc, int depth) {
  for (const auto& [name, value] : doc.members()) {
    msiv2::fuzz::require(doc.find(name) != nullptr, "every member is found by its name");
    (void)doc.required_string(name);
    (void)doc.optional_string(name);
    (void)doc.required_integer(name);
    (void)doc.required_integer_or_numeric_string(name);
    (void)doc.optional_integer_or_numeric_string(name);
    (void)doc.required_boolean(name);
    (void)doc.raw(name);
    (void)msiv2::io::parse_decimal_int64(value.text);
    if (depth < 2)
      if (auto nested = doc.required_object(name))
        read_all(*nested, depth + 1);
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto text = msiv2::fuzz::as_text(data, size);
  auto doc = msiv2::io::json_object::parse(text, "fuzz input");
  auto checked = msiv2::io::check_json_object(text, "fuzz input");
  msiv2::fuzz::require(!doc || checked, "a document json_object reads is a JSON object");
  if (doc)
    read_all(*doc, 0);
  (void)msiv2::io::parse_decimal_int64(text);
  return 0;
}
