#pragma once

// What every actor of the module is given at spawn: configuration and the outside world
// (transport, wall clock, randomness, key store, attestation provider, log sink, stats), all
// behind interfaces so that unit tests run every actor on CAF's test scheduler with fakes.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>

#include "msiv2/actors/artifact_store.hpp"
#include "msiv2/actors/token_snapshot.hpp"
#include "msiv2/io/endpoint_trust.hpp"
#include "msiv2/io/http.hpp"
#include "msiv2/io/retry.hpp"
#include "msiv2/messages/protocol.hpp"
#include "msiv2/platform/clock.hpp"
#include "msiv2/platform/lifecycle.hpp"
#include "msiv2/platform/log.hpp"
#include "msiv2/platform/result.hpp"

namespace msiv2 {

/// Which key store holds the binding key (module_config::key_store).
enum class key_store_choice : std::uint8_t {
  software = 0,  ///< an RSA key in process memory, shared per boot through the cache directory
  tpm = 1,       ///< a key inside the TPM 2.0; no TPM is an error, never a silent fallback
  automatic = 2, ///< the TPM when one is reachable and usable, else software (the log says why)
};

/// "software", "tpm", "auto".
const char* to_string(key_store_choice c) noexcept;
/// Parses "software", "tpm" or "auto"; false (and `out` untouched) otherwise.
bool parse_key_store_choice(const std::string& text, key_store_choice& out) noexcept;

/// Settings of the module.
struct module_config {
  /// IMDS base URL without trailing '/'. Default: $AZURE_POD_IDENTITY_AUTHORITY_HOST, else
  /// http://169.254.169.254.
  std::string imds_base_url = "http://169.254.169.254";
  /// PEM CA bundle trusted for the HTTPS upstreams (attestation, token endpoint) instead of
  /// the system store (the simulator's ca.pem in tests and demos). Verification stays on.
  std::string ca_file;
  /// The v2 kill switch: false makes every mtls_pop request fail with v2_disabled
  /// ($MSIV2_DISABLE_V2: 1/true/yes/on disable, 0/false/no/off or empty keep v2; any other
  /// value disables it too and says so in environment_warnings).
  bool v2_enabled = true;
  /// Client capabilities declared to the token endpoint (e.g. {"cp1"}).
  std::vector<std::string> client_capabilities;
  /// Connect timeout of the probe (a host without IMDS learns it fast).
  std::chrono::milliseconds probe_connect_timeout{1000};
  /// Total timeout of one IMDS call.
  std::chrono::milliseconds imds_timeout{10000};
  /// Total timeout of one attestation or token endpoint call.
  std::chrono::milliseconds upstream_timeout{20000};
  /// How long a transient probe failure is remembered before probing again.
  std::chrono::seconds transient_probe_ttl{30};
  /// Bound on every request() between actors (CAF 0.17 has no broken-promise signal).
  std::chrono::milliseconds actor_request_timeout{120000};
  /// invalid_client remediations (evict + re-mint) allowed per identity within
  /// remediation_window; beyond that requests fail with token_refused.
  int max_remediations = 3;
  std::chrono::seconds remediation_window{600};
  /// Cache directory shared by this user's processes (binding key, certificates, attestation
  /// JWTs; never access tokens). Empty: memory only (the default of a default-constructed
  /// config; from_environment() fills it from MSIV2_CACHE_DIR / XDG_RUNTIME_DIR / HOME).
  std::string cache_dir;
  /// Longest wait for another process's writer lock before going ahead alone.
  std::chrono::milliseconds lock_wait{10000};
  /// Write the software binding key (binding-key.pem) into cache_dir even when cache_dir is
  /// not on a memory file system (tmpfs/ramfs, as $XDG_RUNTIME_DIR is). Off by default: a
  /// per-boot private key on persistent disk outlives the boot in backups, snapshots and
  /// images (review M5). With it off and cache_dir on disk, msiv2::client persists nothing
  /// (every artifact is bound to the key, so nothing else could be shared) and says so in
  /// its log. From_environment(): $MSIV2_PERSIST_KEY=1/true/yes/on.
  bool persist_key_on_disk = false;
  /// Where the boot id is read (tests point it at a file of their own to simulate a reboot).
  std::string boot_id_path = "/proc/sys/kernel/random/boot_id";
  /// Ask the key store for the binding key as soon as the module starts (when v2 is enabled),
  /// so that key generation (RSA-2048: a few hundred ms, randomized) runs while the first
  /// request's probe and getplatformmetadata calls do, or before any request at all. Off: the
  /// key is asked for when the first certificate flight needs it. False in a
  /// default-constructed config (unit tests of the actors stay lazy and deterministic); true
  /// from from_environment(), and so in msiv2::client's defaults, unless $MSIV2_EAGER_KEY is
  /// 0 or false (a process that only ever asks for bearer tokens saves the key generation). A
  /// failed eager creation is logged and not fatal: the first request tries again.
  bool eager_key = false;
  /// The per-process retry budget (io::retry_governor; module::start makes one from it). A
  /// background renewal retry of an access token takes one retry from it; none left: no
  /// upstream call, the next backoff step tries again while the token is usable (review H3).
  io::retry_governor_settings retry_policy;
  /// Background renewal retries of an access token: full jitter up to
  /// renewal_retry_base * 2^(failures-1), capped at renewal_retry_cap (io::renewal_retry_delay).
  std::chrono::milliseconds renewal_retry_base{1000};
  std::chrono::milliseconds renewal_retry_cap{60000};
  /// Most access tokens token_service keeps (review H1). Beyond it, the least recently used
  /// token is dropped (a use is any request served from it, hits served by lock-free readers
  /// of the token snapshot included: published_token::last_used_ms), and the snapshot stops
  /// serving it before anything else is answered. 0 counts as 1.
  std::size_t max_cached_tokens = 10000;
  /// A cached token nobody asked for within this window is not renewed in the background (nor
  /// retried after a failed renewal): it is served while still usable (a request that finds it
  /// due renews it) and dropped when it is not (msiv2_token_lapses_total).
  std::chrono::milliseconds token_idle_window{std::chrono::hours(1)};
  /// Hosts the token endpoint named by issuecredential (mtls_authentication_endpoint) may be
  /// on; the binding certificate is presented to it (io::check_endpoint: https, no user-info,
  /// path, query or fragment; an entry matches the host or a parent domain of it; IP literals
  /// only when listed). Default: the Azure clouds' mtlsauth/login hosts.
  std::vector<std::string> token_endpoint_hosts = io::default_token_endpoint_hosts();
  /// Hosts getplatformmetadata's attestationEndpoint may be on (checked when keys are
  /// attested). Default: the Azure Attestation domains.
  std::vector<std::string> attestation_endpoint_hosts = io::default_attestation_endpoint_hosts();
  /// What from_environment() found odd in the environment (an unknown kill-switch value);
  /// msiv2::client logs each as a warning.
  std::vector<std::string> environment_warnings;
  /// Why from_environment() found no usable cache directory (empty when it did, or when
  /// MSIV2_CACHE_DIR=none asked for memory only).
  std::string cache_dir_error;
  /// Where the binding key lives (used when client_options::keys is null). software in a
  /// default-constructed config (unit tests stay off the TPM); from_environment(): $MSIV2_KEY_STORE
  /// (auto, tpm or software), else auto.
  key_store_choice key_store = key_store_choice::software;
  /// The TPM's TCTI for the tpm and auto key stores: from_environment() takes $MSIV2_TPM_TCTI,
  /// else device:/dev/tpmrm0 (the kernel's resource manager).
  std::string tpm_tcti = "device:/dev/tpmrm0";
  /// Attest the binding key before issuecredential (msiv2::client builds the provider that fits
  /// the key store when client_options::attestation is null: TPM key attestation for TPM keys,
  /// the simulated keyguard protocol for software keys; `auto` picks per key). Off in a
  /// default-constructed config; from_environment(): $MSIV2_ATTEST (1/true).
  bool attest = false;
  /// Why from_environment() refused $MSIV2_KEY_STORE (client::create then fails with it).
  std::string key_store_error;

  /// Adds `hosts` to both endpoint allow-lists (token_endpoint_hosts,
  /// attestation_endpoint_hosts): the simulator, demo and tests add io::loopback_hosts().
  void trust_hosts(const std::vector<std::string>& hosts);

  /// The defaults with eager_key on, $MSIV2_TRUSTED_HOSTS (comma-separated hosts added to both
  /// endpoint allow-lists, e.g. "127.0.0.1" for the simulator), $AZURE_POD_IDENTITY_AUTHORITY_HOST,
  /// $MSIV2_DISABLE_V2 (1/true/yes/on; anything unclear disables v2), $MSIV2_ATTEST (1/true),
  /// $MSIV2_EAGER_KEY (0/false turns eager_key off), $MSIV2_PERSIST_KEY, $MSIV2_KEY_STORE and
  /// $MSIV2_TPM_TCTI (key_store auto unless set), and the
  /// cache directory (platform::cache_dir_from_environment; an error there leaves cache_dir
  /// empty and is kept in cache_dir_error for the client to log) applied.
  static module_config from_environment();
};

/// Creates or opens the binding key. Asynchronous: key generation takes tens of
/// milliseconds and must never run on an actor thread. `done` is called exactly once, on
/// any thread (the software store calls it from a worker thread; test stores may call it
/// inline).
class key_store {
public:
  virtual ~key_store() = default;
  /// The current key, creating it when there is none.
  virtual void load_or_create(std::function<void(result<key_ref>)> done) = 0;
  /// Drops `key_id` (it failed) and creates a new key.
  virtual void rotate(std::string key_id, std::function<void(result<key_ref>)> done) = 0;
  /// How strongly keys from this store bind a token, known without creating a key (the
  /// capability query asks it). A store whose keys live in process memory or a file is a
  /// software_key store; a hardware store overrides this.
  virtual binding_strength strength() const { return binding_strength::software_key; }
};

/// Attests a binding key (protocol.md §5). `done` is called exactly once, on any thread.
class attestation_provider {
public:
  virtual ~attestation_provider() = default;
  /// Asks `endpoint` to attest `key` for `client_id`; one attempt, bounded by `timeout`
  /// (attestation_cache drives retries).
  virtual void attest(const key_ref& key, const std::string& endpoint,
                      const std::string& client_id, std::chrono::milliseconds timeout,
                      std::function<void(result<attestation_token>, int http_status)> done) = 0;
  /// As above, for the request whose correlation id is `correlation_id` (a provider that
  /// speaks HTTP sends it as x-ms-client-request-id). The default ignores it.
  virtual void attest(const key_ref& key, const std::string& endpoint,
                      const std::string& client_id, const std::string& correlation_id,
                      std::chrono::milliseconds timeout,
                      std::function<void(result<attestation_token>, int http_status)> done) {
    (void)correlation_id;
    attest(key, endpoint, client_id, timeout, std::move(done));
  }
  /// True when this provider's attestation proves that a hardware key (binding_strength
  /// hardware_key) cannot leave its hardware, so that a certificate it helped get binds at
  /// attested_hardware_key (TPM attestation does; the simulated keyguard protocol proves only
  /// possession of the key).
  virtual bool attests_hardware_keys() const { return false; }
};

/// The binding strength a module with `keys` and `attestation` gives: the key store's, raised to
/// attested_hardware_key when the store holds hardware keys and the provider attests them.
binding_strength module_binding_strength(const key_store* keys,
                                         const attestation_provider* attestation);

/// Thread-safe counters and gauges shared by the actors (snapshot on `stats_atom`).
class stats_registry {
public:
  /// Adds `n` to the counter `key` (Prometheus name with labels).
  void add(const std::string& key, std::uint64_t n = 1);
  /// Sets the gauge `key`.
  void set_gauge(const std::string& key, double value);
  /// Removes the gauge `key`.
  void erase_gauge(const std::string& key);
  /// A copy of everything.
  stats_snapshot snapshot() const;

private:
  mutable std::mutex mtx_;
  stats_snapshot data_;
};

/// Everything an actor of the module needs from outside.
struct runtime_deps {
  module_config config;
  std::shared_ptr<io::transport> transport;
  std::shared_ptr<platform::wall_clock> wall;
  /// Uniform integer in [lo, hi] (CSPRNG in production).
  platform::jitter_source draw;
  std::shared_ptr<key_store> keys;
  /// Null: keys are not attested (the default on Linux VMs today).
  std::shared_ptr<attestation_provider> attestation;
  std::shared_ptr<platform::log_sink> log;
  std::shared_ptr<stats_registry> stats;
  /// The cache directory shared with this user's other processes; null: memory only.
  std::shared_ptr<artifact_store> files;
  /// Where token_service publishes its cached tokens for lock-free readers
  /// (msiv2::client::try_cached); null: nothing is published.
  std::shared_ptr<token_snapshot> snapshot;
  /// The retry budget every actor of the module shares (module::start makes one from
  /// config.retry_policy when none is given); null: renewal retries are limited by their
  /// backoff only (actor unit tests that do not test the budget).
  std::shared_ptr<io::retry_governor> retries;
};

using deps_ptr = std::shared_ptr<const runtime_deps>;

/// x-client-SKU of msiv2's requests.
inline constexpr const char* client_sku = "msiv2.cpp";

/// Adds the telemetry headers MSAL sends on IMDS and token endpoint calls: x-client-SKU
/// (client_sku), x-client-Ver (msiv2::version()), x-client-OS (the kernel's name and release).
void add_client_telemetry(io::http_headers& headers);

} // namespace msiv2

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(msiv2::io::http_response)
