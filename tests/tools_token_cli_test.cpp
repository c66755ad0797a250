// The real msiv2-token binary against an in-process simulator: a token as JSON (never the
// token itself unless asked), a resource call over mTLS, usage errors, and the exit codes of
// a v1-only host and of an unknown identity.

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <simdjson.h>

#include "tests/support/child_process.hpp"
#include "tests/support/sim_fixture.hpp"
#include "tests/support/temp_dir.hpp"

namespace {

using msiv2::test::run_process;
using msiv2::test::run_result;
using msiv2::test::sim_fixture;

/// msiv2-token with the simulator's IMDS and CA and a cache directory of its own (a fresh
/// one unless `cache_dir` is given), then `extra`.
run_result token_cli(sim_fixture& f, std::vector<std::string> extra, std::string cache_dir = {}) {
  msiv2::test::temp_dir fresh{"cli-cache"};
  std::vector<std::string> args{MSIV2_TOKEN_BINARY, "--imds", f.urls().imds, "--ca-file",
                                f.urls().ca_file, "--trust-host", "127.0.0.1", "--persist-key", "--timeout", "20", "--cache-dir",
                                cache_dir.empty() ? fresh.path() : cache_dir};
  args.insert(args.end(), extra.begin(), extra.end());
  return run_process(std::move(args), std::chrono::seconds(60));
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

} // namespace

BOOST_AUTO_TEST_SUITE(tools_token_cli_test)

BOOST_AUTO_TEST_CASE(prints_token_facts_as_json_without_the_token) {
  sim_fixture f;
  auto r = token_cli(f, {"--resource", "https://management.azure.com", "--json"});
  BOOST_TEST_REQUIRE(r.code == 0, "exit " << r.code << ", stderr: " << r.err);
  simdjson::padded_string json(r.out);
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  BOOST_TEST_REQUIRE(!parser.parse(json).get(doc), "not JSON: " << r.out);
  std::string_view type, source, x5t;
  std::int64_t expires_on = 0, refresh_on = 0;
  BOOST_TEST(!doc["token_type"].get(type));
  BOOST_TEST(!doc["source"].get(source));
  BOOST_TEST(!doc["x5t"].get(x5t));
  BOOST_TEST(!doc["expires_on"].get(expires_on));
  BOOST_TEST(!doc["refresh_on"].get(refresh_on));
  BOOST_TEST(type == "mtls_pop");
  BOOST_TEST(source == "network");
  BOOST_TEST(x5t.size() == 43u); // base64url SHA-256
  BOOST_TEST(expires_on > unix_now());
  BOOST_TEST(refresh_on <= expires_on);
  BOOST_TEST(doc["access_token"].error() == simdjson::NO_SUCH_FIELD);
  BOOST_TEST(r.out.find("eyJ") == std::string::npos, "a JWT was printed");
  BOOST_TEST(r.err.find("PRIVATE KEY") == std::string::npos);
  BOOST_TEST(f.sim().count("imds_issue", 200) == 1u);
  BOOST_TEST(f.sim().count("token", 200) == 1u);
}

BOOST_AUTO_TEST_CASE(show_token_prints_the_token_only_when_asked) {
  sim_fixture f;
  auto plain = token_cli(f, {"--resource", "https://vault.azure.net"});
  BOOST_TEST_REQUIRE(plain.code == 0, "stderr: " << plain.err);
  BOOST_TEST(plain.out.find("<redacted:") != std::string::npos, plain.out);
  BOOST_TEST(plain.out.find("eyJ") == std::string::npos);
  auto shown = token_cli(f, {"--resource", "https://vault.azure.net", "--json", "--show-token"});
  BOOST_TEST_REQUIRE(shown.code == 0, "stderr: " << shown.err);
  BOOST_TEST(shown.out.find("\"access_token\":\"eyJ") != std::string::npos);
  BOOST_TEST(shown.out.find("PRIVATE KEY") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(calls_the_resource_over_mtls_with_the_bound_token) {
  sim_fixture f;
  auto r = token_cli(f, {"--resource", "https://management.azure.com", "--call",
                         f.urls().resource + "/api/whoami"});
  BOOST_TEST_REQUIRE(r.code == 0, "exit " << r.code << ", out: " << r.out << ", err: " << r.err);
  BOOST_TEST(r.out.find("call:        HTTP 200") != std::string::npos, r.out);
  BOOST_TEST(r.out.find("\"token_type\":\"mtls_pop\"") != std::string::npos, r.out);
  // The call says the token is bound, as MSAL's calls with a bound token do.
  BOOST_TEST(r.out.find("\"token_bound_auth\":true") != std::string::npos, r.out);
  BOOST_TEST(f.sim().count("resource", 200) == 1u);
}

BOOST_AUTO_TEST_CASE(capabilities_print_json_from_the_probe_without_minting) {
  sim_fixture f;
  auto r = token_cli(f, {"--capabilities"});
  BOOST_TEST_REQUIRE(r.code == 0, "exit " << r.code << ", err: " << r.err);
  BOOST_TEST(r.out.find("{\"imds\":\"v2\",\"strongest_binding\":\"software_key\",\"detail\":") ==
               0u, r.out);
  BOOST_TEST(f.sim().count("imds_issue") == 0u);
  BOOST_TEST(f.sim().count("token") == 0u);
}

BOOST_AUTO_TEST_CASE(hardware_binding_required_on_a_software_key_host_exits_4) {
  sim_fixture f;
  auto r = token_cli(f, {"--resource", "https://management.azure.com", "--min-binding",
                         "hardware_key", "--json"});
  BOOST_TEST(r.code == 4, "exit " << r.code << ", stderr: " << r.err);
  BOOST_TEST(r.out.find("\"error\":\"binding_too_weak\"") != std::string::npos, r.out);
  BOOST_TEST(f.sim().count("imds_metadata") == 0u);
  auto bad = token_cli(f, {"--resource", "https://management.azure.com", "--min-binding", "tpm"});
  BOOST_TEST(bad.code == 2, "exit " << bad.code);
}

BOOST_AUTO_TEST_CASE(attested_key_with_attestation_required) {
  sim_fixture f([](msiv2::sim::config& c) { c.attestation = msiv2::sim::attestation_policy::required; });
  auto r = token_cli(f, {"--resource", "https://management.azure.com", "--attest", "--json"});
  BOOST_TEST_REQUIRE(r.code == 0, "exit " << r.code << ", stderr: " << r.err);
  BOOST_TEST(f.sim().count("attestation", 200) == 1u);
  BOOST_TEST(f.sim().count("imds_issue", 200) == 1u);
}

BOOST_AUTO_TEST_CASE(bad_arguments_exit_2_with_one_line) {
  const std::vector<std::vector<std::string>> cases{
    {MSIV2_TOKEN_BINARY},
    {MSIV2_TOKEN_BINARY, "--resource"},
    {MSIV2_TOKEN_BINARY, "--resource", "r", "--token-type", "pop"},
    {MSIV2_TOKEN_BINARY, "--resource", "r", "--bogus"},
    {MSIV2_TOKEN_BINARY, "--resource", "r", "--timeout", "0"},
    {MSIV2_TOKEN_BINARY, "--resource", "r", "--client-id", "a", "--object-id", "b"},
    {MSIV2_TOKEN_BINARY, "--resource", "r", "--imds", "169.254.169.254"},
    {MSIV2_TOKEN_BINARY, "--resource", "r", "--repeat", "0"},
    {MSIV2_TOKEN_BINARY, "--resource", "r", "--interval-ms", "-1"},
    {MSIV2_TOKEN_BINARY, "--resource", "r", "--cache-dir", "relative/dir"},
    {MSIV2_TOKEN_BINARY, "--resource", "r", "--log-level", "loud"},
  };
  for (const auto& args : cases) {
    auto r = run_process(args, std::chrono::seconds(30));
    BOOST_TEST(r.code == 2, "args ending " << args.back() << ": exit " << r.code);
    BOOST_TEST(r.out.empty());
    BOOST_TEST(std::count(r.err.begin(), r.err.end(), '\n') == 1, r.err);
  }
  auto help = run_process({MSIV2_TOKEN_BINARY, "--help"});
  BOOST_TEST(help.code == 0);
  BOOST_TEST(help.out.find("exit codes") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(repeat_prints_one_json_object_per_token_from_one_process) {
  sim_fixture f;
  auto r = token_cli(f, {"--resource", "https://management.azure.com", "--json", "--repeat", "3",
                         "--interval-ms", "50"},
                     "none");
  BOOST_TEST_REQUIRE(r.code == 0, "exit " << r.code << ", stderr: " << r.err);
  BOOST_TEST(std::count(r.out.begin(), r.out.end(), '\n') == 3, r.out);
  simdjson::dom::parser parser;
  std::string first_x5t;
  std::size_t pos = 0;
  for (std::int64_t n = 0; n < 3; ++n) {
    auto nl = r.out.find('\n', pos);
    BOOST_TEST_REQUIRE(nl != std::string::npos);
    simdjson::padded_string line(r.out.substr(pos, nl - pos));
    pos = nl + 1;
    simdjson::dom::element doc;
    BOOST_TEST_REQUIRE(!parser.parse(line).get(doc), "not JSON: " << line);
    std::int64_t index = -1;
    std::string_view source, x5t;
    BOOST_TEST(!doc["n"].get(index));
    BOOST_TEST(!doc["source"].get(source));
    BOOST_TEST(!doc["x5t"].get(x5t));
    BOOST_TEST(index == n);
    BOOST_TEST(source == (n == 0 ? "network" : "cache"));
    if (n == 0)
      first_x5t = std::string(x5t);
    BOOST_TEST(x5t == first_x5t);
  }
  BOOST_TEST(f.sim().count("imds_issue", 200) == 1u);
  BOOST_TEST(f.sim().count("token", 200) == 1u);
}

BOOST_AUTO_TEST_CASE(repeat_without_json_prints_one_line_per_token) {
  sim_fixture f;
  auto r = token_cli(f, {"--resource", "https://management.azure.com", "--repeat", "2",
                         "--interval-ms", "0"});
  BOOST_TEST_REQUIRE(r.code == 0, "exit " << r.code << ", stderr: " << r.err);
  BOOST_TEST(std::count(r.out.begin(), r.out.end(), '\n') == 2, r.out);
  BOOST_TEST(r.out.rfind("token 0: mtls_pop source=network x5t#S256=", 0) == 0u, r.out);
  BOOST_TEST(r.out.find("\ntoken 1: mtls_pop source=cache x5t#S256=") != std::string::npos, r.out);
  BOOST_TEST(r.out.find("<redacted:") != std::string::npos, r.out);
  BOOST_TEST(r.out.find("eyJ") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(v1_only_host_and_mtls_pop_exit_4) {
  sim_fixture f([](msiv2::sim::config& c) { c.v1_only = true; });
  auto r = token_cli(f, {"--resource", "https://management.azure.com"});
  BOOST_TEST(r.code == 4, "exit " << r.code << ", stderr: " << r.err);
  BOOST_TEST(r.err.find("v1_only_host") != std::string::npos, r.err);
  // A bearer token still works on the same host (IMDS v1).
  auto bearer = token_cli(f, {"--resource", "https://management.azure.com", "--token-type",
                              "bearer", "--json"});
  BOOST_TEST(bearer.code == 0, "exit " << bearer.code << ", stderr: " << bearer.err);
  BOOST_TEST(bearer.out.find("\"token_type\":\"bearer\"") != std::string::npos, bearer.out);
}

BOOST_AUTO_TEST_CASE(unknown_client_id_exits_5) {
  sim_fixture f;
  auto r = token_cli(f, {"--resource", "https://management.azure.com", "--client-id",
                         "99999999-9999-4999-8999-999999999999", "--json"});
  BOOST_TEST(r.code == 5, "exit " << r.code << ", stderr: " << r.err);
  BOOST_TEST(r.out.find("\"error\":\"identity_not_found\"") != std::string::npos, r.out);
}

BOOST_AUTO_TEST_SUITE_END()
