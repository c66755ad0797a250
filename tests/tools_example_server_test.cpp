// The example async server (tools/examples/async_server.cpp) against an in-process simulator:
// concurrent and then sequential requests are all answered 200 by way of the resource, and
// the module asked issuecredential exactly once (the certificate and the token were cached).

#include <boost/test/unit_test.hpp>

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/child_process.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/sim_fixture.hpp"

BOOST_AUTO_TEST_SUITE(tools_example_server_test)

namespace {

/// A private temporary directory, removed at the end.
struct temp_dir {
  temp_dir() {
    char templ[] = "/tmp/msiv2-example-test-XXXXXX";
    BOOST_TEST_REQUIRE(::mkdtemp(templ) != nullptr);
    path = templ;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string path;
};

std::vector<std::string> files_starting(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    auto name = it->path().filename().string();
    if (name.rfind(prefix, 0) == 0)
      out.push_back(name);
  }
  return out;
}

} // namespace

BOOST_AUTO_TEST_CASE(answers_every_request_with_one_issuecredential) {
  msiv2::test::sim_fixture f;
  temp_dir tmp;
  const std::string cache = tmp.path + "/cache";
  msiv2::test::child_process server({MSIV2_EXAMPLE_SERVER_BINARY, "--imds", f.urls().imds,
                                     "--ca-file", f.urls().ca_file, "--trust-host", "127.0.0.1", "--persist-key", "--resource-url",
                                     f.urls().resource + "/api/whoami", "--cache-dir", cache});
  BOOST_TEST_REQUIRE(server.read_until("\n", std::chrono::seconds(30)),
                     "no port; stderr: " << server.err());
  unsigned port = 0;
  BOOST_TEST_REQUIRE(std::sscanf(server.out().c_str(), "listening on 127.0.0.1:%u", &port) == 1,
                     server.out());
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/hello";

  // A burst of concurrent first requests (one acquisition for all), then sequential ones.
  constexpr int concurrent = 8;
  constexpr int sequential = 12;
  std::atomic<int> ok{0};
  std::vector<std::thread> burst;
  for (int i = 0; i < concurrent; ++i)
    burst.emplace_back([&] {
      auto r = msiv2::test::http_get(url);
      if (r.status == 200 && r.body.find("\"ok\":true") != std::string::npos)
        ++ok;
    });
  for (auto& t : burst)
    t.join();
  for (int i = 0; i < sequential; ++i) {
    auto r = msiv2::test::http_get(url);
    BOOST_TEST(r.status == 200, "request " << i << ": " << r.status << " " << r.body);
    // The example server says the token is bound (x-ms-tokenboundauth: true, as MSAL does).
    BOOST_TEST(r.body.find("\"token_bound_auth\":true") != std::string::npos, r.body);
    if (r.status == 200)
      ++ok;
  }
  BOOST_TEST(ok.load() == concurrent + sequential);
  BOOST_TEST(f.sim().count("imds_issue") == 1u);
  BOOST_TEST(f.sim().count("imds_issue", 200) == 1u);
  BOOST_TEST(f.sim().count("token", 200) == 1u);
  BOOST_TEST(f.sim().count("resource", 200) == static_cast<std::uint64_t>(concurrent + sequential));

  // /metrics: the module's counters in text format 0.0.4 (promtool and a real prometheus
  // check the page in tools/examples/check-metrics.sh).
  auto metrics = msiv2::test::http_get("http://127.0.0.1:" + std::to_string(port) + "/metrics");
  BOOST_TEST(metrics.status == 200, metrics.status << " " << metrics.body);
  BOOST_TEST(metrics.header("Content-Type").value_or("").rfind("text/plain; version=0.0.4", 0) == 0);
  BOOST_TEST(metrics.body.find("# HELP msiv2_upstream_requests_total ") != std::string::npos,
             metrics.body);
  BOOST_TEST(metrics.body.find("# TYPE msiv2_upstream_requests_total counter\n") !=
               std::string::npos, metrics.body);
  BOOST_TEST(metrics.body.find("\nmsiv2_upstream_requests_total{upstream=\"token_endpoint\","
                               "status=\"200\"} 1\n") != std::string::npos, metrics.body);

  server.signal(SIGTERM);
  BOOST_TEST(server.wait(std::chrono::seconds(20)) == 0, "stderr: " << server.err());

  // The certificate and the per-boot key were persisted; a restarted server gets its first
  // token without a new certificate: metadata calls and one token call.
  BOOST_TEST(files_starting(cache, "cert-").size() == 1u);
  BOOST_TEST(files_starting(cache, "binding-key.pem").size() == 1u);
  auto metadata_before = f.sim().count("imds_metadata");
  msiv2::test::child_process restarted({MSIV2_EXAMPLE_SERVER_BINARY, "--imds", f.urls().imds,
                                        "--ca-file", f.urls().ca_file, "--trust-host", "127.0.0.1", "--persist-key", "--resource-url",
                                        f.urls().resource + "/api/whoami", "--cache-dir", cache});
  BOOST_TEST_REQUIRE(restarted.read_until("\n", std::chrono::seconds(30)),
                     "no port; stderr: " << restarted.err());
  BOOST_TEST_REQUIRE(std::sscanf(restarted.out().c_str(), "listening on 127.0.0.1:%u", &port) == 1,
                     restarted.out());
  auto again = msiv2::test::http_get("http://127.0.0.1:" + std::to_string(port) + "/hello");
  BOOST_TEST(again.status == 200, again.status << " " << again.body);
  BOOST_TEST(f.sim().count("imds_issue") == 1u);
  // cert_issuer's own metadata call only: the mtls_pop path has no probe.
  BOOST_TEST(f.sim().count("imds_metadata") == metadata_before + 1);
  BOOST_TEST(f.sim().count("token", 200) == 2u);
  restarted.signal(SIGTERM);
  BOOST_TEST(restarted.wait(std::chrono::seconds(20)) == 0, "stderr: " << restarted.err());
}

BOOST_AUTO_TEST_SUITE_END()
