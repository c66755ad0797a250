#pragma once

// The whole token runtime against the in-process simulator, for integration tests: a
// sim_fixture, a real curl_transport, the real software key store, a real threaded actor
// system behind msiv2::client, and a log sink that keeps every line (to grep for secrets).
//
//   msiv2::test::runtime_rig r([](msiv2::sim::config& c) { c.token_lifetime = 4s; });
//   auto t = r.get(msiv2::test::pop_request());
//   BOOST_TEST(r.sim().count("token", 200) == 1);

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "actors/client.hpp"
#include "io/curl_transport.hpp"
#include "messages/errors.hpp"
#include "messages/token.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/sim_fixture.hpp"

namespace msiv2::test {

/// A thread-safe sink that keeps every line as "level component: message".
class capture_sink final : public platform::log_sink {
public:
  void write(platform::log_level level, std::string_view component,
             std::string_view message) override;
  /// Every line so far.
  std::vector<std::string> lines() const;
  /// All lines joined with '\n'.
  std::string text() const;

private:
  mutable std::mutex mtx_;
  std::vector<std::string> lines_;
};

/// Passes every request to the real transport and remembers its method and URL.
class recording_transport final : public io::transport {
public:
  explicit recording_transport(std::shared_ptr<io::transport> inner) : inner_(std::move(inner)) {}
  void send(io::http_request request, io::completion done) override;
  void shutdown() override { inner_->shutdown(); }
  /// "METHOD URL" of every request sent so far.
  std::vector<std::string> sent() const;

private:
  std::shared_ptr<io::transport> inner_;
  mutable std::mutex mtx_;
  std::vector<std::string> sent_;
};

/// How the rig's client is made.
struct rig_options {
  /// Attach the keyguard_attestation provider (protocol.md §5) to the client.
  bool attestation = false;
  /// Changes to the module config after the rig set imds_base_url and ca_file.
  std::function<void(module_config&)> module;
};

/// A simulator plus a client configured for it.
class runtime_rig {
public:
  explicit runtime_rig(const std::function<void(sim::config&)>& sim_tweak = {},
                       rig_options options = {});
  ~runtime_rig();
  runtime_rig(const runtime_rig&) = delete;
  runtime_rig& operator=(const runtime_rig&) = delete;

  sim::simulator& sim() { return fixture_.sim(); }
  sim_fixture& fixture() { return fixture_; }
  msiv2::client& client() { return *client_; }
  capture_sink& log() { return *log_; }
  /// Every request the module sent ("METHOD URL").
  std::vector<std::string> sent() const { return transport_->sent(); }

  /// get_token_blocking; the request's own timeout bounds it.
  token_outcome get(token_request req);

  /// Calls the simulator's resource with `Authorization: mtls_pop <token>` and the binding
  /// certificate and key of `t` (or `Authorization: Bearer <token>` without a binding).
  http_result call_resource(const token_result& t);

private:
  sim_fixture fixture_;
  std::shared_ptr<capture_sink> log_ = std::make_shared<capture_sink>();
  std::shared_ptr<recording_transport> transport_;
  std::unique_ptr<msiv2::client> client_;
};

/// An mtls_pop request for `resource` as `who`, bounded by `timeout`.
token_request pop_request(std::string resource = "https://management.azure.com",
                          managed_identity who = managed_identity::system(),
                          std::chrono::milliseconds timeout = std::chrono::seconds(20));

/// The msiv2 error code of an outcome (none when it holds a token).
error_code code_of(const token_outcome& t);
/// "ok" or the rendered error, for test messages.
std::string why(const token_outcome& t);

/// A fault that answers `s` in order, then serves normally.
sim::fault_spec statuses(std::vector<int> s);
/// Sets a fault on the rig's simulator; fails the test when the endpoint is unknown.
void set_fault(runtime_rig& r, const std::string& endpoint, sim::fault_spec f);
/// Seconds of real time since `t0`.
double seconds_since(std::chrono::steady_clock::time_point t0);
/// A cold start first, so that the probe is settled and the certificate cached.
token_result warm_up(runtime_rig& r, const std::string& resource = "https://management.azure.com");

} // namespace msiv2::test
