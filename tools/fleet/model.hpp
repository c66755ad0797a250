#pragma once

// msiv2-fleet's model: a discrete-event simulation, in virtual time, of a fleet of VMs whose
// processes get and renew binding certificates, attestation tokens and access tokens from the
// shared services, under one of three policies, through one scenario.
//
// The model makes the module's decisions with the module's own code: the lifecycle rule
// (platform::plan_lifecycle) for every renewal time, the retry schedules (io::next_retry_delay)
// for every upstream retry, and the renewal backoffs of module_rules.hpp. What it does not
// model it says in README ("msiv2-fleet").
//
// Time is in milliseconds; t = 0 is the start of the reported window, which lasts `days`.
// Everything that happens before t = 0 (VMs booted over the past week, their first
// certificates and tokens) is simulated too, so the state at t = 0 is the one the rules made,
// but only calls at t >= 0 are counted.

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace msiv2::fleet {

/// Who decides when an artifact is renewed.
enum class policy : std::uint8_t {
  msiv2,     ///< half-life (or refresh_in) with jitter, one writer per VM, backoff, serve stale-but-usable
  reference, ///< MSAL .NET today: certificate until notAfter - 24 h then on demand, per process, no jitter
  naive,     ///< renew on expiry, per process, no jitter
};
constexpr int policy_count = 3;

/// What happens to the fleet during the window.
enum class scenario : std::uint8_t {
  steady,         ///< VMs booted uniformly over the past week, nothing goes wrong
  sync_reboot,    ///< every VM reboots at t = 0; its processes start within a minute
  token_outage,   ///< the token endpoint fails every call for 30 minutes on day 3
  issue_brownout, ///< issuecredential answers 503 to half of the calls for 2 hours on day 3
};
constexpr int scenario_count = 4;

/// Whether the binding key (and so a persisted certificate) survives a reboot.
enum class key_mode : std::uint8_t {
  per_boot, ///< today's software key: a new key, so a new certificate, after every reboot
  durable,  ///< the TPM key store: the key and its certificate survive a reboot
};

/// The shared services whose load the model measures (IMDS is per VM: see imds_peak_per_vm).
enum class service : std::uint8_t { issuecredential, token, attestation };
constexpr int service_count = 3;

const char* to_string(policy p);
const char* to_string(scenario s);
const char* to_string(key_mode k);
const char* to_string(service s);

/// The fleet and its services.
struct params {
  std::uint32_t vms = 100'000;
  std::uint32_t processes = 4;  ///< processes per VM that use the module
  std::uint32_t resources = 2;  ///< access tokens per process (one per resource)
  int days = 7;                 ///< length of the reported window
  std::int64_t cert_life_ms = 7LL * 86'400'000;      ///< binding certificate (IMDS: ~7 days)
  std::int64_t token_life_ms = 86'400'000;           ///< access token expires_in
  std::int64_t token_refresh_in_ms = 43'200'000;     ///< refresh_in from the token endpoint
  std::int64_t attestation_life_ms = 8LL * 3'600'000; ///< attestation JWT
  bool attested = true;         ///< keys are attested (an attestation JWT per certificate)
  std::int64_t start_spread_ms = 60'000; ///< processes start within this after a boot
  /// How often a process asks for each of its tokens. On-demand policies act on the first
  /// request after a point, so they renew up to this late; requests also set which requests
  /// wait (the served-from-cache fraction is over request time, demand being uniform). Shorter
  /// than msiv2's idle window (rules::token_idle_window_ms, 1 h), which the model does not
  /// apply: no token is idle.
  std::int64_t request_interval_ms = 10'000;
  std::int64_t fault_start_ms = 2LL * 86'400'000 + 12LL * 3'600'000; ///< day 3, noon
  std::int64_t outage_ms = 30LL * 60'000;
  std::int64_t brownout_ms = 2LL * 3'600'000;
  double brownout_failure = 0.5;
  /// Latencies of the calls (a chain's time to complete).
  std::int64_t imds_latency_ms = 2;
  std::int64_t issue_latency_ms = 150;
  std::int64_t attestation_latency_ms = 200;
  std::int64_t token_latency_ms = 80;
  std::uint64_t seed = 1;
  /// When not empty (one per VM, ms, before 0): the VMs' boot times instead of uniform draws
  /// over the past week (the module check runs the model on the real modules' VMs).
  std::vector<std::int64_t> boot_times_ms;
};

/// Percentiles of a distribution of durations, in seconds.
struct spread {
  std::uint64_t count = 0;
  double min_s = 0, p50_s = 0, p99_s = 0, p999_s = 0, max_s = 0;
};

/// What one (policy, scenario, key mode) run measured over the window.
struct result {
  policy pol = policy::msiv2;
  scenario scen = scenario::steady;
  key_mode keys = key_mode::per_boot;
  /// Calls started in each second of the window, per service.
  std::array<std::vector<std::uint32_t>, service_count> per_second;
  std::array<std::uint64_t, service_count> totals{};
  std::array<std::uint32_t, service_count> peak_per_second{};
  std::uint64_t issuances = 0;          ///< certificates issued in the window
  std::uint64_t token_acquisitions = 0; ///< successful token calls in the window
  std::uint32_t imds_peak_per_vm = 0;   ///< most IMDS calls one VM made in one second
  std::uint64_t imds_total = 0;         ///< IMDS calls of every VM in the window
  std::uint64_t imds_in_fault = 0;      ///< of which in the fault window
  /// Tokens that called the token endpoint during the fault window (scenarios with one).
  std::uint64_t fault_tokens = 0;
  /// One per such token: its first token call in the fault window (ms) and its token calls in
  /// that window. How many calls a token makes depends on how long before the window's end it
  /// was caught; the module check compares the real modules' tokens with model tokens caught
  /// as long before the end (module_check.cpp).
  struct fault_token {
    std::int64_t first_ms = 0;
    std::uint32_t calls = 0;
  };
  std::vector<fault_token> fault_token_calls;
  double served_from_cache = 0;         ///< fraction of token requests answered from cache
  /// Waits of the token requests that arrived in the fault window (the whole window when
  /// the scenario has none): a request served from cache waited 0.
  spread wait_in_fault;
  /// Successful renewal time minus the policy's nominal point (half-life or refresh_in for
  /// msiv2; notAfter - 24 h / refresh_in for the reference; expiry for naive).
  spread cert_renewal_offset;
  spread token_renewal_offset;
  std::uint64_t events = 0;  ///< events processed (warm-up included)
  double wall_seconds = 0;   ///< the run's own time

  double mean_per_second(service s) const;
};

/// Runs one policy through one scenario.
result simulate(const params& p, policy pol, scenario scen, key_mode keys);

} // namespace msiv2::fleet
