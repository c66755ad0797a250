#pragma once

// The model checked against the real module: K VMs, each running one real msiv2 module (every
// actor, on CAF's test scheduler in virtual time) against the simulator's own IMDS and
// authority in process (no sockets: an io::transport that hands each request to
// sim::imds_service / sim::authority at the module's virtual time), through the same scenario
// as the model, with the same boot times. The upstream calls the modules made are compared with
// the model's calls for the same VMs (one process per VM, no latency, no attestation); the
// model's figures are trusted only where each row agrees within its tolerance.

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "tools/fleet/model.hpp"

namespace msiv2::fleet {

/// What to run.
struct check_params {
  std::uint32_t vms = 200;
  std::uint32_t resources = 2;
  int days = 7;
  scenario scen = scenario::steady; ///< steady or token_outage
  /// How often each VM's process asks for each of its tokens.
  std::int64_t request_interval_ms = 10 * 60'000;
  /// Each VM's wall clock runs this far (uniform, +-) from the services' clock.
  std::int64_t clock_offset_ms = 2'000;
  std::uint64_t seed = 1;
};

/// One compared figure.
struct check_row {
  std::string what;
  double module = 0;
  double model = 0;
  std::string tolerance; ///< how close they must be, for people
  bool ok = false;
};

/// The comparison.
struct check_result {
  std::vector<check_row> rows;
  bool agree = false;           ///< every row within its tolerance
  std::string error;            ///< set when the check could not run
  double module_seconds = 0;    ///< the real modules' run time
  double model_seconds = 0;
  std::uint64_t module_requests = 0; ///< token requests the VMs' processes made
};

/// Runs K real modules and the model for the same VMs and compares them.
check_result check_against_module(const check_params& p);

/// The comparison as a table.
void print_check(std::ostream& out, const check_params& p, const check_result& r);

} // namespace msiv2::fleet
