// msiv2-fleet: what a fleet of VMs running msiv2 (and two other renewal policies) does to the
// shared services, simulated in virtual time. See README "msiv2-fleet" and tools/fleet/model.hpp.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tools/fleet/model.hpp"
#include "tools/fleet/module_check.hpp"
#include "tools/fleet/report.hpp"

namespace {

using namespace msiv2::fleet;

const char* usage = R"(usage: msiv2-fleet [options]
Simulates N VMs x P processes x R resources over D days, under three renewal policies
(msiv2, reference = MSAL .NET's rule, naive) side by side, through four scenarios (steady,
sync-reboot, token-outage, issue-brownout), with per-boot and with durable keys.

  --vms N            VMs (default 100000; up to 1000000)
  --processes P      processes per VM (default 4)
  --resources R      tokens per process (default 2)
  --days D           reported window in days (default 7)
  --scenario S       steady|sync-reboot|token-outage|issue-brownout|all (default all)
  --keys K           per-boot|durable|both (default both)
  --no-attestation   keys are not attested (no attestation service)
  --seed S           random seed (default 1)
  --threads T        runs in parallel (default: the number of cores)
  --json FILE        write every result (and per-minute series) as JSON
  --plots DIR        write one timeline per scenario and key mode (gnuplot data + script,
                     and SVG when gnuplot is installed)
  --quiet            no progress lines
  --check            instead: run K real msiv2 modules (virtual time, the simulator's IMDS and
                     authority in process) through the scenario (steady or token-outage; default
                     both) and compare their upstream calls with the model's for the same VMs;
                     exits 1 when a figure differs beyond its tolerance
  --check-vms K      VMs in the check (default 200)
  --clock-offset-ms M  in the check, each VM's clock is off the services' by up to +-M ms
                     (default 2000)
)";

bool parse_scenario(const std::string& s, std::vector<scenario>& out) {
  for (int i = 0; i < scenario_count; ++i) {
    auto sc = static_cast<scenario>(i);
    if (s == "all" || s == to_string(sc))
      out.push_back(sc);
  }
  return !out.empty();
}

} // namespace

int main(int argc, char** argv) {
  params p;
  std::vector<scenario> scenarios;
  std::vector<key_mode> keys{key_mode::per_boot, key_mode::durable};
  std::string json_path, plot_dir;
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  bool quiet = false;
  bool check = false;
  long long check_vms = 200;
  long long clock_offset_ms = 2000;
  auto number = [&](int& i, const char* name) -> long long {
    if (i + 1 >= argc) {
      std::fprintf(stderr, "msiv2-fleet: %s needs a value\n", name);
      std::exit(2);
    }
    char* end = nullptr;
    auto v = std::strtoll(argv[++i], &end, 10);
    if (*end != '\0' || v < 0) {
      std::fprintf(stderr, "msiv2-fleet: %s takes a whole number, not '%s'\n", name, argv[i]);
      std::exit(2);
    }
    return v;
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--vms") {
      auto v = number(i, "--vms");
      if (v < 1 || v > 4'000'000) {
        std::fprintf(stderr, "msiv2-fleet: --vms must be 1 to 4000000\n");
        return 2;
      }
      p.vms = static_cast<std::uint32_t>(v);
    } else if (a == "--processes") {
      p.processes = static_cast<std::uint32_t>(std::clamp<long long>(number(i, a.c_str()), 1, 64));
    } else if (a == "--resources") {
      p.resources = static_cast<std::uint32_t>(std::clamp<long long>(number(i, a.c_str()), 1, 64));
    } else if (a == "--days") {
      auto v = number(i, "--days");
      if (v < 3 || v > 30) {
        std::fprintf(stderr, "msiv2-fleet: --days must be 3 to 30 (the faults are on day 3)\n");
        return 2;
      }
      p.days = static_cast<int>(v);
    } else if (a == "--seed") {
      p.seed = static_cast<std::uint64_t>(number(i, "--seed"));
    } else if (a == "--threads") {
      threads = static_cast<unsigned>(std::clamp<long long>(number(i, "--threads"), 1, 64));
    } else if (a == "--scenario" && i + 1 < argc) {
      if (!parse_scenario(argv[++i], scenarios)) {
        std::fprintf(stderr, "msiv2-fleet: unknown scenario '%s'\n", argv[i]);
        return 2;
      }
    } else if (a == "--keys" && i + 1 < argc) {
      std::string k = argv[++i];
      if (k == "per-boot")
        keys = {key_mode::per_boot};
      else if (k == "durable")
        keys = {key_mode::durable};
      else if (k != "both") {
        std::fprintf(stderr, "msiv2-fleet: --keys takes per-boot, durable or both\n");
        return 2;
      }
    } else if (a == "--no-attestation") {
      p.attested = false;
    } else if (a == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else if (a == "--plots" && i + 1 < argc) {
      plot_dir = argv[++i];
    } else if (a == "--check") {
      check = true;
    } else if (a == "--check-vms") {
      check_vms = std::clamp<long long>(number(i, "--check-vms"), 1, 5000);
    } else if (a == "--clock-offset-ms") {
      clock_offset_ms = std::clamp<long long>(number(i, "--clock-offset-ms"), 0, 3'600'000);
    } else if (a == "--quiet") {
      quiet = true;
    } else if (a == "-h" || a == "--help") {
      std::fputs(usage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "msiv2-fleet: unknown argument '%s'\n%s", a.c_str(), usage);
      return 2;
    }
  }
  if (check) {
    if (scenarios.empty())
      scenarios = {scenario::steady, scenario::token_outage};
    bool agree = true;
    for (auto s : scenarios) {
      check_params cp;
      cp.vms = static_cast<std::uint32_t>(check_vms);
      cp.resources = p.resources;
      cp.days = p.days;
      cp.scen = s;
      cp.seed = p.seed;
      cp.clock_offset_ms = clock_offset_ms;
      auto r = check_against_module(cp);
      print_check(std::cout, cp, r);
      agree = agree && r.error.empty() && r.agree;
    }
    return agree ? 0 : 1;
  }
  if (scenarios.empty())
    parse_scenario("all", scenarios);

  struct job {
    scenario s;
    key_mode k;
    policy pol;
  };
  std::vector<job> jobs;
  for (auto k : keys)
    for (auto s : scenarios)
      for (int pi = 0; pi < policy_count; ++pi)
        jobs.push_back({s, k, static_cast<policy>(pi)});

  std::vector<result> results(jobs.size());
  std::atomic<std::size_t> next{0};
  std::mutex out_mtx;
  auto worker = [&] {
    for (;;) {
      auto i = next.fetch_add(1);
      if (i >= jobs.size())
        return;
      results[i] = simulate(p, jobs[i].pol, jobs[i].s, jobs[i].k);
      if (!quiet) {
        std::lock_guard<std::mutex> lock(out_mtx);
        std::fprintf(stderr, "  %-15s %-8s %-9s %6.1f s  %.1f M events/s\n",
                     to_string(jobs[i].s), to_string(jobs[i].k), to_string(jobs[i].pol),
                     results[i].wall_seconds,
                     static_cast<double>(results[i].events) / results[i].wall_seconds / 1e6);
      }
    }
  };
  auto began = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < std::min<std::size_t>(threads, jobs.size()); ++t)
    pool.emplace_back(worker);
  for (auto& t : pool)
    t.join();
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();

  print_table(std::cout, p, results, wall);
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    write_json(f, p, results, wall);
    if (!f) {
      std::fprintf(stderr, "msiv2-fleet: cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  if (!plot_dir.empty()) {
    auto err = write_plots(plot_dir, p, results);
    if (!err.empty()) {
      std::fprintf(stderr, "msiv2-fleet: plots: %s\n", err.c_str());
      return 1;
    }
  }
  return 0;
}
