#pragma once

// A software TPM (swtpm) for the TPM tests: one per test process, in a fresh temporary
// directory, on free 127.0.0.1 ports, a child of the test process (it dies with it: no swtpm
// outlives a crashed or timed-out test), stopped by pid.
//
//   auto& tpm = msiv2::test::swtpm::shared();      // skips the suite (exit 77) without swtpm
//   platform::tpm_config cfg = tpm.config();       // tcti = "swtpm:host=127.0.0.1,port=N"
//   tpm.restart();                                 // graceful: swtpm_ioctl -s, same state
//   tpm.kill_and_restart();                        // SIGKILL, same state
//
// The TPM state (with EK certificates from a local CA, tpm.ek_ca()) is made by
// `tools/swtpm.sh init DIR`. A restart keeps the ports, so a TCTI string stays valid.

#include <sys/types.h>

#include <memory>
#include <string>

#include "platform/tpm.hpp"
#include "tests/support/temp_dir.hpp"

namespace msiv2::test {

class swtpm {
public:
  /// True when swtpm, swtpm_setup, swtpm_ioctl and swtpm_localca are on the PATH.
  static bool installed();
  /// When swtpm is missing: prints why and ends the process with exit code 77 (CTest's
  /// SKIP_RETURN_CODE for the TPM suites).
  static void require_installed();

  /// The process's software TPM, started on first use, stopped at exit. Calls
  /// require_installed() first.
  static swtpm& shared();

  /// Creates the state in a fresh temporary directory and starts swtpm (failures fail the test).
  swtpm();
  /// Stops swtpm (gracefully, SIGKILL if it lingers) and removes the directory.
  ~swtpm();
  swtpm(const swtpm&) = delete;
  swtpm& operator=(const swtpm&) = delete;

  /// "swtpm:host=127.0.0.1,port=N".
  std::string tcti() const;
  /// A tpm_config for tcti() with short back-offs.
  platform::tpm_config config() const;
  /// The EK CA bundle (the local CA's root and the issuing certificate of the EK certificates).
  const std::string& ek_ca() const { return ek_ca_; }
  /// The directory holding tpmstate/ and localca/.
  const std::string& dir() const { return dir_.path(); }
  /// The swtpm process (-1 when stopped).
  pid_t pid() const { return pid_; }
  /// The server and control ports.
  int server_port() const { return server_port_; }
  int ctrl_port() const { return server_port_ + 1; }

  /// Graceful stop (swtpm_ioctl -s: the state is saved; waits for the exit).
  void stop();
  /// SIGKILL without warning (a power cut for the TPM), reaped.
  void kill();
  /// Starts swtpm on the same state and ports (after stop() or kill()).
  void start();
  /// stop() then start().
  void restart();
  /// kill() then start().
  void kill_and_restart();
  /// Replaces the state by a fresh one (a new TPM: new seeds, new EK) and starts it.
  void replace_with_new_tpm();

private:
  bool try_start(int server_port);

  temp_dir dir_;
  std::string ek_ca_;
  int server_port_ = 0;
  pid_t pid_ = -1;
};

} // namespace msiv2::test
