// Review L1: the Prometheus exposition stays valid whatever ends up in a stats key.

#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

#include "messages/protocol.hpp"

using msiv2::prometheus_label_value;
using msiv2::stats_snapshot;
using msiv2::to_prometheus;

namespace {

/// A small parser of the text format's sample lines: name, optional {k="v",...} with only
/// \\, \" and \n escapes in values, a space, a number. Empty when the line is not valid.
bool valid_sample_line(const std::string& line) {
  std::size_t i = 0;
  auto name_char = [](char c, bool first) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
  };
  if (i >= line.size() || !name_char(line[i], true))
    return false;
  while (i < line.size() && name_char(line[i], false))
    ++i;
  if (i < line.size() && line[i] == '{') {
    ++i;
    while (i < line.size() && line[i] != '}') {
      std::size_t start = i;
      while (i < line.size() && name_char(line[i], i == start))
        ++i;
      if (i == start || line.compare(i, 2, "=\"") != 0)
        return false;
      i += 2;
      while (i < line.size() && line[i] != '"') {
        if (line[i] == '\\') {
          if (i + 1 >= line.size() || (line[i + 1] != '\\' && line[i + 1] != '"' && line[i + 1] != 'n'))
            return false;
          ++i;
        }
        ++i;
      }
      if (i >= line.size())
        return false;
      ++i; // closing quote
      if (i < line.size() && line[i] == ',')
        ++i;
    }
    if (i >= line.size())
      return false;
    ++i; // '}'
  }
  if (i >= line.size() || line[i] != ' ')
    return false;
  auto value = line.substr(i + 1);
  return !value.empty() && value.find_first_not_of("0123456789.eE+-") == std::string::npos;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < text.size()) {
    auto nl = text.find('\n', i);
    out.push_back(text.substr(i, nl - i));
    i = nl == std::string::npos ? text.size() : nl + 1;
  }
  return out;
}

} // namespace

BOOST_AUTO_TEST_SUITE(messages_protocol_test)

BOOST_AUTO_TEST_CASE(label_values_are_escaped_for_the_exposition) {
  BOOST_TEST(prometheus_label_value(R"(/subscriptions/a"b\c)") == R"(/subscriptions/a\"b\\c)");
  BOOST_TEST(prometheus_label_value("x\ny") == R"(x\ny)");
  stats_snapshot s;
  s.counters["msiv2_test_total{id=\"" + prometheus_label_value("a\"b\\c\nd") + "\"}"] = 1;
  s.gauges["msiv2_g{artifact=\"x\"}"] = 2.5;
  for (const auto& line : lines_of(to_prometheus(s)))
    if (line.rfind("#", 0) != 0)
      BOOST_TEST(valid_sample_line(line), line);
}

BOOST_AUTO_TEST_CASE(a_key_with_a_newline_cannot_forge_a_series) {
  stats_snapshot s;
  s.counters["msiv2_x_total{id=\"a\nmsiv2_forged_total 1e9\"}"] = 1;
  auto text = to_prometheus(s);
  BOOST_TEST(text.find("\nmsiv2_forged_total") == std::string::npos, text);
  std::size_t samples = 0;
  for (const auto& line : lines_of(text))
    if (!line.empty() && line[0] != '#')
      ++samples;
  BOOST_TEST(samples == 1u);
}

BOOST_AUTO_TEST_SUITE_END()
