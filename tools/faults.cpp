// msiv2-faults: the fault matrix as one command (issue 13). Every cell is one upstream
// (IMDS getplatformmetadata, issuecredential, attestation, token endpoint) x one fault the
// simulator injects x one state of the client (cold: nothing cached; warm: every artifact
// cached, then left to come due for renewal under the fault). The real module (msiv2::client,
// curl transport, keyguard attestation) runs against msiv2-sim on 127.0.0.1, and each cell is
// judged on four things:
//   deadline  every request answered by its deadline (plus a grace for a loaded machine)
//   outcome   a token, or an error code documented for that upstream (messages/errors.hpp)
//   served    warm: every request made while the last token handed out was still usable
//             got a token (goal 100 %)
//   calls     requests that reached the faulted upstream stay within what the retry
//             schedules of io/retry allow (no retry storm)
// It prints a table (or markdown) and writes JSON; the exit status is 1 when any cell failed.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "actors/client.hpp"
#include "actors/keyguard_attestation.hpp"
#include "actors/software_key_store.hpp"
#include "io/curl_transport.hpp"
#include "io/endpoint_trust.hpp"
#include "messages/errors.hpp"
#include "platform/encoding.hpp"
#include "tools/sim/server.hpp"

namespace {

using namespace msiv2;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

// -- the matrix --------------------------------------------------------------------------------

/// The upstreams, by the simulator's endpoint names.
const std::vector<std::string> all_upstreams = {"imds_metadata", "imds_issue", "attestation",
                                                "token"};
/// The faults.
const std::vector<std::string> all_faults = {"5xx",       "429",       "410",      "latency",
                                             "reset",     "malformed", "truncated", "no_server"};
const std::vector<std::string> all_states = {"cold", "warm"};

struct settings {
  milliseconds deadline{2000};  ///< every request's timeout
  milliseconds grace{1000};     ///< lateness tolerated on a loaded machine
  milliseconds warm_window{5000}; ///< how long a warm cell keeps asking
  milliseconds warm_period{250};  ///< between two requests of a warm cell
  int cold_requests = 3;
  int jobs = 4;
  std::vector<std::string> upstreams = all_upstreams;
  std::vector<std::string> faults = all_faults;
  std::vector<std::string> states = all_states;
  std::string json_path;
  bool markdown = false;
};

/// The simulator's lifetimes for the matrix: short, so that a warm cell sees every artifact
/// come due within a few seconds (token at ~2 s, certificate and attestation at ~3 s).
constexpr int token_lifetime_s = 4;
constexpr int cert_lifetime_s = 6;
constexpr int attestation_lifetime_s = 6;

sim::fault_spec fault_of(const std::string& fault, const settings& s) {
  sim::fault_spec f;
  f.count = -1;
  if (fault == "5xx" || fault == "429" || fault == "410") {
    f.probability = 1.0;
    f.probability_status = fault == "5xx" ? 503 : std::stoi(fault);
    if (fault == "429")
      f.retry_after = 1;
  } else if (fault == "latency") {
    f.latency = s.deadline + 1500ms;
  } else if (fault == "reset") {
    f.reset = true;
  } else if (fault == "malformed") {
    f.body = sim::body_fault::malformed;
  } else if (fault == "truncated") {
    f.body = sim::body_fault::truncated;
  } else if (fault == "no_server") {
    f.drop_server_header = true;
  }
  return f;
}

/// Error codes a request may end with when `upstream` fails (messages/errors.hpp: each leg
/// keeps its own code; deadlines, the network and throttling have theirs).
std::set<error_code> documented_errors(const std::string& upstream) {
  std::set<error_code> common = {error_code::deadline_exceeded, error_code::transport_failed,
                                 error_code::throttled};
  if (upstream == "imds_metadata") {
    // The probe asks the same path: a failing IMDS can also mean "no IMDS here".
    common.insert({error_code::metadata_failed, error_code::imds_unavailable});
  } else if (upstream == "imds_issue") {
    common.insert(error_code::issuance_refused);
  } else if (upstream == "attestation") {
    common.insert({error_code::attestation_failed, error_code::issuance_refused});
  } else {
    common.insert({error_code::token_refused, error_code::invalid_response});
  }
  return common;
}

/// Whether a request must end with a token (the fault does not touch what the client
/// checks), or must fail (the client must refuse what the fault does), or either.
enum class expect { token, error, either };

expect expectation(const std::string& upstream, const std::string& fault) {
  if (fault == "no_server")
    // Only getplatformmetadata's answer must name IMDS in its Server header (protocol.md §2).
    return upstream == "imds_metadata" ? expect::error : expect::token;
  return expect::either;
}

/// The most requests one acquisition may send to `upstream` under io/retry's schedules: IMDS
/// 1 + 3 retries (1 + 7 after a first 410), attestation 1 + 6 retries plus the one fresh
/// attempt after an unusable answer, token endpoint 1 + 1 retry, doubled by one remediation
/// (re-mint and retry). The probe is one more IMDS acquisition.
int attempts_per_acquisition(const std::string& upstream, const std::string& fault) {
  if (upstream == "imds_metadata" || upstream == "imds_issue")
    return fault == "410" ? 8 : 4;
  if (upstream == "attestation")
    return 8;
  return 4;
}

// -- one cell ----------------------------------------------------------------------------------

struct outcome {
  milliseconds at{0};       ///< sent, since the cell started
  milliseconds elapsed{0};  ///< until answered
  error_code code = error_code::none;
  std::string error;        ///< rendered error (empty for a token)
  std::int64_t sent_wall_ms = 0; ///< Unix ms when sent
  std::int64_t done_wall_ms = 0; ///< Unix ms when answered
  std::int64_t expires_on = 0;   ///< the token's (Unix s)
};

std::int64_t wall_ms() {
  return std::chrono::duration_cast<milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

struct cell_result {
  std::string upstream, fault, state;
  int requests = 0;
  int tokens = 0;
  std::map<std::string, int> errors; ///< code name -> count
  milliseconds worst_late{0};        ///< max(elapsed - deadline), 0 when none was late
  int covered = 0;
  int covered_served = 0;
  std::uint64_t calls = 0;           ///< requests that reached the faulted upstream
  std::uint64_t calls_bound = 0;
  std::vector<std::string> failures; ///< why the cell failed (empty: PASS)
  /// Why the cell's first run failed when a second run passed (timing-judged cells on a loaded
  /// machine: reported, never hidden; a cell fails only when both runs fail).
  std::vector<std::string> first_run_failures;
  double seconds = 0;
};

/// Collects asynchronous answers.
class collector {
public:
  void add(std::size_t i, outcome o) {
    std::lock_guard<std::mutex> lock(m_);
    done_[i] = std::move(o);
    cv_.notify_all();
  }
  /// Waits until `n` answers came, or `limit` passed; the answers so far.
  std::map<std::size_t, outcome> wait(std::size_t n, milliseconds limit) {
    std::unique_lock<std::mutex> lock(m_);
    cv_.wait_for(lock, limit, [&] { return done_.size() >= n; });
    return done_;
  }

private:
  std::mutex m_;
  std::condition_variable cv_;
  std::map<std::size_t, outcome> done_;
};

token_request request_for(const std::string& resource, milliseconds deadline) {
  token_request r;
  r.identity = managed_identity::system();
  r.resource = resource;
  r.type = token_type::mtls_pop;
  r.timeout = deadline;
  return r;
}

/// Sends one request; its outcome goes to `into` under index `i`.
void ask(msiv2::client& c, const std::string& resource, const settings& s, steady::time_point t0,
         std::size_t i, collector& into) {
  auto sent = steady::now();
  auto sent_wall = wall_ms();
  c.get_token(request_for(resource, s.deadline), [&into, i, sent, sent_wall, t0](token_outcome t) {
    outcome o;
    o.at = std::chrono::duration_cast<milliseconds>(sent - t0);
    o.sent_wall_ms = sent_wall;
    o.done_wall_ms = wall_ms();
    o.elapsed = std::chrono::duration_cast<milliseconds>(steady::now() - sent);
    if (t) {
      o.expires_on = t->expires_on;
    } else {
      o.code = describe(t.error()).code;
      o.error = render(t.error());
    }
    into.add(i, std::move(o));
  });
}

/// One worker: a simulator of its own and a key store shared by its clients (the binding key
/// is the per-boot key every later process finds; certificates, attestations and tokens are
/// never shared between cells).
class worker {
public:
  explicit worker(const settings& s) : s_(s) {
    char dir[] = "/tmp/msiv2-faults-XXXXXX";
    if (::mkdtemp(dir) == nullptr)
      throw std::runtime_error("cannot create a temporary directory");
    dir_ = dir;
    sim::config cfg;
    cfg.threads = 1;
    cfg.state_dir = dir_ + "/sim";
    cfg.attestation = sim::attestation_policy::required;
    cfg.token_lifetime = std::chrono::seconds(token_lifetime_s);
    cfg.cert_lifetime = std::chrono::seconds(cert_lifetime_s);
    cfg.attestation_lifetime = std::chrono::seconds(attestation_lifetime_s);
    auto started = sim::simulator::start(cfg);
    if (!started)
      throw std::runtime_error("simulator: " + started.error());
    sim_ = std::move(*started);
    keys_ = std::make_shared<software_key_store>();
  }
  ~worker() {
    sim_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  cell_result run(const std::string& upstream, const std::string& fault, const std::string& state);

private:
  std::unique_ptr<msiv2::client> make_client() {
    auto t = io::curl_transport::create();
    if (!t)
      throw std::runtime_error("curl_transport: " + t.error());
    std::shared_ptr<io::transport> transport(std::move(*t));
    client_options o;
    o.config = module_config{};
    o.config.imds_base_url = sim_->urls().imds;
    o.config.ca_file = sim_->urls().ca_file;
    o.config.trust_hosts(io::loopback_hosts()); // the simulator's token and attestation endpoints
    o.config.eager_key = true;
    o.keys = keys_;
    o.transport = transport;
    o.attestation = std::make_shared<keyguard_attestation>(transport, sim_->urls().ca_file);
    o.threads = 1;
    auto c = msiv2::client::create(std::move(o));
    if (!c)
      throw std::runtime_error("client: " + c.error());
    transports_.push_back(transport);
    return std::move(*c);
  }

  const settings& s_;
  std::string dir_;
  std::unique_ptr<sim::simulator> sim_;
  std::shared_ptr<key_store> keys_;
  std::vector<std::shared_ptr<io::transport>> transports_;
};

cell_result worker::run(const std::string& upstream, const std::string& fault,
                        const std::string& state) {
  cell_result res;
  res.upstream = upstream;
  res.fault = fault;
  res.state = state;
  const auto cell_start = steady::now();
  sim_->reset();
  auto c = make_client();
  const bool warm = state == "warm";
  std::int64_t last_expires_on = 0;
  if (warm) {
    // Every artifact cached: probe, key, attestation, certificate and a token.
    auto t = c->get_token_blocking(request_for("https://management.azure.com", 20s));
    if (!t) {
      res.failures.push_back("warm-up failed: " + render(t.error()));
      return res;
    }
    last_expires_on = t->expires_on;
  }
  const auto before = sim_->count(upstream);
  const auto issued_before = sim_->count("imds_issue");
  if (auto set = sim_->set_fault(upstream, fault_of(fault, s_)); !set) {
    res.failures.push_back("set_fault: " + set.error());
    return res;
  }
  const auto t0 = steady::now();
  collector answers;
  std::size_t sent = 0;
  if (!warm) {
    // Two identical requests (one flight) and one for another resource, at once.
    for (int i = 0; i < s_.cold_requests; ++i)
      ask(*c, i == s_.cold_requests - 1 ? "https://vault.azure.net" : "https://management.azure.com",
          s_, t0, sent++, answers);
  } else {
    // One request per period while the renewals come due and fail (or not) under the fault.
    while (steady::now() - t0 < s_.warm_window) {
      ask(*c, "https://management.azure.com", s_, t0, sent++, answers);
      std::this_thread::sleep_for(s_.warm_period);
    }
  }
  auto got = answers.wait(sent, s_.deadline + s_.grace + 2s);
  res.requests = static_cast<int>(sent);
  // Upstream calls counted once every answer is in (the client gives up at its deadline;
  // the simulator counts a delayed answer when it is sent, so wait that out too).
  if (fault == "latency")
    std::this_thread::sleep_for(1500ms);
  res.calls = sim_->count(upstream) - before;
  const auto issued_after = sim_->count("imds_issue");
  c.reset(); // stops the module; a hang here would show in the cell's time
  for (auto& t : transports_)
    t->shutdown();
  transports_.clear();

  if (got.size() < sent)
    res.failures.push_back(std::to_string(sent - got.size()) + " request(s) never answered");
  const auto allowed = documented_errors(upstream);
  const auto want = expectation(upstream, fault);
  // Requests in the order they were sent, to follow which token was current.
  for (auto& [i, o] : got) {
    (void)i;
    if (o.elapsed > s_.deadline)
      res.worst_late = std::max(res.worst_late, o.elapsed - s_.deadline);
    if (o.code == error_code::none) {
      ++res.tokens;
    } else {
      ++res.errors[to_string(o.code)];
      if (allowed.count(o.code) == 0)
        res.failures.push_back("undocumented error for " + upstream + ": " + o.error);
    }
  }
  if (res.worst_late > s_.grace)
    res.failures.push_back("a request was answered " + std::to_string(res.worst_late.count()) +
                           " ms after its deadline");
  if (want == expect::token && res.tokens != static_cast<int>(got.size()))
    res.failures.push_back("the fault does not touch what the client checks, yet a request "
                           "failed");
  if (want == expect::error) {
    // Cold: nothing is cached, so a token means the refused answer was used. Warm: tokens
    // still valid (and renewals with the cached certificate) are served rightly; what must
    // not happen is the next leg going ahead on the refused answer (only getplatformmetadata
    // has a must-refuse fault: its answer must name IMDS, protocol.md §2).
    if (!warm && res.tokens > 0)
      res.failures.push_back("the client accepted an answer it must refuse");
    if (warm && issued_after > issued_before)
      res.failures.push_back("issuecredential was called " +
                             std::to_string(issued_after - issued_before) +
                             " time(s) after a getplatformmetadata answer the client must "
                             "refuse");
  }
  if (warm) {
    // Served while still valid: a request sent while the newest token handed out before it
    // (the warm-up's, or a later one) was usable must get a token. A token is usable until
    // its expiry minus a tenth of its lifetime (platform/lifecycle); expires_on is whole
    // seconds, so one more second of margin.
    const std::int64_t margin_ms = token_lifetime_s * 100 + 1000;
    for (auto& [i, o] : got) {
      std::int64_t newest = last_expires_on;
      for (auto& [j, other] : got)
        if (j != i && other.code == error_code::none && other.done_wall_ms <= o.sent_wall_ms)
          newest = std::max(newest, other.expires_on);
      if (o.sent_wall_ms < newest * 1000 - margin_ms) {
        ++res.covered;
        if (o.code == error_code::none)
          ++res.covered_served;
      }
    }
    if (res.covered_served < res.covered)
      res.failures.push_back(std::to_string(res.covered - res.covered_served) + " of " +
                             std::to_string(res.covered) +
                             " requests made while a token was still valid were not served");
  }

  // Calls within the retry schedules: each request may be its own acquisition, plus the
  // probe, plus (warm) one renewal attempt of each of the three artifacts per second.
  const int acquisitions = static_cast<int>(sent) + 1 +
    (warm ? 3 * static_cast<int>(s_.warm_window.count() / 1000 + 1) : 0);
  res.calls_bound = static_cast<std::uint64_t>(acquisitions) *
                    static_cast<std::uint64_t>(attempts_per_acquisition(upstream, fault));
  if (res.calls > res.calls_bound)
    res.failures.push_back(std::to_string(res.calls) + " calls to " + upstream +
                           " exceed the retry schedules' bound of " +
                           std::to_string(res.calls_bound));
  res.seconds = std::chrono::duration<double>(steady::now() - cell_start).count();
  return res;
}

} // namespace

namespace {

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty())
      out.push_back(item);
  return out;
}

void usage(std::FILE* to) {
  std::fprintf(to,
    "usage: msiv2-faults [options]\n"
    "  The fault matrix: upstream x fault x state against an in-process msiv2-sim on\n"
    "  127.0.0.1, with the real module. Exit 0 when every cell passes, 1 when one fails\n"
    "  (a cell that fails is run once more; it fails only when both runs fail),\n"
    "  2 on bad usage.\n"
    "  --upstreams LIST   imds_metadata,imds_issue,attestation,token (default: all)\n"
    "  --faults LIST      5xx,429,410,latency,reset,malformed,truncated,no_server (all)\n"
    "  --states LIST      cold,warm (default: both)\n"
    "  --deadline-ms N    every request's timeout (default 2000)\n"
    "  --grace-ms N       lateness tolerated past the deadline (default 1000)\n"
    "  --jobs N           cells run at once, each worker with its own simulator (default 4)\n"
    "  --json FILE        also write the results as JSON\n"
    "  --markdown         print the table as markdown\n");
}

bool known(const std::vector<std::string>& all, const std::vector<std::string>& picked) {
  return std::all_of(picked.begin(), picked.end(), [&](const std::string& p) {
    return std::find(all.begin(), all.end(), p) != all.end();
  });
}

std::string json_string(const std::string& s) {
  return platform::json_quote(s);
}

std::string to_json(const std::vector<cell_result>& cells, const settings& s, double seconds) {
  std::string out = "{\"deadline_ms\":" + std::to_string(s.deadline.count()) +
                    ",\"grace_ms\":" + std::to_string(s.grace.count()) +
                    ",\"seconds\":" + std::to_string(seconds) + ",\"cells\":[";
  for (std::size_t i = 0; i < cells.size(); ++i) {
    const auto& c = cells[i];
    out += i == 0 ? "{" : ",{";
    out += "\"upstream\":" + json_string(c.upstream) + ",\"fault\":" + json_string(c.fault) +
           ",\"state\":" + json_string(c.state) + ",\"requests\":" + std::to_string(c.requests) +
           ",\"tokens\":" + std::to_string(c.tokens) + ",\"errors\":{";
    bool first = true;
    for (const auto& [code, n] : c.errors) {
      out += (first ? "" : ",") + json_string(code) + ":" + std::to_string(n);
      first = false;
    }
    out += "},\"worst_late_ms\":" + std::to_string(c.worst_late.count()) +
           ",\"covered\":" + std::to_string(c.covered) +
           ",\"covered_served\":" + std::to_string(c.covered_served) +
           ",\"calls\":" + std::to_string(c.calls) +
           ",\"calls_bound\":" + std::to_string(c.calls_bound) +
           ",\"seconds\":" + std::to_string(c.seconds) +
           ",\"pass\":" + (c.failures.empty() ? "true" : "false") + ",\"failures\":[";
    for (std::size_t f = 0; f < c.failures.size(); ++f)
      out += (f == 0 ? "" : ",") + json_string(c.failures[f]);
    out += "],\"first_run_failures\":[";
    for (std::size_t f = 0; f < c.first_run_failures.size(); ++f)
      out += (f == 0 ? "" : ",") + json_string(c.first_run_failures[f]);
    out += "]}";
  }
  return out + "]}\n";
}

std::string errors_text(const cell_result& c) {
  std::string out;
  for (const auto& [code, n] : c.errors)
    out += (out.empty() ? "" : " ") + code + "x" + std::to_string(n);
  return out.empty() ? "-" : out;
}

void print_table(const std::vector<cell_result>& cells, bool markdown) {
  if (markdown) {
    std::printf("| upstream | fault | state | tokens | errors | late | served | calls | result |\n"
                "|---|---|---|---|---|---|---|---|---|\n");
  } else {
    std::printf("%-13s %-9s %-4s %7s %-34s %6s %7s %9s %s\n", "upstream", "fault", "state",
                "tokens", "errors", "late", "served", "calls", "result");
  }
  for (const auto& c : cells) {
    const std::string tokens = std::to_string(c.tokens) + "/" + std::to_string(c.requests);
    const std::string late = c.worst_late.count() > 0 ? std::to_string(c.worst_late.count()) + "ms" : "-";
    const std::string served = c.state == "warm" ? std::to_string(c.covered_served) + "/" +
                                                     std::to_string(c.covered)
                                                 : "-";
    const std::string calls = std::to_string(c.calls) + "<=" + std::to_string(c.calls_bound);
    const std::string result =
      !c.failures.empty() ? "FAIL" : c.first_run_failures.empty() ? "PASS" : "PASS (2nd run)";
    if (markdown)
      std::printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c.upstream.c_str(),
                  c.fault.c_str(), c.state.c_str(), tokens.c_str(), errors_text(c).c_str(),
                  late.c_str(), served.c_str(), calls.c_str(), result.c_str());
    else
      std::printf("%-13s %-9s %-4s %7s %-34s %6s %7s %9s %s\n", c.upstream.c_str(),
                  c.fault.c_str(), c.state.c_str(), tokens.c_str(), errors_text(c).c_str(),
                  late.c_str(), served.c_str(), calls.c_str(), result.c_str());
  }
  for (const auto& c : cells)
    for (const auto& f : c.first_run_failures)
      std::printf("FIRST RUN FAILED %s/%s/%s: %s\n", c.upstream.c_str(), c.fault.c_str(),
                  c.state.c_str(), f.c_str());
  for (const auto& c : cells)
    for (const auto& f : c.failures)
      std::printf("FAIL %s/%s/%s: %s\n", c.upstream.c_str(), c.fault.c_str(), c.state.c_str(),
                  f.c_str());
}

} // namespace

int main(int argc, char** argv) {
  settings s;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "msiv2-faults: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    auto number = [&](int lo, int hi) {
      auto v = value();
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || n < lo || n > hi) {
        std::fprintf(stderr, "msiv2-faults: %s must be an integer from %d to %d\n", a.c_str(),
                     lo, hi);
        std::exit(2);
      }
      return static_cast<int>(n);
    };
    if (a == "--upstreams") {
      s.upstreams = split_list(value());
    } else if (a == "--faults") {
      s.faults = split_list(value());
    } else if (a == "--states") {
      s.states = split_list(value());
    } else if (a == "--deadline-ms") {
      s.deadline = milliseconds(number(200, 60000));
    } else if (a == "--grace-ms") {
      s.grace = milliseconds(number(0, 60000));
    } else if (a == "--jobs") {
      s.jobs = number(1, 64);
    } else if (a == "--json") {
      s.json_path = value();
    } else if (a == "--markdown") {
      s.markdown = true;
    } else if (a == "-h" || a == "--help") {
      usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "msiv2-faults: unknown argument '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  if (!known(all_upstreams, s.upstreams) || !known(all_faults, s.faults) ||
      !known(all_states, s.states) || s.upstreams.empty() || s.faults.empty() ||
      s.states.empty()) {
    std::fprintf(stderr, "msiv2-faults: unknown or empty upstream, fault or state (try --help)\n");
    return 2;
  }

  struct cell_key {
    std::string upstream, fault, state;
  };
  std::vector<cell_key> todo;
  for (const auto& st : s.states)
    for (const auto& u : s.upstreams)
      for (const auto& f : s.faults)
        todo.push_back({u, f, st});
  std::vector<cell_result> results(todo.size());
  std::atomic<std::size_t> next{0};
  std::mutex print_mutex;
  const auto t0 = steady::now();
  auto work = [&] {
    std::unique_ptr<worker> w;
    for (std::size_t i; (i = next++) < todo.size();) {
      const auto& k = todo[i];
      try {
        if (!w)
          w = std::make_unique<worker>(s);
        results[i] = w->run(k.upstream, k.fault, k.state);
        if (!results[i].failures.empty()) {
          // Once more, from a fresh client: a cell fails only when it fails twice.
          auto first = std::move(results[i].failures);
          results[i] = w->run(k.upstream, k.fault, k.state);
          results[i].first_run_failures = std::move(first);
        }
      } catch (const std::exception& e) {
        results[i] = cell_result{};
        results[i].upstream = k.upstream;
        results[i].fault = k.fault;
        results[i].state = k.state;
        results[i].failures.push_back(std::string("could not run: ") + e.what());
      }
      std::lock_guard<std::mutex> lock(print_mutex);
      std::fprintf(stderr, "msiv2-faults: %s/%s/%s %s (%.1f s)\n", k.upstream.c_str(),
                   k.fault.c_str(), k.state.c_str(),
                   results[i].failures.empty() ? "PASS" : "FAIL", results[i].seconds);
    }
  };
  std::vector<std::thread> threads;
  const int jobs = std::min<int>(s.jobs, static_cast<int>(todo.size()));
  for (int j = 0; j < jobs; ++j)
    threads.emplace_back(work);
  for (auto& t : threads)
    t.join();
  const double seconds = std::chrono::duration<double>(steady::now() - t0).count();

  print_table(results, s.markdown);
  int failed = 0;
  int second_run = 0;
  for (const auto& r : results) {
    failed += r.failures.empty() ? 0 : 1;
    second_run += r.failures.empty() && !r.first_run_failures.empty() ? 1 : 0;
  }
  std::printf("%zu cells, %d failed, %d passed on a second run, %.0f s (deadline %lld ms, grace %lld ms, %d jobs)\n",
              results.size(), failed, second_run, seconds, static_cast<long long>(s.deadline.count()),
              static_cast<long long>(s.grace.count()), jobs);
  if (!s.json_path.empty()) {
    std::ofstream out(s.json_path);
    out << to_json(results, s, seconds);
    if (!out) {
      std::fprintf(stderr, "msiv2-faults: cannot write %s\n", s.json_path.c_str());
      return 2;
    }
  }
  return failed == 0 ? 0 : 1;
}
