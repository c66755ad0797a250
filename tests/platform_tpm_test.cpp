#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <thread>
#include <vector>

#include "platform/tpm.hpp"
#include "tests/support/swtpm.hpp"
#include "tests/support/test_keys.hpp"

using namespace msiv2::platform;
using msiv2::test::contains;
using msiv2::test::error_text;
using msiv2::test::swtpm;

namespace {

// A TCTI on which nothing listens (port 9, discard, is not served on a test machine).
tpm_config nobody_listening() {
  tpm_config cfg;
  cfg.tcti = "swtpm:host=127.0.0.1,port=9";
  cfg.attempts = 3;
  cfg.backoff = std::chrono::milliseconds(1);
  return cfg;
}

// How many transient objects are loaded in the TPM now.
std::size_t transient_objects(const tpm_config& cfg) {
  auto n = run_tpm<std::size_t>(cfg, "count transients", [](tpm_connection& tpm)
                                                             -> msiv2::result<std::size_t> {
    TPMI_YES_NO more = TPM2_NO;
    TPMS_CAPABILITY_DATA* raw = nullptr;
    if (auto rc = Esys_GetCapability(tpm.esys(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                     TPM2_CAP_HANDLES, TPM2_TRANSIENT_FIRST, TPM2_MAX_CAP_HANDLES,
                                     &more, &raw);
        rc != TSS2_RC_SUCCESS)
      return tpm.failed(rc, "Esys_GetCapability(handles)");
    esys_ptr<TPMS_CAPABILITY_DATA> data(raw);
    return static_cast<std::size_t>(data->data.handles.count);
  });
  BOOST_REQUIRE_MESSAGE(n.ok(), error_text(n));
  return *n;
}

// Creates a primary RSA storage key and leaves it loaded (as a process that dies mid-operation
// would); returns the rc of CreatePrimary.
TSS2_RC leave_a_primary_loaded(tpm_connection& tpm) {
  TPM2B_SENSITIVE_CREATE sensitive{};
  TPM2B_PUBLIC in_public{};
  in_public.publicArea.type = TPM2_ALG_RSA;
  in_public.publicArea.nameAlg = TPM2_ALG_SHA256;
  in_public.publicArea.objectAttributes = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT
                                          | TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT
                                          | TPMA_OBJECT_SENSITIVEDATAORIGIN
                                          | TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA;
  auto& rsa = in_public.publicArea.parameters.rsaDetail;
  rsa.symmetric.algorithm = TPM2_ALG_AES;
  rsa.symmetric.keyBits.aes = 128;
  rsa.symmetric.mode.aes = TPM2_ALG_CFB;
  rsa.scheme.scheme = TPM2_ALG_NULL;
  rsa.keyBits = 2048;
  TPM2B_DATA outside{};
  TPML_PCR_SELECTION pcrs{};
  ESYS_TR handle = ESYS_TR_NONE;
  return Esys_CreatePrimary(tpm.esys(), ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                            ESYS_TR_NONE, &sensitive, &in_public, &outside, &pcrs, &handle,
                            nullptr, nullptr, nullptr, nullptr);
}

bool running_as_root() {
  return ::geteuid() == 0;
}

} // namespace

BOOST_AUTO_TEST_SUITE(platform_tpm_test)

BOOST_AUTO_TEST_CASE(tcti_comes_from_msiv2_tpm_tcti_else_the_kernel_resource_manager) {
  const char* saved = std::getenv("MSIV2_TPM_TCTI");
  std::string keep = saved != nullptr ? saved : "";
  ::unsetenv("MSIV2_TPM_TCTI");
  BOOST_TEST(tpm_tcti_from_environment() == "device:/dev/tpmrm0");
  ::setenv("MSIV2_TPM_TCTI", "", 1);
  BOOST_TEST(tpm_tcti_from_environment() == "device:/dev/tpmrm0");
  ::setenv("MSIV2_TPM_TCTI", "swtpm:host=127.0.0.1,port=2321", 1);
  BOOST_TEST(tpm_tcti_from_environment() == "swtpm:host=127.0.0.1,port=2321");
  if (saved != nullptr)
    ::setenv("MSIV2_TPM_TCTI", keep.c_str(), 1);
  else
    ::unsetenv("MSIV2_TPM_TCTI");
}

BOOST_AUTO_TEST_CASE(return_codes_are_classified_for_retry_reconnect_or_report) {
  BOOST_TEST((classify_tss_rc(TSS2_RC_SUCCESS) == tpm_rc_class::ok));
  BOOST_TEST((classify_tss_rc(TPM2_RC_RETRY) == tpm_rc_class::retry));
  BOOST_TEST((classify_tss_rc(TPM2_RC_YIELDED) == tpm_rc_class::retry));
  BOOST_TEST((classify_tss_rc(TPM2_RC_TESTING) == tpm_rc_class::retry));
  BOOST_TEST((classify_tss_rc(TSS2_RESMGR_TPM_RC_LAYER | TPM2_RC_RETRY) == tpm_rc_class::retry));
  BOOST_TEST((classify_tss_rc(TSS2_TCTI_RC_IO_ERROR) == tpm_rc_class::transport));
  BOOST_TEST((classify_tss_rc(TSS2_TCTI_RC_NO_CONNECTION) == tpm_rc_class::transport));
  BOOST_TEST((classify_tss_rc(TSS2_SYS_RC_MALFORMED_RESPONSE) == tpm_rc_class::transport));
  BOOST_TEST((classify_tss_rc(TPM2_RC_OBJECT_MEMORY) == tpm_rc_class::fatal));
  BOOST_TEST((classify_tss_rc(TPM2_RC_HANDLE | TPM2_RC_1) == tpm_rc_class::fatal));
  BOOST_TEST((classify_tss_rc(TSS2_ESYS_RC_BAD_REFERENCE) == tpm_rc_class::fatal));
  BOOST_TEST(contains(describe_tss_rc(TPM2_RC_RETRY), "0x00000922"));
}

BOOST_AUTO_TEST_CASE(a_missing_tpm_device_is_named_and_not_retried) {
  tpm_config cfg;
  cfg.tcti = "device:/dev/msiv2-no-such-tpm";
  cfg.attempts = 3;
  auto r = probe_tpm(cfg);
  BOOST_REQUIRE(!r.ok());
  BOOST_TEST(contains(r.error(), "/dev/msiv2-no-such-tpm"), r.error());
  BOOST_TEST(contains(r.error(), "does not exist"), r.error());
  BOOST_TEST(!contains(r.error(), "attempts"), r.error());
}

BOOST_AUTO_TEST_CASE(a_device_without_permission_names_the_group_needed,
                     *boost::unit_test::precondition([](boost::unit_test::test_unit_id) {
                       return !running_as_root();
                     })) {
  // /dev/mem is root:kmem 0640 on Debian: what a non-root user meets on /dev/tpmrm0 (root:tss).
  tpm_config cfg;
  cfg.tcti = "device:/dev/mem";
  auto r = probe_tpm(cfg);
  BOOST_REQUIRE(!r.ok());
  BOOST_TEST(contains(r.error(), "permission denied on the TPM device /dev/mem"), r.error());
  BOOST_TEST(contains(r.error(), "group 'kmem'"), r.error());
}

BOOST_AUTO_TEST_CASE(a_non_device_path_is_refused_by_name) {
  tpm_config cfg;
  cfg.tcti = "device:/etc/hostname";
  auto r = probe_tpm(cfg);
  BOOST_REQUIRE(!r.ok());
  BOOST_TEST(contains(r.error(), "/etc/hostname is not a character device"), r.error());
}

BOOST_AUTO_TEST_CASE(an_unknown_tcti_is_named) {
  tpm_config cfg;
  cfg.tcti = "msiv2-no-such-tcti:x=1";
  cfg.attempts = 2;
  auto r = probe_tpm(cfg);
  BOOST_REQUIRE(!r.ok());
  BOOST_TEST(contains(r.error(), "'msiv2-no-such-tcti:x=1'"), r.error());
}

BOOST_AUTO_TEST_CASE(a_software_tpm_not_listening_is_retried_then_named) {
  auto cfg = nobody_listening();
  auto r = probe_tpm(cfg);
  BOOST_REQUIRE(!r.ok());
  BOOST_TEST(contains(r.error(), "swtpm:host=127.0.0.1,port=9"), r.error());
  BOOST_TEST(contains(r.error(), "is the software TPM running"), r.error());
  BOOST_TEST(contains(r.error(), "(3 attempts)"), r.error());
}

BOOST_AUTO_TEST_CASE(probe_reads_the_manufacturer_of_a_running_tpm) {
  auto& tpm = swtpm::shared();
  auto info = probe_tpm(tpm.config());
  BOOST_REQUIRE_MESSAGE(info.ok(), error_text(info));
  BOOST_TEST(info->manufacturer == "IBM "); // libtpms identifies as IBM
  BOOST_TEST(info->firmware_1 != 0u);
}

BOOST_AUTO_TEST_CASE(tpm_rc_retry_reruns_the_operation_on_a_fresh_connection) {
  auto& tpm = swtpm::shared();
  int calls = 0;
  std::vector<const tpm_connection*> seen;
  auto r = run_tpm<int>(tpm.config(), "flaky", [&](tpm_connection& c) -> msiv2::result<int> {
    seen.push_back(&c);
    if (++calls < 3)
      return c.failed(TPM2_RC_RETRY, "Esys_Fake");
    TPM2B_DIGEST* random = nullptr;
    if (auto rc = Esys_GetRandom(c.esys(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, 8, &random);
        rc != TSS2_RC_SUCCESS)
      return c.failed(rc, "Esys_GetRandom");
    esys_ptr<TPM2B_DIGEST> owned(random);
    return static_cast<int>(owned->size);
  });
  BOOST_REQUIRE_MESSAGE(r.ok(), error_text(r));
  BOOST_TEST(*r == 8);
  BOOST_TEST(calls == 3);
}

BOOST_AUTO_TEST_CASE(a_transport_failure_reconnects_and_a_tpm_error_is_reported_at_once) {
  auto& tpm = swtpm::shared();
  int calls = 0;
  auto r = run_tpm_void(tpm.config(), "io", [&](tpm_connection& c) -> msiv2::result<void> {
    if (++calls == 1)
      return c.failed(TSS2_TCTI_RC_IO_ERROR, "Esys_Fake");
    return msiv2::ok();
  });
  BOOST_TEST(r.ok(), error_text(r));
  BOOST_TEST(calls == 2);

  calls = 0;
  auto bad = run_tpm_void(tpm.config(), "use a bad handle",
                          [&](tpm_connection& c) -> msiv2::result<void> {
                            ++calls;
                            ESYS_TR h = ESYS_TR_NONE;
                            if (auto rc = Esys_TR_FromTPMPublic(c.esys(), 0x81fffff0, ESYS_TR_NONE,
                                                                ESYS_TR_NONE, ESYS_TR_NONE, &h);
                                rc != TSS2_RC_SUCCESS)
                              return c.failed(rc, "Esys_TR_FromTPMPublic(0x81fffff0)");
                            return msiv2::ok();
                          });
  BOOST_REQUIRE(!bad.ok());
  BOOST_TEST(calls == 1);
  BOOST_TEST(contains(bad.error(), "use a bad handle: Esys_TR_FromTPMPublic(0x81fffff0) failed on "
                                   "TPM '" + tpm.tcti() + "'"),
             bad.error());
}

BOOST_AUTO_TEST_CASE(a_non_tpm_failure_of_the_operation_is_not_retried) {
  auto& tpm = swtpm::shared();
  int calls = 0;
  auto r = run_tpm_void(tpm.config(), "parse", [&](tpm_connection&) -> msiv2::result<void> {
    ++calls;
    return msiv2::fail("the blob is truncated");
  });
  BOOST_REQUIRE(!r.ok());
  BOOST_TEST(r.error() == "parse: the blob is truncated");
  BOOST_TEST(calls == 1);
}

BOOST_AUTO_TEST_CASE(objects_left_loaded_by_a_dead_client_are_flushed_at_the_next_connection) {
  auto& tpm = swtpm::shared();
  auto made = run_tpm_void(tpm.config(), "leave", [](tpm_connection& c) -> msiv2::result<void> {
    if (auto rc = leave_a_primary_loaded(c); rc != TSS2_RC_SUCCESS)
      return c.failed(rc, "Esys_CreatePrimary");
    if (auto rc = leave_a_primary_loaded(c); rc != TSS2_RC_SUCCESS)
      return c.failed(rc, "Esys_CreatePrimary");
    return msiv2::ok();
  });
  BOOST_REQUIRE_MESSAGE(made.ok(), error_text(made));
  // swtpm has three object slots: without the flush, the next two primaries would not fit.
  BOOST_TEST(transient_objects(tpm.config()) == 0u);
  for (int i = 0; i < 3; ++i) {
    auto again = run_tpm_void(tpm.config(), "again", [](tpm_connection& c) -> msiv2::result<void> {
      if (auto rc = leave_a_primary_loaded(c); rc != TSS2_RC_SUCCESS)
        return c.failed(rc, "Esys_CreatePrimary");
      if (auto rc = leave_a_primary_loaded(c); rc != TSS2_RC_SUCCESS)
        return c.failed(rc, "Esys_CreatePrimary");
      return msiv2::ok();
    });
    BOOST_TEST(again.ok(), error_text(again));
  }
  BOOST_TEST(transient_objects(tpm.config()) == 0u);
}

BOOST_AUTO_TEST_CASE(tpm_object_flushes_what_it_holds) {
  auto& tpm = swtpm::shared();
  auto r = run_tpm<std::size_t>(tpm.config(), "scoped", [](tpm_connection& c)
                                                            -> msiv2::result<std::size_t> {
    TPM2B_SENSITIVE_CREATE sensitive{};
    TPM2B_PUBLIC in_public{};
    in_public.publicArea.type = TPM2_ALG_KEYEDHASH;
    in_public.publicArea.nameAlg = TPM2_ALG_SHA256;
    in_public.publicArea.objectAttributes = TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_FIXEDTPM
                                            | TPMA_OBJECT_FIXEDPARENT
                                            | TPMA_OBJECT_SENSITIVEDATAORIGIN
                                            | TPMA_OBJECT_USERWITHAUTH;
    in_public.publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_HMAC;
    in_public.publicArea.parameters.keyedHashDetail.scheme.details.hmac.hashAlg = TPM2_ALG_SHA256;
    TPM2B_DATA outside{};
    TPML_PCR_SELECTION pcrs{};
    ESYS_TR h = ESYS_TR_NONE;
    {
      if (auto rc = Esys_CreatePrimary(c.esys(), ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                       ESYS_TR_NONE, &sensitive, &in_public, &outside, &pcrs, &h,
                                       nullptr, nullptr, nullptr, nullptr);
          rc != TSS2_RC_SUCCESS)
        return c.failed(rc, "Esys_CreatePrimary");
      tpm_object held(c, h);
    }
    TPMI_YES_NO more = TPM2_NO;
    TPMS_CAPABILITY_DATA* raw = nullptr;
    if (auto rc = Esys_GetCapability(c.esys(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                     TPM2_CAP_HANDLES, TPM2_TRANSIENT_FIRST, TPM2_MAX_CAP_HANDLES,
                                     &more, &raw);
        rc != TSS2_RC_SUCCESS)
      return c.failed(rc, "Esys_GetCapability");
    esys_ptr<TPMS_CAPABILITY_DATA> data(raw);
    return static_cast<std::size_t>(data->data.handles.count);
  });
  BOOST_REQUIRE_MESSAGE(r.ok(), error_text(r));
  BOOST_TEST(*r == 0u);
}

BOOST_AUTO_TEST_CASE(threads_share_the_tpm_one_operation_at_a_time) {
  auto& tpm = swtpm::shared();
  auto cfg = tpm.config();
  std::atomic<int> inside{0}, most{0}, failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        auto r = run_tpm_void(cfg, "concurrent", [&](tpm_connection& c) -> msiv2::result<void> {
          int now = ++inside;
          int seen = most.load();
          while (now > seen && !most.compare_exchange_weak(seen, now)) {
          }
          TPM2B_DIGEST* random = nullptr;
          auto rc = Esys_GetRandom(c.esys(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, 16,
                                   &random);
          Esys_Free(random);
          --inside;
          if (rc != TSS2_RC_SUCCESS)
            return c.failed(rc, "Esys_GetRandom");
          return msiv2::ok();
        });
        if (!r)
          ++failures;
      }
    });
  for (auto& t : threads)
    t.join();
  BOOST_TEST(failures.load() == 0);
  BOOST_TEST(most.load() == 1);
}

BOOST_AUTO_TEST_CASE(the_tpm_answers_again_after_a_graceful_restart_and_after_sigkill) {
  auto& tpm = swtpm::shared();
  auto cfg = tpm.config();
  auto before = tpm.pid();
  tpm.restart();
  BOOST_TEST(tpm.pid() != before);
  BOOST_TEST(tpm.tcti() == cfg.tcti);
  auto a = probe_tpm(cfg);
  BOOST_TEST(a.ok(), error_text(a));
  tpm.kill_and_restart();
  auto b = probe_tpm(cfg);
  BOOST_TEST(b.ok(), error_text(b));
}

BOOST_AUTO_TEST_CASE(a_stopped_tpm_fails_with_the_tcti_named_and_recovers_when_back) {
  auto& tpm = swtpm::shared();
  auto cfg = tpm.config();
  cfg.attempts = 2;
  tpm.stop();
  auto down = probe_tpm(cfg);
  tpm.start();
  BOOST_REQUIRE(!down.ok());
  BOOST_TEST(contains(down.error(), tpm.tcti()), down.error());
  auto up = probe_tpm(cfg);
  BOOST_TEST(up.ok(), error_text(up));
}

BOOST_AUTO_TEST_SUITE_END()
