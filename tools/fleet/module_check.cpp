#include "tools/fleet/module_check.hpp"

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <set>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/send.hpp>

#include "actors/software_key_store.hpp"
#include "actors/supervisor.hpp"
#include "io/endpoint_trust.hpp"
#include "io/http.hpp"
#include "platform/clock.hpp"
#include "platform/keys.hpp"
#include "platform/log.hpp"
#include "tools/sim/authority.hpp"
#include "tools/fleet/module_rules.hpp"
#include "tools/sim/imds.hpp"

namespace msiv2::fleet {

namespace {

constexpr std::int64_t minute_ms = 60'000;
/// The outage row's reference: a model run of this many VMs (about 1,700 tokens caught in a
/// 30-minute outage), and how many of its caught tokens stand for each of the modules'.
constexpr std::uint32_t reference_vms = 20'000;
constexpr std::size_t neighbours = 25;
constexpr std::int64_t day_ms = 86'400'000;
/// Unix ms of the window's start (t = 0): 2026-03-02T00:00:00Z.
constexpr std::int64_t window_unix_ms = 1'772'409'600'000;

// The addresses the in-process link answers (nothing listens there; no socket is opened).
const std::string imds_url = "http://127.0.0.1:1";
const std::string token_url = "https://127.0.0.1:2";
const std::string attestation_url = "https://127.0.0.1:3";

/// What the services saw, in window time (ms since t = 0).
struct ledger {
  std::vector<std::int64_t> issue_ok;       ///< successful issuecredential calls
  std::vector<std::int64_t> token_calls;    ///< every token endpoint call
  std::vector<std::pair<std::uint32_t, std::string>> token_callers; ///< (VM, scope) of each
  std::vector<std::int64_t> imds_calls;     ///< every IMDS call
  /// Successful token calls per (VM, resource): for renewal offsets.
  std::map<std::pair<std::uint32_t, std::string>, std::vector<std::int64_t>> token_ok;
  std::map<std::uint32_t, std::vector<std::int64_t>> cert_ok;
};

/// The scope parameter of a form-encoded token request body (still encoded: only compared).
std::string scope_of(const std::string& body) {
  auto at = body.find("scope=");
  if (at == std::string::npos)
    return {};
  auto end = body.find('&', at);
  return body.substr(at + 6, end == std::string::npos ? std::string::npos : end - at - 6);
}

/// An io::transport that answers from the simulator's IMDS and authority in process, at the
/// test scheduler's virtual time, and records what each service saw.
class sim_link final : public io::transport {
public:
  sim_link(std::uint32_t vm, const sim::imds_service& imds, sim::authority& pki,
           std::string server_header, std::function<std::int64_t()> window_now,
           std::int64_t outage_from, std::int64_t outage_to, ledger& book)
      : vm_(vm), imds_(imds), pki_(pki), server_header_(std::move(server_header)),
        now_(std::move(window_now)), outage_from_(outage_from), outage_to_(outage_to),
        book_(book) {}

  void send(io::http_request r, io::completion done) override {
    done(answer(r));
  }
  void shutdown() override {}

private:
  io::http_response answer(const io::http_request& r) {
    auto url = io::split_url(r.url);
    if (!url)
      return io::http_response::failure(io::transport_error::other, url.error());
    sim::request req;
    req.method = r.method;
    req.target = url->path + (url->query.empty() ? "" : "?" + url->query);
    if (auto parsed = sim::parse_target(req.target, req); !parsed)
      return io::http_response::failure(io::transport_error::other, parsed.error());
    for (auto& [name, value] : r.headers.fields)
      req.headers.emplace_back(name, value);
    req.body = r.body;
    if (r.identity && !r.identity->chain_der().empty())
      req.client_cert_der = r.identity->chain_der().front();
    auto t = now_();
    sim::response res;
    if (url->port == "1") {
      book_.imds_calls.push_back(t);
      auto endpoint = sim::imds_service::route(url->path);
      res = imds_.handle(endpoint, req);
      res.set("Server", server_header_);
      if (endpoint == "imds_issue" && res.status == 200) {
        book_.issue_ok.push_back(t);
        book_.cert_ok[vm_].push_back(t);
      }
    } else if (url->port == "2") {
      book_.token_calls.push_back(t);
      book_.token_callers.emplace_back(vm_, scope_of(r.body));
      if (t >= outage_from_ && t < outage_to_) {
        res = sim::response::oauth_error(503, "temporarily_unavailable",
                                         "the token endpoint is down (msiv2-fleet outage)");
      } else {
        res = pki_.token(req);
        if (res.status == 200)
          book_.token_ok[{vm_, scope_of(req.body)}].push_back(t);
      }
    } else if (url->port == "3") {
      res = pki_.attest(req);
    } else {
      return io::http_response::failure(io::transport_error::connect_failed,
                                        "msiv2-fleet: nothing at " + r.url);
    }
    io::http_headers headers;
    for (auto& [name, value] : res.headers)
      headers.add(name, value);
    return io::http_response::with_status(res.status, std::move(res.body), std::move(headers));
  }

  std::uint32_t vm_;
  const sim::imds_service& imds_;
  sim::authority& pki_;
  std::string server_header_;
  std::function<std::int64_t()> now_;
  std::int64_t outage_from_, outage_to_;
  ledger& book_;
};

/// A key store that hands each VM one of a few keys made before the clock starts (key
/// generation is not what the check compares, and 2,048-bit keys for every VM would dominate
/// its run time).
class pooled_key_store final : public key_store {
public:
  explicit pooled_key_store(key_ref key) : key_(std::move(key)) {}
  void load_or_create(std::function<void(msiv2::result<key_ref>)> done) override { done(key_); }
  void rotate(std::string, std::function<void(msiv2::result<key_ref>)> done) override { done(key_); }

private:
  key_ref key_;
};

/// Percentile q of `v` (sorted in place), in seconds.
double percentile_s(std::vector<std::int64_t>& v, double q) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  return static_cast<double>(v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1))])
         / 1000.0;
}

std::size_t in_window(const std::vector<std::int64_t>& v, std::int64_t from, std::int64_t to) {
  return static_cast<std::size_t>(
    std::count_if(v.begin(), v.end(), [&](std::int64_t t) { return t >= from && t < to; }));
}

double calls_between(const result& r, service s, std::int64_t from_ms, std::int64_t to_ms) {
  auto& v = r.per_second[static_cast<std::size_t>(s)];
  double n = 0;
  for (auto i = static_cast<std::size_t>(from_ms / 1000);
       i < v.size() && static_cast<std::int64_t>(i) < to_ms / 1000; ++i)
    n += v[i];
  return n;
}

check_row count_row(std::string what, double module, double model) {
  check_row r{std::move(what), module, model, "within 3 or 2 %", false};
  r.ok = std::fabs(module - model) <= std::max(3.0, 0.02 * model);
  return r;
}

check_row seconds_row(std::string what, double module, double model, double tol_s) {
  check_row r{std::move(what), module, model, "within " + std::to_string(static_cast<int>(tol_s))
                                                + " s",
              false};
  r.ok = std::fabs(module - model) <= tol_s;
  return r;
}

/// The actor system of the check: CAF's test scheduler, quiet.
struct check_system_config : caf::actor_system_config {
  check_system_config() {
    set("scheduler.policy", caf::atom("testing"));
    set("logger.file-verbosity", caf::atom("quiet"));
    set("logger.console-verbosity", caf::atom("quiet"));
  }
};

} // namespace

check_result check_against_module(const check_params& p) {
  check_result out;
  if (p.scen != scenario::steady && p.scen != scenario::token_outage) {
    out.error = "the module check runs the steady and token-outage scenarios";
    return out;
  }
  if (p.request_interval_ms <= 0 || p.request_interval_ms >= rules::token_idle_window_ms()) {
    // The modules would let such tokens lapse unrenewed (module_config::token_idle_window);
    // the model asks for every token often and does not apply the idle window.
    out.error = "the request interval (" + std::to_string(p.request_interval_ms)
                + " ms) must be positive and shorter than the module's token idle window ("
                + std::to_string(rules::token_idle_window_ms()) + " ms)";
    return out;
  }
  // The same VMs for both: boot times (over the past week) and clock offsets.
  std::mt19937_64 gen(p.seed);
  std::uniform_int_distribution<std::int64_t> boot_dist(-7 * day_ms, -1);
  std::uniform_int_distribution<std::int64_t> offset_dist(-p.clock_offset_ms, p.clock_offset_ms);
  std::vector<std::int64_t> boots(p.vms), offsets(p.vms);
  for (std::uint32_t i = 0; i < p.vms; ++i) {
    boots[i] = boot_dist(gen);
    offsets[i] = p.clock_offset_ms > 0 ? offset_dist(gen) : 0;
  }

  params mp;
  mp.vms = p.vms;
  mp.processes = 1;
  mp.resources = p.resources;
  mp.days = p.days;
  mp.attested = false;
  mp.start_spread_ms = 0;
  mp.request_interval_ms = p.request_interval_ms;
  mp.imds_latency_ms = mp.issue_latency_ms = mp.token_latency_ms = 0;
  mp.attestation_latency_ms = 0;
  mp.seed = p.seed;
  mp.boot_times_ms = boots;
  auto model = simulate(mp, policy::msiv2, p.scen, key_mode::per_boot);
  out.model_seconds = model.wall_seconds;

  auto began = std::chrono::steady_clock::now();
  char tmpl[] = "/tmp/msiv2-fleet-XXXXXX";
  if (!::mkdtemp(tmpl)) {
    out.error = "cannot create a temporary directory for the simulator's state";
    return out;
  }
  std::string state_dir = tmpl;
  struct remove_dir {
    std::string path;
    ~remove_dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  } cleanup{state_dir};

  check_system_config cfg;
  caf::actor_system sys{cfg};
  auto& sched = dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
  const auto origin = sched.clock().now();
  const std::int64_t sim_start = -7 * day_ms - 2 * minute_ms; // window ms at virtual time 0
  const std::int64_t end = static_cast<std::int64_t>(p.days) * day_ms;
  auto window_now = [&sched, origin, sim_start] {
    return sim_start
           + std::chrono::duration_cast<std::chrono::milliseconds>(sched.clock().now() - origin)
               .count();
  };

  sim::config sc;
  sc.cert_lifetime = std::chrono::seconds(mp.cert_life_ms / 1000);
  sc.token_lifetime = std::chrono::seconds(mp.token_life_ms / 1000);
  sc.refresh_in = std::chrono::seconds(mp.token_refresh_in_ms / 1000);
  sc.attestation = sim::attestation_policy::off;
  auto pki = sim::authority::create(sc, state_dir,
                                    [&] { return (window_unix_ms + window_now()) / 1000; });
  if (!pki) {
    out.error = "simulator authority: " + pki.error();
    return out;
  }
  (*pki)->set_urls({attestation_url, token_url});
  sim::imds_service imds(sc, **pki, attestation_url);

  std::vector<key_ref> pool;
  for (int i = 0; i < 4; ++i) {
    auto key = platform::generate_rsa_key(2048);
    if (!key) {
      out.error = "key generation: " + key.error();
      return out;
    }
    auto ref = software_key_ref(std::move(*key));
    if (!ref) {
      out.error = ref.error();
      return out;
    }
    pool.push_back(std::move(*ref));
  }

  std::int64_t outage_from = p.scen == scenario::token_outage ? mp.fault_start_ms : end;
  std::int64_t outage_to = p.scen == scenario::token_outage ? mp.fault_start_ms + mp.outage_ms
                                                           : end;
  ledger book;
  auto requests_ok = std::make_shared<std::uint64_t>(0);
  auto requests_failed = std::make_shared<std::uint64_t>(0);
  std::vector<std::uint32_t> order(p.vms);
  for (std::uint32_t i = 0; i < p.vms; ++i)
    order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](std::uint32_t a, std::uint32_t b) { return boots[a] < boots[b]; });
  std::vector<module> modules;
  std::vector<caf::actor> demanders;
  modules.reserve(p.vms);
  std::size_t next_boot = 0;
  auto advance_to = [&](std::int64_t t) {
    auto now = window_now();
    if (t > now)
      sched.clock().advance_time(std::chrono::milliseconds(t - now));
    sched.run();
  };
  for (;;) {
    std::int64_t next = end;
    if (next_boot < order.size())
      next = std::min(next, boots[order[next_boot]]);
    const auto& pending = sched.clock().schedule();
    if (!pending.empty())
      next = std::min(
        next, sim_start
                + std::chrono::duration_cast<std::chrono::milliseconds>(pending.begin()->first
                                                                        - origin)
                    .count());
    if (next >= end)
      break;
    advance_to(next);
    while (next_boot < order.size() && boots[order[next_boot]] <= window_now()) {
      auto vm = order[next_boot++];
      runtime_deps deps;
      deps.config.imds_base_url = imds_url;
      deps.config.trust_hosts(io::loopback_hosts()); // token_url and attestation_url
      deps.transport = std::make_shared<sim_link>(vm, imds, **pki, sc.imds_server_header,
                                                  window_now, outage_from, outage_to, book);
      deps.wall = std::make_shared<platform::derived_wall_clock>(
        window_unix_ms + window_now() + offsets[vm], [&sched] { return sched.clock().now(); });
      auto vm_rng = std::make_shared<std::mt19937_64>(p.seed * 1000003 + vm);
      deps.draw = [vm_rng](std::int64_t lo, std::int64_t hi) {
        return std::uniform_int_distribution<std::int64_t>(lo, hi)(*vm_rng);
      };
      deps.keys = std::make_shared<pooled_key_store>(pool[vm % pool.size()]);
      deps.log = platform::null_log_sink();
      deps.stats = std::make_shared<stats_registry>();
      modules.push_back(module::start(sys, std::move(deps)));
      auto service = modules.back().service();
      auto resources = p.resources;
      auto interval = std::chrono::milliseconds(p.request_interval_ms);
      demanders.push_back(sys.spawn(
        // The unused int works around CAF 0.17's init_fun_factory, which
        // dereferences a null argument tuple when a function actor takes none
        // (UBSan: reference binding to null pointer).
        [=](caf::event_based_actor* self, int) -> caf::behavior {
          auto ask = [=] {
            for (std::uint32_t r = 0; r < resources; ++r) {
              token_request req;
              req.resource = "https://fleet-resource-" + std::to_string(r) + ".example";
              req.timeout = std::chrono::minutes(5);
              self->request(service, caf::infinite, std::move(req))
                .then([=](const token_result&) { ++*requests_ok; },
                      [=](const caf::error&) { ++*requests_failed; });
            }
            self->delayed_send(self, interval, caf::tick_atom::value);
          };
          ask();
          return {[=](caf::tick_atom) { ask(); }};
        },
        0));
    }
  }
  for (auto& d : demanders)
    caf::anon_send_exit(d, caf::exit_reason::user_shutdown);
  for (auto& m : modules)
    m.stop();
  sched.run();
  modules.clear();
  sched.run();
  out.module_seconds =
    std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
  out.module_requests = *requests_ok + *requests_failed;

  // --- compare -------------------------------------------------------------------------------
  auto& rows = out.rows;
  auto outside = [&](const std::vector<std::int64_t>& v) {
    return in_window(v, 0, end) - in_window(v, outage_from, outage_to);
  };
  rows.push_back(count_row("issuecredential calls that issued", in_window(book.issue_ok, 0, end),
                           static_cast<double>(model.issuances)));
  auto model_token = static_cast<double>(model.totals[static_cast<std::size_t>(service::token)]);
  auto model_token_fault = calls_between(model, service::token, outage_from, outage_to);
  rows.push_back(count_row(p.scen == scenario::token_outage
                             ? "token endpoint calls outside the outage"
                             : "token endpoint calls",
                           outside(book.token_calls), model_token - model_token_fault));
  rows.push_back(count_row(p.scen == scenario::token_outage ? "IMDS calls outside the outage"
                                                            : "IMDS calls",
                           outside(book.imds_calls),
                           static_cast<double>(model.imds_total - model.imds_in_fault)));
  if (p.scen == scenario::token_outage) {
    // Which tokens fall due inside 30 minutes is chance (their renewal times random-walk by
    // the jitter for days), so the outage is compared per token caught in it: the retry
    // schedule's calls. How many calls a token makes depends on how long before the outage's
    // end it was caught (a full-jitter backoff of ~31 s per attempt once it reached its cap),
    // and a few VMs catch a few tokens (2 to 4 here) at chance times: the model's figure is
    // therefore the mean over the model's tokens caught as long before the end as each of the
    // modules' tokens (its `neighbours` nearest in first-call time, from a run of the same
    // VMs' parameters over many VMs), not the mean over the model's own few caught tokens.
    std::map<std::pair<std::uint32_t, std::string>, std::pair<std::int64_t, std::uint32_t>>
      caught; // (VM, scope) -> (first call in the outage, calls in the outage)
    for (std::size_t i = 0; i < book.token_calls.size(); ++i) {
      auto t = book.token_calls[i];
      if (t < outage_from || t >= outage_to)
        continue;
      auto [at, added] = caught.try_emplace(book.token_callers[i], t, 0);
      ++at->second.second;
    }
    params ref = mp;
    ref.vms = reference_vms;
    ref.boot_times_ms.clear();
    auto reference = simulate(ref, policy::msiv2, p.scen, key_mode::per_boot);
    out.model_seconds += reference.wall_seconds;
    auto& pool = reference.fault_token_calls;
    std::sort(pool.begin(), pool.end(),
              [](const result::fault_token& a, const result::fault_token& b) {
                return a.first_ms < b.first_ms;
              });
    double module_calls = 0, model_calls = 0;
    bool enough = pool.size() >= neighbours;
    for (auto& [who, c] : caught) {
      module_calls += c.second;
      if (!enough)
        break;
      // The `neighbours` reference tokens nearest in first-call time (a window slid from the
      // insertion point towards the closer side).
      auto mid = static_cast<std::size_t>(
        std::lower_bound(pool.begin(), pool.end(), c.first,
                         [](const result::fault_token& a, std::int64_t t) { return a.first_ms < t; })
        - pool.begin());
      std::size_t lo = mid, hi = mid; // [lo, hi)
      while (hi - lo < neighbours) {
        bool left = lo > 0
                    && (hi == pool.size()
                        || c.first - pool[lo - 1].first_ms <= pool[hi].first_ms - c.first);
        if (left)
          --lo;
        else
          ++hi;
      }
      // Their median: a few of them (about 1 in 12 in this run) lost their token to a
      // certificate renewal of their VM during the outage and then called only at each
      // request, every 10 minutes (note_certificate; token_service's note_x5t does the same),
      // which the modules' few tokens are unlikely to meet. The median is what a token caught
      // this late typically does; the mean would mix that rarer case in.
      std::vector<std::uint32_t> calls;
      for (auto j = lo; j < hi; ++j)
        calls.push_back(pool[j].calls);
      std::nth_element(calls.begin(), calls.begin() + neighbours / 2, calls.end());
      model_calls += calls[neighbours / 2];
    }
    double n = static_cast<double>(caught.size());
    check_row r{"token calls per token caught in the outage (model: as late)",
                caught.empty() ? 0 : module_calls / n, caught.empty() ? 0 : model_calls / n,
                "within 15 %", false};
    r.ok = !caught.empty() && enough && std::fabs(r.module - r.model) <= 0.15 * r.model;
    rows.push_back(r);
  }
  // Renewal offsets: each successful call after the first, against the previous one's
  // nominal point (refresh_in, half-life).
  std::vector<std::int64_t> token_offsets, cert_offsets;
  for (auto& [key, times] : book.token_ok)
    for (std::size_t i = 1; i < times.size(); ++i)
      token_offsets.push_back(times[i] - (times[i - 1] + mp.token_refresh_in_ms));
  for (auto& [vm, times] : book.cert_ok)
    for (std::size_t i = 1; i < times.size(); ++i)
      cert_offsets.push_back(times[i] - (times[i - 1] + mp.cert_life_ms / 2));
  // Medians of two samples of a uniform +-J jitter differ by about 0.72 J sqrt(2 / n) (one
  // standard error): allow three, and never less than 30 s.
  auto median_tol = [](std::size_t n) {
    double j = 300.0;
    return std::max(30.0, 3 * 0.72 * j * std::sqrt(2.0 / static_cast<double>(std::max<std::size_t>(n, 1))));
  };
  rows.push_back(seconds_row("token renewal vs nominal, p50 (s)", percentile_s(token_offsets, 0.5),
                             model.token_renewal_offset.p50_s, median_tol(token_offsets.size())));
  if (p.scen == scenario::steady) // in the outage the tail is the outage's chance timing
    rows.push_back(seconds_row("token renewal vs nominal, p99.9 (s)",
                               percentile_s(token_offsets, 0.999),
                               model.token_renewal_offset.p999_s, 60));
  rows.push_back(seconds_row("certificate renewal vs nominal, p50 (s)",
                             percentile_s(cert_offsets, 0.5), model.cert_renewal_offset.p50_s,
                             median_tol(cert_offsets.size())));
  double served = out.module_requests
                    ? static_cast<double>(*requests_ok) / static_cast<double>(out.module_requests)
                    : 0;
  check_row s{"token requests answered with a token", served, model.served_from_cache,
              "within 0.1 %", std::fabs(served - model.served_from_cache) <= 0.001};
  rows.push_back(s);
  out.agree = std::all_of(rows.begin(), rows.end(), [](const check_row& r) { return r.ok; });
  return out;
}

void print_check(std::ostream& out, const check_params& p, const check_result& r) {
  if (!r.error.empty()) {
    out << "module check: " << r.error << "\n";
    return;
  }
  out << "model vs module: " << p.vms << " VMs x 1 process x " << p.resources << " tokens, "
      << p.days << " days, " << to_string(p.scen) << "; " << r.module_requests
      << " token requests to the real modules (" << r.module_seconds << " s), model "
      << r.model_seconds << " s\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-44s %12s %12s  %-16s %s\n", "figure", "module", "model",
                "tolerance", "");
  out << line;
  for (auto& row : r.rows) {
    std::snprintf(line, sizeof line, "%-44s %12.2f %12.2f  %-16s %s\n", row.what.c_str(),
                  row.module, row.model, row.tolerance.c_str(), row.ok ? "ok" : "DIFFERS");
    out << line;
  }
  out << (r.agree ? "AGREE" : "DISAGREE") << "\n";
}

} // namespace msiv2::fleet
