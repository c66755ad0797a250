#include "actors/client.hpp"

#include <algorithm>
#include <functional>
#include <memory>

#include <caf/actor_cast.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/after.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/system_messages.hpp>

#include "actors/client_bridge.hpp"
#include "actors/keyguard_attestation.hpp"
#include "actors/software_key_store.hpp"
#include "actors/tpm_attestation.hpp"
#include "actors/tpm_key_store.hpp"
#include "actors/system.hpp"
#include "io/curl_transport.hpp"
#include "platform/clock.hpp"
#include "platform/encoding.hpp"
#include "platform/files.hpp"
#include "platform/keys.hpp"

namespace msiv2 {

namespace {

/// token_service answers deadline_exceeded at the request's timeout; the blocking call and
/// the bridge wait a little longer so that answer, not their own bound, is what callers see.
constexpr std::chrono::milliseconds answer_margin{1000};

/// The attestation provider module_config::attest asks for: the one that fits the key store
/// (a store given by the caller may hold either kind of key: chosen per key).
std::shared_ptr<attestation_provider> attestation_for(const module_config& cfg, bool keys_given,
                                                      std::shared_ptr<io::transport> transport,
                                                      std::shared_ptr<platform::wall_clock> wall) {
  auto keyguard = std::make_shared<keyguard_attestation>(transport, cfg.ca_file);
  if (!keys_given && cfg.key_store == key_store_choice::software)
    return keyguard;
  platform::tpm_config tpm;
  tpm.tcti = cfg.tpm_tcti;
  auto tpm_provider = std::make_shared<tpm_attestation>(tpm, tpm_store_binding,
                                                        std::move(transport), cfg.ca_file,
                                                        std::move(wall));
  if (!keys_given && cfg.key_store == key_store_choice::tpm)
    return tpm_provider;
  return std::make_shared<per_key_attestation>(std::move(tpm_provider), std::move(keyguard));
}

/// How deep get_token callbacks served on the caller's thread may nest (a callback that asks
/// again, and again...) before a call goes through the bridge, which bounds the stack.
constexpr int max_inline_depth = 8;

/// get_token callbacks running on this thread from a cached hit.
thread_local int inline_depth = 0;

} // namespace

result<std::unique_ptr<client>> client::create(client_options options) {
  std::unique_ptr<client> c{new client};
  c->cfg_ = std::make_unique<caf::actor_system_config>();
  apply_defaults(*c->cfg_, options.threads);
  c->cfg_->set("logger.file-verbosity", caf::atom("quiet"));
  c->cfg_->set("logger.console-verbosity", caf::atom("quiet"));
  c->own_sys_ = std::make_unique<caf::actor_system>(*c->cfg_);
  c->sys_ = c->own_sys_.get();
  return finish(std::move(c), std::move(options));
}

result<std::unique_ptr<client>> client::create(caf::actor_system& sys, client_options options) {
  std::unique_ptr<client> c{new client};
  c->sys_ = &sys;
  return finish(std::move(c), std::move(options));
}

result<std::unique_ptr<client>> client::finish(std::unique_ptr<client> c, client_options options) {
  runtime_deps deps;
  deps.config = std::move(options.config);
  c->imds_timeout_ = deps.config.imds_timeout;
  if (!deps.config.key_store_error.empty() && !options.keys)
    return fail("msiv2::client: " + deps.config.key_store_error);
  if (options.transport) {
    c->transport_ = std::move(options.transport);
  } else {
    auto t = io::curl_transport::create();
    if (!t)
      return fail("msiv2::client: cannot start the HTTP transport: " + t.error());
    c->transport_ = std::shared_ptr<io::transport>(std::move(*t));
    c->owns_transport_ = true;
  }
  deps.transport = c->transport_;
  deps.wall = platform::system_wall_clock();
  deps.draw = [](std::int64_t lo, std::int64_t hi) { return platform::random_between(lo, hi); };
  deps.log = options.log ? std::move(options.log) : platform::null_log_sink();
  // Private key material in mlock-ed, MADV_DONTDUMP pages, cleared when freed (review M5).
  if (!platform::enable_secure_heap())
    deps.log->write(platform::log_level::warning, "client",
                    "OpenSSL's secure heap could not be set up: private keys live in ordinary "
                    "memory (set LimitCORE=0 / prctl(PR_SET_DUMPABLE, 0) to keep them out of "
                    "core dumps)");
  for (const auto& w : deps.config.environment_warnings)
    deps.log->write(platform::log_level::warning, "client", w);
  if (!deps.config.cache_dir_error.empty())
    deps.log->write(platform::log_level::error, "client",
                    "no cache directory, artifacts stay in this process's memory: " +
                      deps.config.cache_dir_error);
  // The software key would sit on persistent disk, and every other artifact is bound to it:
  // nothing is worth sharing without it (review M5). The tpm store writes only a blob the TPM
  // wrapped (useless off that TPM), so the rule is for software and for auto, whose fallback
  // is the software store and which cannot know yet which of the two it will use.
  if (!options.keys && deps.config.key_store != key_store_choice::tpm &&
      !deps.config.cache_dir.empty() && !deps.config.persist_key_on_disk &&
      !platform::on_memory_filesystem(deps.config.cache_dir)) {
    deps.log->write(platform::log_level::warning, "client",
                    "persistence off: the cache directory " + deps.config.cache_dir +
                      " is not on a memory file system (tmpfs), and a private key is not "
                      "written to persistent disk unless asked ($MSIV2_PERSIST_KEY=1 or "
                      "module_config::persist_key_on_disk); artifacts stay in this process's "
                      "memory. Point $XDG_RUNTIME_DIR or $MSIV2_CACHE_DIR at a tmpfs directory "
                      "to share them, or choose the tpm key store ($MSIV2_KEY_STORE=tpm), whose "
                      "key file is wrapped by the TPM");
    deps.config.cache_dir.clear();
  }
  // Null when cache_dir is empty or refused (open_artifact_store logs why).
  deps.files = open_artifact_store(deps.config.cache_dir, deps.log);
  const bool keys_given = options.keys != nullptr;
  if (options.keys) {
    deps.keys = std::move(options.keys);
  } else {
    std::shared_ptr<key_store> software;
    if (deps.files) {
      key_store_settings ks;
      ks.cache_dir = deps.files->directory();
      ks.boot_id_path = deps.config.boot_id_path;
      ks.lock_wait = deps.config.lock_wait;
      ks.log = deps.log;
      software = std::make_shared<software_key_store>(std::move(ks));
    } else {
      software = std::make_shared<software_key_store>();
    }
    if (deps.config.key_store == key_store_choice::software) {
      deps.keys = std::move(software);
    } else {
      tpm_key_store_settings ts;
      ts.tpm.tcti = deps.config.tpm_tcti;
      ts.cache_dir = deps.files ? deps.files->directory() : std::string();
      // A TPM makes keys in seconds (more on a busy or slow TPM) and one at a time: waiting for
      // the process that is making the shared key beats making a second one in the same TPM.
      ts.lock_wait = std::max(deps.config.lock_wait, std::chrono::milliseconds(60000));
      ts.log = deps.log;
      if (deps.config.key_store == key_store_choice::automatic)
        ts.fallback = std::move(software);
      deps.keys = std::make_shared<tpm_key_store>(std::move(ts));
    }
  }
  deps.attestation = std::move(options.attestation);
  if (!deps.attestation && deps.config.attest)
    deps.attestation = attestation_for(deps.config, keys_given, deps.transport, deps.wall);
  deps.stats = std::make_shared<stats_registry>();
  deps.snapshot = std::make_shared<token_snapshot>();
  c->snapshot_ = deps.snapshot;
  c->wall_ = deps.wall;
  c->shutdown_timeout_ = options.shutdown_timeout;
  c->module_ = module::start(*c->sys_, std::move(deps), std::move(options.factories));
  client_bridge_options bo;
  bo.answer_margin = answer_margin;
  c->bridge_ = c->sys_->spawn(client_bridge_impl, c->module_.handle(), bo);
  return c;
}

client::~client() {
  if (sys_ != nullptr && module_.handle()) {
    caf::scoped_actor self{*sys_};
    auto sup = caf::actor_cast<caf::actor>(module_.handle());
    self->monitor(sup);
    module_.stop();
    // The supervisor goes down after every actor did (each answered its callers).
    self->receive([](caf::down_msg&) {},
                  caf::after(shutdown_timeout_) >> [] {});
  }
  if (bridge_) {
    // After the module: its answers are in the bridge's mailbox before `close`, which answers
    // whatever is still outstanding with shutting_down, so every callback runs once.
    caf::scoped_actor self{*sys_};
    self->monitor(bridge_);
    caf::anon_send(bridge_, close_atom::value);
    self->receive([](caf::down_msg&) {}, caf::after(shutdown_timeout_) >> [] {});
  }
  // Transfers still in flight are answered `cancelled`; their messages go to stopped actors.
  if (owns_transport_ && transport_)
    transport_->shutdown();
  own_sys_.reset();
}

void client::get_token(token_request request, std::function<void(token_outcome)> done) {
  if (!module_.service() || !bridge_) {
    done(make_msiv2_error(error_code::shutting_down, "the client is shutting down"));
    return;
  }
  if (inline_depth < max_inline_depth) {
    if (auto hit = try_cached(request)) {
      struct nesting {
        nesting() { ++inline_depth; }
        ~nesting() { --inline_depth; }
      } guard;
      done(std::move(*hit));
      return;
    }
  }
  caf::anon_send(bridge_, std::move(request), pending_callback{std::move(done)});
}

std::optional<token_result> client::try_cached(const token_request& request) const {
  if (!snapshot_)
    return std::nullopt;
  return snapshot_->find(request, wall_->now_ms());
}

token_outcome client::get_token_blocking(token_request request) {
  auto service = module_.service();
  if (!service)
    return make_msiv2_error(error_code::shutting_down, "the client is shutting down");
  if (auto hit = try_cached(request))
    return std::move(*hit);
  caf::scoped_actor self{*sys_};
  token_outcome out = make_msiv2_error(error_code::internal_failure, "no answer");
  auto timeout = request.timeout + answer_margin;
  self->request(service, timeout, std::move(request))
    .receive([&](token_result& t) { out = std::move(t); },
             [&](caf::error& e) { out = std::move(e); });
  return out;
}

stats_snapshot client::stats() {
  auto service = module_.service();
  stats_snapshot out;
  if (!service)
    return out;
  caf::scoped_actor self{*sys_};
  self->request(service, std::chrono::seconds(1), stats_atom::value)
    .receive([&](stats_snapshot& s) { out = std::move(s); }, [](caf::error&) {});
  return out;
}

caf::expected<host_capabilities> client::capabilities() {
  auto service = module_.service();
  if (!service)
    return make_msiv2_error(error_code::shutting_down, "the client is shutting down");
  caf::scoped_actor self{*sys_};
  caf::expected<host_capabilities> out =
    make_msiv2_error(error_code::internal_failure, "no answer to the capability query");
  self->request(service, imds_timeout_ + answer_margin, capabilities_atom::value)
    .receive([&](host_capabilities& c) { out = std::move(c); },
             [&](caf::error& e) { out = std::move(e); });
  return out;
}

} // namespace msiv2
