#include "messages/protocol.hpp"

#include <cstdio>

namespace msiv2 {

namespace {

/// "name{labels}" -> "name"
std::string metric_family(const std::string& key) {
  auto brace = key.find('{');
  return brace == std::string::npos ? key : key.substr(0, brace);
}

template <class Map, class Format>
void emit(std::string& out, const Map& values, const char* type, Format format) {
  std::string last_family;
  for (const auto& [key, value] : values) {
    auto family = metric_family(key);
    if (family != last_family) {
      out += "# TYPE " + family + " " + type + "\n";
      last_family = family;
    }
    out += key + " " + format(value) + "\n";
  }
}

} // namespace

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
