// The real msiv2-token binary against an in-process simulator: a token as JSON (never the
// token itself unless asked), a resource call over mTLS, usage errors, and the exit codes of
// a v1-only host and of an unknown identity.

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include <simdjson.h>

#include "tests/support/child_process.hpp"
#include "tests/support/sim_fixture.hpp"

namespace {

using msiv2::test::run_process;
using msiv2::test::run_result;
using msiv2::test::sim_fixture;

/// msiv2-token with the simulator's IMDS and CA, then `extra`.
run_result token_cli(sim_fixture& f, std::vector<std::string> extra) {
  std::vector<std::string> args{MSIV2_TOKEN_BINARY, "--imds", f.urls().imds, "--ca-file",
                                f.urls().ca_file, "--timeout", "20"};
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
  BOOST_TEST(f.sim().count("resource", 200) == 1u);
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
