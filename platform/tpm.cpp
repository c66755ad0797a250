#include "platform/tpm.hpp"

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include <tss2/tss2_rc.h>
#include <tss2/tss2_sys.h>
#include <tss2/tss2_tctildr.h>

#include "platform/encoding.hpp"
#include "platform/files.hpp"

namespace msiv2::platform {

namespace {

// Every ESAPI use in the process goes through this mutex (run_tpm_erased holds it for a whole
// operation, connection included).
std::mutex& tpm_mutex() {
  static std::mutex m;
  return m;
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// The device path of a "device[:path]" TCTI ("" for other TCTIs); tctildr's default is /dev/tpm0.
std::string device_path(std::string_view tcti) {
  if (tcti == "device")
    return "/dev/tpm0";
  if (!starts_with(tcti, "device:"))
    return {};
  auto path = std::string(tcti.substr(7));
  return path.empty() ? "/dev/tpm0" : path;
}

// TCTIs with no resource manager between us and the TPM: objects outlive our connection, and
// only one client talks to the TPM at a time (swtpm's backlog of 1, /dev/tpm0's exclusive open).
bool talks_to_tpm_directly(std::string_view tcti) {
  if (starts_with(tcti, "swtpm") || starts_with(tcti, "mssim"))
    return true;
  auto dev = device_path(tcti);
  return !dev.empty() && dev.find("tpmrm") == std::string::npos;
}

// Without a resource manager nothing stops another process's commands from coming between two
// of ours (tcti-swtpm even reconnects for every command), and those objects share the TPM's
// few slots: processes of this user take this lock for a whole operation on such a TCTI.
std::string direct_tpm_lock_path(const std::string& tcti) {
  const char* tmp = std::getenv("TMPDIR");
  std::string dir = tmp != nullptr && *tmp == '/' ? tmp : "/tmp";
  return dir + "/msiv2-tpm-" + std::to_string(::geteuid()) + "-"
         + hex_lower(sha256(tcti)).substr(0, 16) + ".lock";
}

constexpr std::chrono::seconds direct_tpm_lock_wait{120};

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// Why a TPM device cannot be opened, before tctildr tries (its own error is only "IO failure").
// Empty when the device looks usable.
std::string device_problem(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT)
      return "the TPM device " + path +
             " does not exist: this machine has no TPM 2.0 or its driver is not loaded (a VM "
             "needs a vTPM, e.g. Azure Trusted Launch); point MSIV2_TPM_TCTI at another TPM "
             "(swtpm:host=127.0.0.1,port=N) or use the software key store";
    return "cannot stat the TPM device " + path + ": " + std::strerror(errno);
  }
  if (!S_ISCHR(st.st_mode))
    return "the TPM device " + path + " is not a character device";
  if (::access(path.c_str(), R_OK | W_OK) != 0) {
    int e = errno;
    if (e != EACCES && e != EPERM)
      return "cannot open the TPM device " + path + ": " + std::strerror(e);
    std::string group = std::to_string(st.st_gid);
    if (auto* g = ::getgrgid(st.st_gid); g != nullptr)
      group = g->gr_name;
    std::string owner = std::to_string(st.st_uid);
    if (auto* p = ::getpwuid(st.st_uid); p != nullptr)
      owner = p->pw_name;
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return "permission denied on the TPM device " + path + " (owner " + owner + ", group " +
           group + ", mode " + mode + "): this user needs read and write access, i.e. to be in "
           "group '" + group + "' (usermod -aG " + group + " $USER, then log in again)";
  }
  return {};
}

} // namespace

result<std::unique_ptr<tpm_connection>> tpm_connection::open(const std::string& tcti,
                                                             bool* retryable_out) {
  bool dummy = false;
  bool& retryable = retryable_out != nullptr ? *retryable_out : dummy;
  retryable = false;
  if (tcti.empty())
    return fail("the TPM TCTI is empty (MSIV2_TPM_TCTI or --tpm-tcti); e.g. " +
                std::string(default_tpm_tcti));
  if (auto dev = device_path(tcti); !dev.empty()) {
    if (auto problem = device_problem(dev); !problem.empty())
      return fail(problem);
  }
  TSS2_TCTI_CONTEXT* tcti_ctx = nullptr;
  if (auto rc = Tss2_TctiLdr_Initialize(tcti.c_str(), &tcti_ctx); rc != TSS2_RC_SUCCESS) {
    std::string msg = "cannot open the TPM through TCTI '" + tcti + "': " + describe_tss_rc(rc);
    if (starts_with(tcti, "swtpm") || starts_with(tcti, "mssim")) {
      retryable = true;
      msg += " (is the software TPM running there? tools/swtpm.sh start DIR prints its TCTI)";
    } else if ((rc & 0xffffu) == TSS2_BASE_RC_NOT_SUPPORTED ||
               (rc & 0xffffu) == TSS2_BASE_RC_BAD_VALUE) {
      msg += " (unknown TCTI name or bad options: expected device:PATH, swtpm:host=H,port=P, "
             "mssim:..., tabrmd:...)";
    } else {
      retryable = classify_tss_rc(rc) == tpm_rc_class::transport;
    }
    return fail(msg);
  }
  ESYS_CONTEXT* esys = nullptr;
  if (auto rc = Esys_Initialize(&esys, tcti_ctx, nullptr); rc != TSS2_RC_SUCCESS) {
    Tss2_TctiLdr_Finalize(&tcti_ctx);
    retryable = classify_tss_rc(rc) == tpm_rc_class::transport;
    return fail("cannot start ESAPI on TCTI '" + tcti + "': " + describe_tss_rc(rc));
  }
  return std::unique_ptr<tpm_connection>(new tpm_connection(tcti, tcti_ctx, esys));
}

std::string tpm_tcti_from_environment() {
  const char* v = std::getenv("MSIV2_TPM_TCTI");
  return v != nullptr && *v != '\0' ? std::string(v) : std::string(default_tpm_tcti);
}

std::string describe_tss_rc(TSS2_RC rc) {
  const char* text = Tss2_RC_Decode(rc);
  return std::string(text != nullptr ? text : "unknown error") + " (" + hex32(rc) + ")";
}

tpm_rc_class classify_tss_rc(TSS2_RC rc) noexcept {
  if (rc == TSS2_RC_SUCCESS)
    return tpm_rc_class::ok;
  auto layer = rc & TSS2_RC_LAYER_MASK;
  auto base = rc & ~TSS2_RC_LAYER_MASK;
  if (layer == TSS2_TPM_RC_LAYER || layer == TSS2_RESMGR_TPM_RC_LAYER) {
    if (base == TPM2_RC_RETRY || base == TPM2_RC_YIELDED || base == TPM2_RC_TESTING)
      return tpm_rc_class::retry;
    return tpm_rc_class::fatal;
  }
  switch (base & 0xffffu) {
    case TSS2_BASE_RC_NO_CONNECTION:
    case TSS2_BASE_RC_TRY_AGAIN:
    case TSS2_BASE_RC_IO_ERROR:
    case TSS2_BASE_RC_MALFORMED_RESPONSE:
    case TSS2_BASE_RC_INSUFFICIENT_RESPONSE:
      return tpm_rc_class::transport;
    default:
      return layer == TSS2_TCTI_RC_LAYER ? tpm_rc_class::transport : tpm_rc_class::fatal;
  }
}

tpm_connection::tpm_connection(std::string tcti, TSS2_TCTI_CONTEXT* tcti_ctx, ESYS_CONTEXT* esys)
  : tcti_(std::move(tcti)), tcti_ctx_(tcti_ctx), esys_(esys) {
  if (talks_to_tpm_directly(tcti_))
    flush_stale_transients();
}

tpm_connection::~tpm_connection() {
  if (esys_ != nullptr)
    Esys_Finalize(&esys_);
  if (tcti_ctx_ != nullptr)
    Tss2_TctiLdr_Finalize(&tcti_ctx_);
}

failure tpm_connection::failed(TSS2_RC rc, std::string_view call) {
  last_rc_ = rc;
  return fail(std::string(call) + " failed on TPM '" + tcti_ + "': " + describe_tss_rc(rc));
}

// Without a resource manager, what a process that died mid-operation had loaded stays in the
// TPM and fills its few object slots (swtpm has 3): a later load fails with
// TPM_RC_OBJECT_MEMORY. Every operation of ours flushes what it loads before it disconnects,
// and on such a TCTI nobody else is connected while we are, so whatever is loaded now is an
// orphan. Flushed through SAPI by raw handle (ESAPI cannot wrap every kind of object).
void tpm_connection::flush_stale_transients() {
  TSS2_SYS_CONTEXT* sys = nullptr;
  if (Esys_GetSysContext(esys_, &sys) != TSS2_RC_SUCCESS || sys == nullptr)
    return;
  for (TPM2_HANDLE first : {TPM2_TRANSIENT_FIRST, TPM2_LOADED_SESSION_FIRST}) {
    TPMI_YES_NO more = TPM2_NO;
    TPMS_CAPABILITY_DATA* raw = nullptr;
    if (Esys_GetCapability(esys_, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES,
                           first, TPM2_MAX_CAP_HANDLES, &more, &raw)
        != TSS2_RC_SUCCESS)
      return;
    esys_ptr<TPMS_CAPABILITY_DATA> data(raw);
    const auto& list = data->data.handles;
    for (UINT32 i = 0; i < list.count; ++i) {
      TPM2_HANDLE h = list.handle[i];
      // A loaded-session query also lists saved sessions' range; only flush what is loaded.
      if ((h & TPM2_HR_RANGE_MASK) != (first & TPM2_HR_RANGE_MASK))
        continue;
      Tss2_Sys_FlushContext(sys, h);
    }
  }
}

tpm_object::tpm_object(tpm_object&& other) noexcept
  : tpm_(other.tpm_), handle_(other.release()) {}

tpm_object& tpm_object::operator=(tpm_object&& other) noexcept {
  if (this != &other) {
    reset();
    tpm_ = other.tpm_;
    handle_ = other.release();
  }
  return *this;
}

tpm_object::~tpm_object() {
  reset();
}

ESYS_TR tpm_object::release() noexcept {
  auto h = handle_;
  handle_ = ESYS_TR_NONE;
  return h;
}

void tpm_object::reset() noexcept {
  if (tpm_ != nullptr && handle_ != ESYS_TR_NONE)
    Esys_FlushContext(tpm_->esys(), handle_);
  handle_ = ESYS_TR_NONE;
}

void esys_deleter::operator()(void* p) const noexcept {
  Esys_Free(p);
}

namespace detail {

result<void> run_tpm_erased(const tpm_config& cfg, std::string_view what,
                            const std::function<result<void>(tpm_connection&)>& op) {
  // tpm2-tss logs its own ERROR/WARNING lines to stderr (a refused connection while probing
  // for a TPM, say); our failures carry the decoded code, so keep its log off unless the user
  // asked for it with TSS2_LOG. Set once, before tss2 first reads it.
  static std::once_flag quiet;
  std::call_once(quiet, [] { ::setenv("TSS2_LOG", "all+NONE", 0); });
  std::lock_guard<std::mutex> guard(tpm_mutex());
  std::optional<file_lock> across_processes;
  if (talks_to_tpm_directly(cfg.tcti)) {
    auto path = direct_tpm_lock_path(cfg.tcti);
    auto lock = file_lock::acquire(path, direct_tpm_lock_wait);
    if (!lock)
      return fail(std::string(what) + ": cannot take the TPM lock: " + lock.error());
    if (!*lock)
      return fail(std::string(what) + ": another process held the TPM '" + cfg.tcti
                  + "' (lock " + path + ") for over "
                  + std::to_string(direct_tpm_lock_wait.count()) + " s");
    across_processes = std::move(*lock);
  }
  const unsigned attempts = cfg.attempts == 0 ? 1 : cfg.attempts;
  auto pause = cfg.backoff;
  std::string last;
  unsigned made = 0;
  for (unsigned attempt = 1; attempt <= attempts; ++attempt) {
    if (attempt > 1) {
      std::this_thread::sleep_for(pause);
      pause *= 2;
    }
    ++made;
    bool retryable = false;
    auto conn = tpm_connection::open(cfg.tcti, &retryable);
    if (!conn) {
      last = conn.error();
      if (!retryable)
        break;
      continue;
    }
    auto r = op(**conn);
    if (r)
      return ok();
    last = r.error();
    auto cls = classify_tss_rc((*conn)->last_rc());
    if (cls != tpm_rc_class::retry && cls != tpm_rc_class::transport)
      break;
  }
  std::string msg = std::string(what) + ": " + last;
  if (made > 1)
    msg += " (" + std::to_string(made) + " attempts)";
  return fail(msg);
}

} // namespace detail

result<tpm_info> probe_tpm(const tpm_config& cfg) {
  return run_tpm<tpm_info>(cfg, "probe the TPM", [](tpm_connection& tpm) -> result<tpm_info> {
    TPMI_YES_NO more = TPM2_NO;
    TPMS_CAPABILITY_DATA* raw = nullptr;
    if (auto rc = Esys_GetCapability(tpm.esys(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                     TPM2_CAP_TPM_PROPERTIES, TPM2_PT_MANUFACTURER, 16, &more,
                                     &raw);
        rc != TSS2_RC_SUCCESS)
      return tpm.failed(rc, "Esys_GetCapability(TPM properties)");
    esys_ptr<TPMS_CAPABILITY_DATA> data(raw);
    tpm_info info;
    const auto& props = data->data.tpmProperties;
    for (UINT32 i = 0; i < props.count; ++i) {
      auto v = props.tpmProperty[i].value;
      switch (props.tpmProperty[i].property) {
        case TPM2_PT_MANUFACTURER:
          for (int shift = 24; shift >= 0; shift -= 8) {
            char c = static_cast<char>((v >> shift) & 0xff);
            info.manufacturer.push_back(c >= 0x20 && c < 0x7f ? c : ' ');
          }
          break;
        case TPM2_PT_FIRMWARE_VERSION_1: info.firmware_1 = v; break;
        case TPM2_PT_FIRMWARE_VERSION_2: info.firmware_2 = v; break;
        default: break;
      }
    }
    if (info.manufacturer.empty())
      return fail("the TPM at '" + tpm.tcti() + "' did not report its manufacturer");
    return info;
  });
}

} // namespace msiv2::platform
