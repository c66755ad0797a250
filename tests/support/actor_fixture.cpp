#include "tests/support/actor_fixture.hpp"

#include <caf/atom.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include "platform/binding.hpp"
#include "platform/keys.hpp"

namespace msiv2::test {

namespace {

result<key_ref> make_key() {
  auto key = platform::generate_rsa_key(2048);
  if (!key)
    return fail("inline_key_store: " + key.error());
  auto spki = platform::public_key_der(key->get());
  auto id = platform::key_id(key->get());
  if (!spki || !id)
    return fail("inline_key_store: cannot export the public key");
  key_ref ref;
  ref.spki_der = *spki;
  ref.key_id = *id;
  ref.key = std::make_shared<const binding_key>(std::move(*key), *id);
  return ref;
}

} // namespace

void inline_key_store::load_or_create(std::function<void(result<key_ref>)> done) {
  if (!fail_next.empty()) {
    auto msg = std::move(fail_next);
    fail_next.clear();
    done(fail(msg));
    return;
  }
  if (!current_) {
    auto made = make_key();
    if (!made) {
      done(made.fail());
      return;
    }
    ++creates;
    current_ = *made;
  }
  done(*current_);
}

void inline_key_store::rotate(std::string key_id, std::function<void(result<key_ref>)> done) {
  ++rotations;
  if (current_ && current_->key_id == key_id)
    current_.reset();
  load_or_create(std::move(done));
}

actor_config::actor_config() {
  set("scheduler.policy", caf::atom("testing"));
  set("logger.file-verbosity", caf::atom("quiet"));
  set("logger.console-verbosity", caf::atom("quiet"));
}

actor_fixture::actor_fixture()
  : sys(cfg),
    sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())),
    transport(std::make_shared<io::fake_transport>()),
    keys(std::make_shared<inline_key_store>()),
    stats(std::make_shared<stats_registry>()) {
  // 2026-01-01T00:00:00Z at virtual time zero of this test.
  wall = std::make_shared<platform::derived_wall_clock>(
    1'767'225'600'000, [this] { return sched.clock().now(); });
  draw = [](std::int64_t lo, std::int64_t hi) { return lo + (hi - lo) / 2; };
  config.imds_base_url = "http://imds.test";
  // The scripted upstreams' hosts, added as a deployment would add its own (review M3).
  config.trust_hosts({"mtlsauth.test", "attest.test", "attest2.test", "127.0.0.1"});
}

actor_fixture::~actor_fixture() {
  for (auto& a : spawned_)
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  sched.run();
  transport->shutdown();
  sched.run();
}

deps_ptr actor_fixture::deps() const {
  auto d = std::make_shared<runtime_deps>();
  d->config = config;
  d->transport = transport;
  d->wall = wall;
  d->draw = draw;
  d->keys = keys;
  d->attestation = attestation;
  d->log = platform::null_log_sink();
  d->stats = stats;
  return d;
}

void actor_fixture::run() {
  sched.run();
}

void actor_fixture::advance(std::chrono::nanoseconds d) {
  sched.clock().advance_time(d);
  sched.run();
}

deadline actor_fixture::due_in(std::chrono::nanoseconds d) const {
  return deadline::at(sched.clock().now() + d);
}

} // namespace msiv2::test
