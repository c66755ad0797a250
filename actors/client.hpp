#pragma once

// msiv2::client: the module for servers that do not use CAF. It owns (or borrows) an
// actor_system, the HTTP transport, the key store and the module, and turns a token_request
// into a callback or a blocking call.
//
//   auto c = msiv2::client::create();            // config from the environment
//   if (!c) { log(c.error()); return; }
//   (*c)->get_token(req, [](caf::expected<msiv2::token_result> t) {
//     // runs on a module thread: post it back to your own executor
//   });
//   auto t = (*c)->get_token_blocking(req);       // scripts and tests
//   if (auto t = (*c)->try_cached(req)) use(*t);  // a fresh cached token, no message, no wait
//
// Cached tokens are read from the snapshot token_service publishes (actors/token_snapshot.hpp):
// try_cached, and get_token before it sends anything, serve a fresh cached token on the
// caller's thread at the cost of a hash lookup and a copy.

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/expected.hpp>

#include "msiv2/actors/client_bridge.hpp" // token_outcome: a token, or the error that replaced it
#include "msiv2/actors/supervisor.hpp"
#include "msiv2/io/http.hpp"
#include "msiv2/messages/errors.hpp"
#include "msiv2/platform/log.hpp"
#include "msiv2/platform/result.hpp"

namespace msiv2 {

/// How a client is made. Every null member gets the production default.
struct client_options {
  /// Module settings (default: module_config::from_environment()).
  module_config config = module_config::from_environment();
  /// Where the module logs (null: nowhere).
  std::shared_ptr<platform::log_sink> log;
  /// Attests binding keys (null: none, unless config.attest asks for the provider that fits the
  /// key store: TPM key attestation for TPM keys, the keyguard protocol for software keys).
  std::shared_ptr<attestation_provider> attestation;
  /// Binding keys (null: the store config.key_store chooses: a software_key_store persisted
  /// per boot in config.cache_dir when that directory is usable, else in memory; or a
  /// tpm_key_store on config.tpm_tcti, with that software store as its fallback for auto).
  std::shared_ptr<key_store> keys;
  /// HTTP (null: a curl_transport owned by the client).
  std::shared_ptr<io::transport> transport;
  /// Scheduler threads of an owned actor_system.
  std::size_t threads = 2;
  /// How long the destructor waits for the module to stop.
  std::chrono::milliseconds shutdown_timeout{5000};
  /// The module's actors (tests replace some with doubles).
  actor_factories factories = actor_factories::defaults();
};

/// The module behind a plain C++ interface. Thread-safe; not copyable.
class client {
public:
  /// A client with its own actor_system (apply_defaults, options.threads scheduler threads).
  static result<std::unique_ptr<client>> create(client_options options = {});
  /// A client in the embedder's actor_system (which must outlive the client).
  static result<std::unique_ptr<client>> create(caf::actor_system& sys,
                                                client_options options = {});

  client(const client&) = delete;
  client& operator=(const client&) = delete;
  /// Stops the module (pending callbacks get shutting_down), then the transport and an owned
  /// actor_system.
  ~client();

  /// Asks for a token; `done` runs once with the token or the error. A fresh cached token
  /// (what try_cached returns) is handed to `done` on the calling thread before get_token
  /// returns (unless `done` itself calls get_token more than a few levels deep: then, and
  /// for everything else, `done` runs later on a module thread). So `done` must not take a
  /// lock the caller holds around get_token.
  void get_token(token_request request, std::function<void(token_outcome)> done);
  /// The cached token for `request` if one is fresh (before its refresh time by the module's
  /// wall clock), read from the snapshot token_service publishes: no message, no wait, no
  /// lock a writer holds. Empty for a miss, a request with claims or force_refresh, a token
  /// past its refresh time, or one the module would refuse; the caller then uses get_token
  /// (which renews a token past its refresh time and reports errors). Any thread.
  std::optional<token_result> try_cached(const token_request& request) const;
  /// Asks for a token and waits for it (a fresh cached token is returned at once). Never call
  /// it from an actor or a module callback.
  token_outcome get_token_blocking(token_request request);
  /// The module's counters and gauges (blocking, bounded by one second).
  stats_snapshot stats();
  /// What this host can give (IMDS source, strongest binding), from the header-less probe
  /// and the key store, without minting anything. Blocking, bounded by the IMDS timeout.
  caf::expected<host_capabilities> capabilities();
  /// The CAF handle of the module (for embedders that do use CAF somewhere).
  token_service service() const { return module_.service(); }

private:
  client() = default;
  static result<std::unique_ptr<client>> finish(std::unique_ptr<client> c, client_options options);

  std::unique_ptr<caf::actor_system_config> cfg_;
  std::unique_ptr<caf::actor_system> own_sys_;
  caf::actor_system* sys_ = nullptr;
  std::shared_ptr<io::transport> transport_;
  bool owns_transport_ = false;
  module module_;
  /// One long-lived actor that turns get_token calls into requests to the module (spawning an
  /// actor per call cost most of the callback API's throughput and tail latency).
  caf::actor bridge_;
  /// What token_service publishes, and the wall clock its tokens are judged by.
  std::shared_ptr<token_snapshot> snapshot_;
  std::shared_ptr<platform::wall_clock> wall_;
  std::chrono::milliseconds shutdown_timeout_{5000};
  /// Bounds the capability query (module_config::imds_timeout).
  std::chrono::milliseconds imds_timeout_{10000};
};

} // namespace msiv2
