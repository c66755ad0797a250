// Issue 5 with real processes: several msiv2-token processes share one cache directory (binding
// key, certificates, attestation tokens) against one in-process simulator, whose counters are
// the judge. Every process gets its own arguments (--cache-dir, --boot-id-file), so no test
// touches ~/.cache or the machine's boot id.

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <simdjson.h>

#include "platform/files.hpp"
#include "tests/support/child_process.hpp"
#include "tests/support/sim_fixture.hpp"
#include "tests/support/temp_dir.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using msiv2::test::child_process;
using msiv2::test::sim_fixture;
using steady = std::chrono::steady_clock;

const std::string arm = "https://management.azure.com";

/// One machine as the processes see it: a cache directory and a boot id file.
struct machine : msiv2::test::machine_dir {
  machine() : machine_dir("multiproc", "2d5b3c1e-0000-4000-8000-000000000001") {}
};

/// The arguments of one msiv2-token process on `m` against `f`.
std::vector<std::string> token_args(sim_fixture& f, const machine& m,
                                    std::vector<std::string> extra = {}) {
  std::vector<std::string> args{MSIV2_TOKEN_BINARY, "--imds",        f.urls().imds,
                                "--ca-file",        f.urls().ca_file, "--timeout",
                                "40",               "--cache-dir",   m.cache,
                                "--boot-id-file",   m.boot_id_file,  "--resource",
                                arm,                "--json",        "--trust-host",
                                "127.0.0.1",        "--persist-key"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

/// One token line of --json output.
struct token_line {
  std::string source, x5t, error;
  int call_status = 0;
};

std::vector<token_line> parse_lines(const std::string& out) {
  std::vector<token_line> lines;
  simdjson::dom::parser parser;
  std::size_t pos = 0;
  while (pos < out.size()) {
    auto nl = out.find('\n', pos);
    if (nl == std::string::npos)
      nl = out.size();
    std::string text = out.substr(pos, nl - pos);
    pos = nl + 1;
    if (text.empty())
      continue;
    simdjson::padded_string padded(text);
    simdjson::dom::element doc;
    token_line line;
    if (parser.parse(padded).get(doc)) {
      line.error = "not JSON: " + text;
    } else {
      std::string_view v;
      if (!doc["source"].get(v))
        line.source = std::string(v);
      if (!doc["x5t"].get(v))
        line.x5t = std::string(v);
      if (!doc["error"].get(v))
        line.error = std::string(v);
      std::int64_t status = 0;
      if (!doc["call"]["status"].get(status))
        line.call_status = static_cast<int>(status);
    }
    lines.push_back(std::move(line));
  }
  return lines;
}

/// Runs one process to completion and returns its single token line (checked).
token_line run_one(sim_fixture& f, const machine& m, std::vector<std::string> extra = {},
                   std::string* err = nullptr) {
  child_process p(token_args(f, m, std::move(extra)));
  int code = p.wait(60s);
  if (err)
    *err = p.err();
  BOOST_TEST_REQUIRE(code == 0, "exit " << code << ", out: " << p.out() << ", err: " << p.err());
  auto lines = parse_lines(p.out());
  BOOST_TEST_REQUIRE(lines.size() == 1u, p.out());
  BOOST_TEST_REQUIRE(lines[0].error.empty(), lines[0].error);
  BOOST_TEST_REQUIRE(lines[0].x5t.size() == 43u, p.out());
  return lines[0];
}

/// Counter snapshot of the endpoints the tests look at.
struct counts {
  std::uint64_t metadata_200, metadata_all, issue_200, issue_all, token_200, attestation_200;
};

counts snapshot(sim_fixture& f) {
  auto& s = f.sim();
  return {s.count("imds_metadata", 200), s.count("imds_metadata"), s.count("imds_issue", 200),
          s.count("imds_issue"),         s.count("token", 200),    s.count("attestation", 200)};
}

} // namespace

BOOST_AUTO_TEST_SUITE(integration_multiprocess_test)

BOOST_AUTO_TEST_CASE(sixteen_processes_at_once_share_one_certificate) {
  sim_fixture f;
  machine m;
  std::vector<std::unique_ptr<child_process>> procs;
  for (int i = 0; i < 16; ++i)
    procs.push_back(std::make_unique<child_process>(token_args(f, m, {"--log-level", "info"})));
  std::set<std::string> x5ts;
  std::string logs;
  for (auto& p : procs) {
    int code = p->wait(90s);
    BOOST_TEST_REQUIRE(code == 0, "exit " << code << ", err: " << p->err());
    auto lines = parse_lines(p->out());
    BOOST_TEST_REQUIRE(lines.size() == 1u, p->out());
    BOOST_TEST_REQUIRE(lines[0].error.empty(), lines[0].error);
    x5ts.insert(lines[0].x5t);
    logs += "--- process " + lines[0].x5t + "\n" + p->err();
  }
  BOOST_TEST(x5ts.size() == 1u, x5ts.size() << " different certificates; logs:\n" << logs);
  BOOST_TEST(f.sim().count("imds_issue", 200) == 1u);
  BOOST_TEST(f.sim().count("imds_issue") == 1u);
  BOOST_TEST(f.sim().count("token", 200) == 16u); // access tokens are never shared
  BOOST_TEST(m.files("binding-key").size() == 1u);
  BOOST_TEST(m.files("cert-").size() == 1u);
}

BOOST_AUTO_TEST_CASE(sixteen_attesting_processes_attest_once) {
  sim_fixture f([](msiv2::sim::config& c) { c.attestation = msiv2::sim::attestation_policy::required; });
  machine m;
  std::vector<std::unique_ptr<child_process>> procs;
  for (int i = 0; i < 16; ++i)
    procs.push_back(std::make_unique<child_process>(token_args(f, m, {"--attest"})));
  std::set<std::string> x5ts;
  for (auto& p : procs) {
    int code = p->wait(90s);
    BOOST_TEST_REQUIRE(code == 0, "exit " << code << ", err: " << p->err());
    auto lines = parse_lines(p->out());
    BOOST_TEST_REQUIRE(lines.size() == 1u, p->out());
    x5ts.insert(lines[0].x5t);
  }
  BOOST_TEST(x5ts.size() == 1u);
  BOOST_TEST(f.sim().count("attestation") <= 1u);
  BOOST_TEST(f.sim().count("imds_issue", 200) == 1u);
  BOOST_TEST(f.sim().count("imds_issue") == 1u);
}

BOOST_AUTO_TEST_CASE(warm_restart_costs_one_metadata_call_and_one_token_call) {
  sim_fixture f;
  machine m;
  auto first = run_one(f, m, {"--call", f.urls().resource + "/api/whoami"});
  BOOST_TEST(first.source == "network");
  const auto before = snapshot(f);
  auto second = run_one(f, m, {"--call", f.urls().resource + "/api/whoami"});
  const auto after = snapshot(f);
  BOOST_TEST(second.x5t == first.x5t); // the persisted certificate, with the persisted key
  BOOST_TEST(second.call_status == 200);
  BOOST_TEST(after.metadata_200 - before.metadata_200 == 1u);
  BOOST_TEST(after.token_200 - before.token_200 == 1u);
  BOOST_TEST(after.issue_all - before.issue_all == 0u);
  // Nothing else reaches IMDS: the mtls_pop path has no probe (warm restart = metadata + token).
  BOOST_TEST(after.metadata_all - before.metadata_all == 1u);
}

BOOST_AUTO_TEST_CASE(eight_processes_through_five_renewal_periods_renew_once_per_period) {
  // Certificates live L = 8 s and are renewed at half-life with jitter of +-L/10, counted from
  // notBefore, which the simulator writes in whole seconds (up to 1 s before issuance): a
  // certificate is due 2.2 s to 4.8 s after it was issued. Access tokens live 4 s. Eight
  // processes ask every 500 ms for 20 s: about five renewal periods.
  constexpr int lifetime_s = 8;
  constexpr int asks = 41;
  sim_fixture f([&](msiv2::sim::config& c) {
    c.cert_lifetime = std::chrono::seconds(lifetime_s);
    c.token_lifetime = 4s;
  });
  machine m;
  std::vector<std::unique_ptr<child_process>> procs;
  for (int i = 0; i < 8; ++i)
    procs.push_back(std::make_unique<child_process>(token_args(
      f, m, {"--repeat", std::to_string(asks), "--interval-ms", "500", "--log-level", "warning"})));

  // Watch issuecredential while they run: when (wall time) each certificate was issued.
  const std::string last_line = "\"n\":" + std::to_string(asks - 1) + ",";
  std::vector<double> issued_at; // Unix seconds
  auto unix_now = [] {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
  };
  const auto started = steady::now();
  std::uint64_t seen = 0;
  std::vector<bool> finished(procs.size(), false);
  while (steady::now() - started < 60s) {
    for (auto n = f.sim().count("imds_issue", 200); seen < n; ++seen)
      issued_at.push_back(unix_now());
    bool running = false;
    for (std::size_t i = 0; i < procs.size(); ++i) {
      // Its last line; a process that failed earlier is caught by wait() below.
      if (!finished[i])
        finished[i] = procs[i]->read_until(last_line, 5ms);
      running = running || !finished[i];
    }
    if (!running)
      break;
    std::this_thread::sleep_for(10ms);
  }
  BOOST_TEST_REQUIRE(!issued_at.empty(), "no certificate was issued");
  const double ran_s = unix_now() - issued_at.front();
  std::set<std::string> x5ts;
  for (auto& p : procs) {
    int code = p->wait(30s);
    BOOST_TEST_REQUIRE(code == 0, "exit " << code << ", err: " << p->err());
    auto lines = parse_lines(p->out());
    BOOST_TEST_REQUIRE(lines.size() == static_cast<std::size_t>(asks), p->out());
    for (auto& l : lines) {
      BOOST_TEST_REQUIRE(l.error.empty(), l.error);
      x5ts.insert(l.x5t);
    }
  }
  const auto certs = f.sim().pki().issued();
  const auto issued = certs.size();
  BOOST_TEST_REQUIRE(issued == issued_at.size());
  BOOST_TEST_REQUIRE(issued == f.sim().count("imds_issue", 200));

  // Periods: the cold start's certificate, then one per renewal interval. Over `ran_s` that is
  // between 1 + ran_s / 4.8 and 1 + ran_s / 2.2; the +1 allows for the boundary (a renewal
  // falling right at the end of the run, after the processes' last ask).
  const auto fewest = 1 + static_cast<std::size_t>(ran_s / (0.6 * lifetime_s));
  const auto most = 1 + static_cast<std::size_t>(ran_s / (0.4 * lifetime_s - 1.0)) + 1;
  BOOST_TEST_MESSAGE(issued << " certificates in " << ran_s << " s (expected " << fewest
                            << " to " << most << "), " << x5ts.size()
                            << " bound to the tokens the processes got");
  BOOST_TEST(issued >= fewest - 1, "the certificates were not renewed through the run");
  BOOST_TEST(issued <= most, "more certificates than renewal periods");
  // One writer per period: each certificate was issued only once its predecessor was due.
  // Processes renewing on their own would each issue one within the jitter window (+-0.8 s),
  // the later ones while the first one's new certificate is still fresh.
  for (std::size_t i = 1; i < issued; ++i) {
    const double not_before = static_cast<double>(certs[i - 1].not_after - lifetime_s);
    const double due = not_before + 0.4 * lifetime_s;
    BOOST_TEST(issued_at[i] >= due - 0.05, "certificate " << i + 1 << " was issued "
                                                          << due - issued_at[i]
                                                          << " s before certificate " << i
                                                          << " was due");
  }
  BOOST_TEST(x5ts.size() >= issued - 1, "the processes did not move to the new certificates");
}

BOOST_AUTO_TEST_CASE(lock_holder_killed_mid_renewal_another_process_completes_within_2s) {
  sim_fixture f;
  machine m;
  // The first issuecredential takes 6 s: the process that sends it holds the certificate lock
  // all that time.
  msiv2::sim::fault_spec slow;
  slow.latency = 6000ms;
  slow.count = 1;
  BOOST_TEST_REQUIRE(f.sim().set_fault("imds_issue", slow).ok());

  child_process holder(token_args(f, m));
  // Wait until the holder has the certificate lock (a cert-*.lock that cannot be taken).
  const auto deadline = steady::now() + 15s;
  bool held = false;
  while (!held && steady::now() < deadline) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(m.cache + "/locks", ec)) {
      auto name = e.path().filename().string();
      if (name.rfind("cert-", 0) != 0)
        continue;
      auto attempt = msiv2::platform::file_lock::try_acquire(e.path().string());
      if (attempt.ok() && !attempt->has_value())
        held = true;
    }
    if (!held)
      std::this_thread::sleep_for(10ms);
  }
  BOOST_TEST_REQUIRE(held, "the first process never took a certificate lock; err: " << holder.err());

  child_process waiter(token_args(f, m));
  std::this_thread::sleep_for(1500ms); // it starts, loads the shared key, waits for the lock
  BOOST_TEST_REQUIRE(!waiter.read_until("\"x5t\"", 5ms), "the waiter did not wait: " << waiter.out());
  const auto killed_at = steady::now();
  holder.signal(SIGKILL);
  int code = waiter.wait(20s);
  const auto done_in = steady::now() - killed_at;
  BOOST_TEST_REQUIRE(code == 0, "exit " << code << ", err: " << waiter.err());
  BOOST_TEST(std::chrono::duration<double>(done_in).count() < 2.0,
             "the waiter needed " << std::chrono::duration<double>(done_in).count()
                                  << " s after the kill");
  auto lines = parse_lines(waiter.out());
  BOOST_TEST_REQUIRE(lines.size() == 1u);
  BOOST_TEST(lines[0].x5t.size() == 43u);
  BOOST_TEST(f.sim().count("imds_issue") <= 2u); // the killed one's, if answered, and the waiter's
}

namespace {

/// What a test does to the cache directory between a first and a second process.
struct damage {
  const char* what;
  std::function<void(machine&)> apply;
  bool root_only = false;
};

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void overwrite(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

/// The only file of the cache directory starting with `prefix` (checked).
std::string only_file(const machine& m, const std::string& prefix) {
  auto names = m.files(prefix);
  BOOST_TEST_REQUIRE(names.size() == 1u, names.size() << " files starting with " << prefix);
  return m.cache + "/" + names[0];
}

std::string replace_first(std::string s, const std::string& from, const std::string& to) {
  auto at = s.find(from);
  BOOST_TEST_REQUIRE(at != std::string::npos, "'" << from << "' not found");
  return s.replace(at, from.size(), to);
}

std::vector<damage> damages() {
  return {
    {"corrupted certificate file",
     [](machine& m) { overwrite(only_file(m, "cert-"), "{\"schema\":\x01garbage"); }},
    {"truncated certificate file",
     [](machine& m) {
       auto p = only_file(m, "cert-");
       auto bytes = read_all(p);
       overwrite(p, bytes.substr(0, bytes.size() / 2));
     }},
    {"certificate file of another version",
     [](machine& m) {
       auto p = only_file(m, "cert-");
       overwrite(p, replace_first(read_all(p), "\"version\":1", "\"version\":99"));
     }},
    {"world-writable certificate file",
     [](machine& m) { ::chmod(only_file(m, "cert-").c_str(), 0666); }},
    {"symlinked certificate file",
     [](machine& m) {
       auto p = only_file(m, "cert-");
       auto copy = m.root / "copy.json";
       fs::copy_file(p, copy);
       fs::remove(p);
       fs::create_symlink(copy, p);
     }},
    {"foreign certificate file",
     [](machine& m) { BOOST_TEST_REQUIRE(::chown(only_file(m, "cert-").c_str(), 65534, 65534) == 0); },
     true},
    {"corrupted key file",
     [](machine& m) { overwrite(only_file(m, "binding-key"), "-----BEGIN PRIVATE KEY-----\nAAAA\n"); }},
    {"truncated key file",
     [](machine& m) {
       auto p = only_file(m, "binding-key");
       auto bytes = read_all(p);
       overwrite(p, bytes.substr(0, bytes.size() / 2));
     }},
    {"world-writable key file",
     [](machine& m) { ::chmod(only_file(m, "binding-key").c_str(), 0666); }},
    {"symlinked key file",
     [](machine& m) {
       auto p = only_file(m, "binding-key");
       auto copy = m.root / "copy.pem";
       fs::copy_file(p, copy);
       fs::remove(p);
       fs::create_symlink(copy, p);
     }},
    {"foreign key file",
     [](machine& m) { BOOST_TEST_REQUIRE(::chown(only_file(m, "binding-key").c_str(), 65534, 65534) == 0); },
     true},
  };
}

} // namespace

BOOST_AUTO_TEST_CASE(damaged_or_untrusted_files_are_misses_and_the_token_is_bound_to_the_key) {
  sim_fixture f;
  for (const auto& d : damages()) {
    BOOST_TEST_CONTEXT(d.what) {
      if (d.root_only && ::geteuid() != 0) {
        BOOST_TEST_MESSAGE("skipped " << d.what << ": chown needs root");
        continue;
      }
      machine m;
      auto first = run_one(f, m);
      d.apply(m);
      std::string err;
      // --call: the resource checks that the token's cnf matches the certificate presented
      // over mTLS, which the process can only present with the key that certificate is for.
      auto second = run_one(f, m, {"--call", f.urls().resource + "/api/whoami", "--log-level",
                                   "info"},
                            &err);
      BOOST_TEST(second.call_status == 200, "resource call: " << second.call_status);
      BOOST_TEST(err.find("Sanitizer") == std::string::npos, err);
      BOOST_TEST(err.find("PRIVATE KEY") == std::string::npos, "key material in the log");
      // The damaged file is refused or replaced; the log names the directory it was found in.
      BOOST_TEST(err.find(m.cache) != std::string::npos, "no log line names the cache: " << err);
      // A third process finds the cache repaired: the second one's certificate, no issuance.
      const auto before = snapshot(f);
      auto third = run_one(f, m);
      const auto after = snapshot(f);
      BOOST_TEST(third.x5t == second.x5t);
      BOOST_TEST(after.issue_all - before.issue_all == 0u);
    }
  }
}

BOOST_AUTO_TEST_CASE(a_new_boot_id_orphans_the_old_key_and_its_certificate) {
  sim_fixture f;
  machine m;
  auto first = run_one(f, m);
  const auto old_key = read_all(only_file(m, "binding-key"));
  m.set_boot_id("2d5b3c1e-0000-4000-8000-000000000002");
  const auto before = snapshot(f);
  auto second = run_one(f, m, {"--call", f.urls().resource + "/api/whoami"});
  const auto after = snapshot(f);
  BOOST_TEST(second.x5t != first.x5t);
  BOOST_TEST(second.call_status == 200);
  BOOST_TEST(after.issue_200 - before.issue_200 == 1u);
  BOOST_TEST(read_all(only_file(m, "binding-key")) != old_key);
  BOOST_TEST(m.files("cert-").size() == 1u, "the orphaned certificate file was kept");
}

BOOST_AUTO_TEST_SUITE_END()
