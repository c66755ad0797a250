#pragma once

// msiv2-bench: shared pieces of the scenarios (rows of the result table, statistics, a
// simulator on loopback, a client against it).

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <openssl/types.h>

#include "actors/client.hpp"
#include "io/curl_transport.hpp"
#include "tools/sim/server.hpp"

namespace msiv2::bench {

using steady = std::chrono::steady_clock;

/// One line of the result table.
struct row {
  std::string scenario;            ///< "1 hot path"
  std::string figure;              ///< what was measured ("replies/s via token_service")
  std::optional<double> value;     ///< the measured number (empty when not run)
  std::string unit;                ///< "/s", "us", "ms", "MiB", "KiB", "calls"
  std::optional<double> baseline;  ///< the same-run baseline, same unit
  std::string baseline_what;       ///< what the baseline is
  std::string target;              ///< "<= 20 us", "" when none
  std::string verdict;             ///< PASS, MISS, info, or "not run: <why>"
  std::string note;                ///< anything a reader must know (sampling, extrapolation)
  bool speedup = false;            ///< ratio = baseline / value ("N x faster than baseline")

  /// baseline / value or value / baseline, whichever reads as "times better" for the unit.
  std::optional<double> ratio() const;
};

/// Options shared by every scenario.
struct options {
  bool quick = false;             ///< miniature runs for the CTest smoke test (counts only)
  std::string peer_dir;           ///< where node_modules/@azure/msal-node is installed
  std::string peer_skip;          ///< why the peer row is not run (set by bench.sh)
  std::string self_exe;           ///< this binary (for child processes)
  std::string token_exe;          ///< msiv2-token (multi-process scenario)
  int herd_sample = 100;          ///< identities the serialized herd baseline really runs
};

/// Sorted-copy percentile (p in [0, 100]) of nanosecond samples, in microseconds.
double percentile_us(std::vector<std::uint32_t>& sorted_ns, double p);
/// Milliseconds since t0.
double ms_since(steady::time_point t0);
/// Median of a small vector (copied).
double median(std::vector<double> v);

/// A simulator on 127.0.0.1 with every port picked by the kernel and a private state dir.
class sim_host {
public:
  explicit sim_host(sim::config cfg);
  ~sim_host();
  sim_host(const sim_host&) = delete;
  sim_host& operator=(const sim_host&) = delete;
  sim::simulator& sim() { return *sim_; }
  const sim::endpoints& urls() const { return sim_->urls(); }
  const std::string& state_dir() const { return dir_; }

private:
  std::string dir_;
  std::unique_ptr<sim::simulator> sim_;
};

/// The default simulator config for a scenario (2 threads, private state dir set by sim_host).
sim::config base_config();
/// Latency faults: IMDS endpoints `imds`, attestation `attest`, token endpoint `token`.
void inject_latencies(sim::simulator& s, int imds_ms, int attest_ms, int token_ms);

/// A msiv2::client against `urls` (own actor system with `threads` scheduler threads, its own
/// curl transport), with the keyguard attestation provider when `attest`.
struct client_handle {
  std::shared_ptr<io::transport> transport;
  std::unique_ptr<msiv2::client> client;
  ~client_handle();
};
/// With `sys` set, the client lives in that actor system instead of its own. `eager_key` is
/// module_config::eager_key (off here unless asked: the other scenarios measure after a first
/// token anyway).
std::unique_ptr<client_handle> make_client(const sim::endpoints& urls, bool attest,
                                           std::size_t threads = 2,
                                           caf::actor_system* sys = nullptr,
                                           std::string cache_dir = {}, bool eager_key = false);

/// An mtls_pop (or bearer) request for `resource` as `who`.
token_request make_request(std::string resource, managed_identity who = managed_identity::system(),
                           token_type type = token_type::mtls_pop,
                           std::chrono::milliseconds timeout = std::chrono::seconds(60));
/// "ok" or the rendered error.
std::string why(const token_outcome& t);

/// Makes `dir` a cache directory holding only this boot's binding-key file for `key`, as an
/// earlier process of this boot leaves it (what every later process of the boot finds).
/// Returns `dir`; throws with the reason when it cannot.
std::string dir_with_key_file(const std::string& dir, EVP_PKEY* key);

/// Runs `argv` (no shell), returns its stdout; throws when it cannot start or exits non-zero.
std::string run_capture(const std::vector<std::string>& argv, const std::string& cwd = {});

/// Resident set size of this process (VmRSS of /proc/self/status), in KiB.
long rss_kib();

// The scenarios; each appends its rows.
void run_hot(const options& o, std::vector<row>& out);
void run_cold(const options& o, std::vector<row>& out);
void run_herd(const options& o, std::vector<row>& out);
void run_memory(const options& o, std::vector<row>& out);
void run_warm(const options& o, std::vector<row>& out);
void run_multi(const options& o, std::vector<row>& out);
void run_peer(const options& o, std::vector<row>& out);
void run_tpm_key(const options& o, std::vector<row>& out);
/// The memory child: measures itself against the simulator at `imds` and prints JSON.
int memory_child(const std::string& imds, const std::string& ca_file, int tokens, int settle_ms);

} // namespace msiv2::bench
