#include "io/json.hpp"

#include <simdjson.h>

namespace msiv2::io {

result<void> check_json_object(std::string_view text, std::string_view what) {
  simdjson::ondemand::parser parser;
  simdjson::padded_string padded(text);
  simdjson::ondemand::document doc;
  if (parser.iterate(padded).get(doc) != simdjson::SUCCESS)
    return fail(std::string(what) + ": not valid JSON");
  simdjson::ondemand::object obj;
  if (doc.get_object().get(obj) != simdjson::SUCCESS)
    return fail(std::string(what) + ": not a JSON object");
  return ok();
}

} // namespace msiv2::io
