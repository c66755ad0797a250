#pragma once

// A software TPM (swtpm) for the demo and the benchmarks: its state made by tools/swtpm.sh
// (`init DIR`: EK certificates from a local CA in DIR), swtpm run as a child of this process on
// two free 127.0.0.1 ports (it dies with this process: PR_SET_PDEATHSIG), stopped by its pid.
// The same logic as the tests' fixture (tests/support/swtpm), without Boost.Test: failures
// are results with the reason.
//
//   if (auto why = swtpm_process::unavailable(); !why.empty()) { ... skip, say why ... }
//   auto tpm = swtpm_process::start("/tmp/x/swtpm");    // tpm->tcti(), tpm->ek_ca()
//   tpm->stop(); tpm->start_again();                     // a reboot: same state, same ports

#include <sys/types.h>

#include <memory>
#include <string>

#include "platform/result.hpp"

namespace msiv2::tools {

class swtpm_process {
public:
  /// Why no software TPM can be run here ("swtpm_setup is not on PATH ..."), empty when one
  /// can: swtpm, swtpm_setup, swtpm_ioctl and swtpm_localca on PATH (as the tests require) and
  /// tools/swtpm.sh readable ($MSIV2_SWTPM_SCRIPT overrides the path compiled in).
  static std::string unavailable();

  /// Makes the TPM state in `dir` (created when missing) on first use and starts swtpm.
  static result<std::unique_ptr<swtpm_process>> start(const std::string& dir);

  /// Stops swtpm (by its pid) when it runs.
  ~swtpm_process();
  swtpm_process(const swtpm_process&) = delete;
  swtpm_process& operator=(const swtpm_process&) = delete;

  /// "swtpm:host=127.0.0.1,port=N".
  std::string tcti() const;
  /// The PEM bundle of the local CA that issued the EK certificates (msiv2-sim --tpm-ek-ca).
  const std::string& ek_ca() const { return ek_ca_; }
  /// The swtpm process, -1 when stopped.
  pid_t pid() const { return pid_; }

  /// Graceful stop: swtpm_ioctl -s (swtpm saves its state and exits), then waits for the pid,
  /// SIGKILL after 10 s. Nothing to do when stopped.
  result<void> stop();
  /// Starts swtpm again on the same state and ports (after stop()): a TCTI string stays valid.
  result<void> start_again();

private:
  swtpm_process() = default;
  result<void> spawn(int port);

  std::string dir_;
  std::string ek_ca_;
  int port_ = 0;
  pid_t pid_ = -1;
};

} // namespace msiv2::tools
