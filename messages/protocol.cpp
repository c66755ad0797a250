#include "messages/protocol.hpp"

#include <cmath>
#include <cstdio>
#include <map>
#include <string_view>

namespace msiv2 {

namespace {

/// "name{labels}" -> "name"
std::string metric_family(const std::string& key) {
  auto brace = key.find('{');
  return brace == std::string::npos ? key : key.substr(0, brace);
}

/// The HELP text of each family the module produces (the README's metrics table says the
/// same, with the labels). A family missing here still gets a HELP line.
const std::map<std::string_view, std::string_view>& metric_help() {
  static const std::map<std::string_view, std::string_view> help{
    {"msiv2_actor_restarts_total", "Restarts of a module actor by the supervisor."},
    {"msiv2_cache_hits_total", "Artifacts served from memory or from the cache directory."},
    {"msiv2_cache_misses_total", "Access token requests that found no usable cached token."},
    {"msiv2_cached_tokens", "Access tokens held in memory."},
    {"msiv2_expires_at_seconds", "Unix time at which an attestation token expires."},
    {"msiv2_expiry_seconds", "Unix time at which a certificate or access token expires."},
    {"msiv2_persistence_errors_total",
     "Failures to read or write an artifact file in the cache directory."},
    {"msiv2_remediations_total",
     "Refused attestations or certificates dropped and minted again."},
    {"msiv2_renewal_at_seconds",
     "Unix time of the earliest renewal renewal_timer has scheduled, per kind of artifact."},
    {"msiv2_renewal_seconds", "Unix time at which a certificate or access token is renewed."},
    {"msiv2_renewals_total", "Artifacts renewed before they expired."},
    {"msiv2_retries_total", "Upstream calls retried after a retryable failure."},
    {"msiv2_retries_refused_total",
     "Background renewal retries not made because the process's retry budget was empty."},
    {"msiv2_scheduled_renewals", "Renewals renewal_timer has scheduled, per kind of artifact."},
    {"msiv2_throttled_total", "Upstream answers that throttled the module (HTTP 429)."},
    {"msiv2_token_errors_total", "Token requests that failed, by error code."},
    {"msiv2_token_evictions_total",
     "Cached access tokens dropped, least recently used first, to stay within max_cached_tokens."},
    {"msiv2_token_flights", "Token acquisitions in flight (concurrent requests share one)."},
    {"msiv2_token_lapses_total",
     "Cached access tokens dropped unrenewed: nobody asked for them within the idle window."},
    {"msiv2_upstream_requests_total", "HTTP calls to IMDS, attestation and the token endpoint."},
  };
  return help;
}

/// HELP text escaped as format 0.0.4 asks (backslash and line feed).
std::string escape_help(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
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
      auto help = metric_help().find(family);
      out += "# HELP " + safe_key(family) + " " +
             (help != metric_help().end() ? escape_help(help->second)
                                          : std::string("msiv2 ") + type + ".") +
             "\n";
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
    if (std::isnan(v))
      return std::string("NaN");
    if (std::isinf(v))
      return std::string(v > 0 ? "+Inf" : "-Inf");
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.17g", v);
    return std::string(buf);
  });
  return out;
}

} // namespace msiv2
