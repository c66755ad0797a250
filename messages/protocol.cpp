#include "messages/protocol.hpp"

#include <cstdio>
#include <string_view>

namespace msiv2 {

namespace {

/// "name{labels}" -> "name"
std::string metric_family(const std::string& key) {
  auto brace = key.find('{');
  return brace == std::string::npos ? key : key.substr(0, brace);
}

// A key as one exposition line whatever a producer put in it: control bytes (a newline would
// start a forged series) become '?'. Producers escape label values (prometheus_label_value)
// or hash them; this is the net under them.
std::string safe_key(const std::string& key) {
  std::string out = key;
  for (auto& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      c = '?';
  return out;
}

template <class Map, class Format>
void emit(std::string& out, const Map& values, const char* type, Format format) {
  std::string last_family;
  for (const auto& [key, value] : values) {
    auto family = metric_family(key);
    if (family != last_family) {
      out += "# TYPE " + safe_key(family) + " " + type + "\n";
      last_family = family;
    }
    out += safe_key(key) + " " + format(value) + "\n";
  }
}

} // namespace

std::string prometheus_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\' || c == '"')
      out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string to_prometheus(const stats_snapshot& s) {
  std::string out;
  emit(out, s.counters, "counter", [](std::uint64_t v) { return std::to_string(v); });
  emit(out, s.gauges, "gauge", [](double v) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.17g", v);
    return std::string(buf);
  });
  return out;
}

} // namespace msiv2
