#include "tools/fleet/report.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

namespace msiv2::fleet {

namespace {

constexpr std::size_t plot_step_s = 600; // one plotted point per 10 minutes

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

/// A duration in seconds, short: 0.4 s, 12 s, 3.2 min, 4.5 h.
std::string dur(double s) {
  double a = s < 0 ? -s : s;
  if (a < 10)
    return fixed(s, 1) + " s";
  if (a < 120)
    return fixed(s, 0) + " s";
  if (a < 7200)
    return fixed(s / 60, 1) + " min";
  return fixed(s / 3600, 1) + " h";
}

std::string key_of(const result& r) {
  return std::string(to_string(r.scen)) + "-" + to_string(r.keys);
}

void json_spread(std::ostream& out, const spread& s) {
  out << "{\"count\":" << s.count << ",\"min_s\":" << s.min_s << ",\"p50_s\":" << s.p50_s
      << ",\"p99_s\":" << s.p99_s << ",\"p999_s\":" << s.p999_s << ",\"max_s\":" << s.max_s
      << "}";
}

/// The peak 1-second rate within each plotted step.
std::vector<std::uint32_t> step_peaks(const std::vector<std::uint32_t>& per_second) {
  std::vector<std::uint32_t> out((per_second.size() + plot_step_s - 1) / plot_step_s, 0);
  for (std::size_t i = 0; i < per_second.size(); ++i)
    out[i / plot_step_s] = std::max(out[i / plot_step_s], per_second[i]);
  return out;
}

bool on_path(const char* program) {
  const char* path = std::getenv("PATH");
  if (!path)
    return false;
  std::stringstream ss(path);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    auto full = dir + "/" + program;
    struct stat st {};
    if (::stat(full.c_str(), &st) == 0 && (st.st_mode & S_IXUSR))
      return true;
  }
  return false;
}

} // namespace

void print_table(std::ostream& out, const params& p, const std::vector<result>& results,
                 double wall_seconds) {
  std::uint64_t events = 0;
  for (auto& r : results)
    events += r.events;
  out << "msiv2-fleet: " << p.vms << " VMs x " << p.processes << " processes x " << p.resources
      << " tokens, " << p.days << " days; certificate " << dur(p.cert_life_ms / 1000.0)
      << ", token " << dur(p.token_life_ms / 1000.0) << " (refresh_in "
      << dur(p.token_refresh_in_ms / 1000.0) << ")"
      << (p.attested ? ", attestation " + dur(p.attestation_life_ms / 1000.0) : std::string())
      << "\n"
      << results.size() << " runs in " << fixed(wall_seconds, 1) << " s, "
      << fixed(static_cast<double>(events) / 1e6, 1) << " M events ("
      << fixed(static_cast<double>(events) / wall_seconds / 1e6, 2) << " M events/s)\n\n";
  char line[512];
  std::snprintf(line, sizeof line,
                "%-14s %-8s %-9s | %9s %9s %8s | %7s %7s | %9s | %8s | %9s | %21s | %21s | %4s\n",
                "scenario", "keys", "policy", "issue pk", "token pk", "attst pk", "tok p/m",
                "iss p/m", "issuances", "cached", "wait p99", "cert renewal vs nominal",
                "token renewal vs nominal", "imds");
  out << line;
  std::snprintf(line, sizeof line,
                "%-14s %-8s %-9s | %9s %9s %8s | %7s %7s | %9s | %8s | %9s | %21s | %21s | %4s\n",
                "", "", "", "/s", "/s", "/s", "", "", "", "", "", "p50 / p99.9 / max",
                "p50 / p99.9 / max", "pk/s");
  out << line << std::string(185, '-') << "\n";
  for (auto& r : results) {
    auto ratio = [&](service s) {
      double mean = r.mean_per_second(s);
      return mean > 0 ? fixed(r.peak_per_second[static_cast<std::size_t>(s)] / mean, 0) : "-";
    };
    auto offs = [&](const spread& s) {
      if (s.count == 0)
        return std::string("-");
      return dur(s.p50_s) + " / " + dur(s.p999_s) + " / " + dur(s.max_s);
    };
    std::snprintf(
      line, sizeof line,
      "%-14s %-8s %-9s | %9u %9u %8u | %7s %7s | %9llu | %7.4f%% | %9s | %21s | %21s | %4u\n",
      to_string(r.scen), to_string(r.keys), to_string(r.pol),
      r.peak_per_second[static_cast<std::size_t>(service::issuecredential)],
      r.peak_per_second[static_cast<std::size_t>(service::token)],
      r.peak_per_second[static_cast<std::size_t>(service::attestation)],
      ratio(service::token).c_str(), ratio(service::issuecredential).c_str(),
      static_cast<unsigned long long>(r.issuances), 100.0 * r.served_from_cache,
      dur(r.wait_in_fault.p99_s).c_str(), offs(r.cert_renewal_offset).c_str(),
      offs(r.token_renewal_offset).c_str(), r.imds_peak_per_vm);
    out << line;
  }
  out << "\npk = peak 1-second rate; p/m = peak / mean; cached = token requests answered from "
         "cache (demand uniform in time);\nwait p99 = 99th percentile wait of the requests made "
         "during the fault (steady: the whole window; sync-reboot: its first 10 minutes);\n"
         "renewal vs nominal = successful renewal time minus the policy's own nominal point "
         "(msiv2: half-life / refresh_in;\nreference: notAfter - 24 h / refresh_in; naive: "
         "expiry); imds pk/s = most IMDS calls one VM made in one second.\n";
}

void write_json(std::ostream& out, const params& p, const std::vector<result>& results,
                double wall_seconds) {
  std::uint64_t events = 0;
  for (auto& r : results)
    events += r.events;
  out << "{\"params\":{\"vms\":" << p.vms << ",\"processes\":" << p.processes
      << ",\"resources\":" << p.resources << ",\"days\":" << p.days
      << ",\"cert_life_s\":" << p.cert_life_ms / 1000 << ",\"token_life_s\":"
      << p.token_life_ms / 1000 << ",\"token_refresh_in_s\":" << p.token_refresh_in_ms / 1000
      << ",\"attestation_life_s\":" << p.attestation_life_ms / 1000
      << ",\"attested\":" << (p.attested ? "true" : "false") << ",\"seed\":" << p.seed
      << "},\"wall_seconds\":" << wall_seconds << ",\"events\":" << events
      << ",\"events_per_second\":" << static_cast<double>(events) / wall_seconds
      << ",\"series_step_s\":" << plot_step_s << ",\"results\":[";
  bool first = true;
  for (auto& r : results) {
    out << (first ? "" : ",") << "\n{\"scenario\":\"" << to_string(r.scen) << "\",\"keys\":\""
        << to_string(r.keys) << "\",\"policy\":\"" << to_string(r.pol) << "\"";
    first = false;
    out << ",\"services\":{";
    for (int s = 0; s < service_count; ++s) {
      auto sv = static_cast<service>(s);
      auto i = static_cast<std::size_t>(s);
      out << (s ? "," : "") << "\"" << to_string(sv) << "\":{\"total\":" << r.totals[i]
          << ",\"peak_per_second\":" << r.peak_per_second[i]
          << ",\"mean_per_second\":" << r.mean_per_second(sv) << ",\"peak_per_step\":[";
      auto peaks = step_peaks(r.per_second[i]);
      for (std::size_t j = 0; j < peaks.size(); ++j)
        out << (j ? "," : "") << peaks[j];
      out << "]}";
    }
    out << "},\"issuances\":" << r.issuances << ",\"token_acquisitions\":"
        << r.token_acquisitions << ",\"served_from_cache\":" << r.served_from_cache
        << ",\"imds_peak_per_vm\":" << r.imds_peak_per_vm << ",\"wait_in_fault\":";
    json_spread(out, r.wait_in_fault);
    out << ",\"cert_renewal_offset\":";
    json_spread(out, r.cert_renewal_offset);
    out << ",\"token_renewal_offset\":";
    json_spread(out, r.token_renewal_offset);
    out << ",\"events\":" << r.events << ",\"wall_seconds\":" << r.wall_seconds << "}";
  }
  out << "\n]}\n";
}

std::string write_plots(const std::string& dir, const params& p,
                        const std::vector<result>& results) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    return "cannot create " + dir + ": " + std::strerror(errno);
  std::map<std::string, std::vector<const result*>> groups;
  for (auto& r : results)
    groups[key_of(r)].push_back(&r);
  bool gnuplot = on_path("gnuplot");
  for (auto& [name, rs] : groups) {
    auto dat = dir + "/" + name + ".dat";
    std::ofstream d(dat);
    d << "# day";
    for (auto* r : rs)
      for (int s = 0; s < service_count; ++s)
        d << " " << to_string(r->pol) << ":" << to_string(static_cast<service>(s));
    d << "\n";
    std::vector<std::vector<std::uint32_t>> cols;
    for (auto* r : rs)
      for (int s = 0; s < service_count; ++s)
        cols.push_back(step_peaks(r->per_second[static_cast<std::size_t>(s)]));
    auto rows = cols.empty() ? 0 : cols[0].size();
    for (std::size_t i = 0; i < rows; ++i) {
      d << fixed(static_cast<double>(i * plot_step_s) / 86400.0, 4);
      for (auto& c : cols)
        d << " " << std::max<std::uint32_t>(c[i], 0);
      d << "\n";
    }
    if (!d)
      return "cannot write " + dat;
    auto gp = dir + "/" + name + ".gp";
    std::ofstream g(gp);
    g << "set terminal pngcairo size 1200,900 font 'sans,10'\n"
      << "set output '" << dir << "/" << name << ".png'\n"
      << "set multiplot layout " << service_count << ",1 title '" << name << ": " << p.vms
      << " VMs x " << p.processes << " processes x " << p.resources
      << " tokens (peak 1-s rate per 10 min, log scale)'\n"
      << "set logscale y\nset yrange [0.8:*]\nset grid\nset key outside right\n"
      << "set xlabel 'day'\nset xrange [0:" << p.days << "]\n";
    for (int s = 0; s < service_count; ++s) {
      g << "set ylabel '" << to_string(static_cast<service>(s)) << " calls/s'\nplot ";
      for (std::size_t r = 0; r < rs.size(); ++r) {
        auto col = 2 + r * service_count + static_cast<std::size_t>(s);
        g << (r ? ", " : "") << "'" << dat << "' using 1:($" << col << "+1) with steps lw 1.5 title '"
          << to_string(rs[r]->pol) << "'";
      }
      g << "\n";
    }
    g << "unset multiplot\n";
    if (!g)
      return "cannot write " + gp;
    g.close();
    if (gnuplot) {
      auto cmd = "gnuplot '" + gp + "'";
      if (std::system(cmd.c_str()) != 0)
        return "gnuplot failed on " + gp;
    }
  }
  if (!gnuplot)
    std::fprintf(stderr, "msiv2-fleet: gnuplot is not installed: wrote data and scripts to %s "
                         "(tools/fleet.sh installs it)\n", dir.c_str());
  return {};
}

} // namespace msiv2::fleet
