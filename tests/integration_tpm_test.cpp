// The TPM key store end to end: msiv2-token processes (--key-store tpm|auto --tpm-tcti) and the
// store itself against one software TPM (tests/support/swtpm) and an in-process simulator,
// whose counters are the judge: one key shared by sixteen processes and one certificate; a
// reboot (swtpm restarted on the same state, a new boot id) costs getplatformmetadata + token
// only; a cleared TPM gives a new key; the auto and tpm selections with and without a TPM.

#include <boost/test/unit_test.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <simdjson.h>

#include "actors/software_key_store.hpp"
#include "actors/tpm_key_store.hpp"
#include "platform/binding.hpp"
#include "platform/files.hpp"
#include "platform/tpm_provider.hpp"
#include "tests/support/child_process.hpp"
#include "tests/support/sim_fixture.hpp"
#include "tests/support/swtpm.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_keys.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using msiv2::test::child_process;
using msiv2::test::contains;
using msiv2::test::error_text;
using msiv2::test::sim_fixture;
using msiv2::test::swtpm;

const std::string arm = "https://management.azure.com";

/// One machine: a cache directory and a boot id file (the TPM is the suite's swtpm).
struct machine : msiv2::test::machine_dir {
  machine() : machine_dir("tpm-machine", "7e1f0c2a-0000-4000-8000-000000000001") {}
};

std::vector<std::string> token_args(sim_fixture& f, const machine& m, const std::string& tcti,
                                    std::vector<std::string> extra = {}) {
  std::vector<std::string> args{MSIV2_TOKEN_BINARY, "--imds",     f.urls().imds, "--ca-file",
                                f.urls().ca_file,   "--timeout",  "60",          "--cache-dir",
                                m.cache,            "--boot-id-file", m.boot_id_file,
                                "--resource",       arm,          "--json",      "--tpm-tcti",
                                tcti,               "--trust-host", "127.0.0.1", "--persist-key"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

struct token_line {
  std::string source, x5t, strength, error;
  int call_status = 0;
};

token_line parse_line(const std::string& out) {
  token_line line;
  auto nl = out.find('\n');
  std::string text = out.substr(0, nl);
  simdjson::dom::parser parser;
  simdjson::padded_string padded(text);
  simdjson::dom::element doc;
  if (parser.parse(padded).get(doc)) {
    line.error = "not JSON: " + text;
    return line;
  }
  std::string_view v;
  if (!doc["source"].get(v))
    line.source = std::string(v);
  if (!doc["x5t"].get(v))
    line.x5t = std::string(v);
  if (!doc["binding_strength"].get(v))
    line.strength = std::string(v);
  if (!doc["error"].get(v))
    line.error = std::string(v);
  std::int64_t status = 0;
  if (!doc["call"]["status"].get(status))
    line.call_status = static_cast<int>(status);
  return line;
}

token_line run_one(sim_fixture& f, const machine& m, const std::string& tcti,
                   std::vector<std::string> extra = {}, std::string* err = nullptr) {
  child_process p(token_args(f, m, tcti, std::move(extra)));
  int code = p.wait(90s);
  if (err != nullptr)
    *err = p.err();
  BOOST_TEST_REQUIRE(code == 0, "exit " << code << ", out: " << p.out() << ", err: " << p.err());
  auto line = parse_line(p.out());
  BOOST_TEST_REQUIRE(line.error.empty(), line.error);
  BOOST_TEST_REQUIRE(line.x5t.size() == 43u, p.out());
  return line;
}

struct counts {
  std::uint64_t metadata_200, issue_all, token_200;
};

counts snapshot(sim_fixture& f) {
  auto& s = f.sim();
  return {s.count("imds_metadata", 200), s.count("imds_issue"), s.count("token", 200)};
}

// Clears the owner hierarchy (tpm2_clear): a new owner seed, so keys wrapped under the old
// storage key no longer load.
void clear_tpm(const msiv2::platform::tpm_config& cfg) {
  auto r = msiv2::platform::run_tpm_void(cfg, "clear", [](msiv2::platform::tpm_connection& tpm)
                                                           -> msiv2::result<void> {
    if (auto rc = Esys_Clear(tpm.esys(), ESYS_TR_RH_LOCKOUT, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                             ESYS_TR_NONE);
        rc != TSS2_RC_SUCCESS)
      return tpm.failed(rc, "Esys_Clear");
    return msiv2::ok();
  });
  BOOST_REQUIRE_MESSAGE(r.ok(), error_text(r));
}

/// A log sink that keeps the lines.
struct kept_log : msiv2::platform::log_sink {
  std::mutex mtx;
  std::string text;
  void write(msiv2::platform::log_level, std::string_view component,
             std::string_view message) override {
    std::lock_guard<std::mutex> g(mtx);
    text += std::string(component) + ": " + std::string(message) + "\n";
  }
  std::string all() {
    std::lock_guard<std::mutex> g(mtx);
    return text;
  }
};

msiv2::result<msiv2::key_ref> load(msiv2::key_store& ks) {
  std::promise<msiv2::result<msiv2::key_ref>> p;
  auto f = p.get_future();
  ks.load_or_create([&p](msiv2::result<msiv2::key_ref> r) { p.set_value(std::move(r)); });
  return f.get();
}

std::string prepared_cache(const msiv2::test::temp_dir& root) {
  auto dir = root / "cache";
  auto ok = msiv2::platform::prepare_private_dir(dir);
  BOOST_REQUIRE_MESSAGE(ok.ok(), error_text(ok));
  return dir;
}

} // namespace

BOOST_AUTO_TEST_SUITE(integration_tpm_test)

BOOST_AUTO_TEST_CASE(the_store_keeps_a_wrapped_blob_and_later_stores_load_the_same_key) {
  auto& tpm = swtpm::shared();
  msiv2::test::temp_dir root{"tpm-store"};
  auto dir = prepared_cache(root);
  auto log = std::make_shared<kept_log>();
  msiv2::tpm_key_store_settings s;
  s.tpm = tpm.config();
  s.cache_dir = dir;
  s.log = log;
  std::string first_id;
  {
    msiv2::tpm_key_store store(s);
    BOOST_TEST((store.strength() == msiv2::binding_strength::hardware_key));
    auto k = load(store);
    BOOST_REQUIRE_MESSAGE(k.ok(), error_text(k));
    BOOST_TEST(msiv2::platform::is_tpm_pkey(k->key->get()));
    first_id = k->key_id;
  }
  struct stat st {};
  BOOST_REQUIRE(::stat((dir + "/" + msiv2::tpm_key_file_name).c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == 0600u);
  // What is on disk is the TPM-wrapped blob only: no PEM private key.
  auto bytes = msiv2::platform::read_private_file(dir, msiv2::tpm_key_file_name);
  BOOST_TEST(contains(bytes.bytes, "msiv2-tpm-key-v1"));
  BOOST_TEST(!contains(bytes.bytes, "PRIVATE KEY"));
  BOOST_TEST(contains(log->all(), "new TPM binding key " + first_id));

  tpm.restart();
  msiv2::tpm_key_store again(s);
  auto k = load(again);
  BOOST_REQUIRE_MESSAGE(k.ok(), error_text(k));
  BOOST_TEST(k->key_id == first_id);
  tpm.kill_and_restart();
  msiv2::tpm_key_store after_kill(s);
  auto k2 = load(after_kill);
  BOOST_REQUIRE_MESSAGE(k2.ok(), error_text(k2));
  BOOST_TEST(k2->key_id == first_id);
}

BOOST_AUTO_TEST_CASE(tpm_mode_without_a_tpm_fails_naming_the_device_and_never_falls_back) {
  msiv2::test::temp_dir root{"tpm-none"};
  msiv2::tpm_key_store_settings s;
  s.tpm.tcti = "device:/dev/msiv2-no-such-tpm";
  s.cache_dir = prepared_cache(root);
  msiv2::tpm_key_store store(s);
  auto k = load(store);
  BOOST_REQUIRE(!k.ok());
  BOOST_TEST(contains(k.error(), "TPM key store"), k.error());
  BOOST_TEST(contains(k.error(), "/dev/msiv2-no-such-tpm does not exist"), k.error());
  BOOST_TEST((store.strength() == msiv2::binding_strength::hardware_key));
}

BOOST_AUTO_TEST_CASE(auto_mode_without_a_tpm_uses_software_keys_and_logs_why) {
  msiv2::test::temp_dir root{"tpm-auto"};
  auto log = std::make_shared<kept_log>();
  msiv2::tpm_key_store_settings s;
  s.tpm.tcti = "device:/dev/msiv2-no-such-tpm";
  s.log = log;
  s.fallback = std::make_shared<msiv2::software_key_store>();
  msiv2::tpm_key_store store(s);
  BOOST_TEST((store.strength() == msiv2::binding_strength::software_key));
  auto k = load(store);
  BOOST_REQUIRE_MESSAGE(k.ok(), error_text(k));
  BOOST_TEST(!msiv2::platform::is_tpm_pkey(k->key->get()));
  BOOST_TEST((store.strength() == msiv2::binding_strength::software_key));
  BOOST_TEST(contains(log->all(), "using software keys, the TPM is not usable"), log->all());
  BOOST_TEST(contains(log->all(), "/dev/msiv2-no-such-tpm does not exist"), log->all());
}

BOOST_AUTO_TEST_CASE(auto_mode_with_a_tpm_uses_it_and_says_so) {
  auto& tpm = swtpm::shared();
  auto log = std::make_shared<kept_log>();
  msiv2::tpm_key_store_settings s;
  s.tpm = tpm.config();
  s.log = log;
  s.fallback = std::make_shared<msiv2::software_key_store>();
  msiv2::tpm_key_store store(s);
  auto k = load(store);
  BOOST_REQUIRE_MESSAGE(k.ok(), error_text(k));
  BOOST_TEST(msiv2::platform::is_tpm_pkey(k->key->get()));
  BOOST_TEST((store.strength() == msiv2::binding_strength::hardware_key));
  BOOST_TEST(contains(log->all(), "binding keys are held by the TPM at " + tpm.tcti()), log->all());
}

BOOST_AUTO_TEST_CASE(sixteen_processes_share_one_tpm_key_and_one_certificate) {
  auto& tpm = swtpm::shared();
  sim_fixture f;
  machine m;
  std::vector<std::unique_ptr<child_process>> procs;
  for (int i = 0; i < 16; ++i)
    procs.push_back(std::make_unique<child_process>(
      token_args(f, m, tpm.tcti(), {"--key-store", "tpm", "--log-level", "info"})));
  std::set<std::string> x5ts;
  std::string logs;
  for (auto& p : procs) {
    int code = p->wait(180s);
    BOOST_TEST_REQUIRE(code == 0, "exit " << code << ", err: " << p->err());
    auto line = parse_line(p->out());
    BOOST_TEST_REQUIRE(line.error.empty(), line.error);
    BOOST_TEST(line.strength == "hardware_key");
    x5ts.insert(line.x5t);
    logs += p->err();
  }
  BOOST_TEST(x5ts.size() == 1u, x5ts.size() << " certificates; logs:\n" << logs);
  BOOST_TEST(f.sim().count("imds_issue") == 1u);
  BOOST_TEST(f.sim().count("token", 200) == 16u);
  BOOST_TEST(m.files("binding-key").size() == 1u); // binding-key.tpm, no PEM
  BOOST_TEST(m.files("binding-key.tpm").size() == 1u);
  BOOST_TEST(m.files("cert-").size() == 1u);
}

BOOST_AUTO_TEST_CASE(after_a_reboot_the_certificate_is_adopted_for_metadata_and_token_only) {
  auto& tpm = swtpm::shared();
  sim_fixture f;
  machine m;
  auto first = run_one(f, m, tpm.tcti(),
                       {"--key-store", "tpm", "--call", f.urls().resource + "/api/whoami"});
  BOOST_TEST(first.strength == "hardware_key");
  BOOST_TEST(first.call_status == 200); // the resource accepted the TPM-bound token over mTLS
  // Reboot: the TPM restarts on its state, the machine gets a new boot id.
  tpm.restart();
  m.set_boot_id("7e1f0c2a-0000-4000-8000-000000000002");
  const auto before = snapshot(f);
  auto second = run_one(f, m, tpm.tcti(),
                        {"--key-store", "tpm", "--call", f.urls().resource + "/api/whoami"});
  const auto after = snapshot(f);
  BOOST_TEST(second.x5t == first.x5t);
  BOOST_TEST(second.call_status == 200);
  BOOST_TEST(after.metadata_200 - before.metadata_200 == 1u);
  BOOST_TEST(after.token_200 - before.token_200 == 1u);
  BOOST_TEST(after.issue_all - before.issue_all == 0u);
  BOOST_TEST(f.sim().count("attestation") == 0u);
}

BOOST_AUTO_TEST_CASE(auto_selection_in_msiv2_token_with_and_without_a_tpm) {
  auto& tpm = swtpm::shared();
  sim_fixture f;
  machine with, without;
  auto hw = run_one(f, with, tpm.tcti(), {"--key-store", "auto"});
  BOOST_TEST(hw.strength == "hardware_key");
  std::string err;
  auto sw = run_one(f, without, "device:/dev/msiv2-no-such-tpm",
                    {"--key-store", "auto", "--log-level", "warning"}, &err);
  BOOST_TEST(sw.strength == "software_key");
  BOOST_TEST(contains(err, "using software keys, the TPM is not usable"), err);
}

BOOST_AUTO_TEST_CASE(msiv2_token_with_tpm_and_no_tpm_exits_with_the_clear_error) {
  sim_fixture f;
  machine m;
  child_process p(token_args(f, m, "device:/dev/msiv2-no-such-tpm", {"--key-store", "tpm"}));
  int code = p.wait(60s);
  BOOST_TEST(code != 0);
  auto all = p.out() + p.err();
  BOOST_TEST(contains(all, "/dev/msiv2-no-such-tpm does not exist"), all);
  BOOST_TEST(f.sim().count("imds_issue") == 0u);
}

// Last: it clears the suite's TPM. The key file is not loaded ahead of the first token: the TLS
// handshake's signature is the load check, the TPM's refusal there marks the key unusable, the
// exchange re-mints and the key manager replaces the key first. The one request succeeds.
BOOST_AUTO_TEST_CASE(a_cleared_tpm_gives_a_new_key_a_new_certificate_and_removes_the_old_files) {
  auto& tpm = swtpm::shared();
  sim_fixture f;
  machine m;
  auto first = run_one(f, m, tpm.tcti(), {"--key-store", "tpm"});
  auto old_certs = m.files("cert-");
  BOOST_REQUIRE(old_certs.size() == 1u);
  clear_tpm(tpm.config());
  m.set_boot_id("7e1f0c2a-0000-4000-8000-000000000003");
  std::string err;
  auto second = run_one(f, m, tpm.tcti(), {"--key-store", "tpm", "--log-level", "info"}, &err);
  BOOST_TEST(second.x5t != first.x5t);
  BOOST_TEST(second.strength == "hardware_key");
  BOOST_TEST(f.sim().count("imds_issue") == 2u);
  BOOST_TEST(m.files("cert-").size() == 1u); // the new key's; the old one's was deleted
  BOOST_TEST(contains(err, "made for another key"), err);
  BOOST_TEST(contains(err, "TPM binding key replaced"), err);
  BOOST_TEST(contains(err, "the TPM no longer loads this key"), err);
  BOOST_TEST(contains(err, "the TLS handshake could not sign"), err);
  // The refused handshake never reached the token endpoint: one token call per run.
  BOOST_TEST(f.sim().count("token") == 2u);
}

BOOST_AUTO_TEST_SUITE_END()
