// The real msiv2-sim binary: argument and config errors exit 2 with one line naming the
// problem; serve writes its ready file, answers, and stops cleanly on SIGTERM/SIGINT.

#include <boost/test/unit_test.hpp>

#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <simdjson.h>

#include "platform/encoding.hpp"
#include "tests/support/child_process.hpp"
#include "tests/support/http_client.hpp"

namespace {

using msiv2::test::run_result;

/// `args` after the msiv2-sim binary.
std::vector<std::string> sim_command(std::vector<std::string> args) {
  args.insert(args.begin(), MSIV2_SIM_BINARY);
  return args;
}

/// msiv2-sim running with `args` (stdout and stderr on pipes).
class child : public msiv2::test::child_process {
public:
  explicit child(std::vector<std::string> args) : child_process(sim_command(std::move(args))) {}
};

/// msiv2-sim run to completion (30 s at most).
run_result run(std::vector<std::string> args) {
  return msiv2::test::run_process(sim_command(std::move(args)), std::chrono::seconds(30));
}

/// A temporary directory removed at scope end.
struct temp_dir {
  std::string path;
  temp_dir() {
    path = "/tmp/msiv2-sim-cli-XXXXXX";
    BOOST_TEST_REQUIRE(::mkdtemp(path.data()) != nullptr);
  }
  ~temp_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  std::string write(const std::string& name, const std::string& content) const {
    std::string p = path + "/" + name;
    std::ofstream(p) << content;
    return p;
  }
};

/// Exit code 2 and exactly one stderr line that contains `text`.
void check_usage_error(const run_result& r, std::string_view text) {
  BOOST_TEST(r.code == 2, "exit code " << r.code << ", stderr: " << r.err);
  BOOST_TEST(r.err.find(text) != std::string::npos, "stderr '" << r.err << "' should name '" << text << "'");
  BOOST_TEST(std::count(r.err.begin(), r.err.end(), '\n') == 1, r.err);
  BOOST_TEST(r.out.empty(), r.out);
}

std::optional<std::string> json_string(const std::string& body, std::string_view key) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view s;
  if (parser.parse(body).get(doc) != simdjson::SUCCESS || doc[key].get(s) != simdjson::SUCCESS)
    return std::nullopt;
  return std::string(s);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// serve, wait until ready, check the ready file and one answer, send `sig`, expect exit 0.
void serve_then_signal(int sig) {
  temp_dir dir;
  const std::string ready = dir.path + "/ready.json";
  child c({"serve", "--ready-file", ready, "--state-dir", dir.path + "/state", "--threads", "1",
           "--cert-lifetime", "600"});
  BOOST_TEST_REQUIRE(c.read_until("ca_file", std::chrono::seconds(30)),
                     "not ready; stdout: " << c.out() << " stderr: " << c.err());
  const std::string text = read_file(ready);
  auto imds = json_string(text, "imds");
  BOOST_TEST_REQUIRE(imds.has_value(), text);
  BOOST_TEST(c.out().find(*imds) != std::string::npos, c.out());
  for (auto key : {"attestation", "token", "resource", "admin", "ca_file", "tenant_id"})
    BOOST_TEST(json_string(text, key).has_value(), key << " missing: " << text);
  BOOST_TEST(text.find("\"pid\":") != std::string::npos);
  BOOST_TEST(std::filesystem::exists(dir.path + "/state/ca.pem"));

  auto r = msiv2::test::http_get(*imds + "/metadata/identity/getplatformmetadata?cred-api-version=2.0",
                                 {{"Metadata", "true"}, {"x-ms-client-request-id", msiv2::platform::uuid_v4()}});
  BOOST_TEST(r.status == 200, r.error << r.body);

  c.signal(sig);
  BOOST_TEST(c.wait(std::chrono::seconds(30)) == 0, "stderr: " << c.err());
  BOOST_TEST(c.err().empty(), c.err());
}

} // namespace

BOOST_AUTO_TEST_SUITE(sim_cli_test)

BOOST_AUTO_TEST_CASE(bad_arguments_exit_2_naming_the_problem) {
  check_usage_error(run({}), "missing command");
  check_usage_error(run({"frobnicate"}), "unknown command 'frobnicate'");
  check_usage_error(run({"serve", "--bogus"}), "unknown option '--bogus'");
  check_usage_error(run({"serve", "--threads"}), "--threads needs a value");
  check_usage_error(run({"serve", "--threads", "0"}), "--threads: must be an integer from 1 to 64, got '0'");
  check_usage_error(run({"serve", "--threads=abc"}), "--threads: must be an integer");
  check_usage_error(run({"serve", "--imds-port", "65536"}), "--imds-port: must be an integer from 0 to 65535");
  check_usage_error(run({"serve", "--attestation", "sometimes"}), "--attestation: must be off, optional or required");
  check_usage_error(run({"serve", "--cert-lifetime", "-5"}), "--cert-lifetime");
  check_usage_error(run({"serve", "--v1-only=yes"}), "--v1-only takes no value");
  check_usage_error(run({"serve", "--imds-port", "9000", "--admin-port", "9000"}),
                    "admin_port: 9000 is also imds_port");
}

BOOST_AUTO_TEST_CASE(bad_config_files_exit_2_naming_the_file_and_member) {
  temp_dir dir;
  check_usage_error(run({"serve", "--config", dir.path + "/missing.json"}), "missing.json: cannot open");
  check_usage_error(run({"serve", "--config", dir.write("broken.json", "{\"threads\": ")}),
                    "broken.json: config");
  check_usage_error(run({"serve", "--config", dir.write("threads.json", "{\"threads\": 100}")}),
                    "threads: must be an integer from 1 to 64");
  check_usage_error(run({"serve", "--config", dir.write("unknown.json", "{\"colour\": \"blue\"}")}),
                    "colour: unknown member");
  check_usage_error(run({"serve", "--config", dir.write("remote.json", "{\"bind_address\": \"0.0.0.0\"}")}),
                    "bind_address: must be a loopback IP address");
  check_usage_error(run({"serve", "--config", dir.write("guid.json", "{\"tenant_id\": \"contoso\"}")}),
                    "tenant_id: must be a GUID");
}

BOOST_AUTO_TEST_CASE(help_and_version_exit_0) {
  auto help = run({"--help"});
  BOOST_TEST(help.code == 0);
  BOOST_TEST(help.out.find("usage: msiv2-sim serve") != std::string::npos, help.out);
  BOOST_TEST(help.out.find("--ready-file") != std::string::npos);
  auto version = run({"--version"});
  BOOST_TEST(version.code == 0);
  BOOST_TEST(version.out.rfind("msiv2-sim ", 0) == 0, version.out);
}

BOOST_AUTO_TEST_CASE(serve_writes_the_ready_file_and_stops_cleanly_on_sigterm) {
  serve_then_signal(SIGTERM);
}

BOOST_AUTO_TEST_CASE(serve_stops_cleanly_on_sigint) {
  serve_then_signal(SIGINT);
}

BOOST_AUTO_TEST_CASE(config_file_and_flags_combine_with_flags_winning) {
  temp_dir dir;
  const std::string ready = dir.path + "/ready.json";
  auto cfg = dir.write("sim.json", "{\"v1_only\": false, \"threads\": 3, \"region\": \"uksouth\"}");
  child c({"serve", "--config", cfg, "--v1-only", "--ready-file", ready, "--state-dir", dir.path + "/s"});
  BOOST_TEST_REQUIRE(c.read_until("ca_file", std::chrono::seconds(30)), c.err());
  auto admin = json_string(read_file(ready), "admin");
  BOOST_TEST_REQUIRE(admin.has_value());
  auto token = json_string(read_file(ready), "admin_token");
  BOOST_TEST_REQUIRE(token.has_value());
  BOOST_TEST(msiv2::test::http_get(*admin + "/config").status == 401); // no token, no config
  auto config = msiv2::test::http_get(*admin + "/config", {{"Authorization", "Bearer " + *token}});
  BOOST_TEST(config.body.find("\"v1_only\":true") != std::string::npos, config.body);
  BOOST_TEST(config.body.find("\"threads\":3") != std::string::npos, config.body);
  BOOST_TEST(config.body.find("\"region\":\"uksouth\"") != std::string::npos, config.body);
  c.signal(SIGTERM);
  BOOST_TEST(c.wait(std::chrono::seconds(30)) == 0);
}

BOOST_AUTO_TEST_CASE(a_busy_port_is_a_clear_start_failure) {
  temp_dir dir;
  const std::string ready = dir.path + "/ready.json";
  child first({"serve", "--ready-file", ready, "--state-dir", dir.path + "/a"});
  BOOST_TEST_REQUIRE(first.read_until("ca_file", std::chrono::seconds(30)), first.err());
  auto imds = json_string(read_file(ready), "imds");
  BOOST_TEST_REQUIRE(imds.has_value());
  const std::string port = imds->substr(imds->rfind(':') + 1);
  auto second = run({"serve", "--imds-port", port, "--state-dir", dir.path + "/b"});
  BOOST_TEST(second.code == 1, second.err);
  BOOST_TEST(second.err.find("imds listener on 127.0.0.1:" + port) != std::string::npos, second.err);
  first.signal(SIGTERM);
  BOOST_TEST(first.wait(std::chrono::seconds(30)) == 0);
}

BOOST_AUTO_TEST_SUITE_END()
