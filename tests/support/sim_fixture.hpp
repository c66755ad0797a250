#pragma once

// An in-process simulator for tests: port 0 everywhere, a fresh temporary state directory,
// config tweaks before start, and helpers for the common IMDS and admin calls.
//
//   msiv2::test::sim_fixture f([](msiv2::sim::config& c) { c.v1_only = true; });
//   auto r = f.metadata();                       // GET getplatformmetadata, v2 headers
//   BOOST_TEST(r.status == 404);
//   BOOST_TEST(f.sim().count("imds_metadata", 404) == 1);
//
// Start failures fail the test (BOOST_REQUIRE). The destructor stops the simulator and
// removes the state directory.

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "tests/support/http_client.hpp"
#include "tools/sim/config.hpp"
#include "tools/sim/server.hpp"

namespace msiv2::test {

class sim_fixture {
public:
  /// Starts a simulator with the default config changed by `tweak` (ports and state_dir are
  /// set by the fixture before `tweak` runs; `tweak` may override them).
  explicit sim_fixture(const std::function<void(sim::config&)>& tweak = {});
  ~sim_fixture();
  sim_fixture(const sim_fixture&) = delete;
  sim_fixture& operator=(const sim_fixture&) = delete;

  /// The running simulator.
  sim::simulator& sim() { return *sim_; }
  /// Its URLs and CA file.
  const sim::endpoints& urls() const { return sim_->urls(); }
  /// The configuration it was started with.
  const sim::config& cfg() const { return cfg_; }
  /// The temporary state directory (removed by the destructor).
  const std::string& state_dir() const { return state_dir_; }
  /// TLS options trusting the simulator's CA (add a client certificate for mTLS).
  tls_options tls() const;

  /// The headers of a well-formed IMDS v2 call: Metadata: true and a fresh request id.
  static header_list imds_headers();
  /// GET {imds}{path_and_query} with `headers`.
  http_result imds_get(std::string_view path_and_query, const header_list& headers = imds_headers());
  /// GET getplatformmetadata?cred-api-version=2.0[&selector] with the v2 headers.
  http_result metadata(std::string_view selector = {});
  /// GET the v1 token for `resource` (api-version 2018-02-01)[&selector], Metadata: true.
  http_result v1_token(std::string_view resource, std::string_view selector = {});
  /// `method` {admin}{path} with `body`.
  http_result admin(std::string_view method, std::string_view path, const std::string& body = {});

private:
  std::string state_dir_;
  sim::config cfg_;
  std::unique_ptr<sim::simulator> sim_;
};

} // namespace msiv2::test
