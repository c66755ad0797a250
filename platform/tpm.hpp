#pragma once

// Access to a TPM 2.0 through tpm2-tss ESAPI (tss2-esys over a tss2-tctildr TCTI).
//
// One connection per operation: run_tpm() opens the TCTI, runs the operation's ESAPI calls and
// closes it again. A software TPM (swtpm) serves one client at a time and several processes
// share one TPM, so nothing here holds a TPM open between operations. Inside a process one
// mutex serialises every operation (an ESYS context is not thread-safe). On a TCTI with no
// resource manager (swtpm, mssim, device:/dev/tpm0) the processes of a user also take a lock
// file ($TMPDIR or /tmp, msiv2-tpm-<uid>-<hash of the TCTI>.lock) for the whole operation:
// there, another process's commands could otherwise come between two of ours (tcti-swtpm
// reconnects for each command) and fill the TPM's few object slots. /dev/tpmrm0 needs neither:
// the kernel's resource manager gives each connection its own objects. An operation that fails with TPM_RC_RETRY, YIELDED or
// TESTING is run again, and one that fails on the transport (connection refused or reset,
// swtpm restarted) is run again on a fresh connection, both a bounded number of times.
//
//   auto pub = platform::run_tpm<std::string>(cfg, "read the EK certificate",
//       [&](platform::tpm_connection& tpm) -> result<std::string> {
//         TPM2B_NV_PUBLIC* raw = nullptr;
//         if (auto rc = Esys_NV_ReadPublic(tpm.esys(), ...); rc != TSS2_RC_SUCCESS)
//           return tpm.failed(rc, "Esys_NV_ReadPublic");
//         ...
//       });
//
// An operation must leave nothing behind in the TPM (flush what it loaded: tpm_object does it),
// and must be safe to run again from the start: a retry reruns the whole lambda. Errors name the
// TCTI and, for a TPM device, the device and the permission or group needed; TSS return codes
// are decoded with Tss2_RC_Decode. Everything here blocks: call it from worker threads.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <tss2/tss2_esys.h>

#include "platform/result.hpp"

namespace msiv2::platform {

/// The TCTI used when none is configured: the kernel's TPM resource manager.
inline constexpr const char* default_tpm_tcti = "device:/dev/tpmrm0";

/// How to reach the TPM and how hard to try.
struct tpm_config {
  /// A tctildr configuration string: "device:/dev/tpmrm0", "swtpm:host=127.0.0.1,port=2321",
  /// "mssim:...", "tabrmd:...".
  std::string tcti = default_tpm_tcti;
  /// Attempts of one operation in all (TPM_RC_RETRY/YIELDED/TESTING and transport failures).
  unsigned attempts = 4;
  /// Pause before the second attempt; doubled for each later one.
  std::chrono::milliseconds backoff{20};
};

/// The TCTI from $MSIV2_TPM_TCTI, else default_tpm_tcti. An empty variable counts as unset.
std::string tpm_tcti_from_environment();

/// Tss2_RC_Decode's text for `rc` with the code in hex ("tpm:warn(2.0): the TPM was not able
/// to start the command (0x00000922)").
std::string describe_tss_rc(TSS2_RC rc);

/// How run_tpm treats a return code.
enum class tpm_rc_class {
  ok,        ///< TSS2_RC_SUCCESS
  retry,     ///< TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING: run again after a pause
  transport, ///< the connection failed (I/O, refused, reset, short or malformed answer): reconnect
  fatal,     ///< anything else: report
};

/// Classifies a TSS return code.
tpm_rc_class classify_tss_rc(TSS2_RC rc) noexcept;

/// One open connection to the TPM (an ESYS context over a TCTI), valid for one run_tpm call.
class tpm_connection {
public:
  tpm_connection(const tpm_connection&) = delete;
  tpm_connection& operator=(const tpm_connection&) = delete;
  ~tpm_connection();

  /// The ESYS context for ESAPI calls.
  ESYS_CONTEXT* esys() const noexcept { return esys_; }
  /// The TCTI configuration this connection was opened with.
  const std::string& tcti() const noexcept { return tcti_; }

  /// Records `rc` as the reason the operation fails (run_tpm classifies it to decide on a
  /// retry) and returns a failure "<call> failed on TPM <tcti>: <decoded rc>".
  failure failed(TSS2_RC rc, std::string_view call);

  /// The rc recorded by the last failed() of this attempt (TSS2_RC_SUCCESS when none).
  TSS2_RC last_rc() const noexcept { return last_rc_; }

  /// Opens a connection (run_tpm does it for each attempt). The failure names the device and
  /// the permission or group needed, or the TCTI; `*retryable` (when given) says whether
  /// trying again later may help (a software TPM not listening yet) or not (no such device).
  static result<std::unique_ptr<tpm_connection>> open(const std::string& tcti,
                                                      bool* retryable = nullptr);

private:
  tpm_connection(std::string tcti, TSS2_TCTI_CONTEXT* tcti_ctx, ESYS_CONTEXT* esys);
  void flush_stale_transients();

  std::string tcti_;
  TSS2_TCTI_CONTEXT* tcti_ctx_ = nullptr;
  ESYS_CONTEXT* esys_ = nullptr;
  TSS2_RC last_rc_ = TSS2_RC_SUCCESS;
};

/// A transient object loaded into the TPM, flushed when this goes out of scope (without a
/// resource manager, objects outlive the connection otherwise).
class tpm_object {
public:
  tpm_object() = default;
  tpm_object(tpm_connection& tpm, ESYS_TR handle) : tpm_(&tpm), handle_(handle) {}
  tpm_object(tpm_object&& other) noexcept;
  tpm_object& operator=(tpm_object&& other) noexcept;
  tpm_object(const tpm_object&) = delete;
  tpm_object& operator=(const tpm_object&) = delete;
  ~tpm_object();

  /// The ESYS handle (ESYS_TR_NONE when empty).
  ESYS_TR get() const noexcept { return handle_; }
  /// Gives the handle up without flushing it (after EvictControl made it persistent, say).
  ESYS_TR release() noexcept;

private:
  void reset() noexcept;
  tpm_connection* tpm_ = nullptr;
  ESYS_TR handle_ = ESYS_TR_NONE;
};

/// Frees memory ESAPI returned (Esys_Free).
struct esys_deleter {
  void operator()(void* p) const noexcept;
};
/// Owner of a structure ESAPI allocated (TPM2B_PUBLIC*, TPMT_SIGNATURE*, ...).
template <class T>
using esys_ptr = std::unique_ptr<T, esys_deleter>;

namespace detail {
/// run_tpm without the template: `op` fills its own result.
result<void> run_tpm_erased(const tpm_config& cfg, std::string_view what,
                            const std::function<result<void>(tpm_connection&)>& op);
} // namespace detail

/// Runs `op` on a fresh connection to the TPM of `cfg`, under the process-wide TPM mutex, and
/// closes the connection afterwards. Retries as described at the top of this file; `what`
/// ("sign with the binding key") starts the message of the final failure.
template <class T, class F>
result<T> run_tpm(const tpm_config& cfg, std::string_view what, F&& op) {
  std::unique_ptr<T> out;
  auto r = detail::run_tpm_erased(cfg, what, [&](tpm_connection& tpm) -> result<void> {
    result<T> one = op(tpm);
    if (!one)
      return one.fail();
    out = std::make_unique<T>(std::move(one).value());
    return ok();
  });
  if (!r)
    return r.fail();
  return std::move(*out);
}

/// run_tpm for an operation without a value.
template <class F>
result<void> run_tpm_void(const tpm_config& cfg, std::string_view what, F&& op) {
  return detail::run_tpm_erased(cfg, what, std::forward<F>(op));
}

/// What a reachable TPM says about itself.
struct tpm_info {
  std::string manufacturer; ///< TPM2_PT_MANUFACTURER as four characters ("IBM ")
  std::uint32_t firmware_1 = 0, firmware_2 = 0; ///< TPM2_PT_FIRMWARE_VERSION_1/2
};

/// Connects and reads the manufacturer and firmware version: proves the TPM answers.
result<tpm_info> probe_tpm(const tpm_config& cfg);

} // namespace msiv2::platform
