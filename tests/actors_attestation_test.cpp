#include <boost/test/unit_test.hpp>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include "actors/attestation_cache.hpp"
#include "actors/keyguard_attestation.hpp"
#include "actors/renewal_timer.hpp"
#include "io/json.hpp"
#include "messages/errors.hpp"
#include "platform/binding.hpp"
#include "platform/encoding.hpp"
#include "platform/jwt.hpp"
#include "platform/keys.hpp"
#include "actors/persisted.hpp"
#include "tests/support/actor_fixture.hpp"
#include "tests/support/memory_artifact_store.hpp"

using namespace std::chrono_literals;
using msiv2::error_code;

namespace {

constexpr const char* endpoint = "https://attest.test";
constexpr const char* client_a = "5a1f1c5e-0b39-4b8e-9d1e-8f3f6f5b2c11";
constexpr const char* client_b = "6b2f2d6f-1c4a-4c9f-8e2f-9f4f7f6c3d22";

/// An attestation_provider answering from a script: inline, or held until release().
class scripted_provider : public msiv2::attestation_provider {
public:
  struct call {
    std::string key_id;
    std::string endpoint;
    std::string client_id;
    std::chrono::milliseconds timeout;
  };
  struct answer {
    bool ok = false;               ///< false: failure with `status`
    std::chrono::seconds life{0};  ///< lifetime of the JWT minted when the call is made
    int status = 200;
  };

  void attest(const msiv2::key_ref& key, const std::string& ep, const std::string& client_id,
              std::chrono::milliseconds timeout,
              std::function<void(msiv2::result<msiv2::attestation_token>, int)> done) override {
    calls.push_back({key.key_id, ep, client_id, timeout});
    answer a;
    if (!answers.empty()) {
      a = answers.front();
      answers.pop_front();
    } else {
      a.status = 0;
    }
    std::optional<msiv2::attestation_token> token;
    if (a.ok)
      token = mint(a.life);
    auto run = [a, token, done] {
      if (token)
        done(*token, a.status);
      else
        done(msiv2::fail("scripted attestation failure (HTTP " + std::to_string(a.status) + ")"),
             a.status);
    };
    if (hold)
      held.push_back(run);
    else
      run();
  }

  /// Answers every held call.
  void release() {
    auto h = std::move(held);
    held.clear();
    for (auto& f : h)
      f();
  }

  std::vector<call> calls;
  std::deque<answer> answers;
  std::function<msiv2::attestation_token(std::chrono::seconds)> mint;
  bool hold = false;
  std::vector<std::function<void()>> held;
};

struct cache_fixture : msiv2::test::actor_fixture {
  std::shared_ptr<scripted_provider> provider = std::make_shared<scripted_provider>();
  msiv2::key_ref key;
  msiv2::attestation_cache cache;
  msiv2::renewal_timer timer;
  int minted = 0;

  cache_fixture() {
    attestation = provider;
    provider->mint = [this](std::chrono::seconds life) { return token(life); };
    keys->load_or_create([this](msiv2::result<msiv2::key_ref> k) { key = *k; });
  }

  /// The cache directory shared with "other processes" (null: memory only).
  std::shared_ptr<msiv2::test::memory_artifact_store> files;
  /// JWTs in compact form (header.payload.signature) with iat/exp claims, as files need.
  bool real_jwts = false;

  msiv2::deps_ptr deps_with_files() const {
    auto d = std::make_shared<msiv2::runtime_deps>(*deps());
    d->files = files;
    return d;
  }

  /// Another process's attestation_cache on the same files (no timer).
  msiv2::attestation_cache spawn_other() {
    auto other = keep(sys.spawn(msiv2::attestation_cache_impl, deps_with_files()));
    caf::anon_send(other, msiv2::wire_atom::value,
                   msiv2::wiring_ptr(std::make_shared<msiv2::wiring>()));
    run();
    return other;
  }

  void start(bool with_timer = true) {
    cache = keep(sys.spawn(msiv2::attestation_cache_impl, deps_with_files()));
    auto w = std::make_shared<msiv2::wiring>();
    w->attestation = cache;
    if (with_timer) {
      timer = keep(sys.spawn(msiv2::renewal_timer_impl, deps()));
      w->timer = timer;
    }
    caf::anon_send(cache, msiv2::wire_atom::value, msiv2::wiring_ptr(w));
    run();
  }

  /// A JWT valid from now for `life`.
  msiv2::attestation_token token(std::chrono::seconds life = 3600s) {
    msiv2::attestation_token t;
    t.jwt = "attestation-jwt-" + std::to_string(++minted);
    t.issued_at_ms = wall_ms() / 1000 * 1000;
    t.expires_at_ms = t.issued_at_ms + life.count() * 1000;
    if (real_jwts)
      t.jwt = msiv2::platform::base64url_encode(R"({"alg":"RS256","typ":"JWT"})") + "." +
              msiv2::platform::base64url_encode(
                "{\"n\":" + std::to_string(minted) + ",\"iat\":" +
                std::to_string(t.issued_at_ms / 1000) + ",\"exp\":" +
                std::to_string(t.expires_at_ms / 1000) + "}") +
              ".c2ln";
    return t;
  }

  void script_ok(std::chrono::seconds life = 3600s) { provider->answers.push_back({true, life, 200}); }
  void script_fail(int status) { provider->answers.push_back({false, 0s, status}); }

  /// Advances virtual time in small steps (timers due in between fire in order).
  void step(std::chrono::milliseconds total, std::chrono::milliseconds by = 100ms) {
    for (auto done = 0ms; done < total; done += by)
      advance(by);
  }

  msiv2::attestation_request make_req(const std::string& client = client_a,
                                      std::chrono::nanoseconds timeout = 30s) {
    msiv2::attestation_request r;
    r.endpoint = endpoint;
    r.client_id = client;
    r.key = key;
    r.due = due_in(timeout);
    return r;
  }

  std::shared_ptr<msiv2::test::outcome<msiv2::attestation_token>> ask(msiv2::attestation_request r) {
    auto out = request<msiv2::attestation_token>(cache, msiv2::attest_atom::value, std::move(r));
    run();
    return out;
  }
};

error_code code_of(const caf::error& e) {
  return msiv2::describe(e).code;
}

} // namespace

BOOST_AUTO_TEST_SUITE(actors_attestation_test)

BOOST_AUTO_TEST_CASE(one_attestation_serves_every_identity_on_the_key) {
  cache_fixture f;
  f.provider->hold = true;
  f.start();
  f.script_ok();
  auto a = f.ask(f.make_req(client_a));
  auto b = f.ask(f.make_req(client_b));
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 1u);
  BOOST_CHECK(!a->answered() && !b->answered());
  f.provider->release();
  f.run();
  BOOST_REQUIRE(a->value && b->value);
  BOOST_CHECK_EQUAL(a->value->jwt, "attestation-jwt-1");
  BOOST_CHECK_EQUAL(b->value->jwt, "attestation-jwt-1");
  BOOST_CHECK_EQUAL(f.provider->calls[0].endpoint, endpoint);
  BOOST_CHECK_EQUAL(f.provider->calls[0].key_id, f.key.key_id);
  auto c = f.ask(f.make_req(client_b));
  BOOST_REQUIRE(c->value);
  BOOST_CHECK_EQUAL(c->value->jwt, "attestation-jwt-1");
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 1u);
  BOOST_CHECK_EQUAL(f.stats->snapshot().counters["msiv2_cache_hits_total{artifact=\"attestation\"}"], 1u);
}

BOOST_AUTO_TEST_CASE(other_endpoint_or_key_attests_separately) {
  cache_fixture f;
  f.start();
  f.script_ok();
  f.script_ok();
  f.script_ok();
  BOOST_REQUIRE(f.ask(f.make_req())->value);
  auto other_ep = f.make_req();
  other_ep.endpoint = "https://attest2.test";
  BOOST_CHECK_EQUAL(f.ask(other_ep)->value->jwt, "attestation-jwt-2");
  std::string first = f.key.key_id;
  f.keys->rotate(first, [&](msiv2::result<msiv2::key_ref> k) { f.key = *k; });
  BOOST_CHECK_EQUAL(f.ask(f.make_req())->value->jwt, "attestation-jwt-3");
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 3u);
}

// Review L8: a rotated key is never attested again, and its entry (and key handle) goes.
BOOST_AUTO_TEST_CASE(a_rotated_key_is_forgotten_and_never_attested_again) {
  cache_fixture f;
  f.start();
  for (int i = 0; i < 10; ++i)
    f.script_ok(3600s);
  BOOST_REQUIRE(f.ask(f.make_req())->value);
  std::string old_id = f.key.key_id;
  f.keys->rotate(old_id, [&](msiv2::result<msiv2::key_ref> k) { f.key = *k; });
  BOOST_REQUIRE_NE(f.key.key_id, old_id);
  BOOST_REQUIRE(f.ask(f.make_req())->value);
  BOOST_REQUIRE_EQUAL(f.provider->calls.size(), 2u);
  f.step(3 * 3600s, 10s); // three lifetimes: renewals at every half-life
  std::size_t for_new = 0;
  for (std::size_t i = 2; i < f.provider->calls.size(); ++i) {
    BOOST_CHECK_MESSAGE(f.provider->calls[i].key_id != old_id,
                        "call " << i << " attested the rotated key");
    for_new += f.provider->calls[i].key_id == f.key.key_id;
  }
  BOOST_CHECK_GE(for_new, 5u); // the new key renews at each half-life
  for (const auto& [name, v] : f.stats->snapshot().gauges)
    BOOST_CHECK_MESSAGE(name.find(old_id) == std::string::npos, name);
}

BOOST_AUTO_TEST_CASE(renews_at_half_life_via_renewal_timer) {
  cache_fixture f;
  f.start();
  f.script_ok(3600s);
  f.script_ok(3600s);
  BOOST_REQUIRE(f.ask(f.make_req())->value);
  f.advance(1799s);
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 1u);
  f.advance(1s);
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 2u);
  BOOST_CHECK_EQUAL(f.provider->calls[1].client_id, client_a);
  BOOST_CHECK_EQUAL(f.stats->snapshot().counters["msiv2_renewals_total{artifact=\"attestation\"}"], 1u);
  auto got = f.ask(f.make_req());
  BOOST_REQUIRE(got->value);
  BOOST_CHECK_EQUAL(got->value->jwt, "attestation-jwt-2");
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 2u);
}

BOOST_AUTO_TEST_CASE(due_jwt_is_served_and_renewed_once_in_the_background) {
  cache_fixture f;
  f.start(false); // no timer: the front end notices
  f.script_ok(3600s);
  BOOST_REQUIRE(f.ask(f.make_req())->value);
  f.advance(2000s);
  f.provider->hold = true;
  f.script_ok(3600s);
  auto a = f.ask(f.make_req());
  auto b = f.ask(f.make_req(client_b));
  BOOST_REQUIRE(a->value && b->value);
  BOOST_CHECK_EQUAL(a->value->jwt, "attestation-jwt-1");
  BOOST_CHECK_EQUAL(b->value->jwt, "attestation-jwt-1");
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 2u);
  f.provider->release();
  f.run();
  BOOST_CHECK_EQUAL(f.ask(f.make_req())->value->jwt, "attestation-jwt-2");
}

BOOST_AUTO_TEST_CASE(failed_renewal_keeps_the_usable_jwt) {
  cache_fixture f;
  f.start();
  f.script_ok(3600s);
  f.script_fail(403);
  f.script_fail(403);
  BOOST_REQUIRE(f.ask(f.make_req())->value);
  f.advance(1800s);
  // The refused renewal is attested once more, then given up; the usable JWT stays.
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 3u);
  auto got = f.ask(f.make_req());
  BOOST_REQUIRE(got->value);
  BOOST_CHECK_EQUAL(got->value->jwt, "attestation-jwt-1");
}

BOOST_AUTO_TEST_CASE(expired_jwt_makes_callers_wait_for_a_new_one) {
  cache_fixture f;
  f.start(false);
  f.script_ok(3600s);
  BOOST_REQUIRE(f.ask(f.make_req())->value);
  f.provider->hold = true;
  f.script_ok(3600s);
  f.advance(3299s);
  // Due: served, and a background renewal starts (held by the provider).
  BOOST_CHECK_EQUAL(f.ask(f.make_req())->value->jwt, "attestation-jwt-1");
  f.advance(1s); // usable until exp - min(5 min, L/10) = 3300 s
  auto got = f.ask(f.make_req());
  BOOST_CHECK(!got->answered());
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 2u); // joined the renewal in flight
  f.provider->release();
  f.run();
  BOOST_REQUIRE(got->value);
  BOOST_CHECK_EQUAL(got->value->jwt, "attestation-jwt-2");
}

BOOST_AUTO_TEST_CASE(retries_5xx_with_backoff_then_succeeds) {
  cache_fixture f;
  f.start();
  f.script_fail(503);
  f.script_fail(0); // timeout
  f.script_ok();
  auto got = f.ask(f.make_req());
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 1u);
  f.advance(499ms); // full jitter, midpoint of [0, 1 s]
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 1u);
  f.advance(1ms);
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 2u);
  f.advance(1s); // midpoint of [0, 2 s]
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 3u);
  BOOST_REQUIRE(got->value);
  BOOST_CHECK_EQUAL(f.stats->snapshot().counters["msiv2_retries_total{upstream=\"attestation\"}"], 2u);
}

BOOST_AUTO_TEST_CASE(provider_failure_after_retries_within_deadline_is_attestation_failed) {
  cache_fixture f;
  f.start();
  for (int i = 0; i < 10; ++i)
    f.script_fail(503);
  auto got = f.ask(f.make_req(client_a, 5s));
  f.step(5s);
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::attestation_failed);
  BOOST_CHECK_EQUAL(msiv2::describe(got->error).http_status, 503);
  // 500 ms, 1 s, 2 s fit in 5 s; the next wait (4 s) does not.
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 4u);
}

BOOST_AUTO_TEST_CASE(refused_attestation_is_attested_once_more_then_fails) {
  cache_fixture f;
  f.start();
  f.script_fail(403);
  f.script_fail(403);
  f.script_ok();
  auto got = f.ask(f.make_req());
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::attestation_failed);
  auto info = msiv2::describe(got->error);
  BOOST_CHECK_EQUAL(info.http_status, 403);
  BOOST_CHECK_MESSAGE(info.description.find("scripted attestation failure (HTTP 403)") !=
                        std::string::npos, info.description);
  BOOST_CHECK_MESSAGE(info.description.find("again after one fresh attestation attempt") !=
                        std::string::npos, info.description);
  // Exactly one fresh attempt, at once; nothing on a retry schedule afterwards.
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 2u);
  f.advance(60s);
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 2u);
  BOOST_CHECK_EQUAL(f.stats->snapshot().counters["msiv2_remediations_total"], 1u);
  BOOST_CHECK_EQUAL(f.stats->snapshot().counters["msiv2_retries_total{upstream=\"attestation\"}"], 0u);
}

BOOST_AUTO_TEST_CASE(refused_then_accepted_attestation_serves_the_fresh_jwt) {
  cache_fixture f;
  f.start();
  f.script_fail(400);
  f.script_ok();
  auto got = f.ask(f.make_req());
  BOOST_REQUIRE(got->value);
  BOOST_CHECK_EQUAL(got->value->jwt, "attestation-jwt-1");
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 2u);
  // The next fetch (after an eviction) again has its one fresh attempt.
  caf::anon_send(f.cache, msiv2::evict_atom::value, std::string(endpoint), f.key.key_id);
  f.run();
  f.script_fail(403);
  f.script_ok();
  auto again = f.ask(f.make_req());
  BOOST_REQUIRE(again->value);
  BOOST_CHECK_EQUAL(again->value->jwt, "attestation-jwt-2");
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 4u);
}

BOOST_AUTO_TEST_CASE(invalid_answer_is_attested_once_more_then_fails) {
  cache_fixture f;
  f.start();
  f.script_fail(200); // a 200 whose JWT could not be used
  f.script_fail(200);
  auto got = f.ask(f.make_req());
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::attestation_failed);
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 2u);
  f.advance(60s);
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 2u);
  // A later request starts over with its own fresh attempt.
  f.script_fail(200);
  f.script_ok();
  auto later = f.ask(f.make_req());
  BOOST_REQUIRE(later->value);
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 4u);
}

BOOST_AUTO_TEST_CASE(throttling_is_retried_on_the_schedule_not_re_attested) {
  cache_fixture f;
  f.start();
  f.script_fail(429);
  f.script_ok();
  auto got = f.ask(f.make_req());
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 1u);
  f.advance(500ms);
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 2u);
  BOOST_REQUIRE(got->value);
  BOOST_CHECK_EQUAL(f.stats->snapshot().counters["msiv2_remediations_total"], 0u);
}

BOOST_AUTO_TEST_CASE(evict_and_refuse_cached_fetch_a_new_one) {
  cache_fixture f;
  f.start();
  f.script_ok();
  f.script_ok();
  f.script_ok();
  BOOST_CHECK_EQUAL(f.ask(f.make_req())->value->jwt, "attestation-jwt-1");
  auto req = f.make_req();
  req.refuse_cached = true;
  BOOST_CHECK_EQUAL(f.ask(req)->value->jwt, "attestation-jwt-2");
  caf::anon_send(f.cache, msiv2::evict_atom::value, std::string(endpoint), f.key.key_id);
  f.run();
  BOOST_CHECK_EQUAL(f.ask(f.make_req())->value->jwt, "attestation-jwt-3");
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 3u);
}

BOOST_AUTO_TEST_CASE(caller_deadline_is_answered_while_the_provider_hangs) {
  cache_fixture f;
  f.provider->hold = true;
  f.start();
  f.script_ok();
  auto got = f.ask(f.make_req(client_a, 5s));
  f.advance(4999ms);
  BOOST_CHECK(!got->answered());
  f.advance(1ms);
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::deadline_exceeded);
  BOOST_CHECK(f.provider->calls.at(0).timeout <= 5000ms);
  f.provider->release(); // a late answer still fills the cache
  f.run();
  BOOST_CHECK_EQUAL(f.ask(f.make_req())->value->jwt, "attestation-jwt-1");
}

BOOST_AUTO_TEST_CASE(without_a_provider_attestation_fails) {
  cache_fixture f;
  f.attestation = nullptr;
  f.start();
  auto got = f.ask(f.make_req());
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::attestation_failed);
}

BOOST_AUTO_TEST_CASE(exit_answers_waiting_callers_with_shutting_down) {
  cache_fixture f;
  f.provider->hold = true;
  f.start();
  f.script_ok();
  auto got = f.ask(f.make_req());
  caf::anon_send_exit(f.cache, caf::exit_reason::user_shutdown);
  f.run();
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::shutting_down);
  f.provider->release();
  f.run();
}

// -- keyguard_attestation over fake_transport -----------------------------------------------------

namespace {

struct keyguard_fixture {
  std::shared_ptr<msiv2::io::fake_transport> net =
    std::make_shared<msiv2::io::fake_transport>(msiv2::io::fake_transport::delivery::immediate);
  msiv2::key_ref key;
  msiv2::platform::pkey_ptr service_key;

  keyguard_fixture() {
    msiv2::test::inline_key_store store;
    store.load_or_create([this](msiv2::result<msiv2::key_ref> k) { key = *k; });
    auto sk = msiv2::platform::generate_rsa_key(2048);
    BOOST_REQUIRE(sk);
    service_key = std::move(*sk);
  }

  std::string jwt(const std::string& payload) {
    auto t = msiv2::platform::sign_jwt_rs256(service_key.get(), payload);
    BOOST_REQUIRE(t);
    return *t;
  }

  struct got {
    std::optional<msiv2::attestation_token> token;
    std::string error;
    int status = -1;
  };

  got attest(msiv2::keyguard_attestation& p) {
    got out;
    p.attest(key, "https://attest.test/", client_a, 7000ms,
             [&out](msiv2::result<msiv2::attestation_token> r, int status) {
               out.status = status;
               if (r)
                 out.token = *r;
               else
                 out.error = r.error();
             });
    return out;
  }
};

} // namespace

BOOST_AUTO_TEST_CASE(keyguard_request_body_shape_and_signature_verifies) {
  keyguard_fixture f;
  auto token = f.jwt("{\"iat\":1767225600,\"nbf\":1767225600,\"exp\":1767229200,"
                     "\"iss\":\"https://attest.test\",\"key_id\":\"" + f.key.key_id + "\"}");
  f.net->on("POST", "/attest/keyguard").respond(200, "{\"token\":\"" + token + "\"}").repeat_last();
  msiv2::keyguard_attestation p(f.net, "/etc/msiv2-test/ca.pem");
  auto r = f.attest(p);
  BOOST_REQUIRE_MESSAGE(r.token, r.error);
  BOOST_CHECK_EQUAL(r.status, 200);
  BOOST_CHECK_EQUAL(r.token->jwt, token);
  BOOST_CHECK_EQUAL(r.token->issued_at_ms, 1767225600000);
  BOOST_CHECK_EQUAL(r.token->expires_at_ms, 1767229200000);

  auto r2 = f.attest(p);
  auto reqs = f.net->requests();
  BOOST_REQUIRE_EQUAL(reqs.size(), 2u);
  const auto& req = reqs[0].request;
  BOOST_CHECK_EQUAL(req.method, "POST");
  BOOST_CHECK_EQUAL(req.url, "https://attest.test/attest/keyguard");
  BOOST_CHECK_EQUAL(req.ca_file, "/etc/msiv2-test/ca.pem");
  BOOST_CHECK(!req.identity);
  BOOST_CHECK(req.timeout <= 7000ms);
  BOOST_CHECK(req.headers.get("Content-Type")->find("application/json") == 0);
  auto body = msiv2::io::json_object::parse(req.body, "attestation request");
  BOOST_REQUIRE(body);
  BOOST_CHECK_EQUAL(body->members().size(), 4u);
  auto spki = msiv2::platform::base64_decode(*body->required_string("public_key"));
  BOOST_REQUIRE(spki);
  BOOST_CHECK(*spki == f.key.spki_der);
  BOOST_CHECK_EQUAL(*body->required_string("client_id"), client_a);
  auto nonce = *body->required_string("nonce");
  BOOST_CHECK_GE(nonce.size(), 32u);
  auto sig = msiv2::platform::base64_decode(*body->required_string("signature"));
  BOOST_REQUIRE(sig);
  auto pub = msiv2::platform::public_key_from_der(*spki);
  BOOST_REQUIRE(pub);
  BOOST_CHECK(msiv2::platform::verify_pss_sha256(pub->get(), nonce, *sig));
  BOOST_CHECK(!msiv2::platform::verify_pss_sha256(pub->get(), nonce + "x", *sig));
  auto body2 = msiv2::io::json_object::parse(reqs[1].request.body, "attestation request");
  BOOST_CHECK_NE(*body2->required_string("nonce"), nonce);
}

BOOST_AUTO_TEST_CASE(keyguard_failures_pass_the_status_to_done) {
  keyguard_fixture f;
  f.net->on("POST", "/attest/keyguard")
    .respond(403, "{\"error\":\"policy_violation\",\"error_description\":\"key not in TPM\"}")
    .fail(msiv2::io::transport_error::timeout, "timed out")
    .respond(200, "{\"token\":")
    .respond(200, "{\"token\":\"" + f.jwt("{\"iat\":1767225600}") + "\"}")
    .respond(200, "{\"token\":\"not-a-jwt\"}");
  msiv2::keyguard_attestation p(f.net, "");
  auto r = f.attest(p);
  BOOST_CHECK(!r.token);
  BOOST_CHECK_EQUAL(r.status, 403);
  BOOST_CHECK(r.error.find("policy_violation") != std::string::npos);
  r = f.attest(p);
  BOOST_CHECK(!r.token);
  BOOST_CHECK_EQUAL(r.status, 0);
  for (const char* what : {"malformed attestation response: not a JSON object",
                           "malformed attestation response: member \"token\" has no exp claim",
                           "malformed attestation response: member \"token\" is not a readable JWT"}) {
    r = f.attest(p);
    BOOST_CHECK(!r.token);
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_MESSAGE(r.error.find(what) != std::string::npos, r.error);
  }
}

BOOST_AUTO_TEST_CASE(keyguard_refuses_a_jwt_for_another_key) {
  keyguard_fixture f;
  f.net->on("POST", "/attest/keyguard")
    .respond(200, "{\"token\":\"" +
                    f.jwt("{\"iat\":1767225600,\"exp\":1767229200,\"key_id\":\"other-key\"}") +
                    "\"}")
    .respond(200, "{\"token\":\"" +
                    f.jwt("{\"iat\":1767225600,\"exp\":1767229200,\"key_id\":\"" +
                          f.key.key_id + "\"}") +
                    "\"}");
  msiv2::keyguard_attestation p(f.net, "");
  auto r = f.attest(p);
  BOOST_CHECK(!r.token);
  BOOST_CHECK_EQUAL(r.status, 200);
  BOOST_CHECK_MESSAGE(r.error.find("malformed attestation response: member \"token\" has key_id other-key, not the attested key " + f.key.key_id) !=
                        std::string::npos, r.error);
  r = f.attest(p);
  BOOST_CHECK_MESSAGE(r.token, r.error);
}

BOOST_AUTO_TEST_CASE(cache_with_keyguard_re_attests_once_after_an_invalid_answer) {
  cache_fixture f;
  f.transport->set_delivery(msiv2::io::fake_transport::delivery::immediate);
  auto sk = msiv2::platform::generate_rsa_key(2048);
  BOOST_REQUIRE(sk);
  auto now = f.wall_ms() / 1000;
  auto claims = [&](const std::string& kid) {
    return "{\"iat\":" + std::to_string(now) + ",\"exp\":" + std::to_string(now + 600) +
           ",\"key_id\":\"" + kid + "\"}";
  };
  auto foreign = msiv2::platform::sign_jwt_rs256(sk->get(), claims("another-key"));
  auto good = msiv2::platform::sign_jwt_rs256(sk->get(), claims(f.key.key_id));
  BOOST_REQUIRE(foreign && good);
  f.transport->on("POST", "/attest/keyguard")
    .respond(200, "{\"token\":\"" + *foreign + "\"}")
    .respond(200, "{\"token\":\"" + *good + "\"}")
    .respond(403, "{\"error\":{\"code\":\"PolicyViolation\",\"message\":\"key refused\"}}")
    .respond(200, "{\"token\":")
    .respond(200, "{\"token\":\"" + *good + "\"}");
  f.attestation = std::make_shared<msiv2::keyguard_attestation>(f.transport, "ca.pem");
  f.start();
  auto a = f.ask(f.make_req(client_a));
  BOOST_REQUIRE(a->value);
  BOOST_CHECK_EQUAL(a->value->jwt, *good);
  BOOST_CHECK_EQUAL(f.transport->requests().size(), 2u);
  // Refused, then malformed: the one fresh attempt is used up and the caller learns why.
  auto req = f.make_req(client_a);
  req.refuse_cached = true;
  auto b = f.ask(req);
  BOOST_REQUIRE(b->error);
  BOOST_CHECK(code_of(b->error) == error_code::attestation_failed);
  auto info = msiv2::describe(b->error);
  BOOST_CHECK_MESSAGE(info.description.find("attestation response") != std::string::npos,
                      info.description);
  BOOST_CHECK_EQUAL(f.transport->requests().size(), 4u);
  f.advance(60s);
  BOOST_CHECK_EQUAL(f.transport->requests().size(), 4u);
}

BOOST_AUTO_TEST_CASE(cache_with_keyguard_attestation_end_to_end_on_fake_transport) {
  cache_fixture f;
  f.transport->set_delivery(msiv2::io::fake_transport::delivery::immediate);
  auto sk = msiv2::platform::generate_rsa_key(2048);
  BOOST_REQUIRE(sk);
  auto now = f.wall_ms() / 1000;
  auto token = msiv2::platform::sign_jwt_rs256(
    sk->get(), "{\"iat\":" + std::to_string(now) + ",\"exp\":" + std::to_string(now + 600) + "}");
  BOOST_REQUIRE(token);
  f.transport->on("POST", "/attest/keyguard")
    .respond(503)
    .respond(200, "{\"token\":\"" + *token + "\"}");
  f.attestation = std::make_shared<msiv2::keyguard_attestation>(f.transport, "ca.pem");
  f.start();
  auto a = f.ask(f.make_req(client_a));
  f.advance(1s);
  BOOST_REQUIRE(a->value);
  BOOST_CHECK_EQUAL(a->value->expires_at_ms, (now + 600) * 1000);
  auto s = f.stats->snapshot();
  BOOST_CHECK_EQUAL(s.counters["msiv2_upstream_requests_total{upstream=\"attestation\",status=\"503\"}"], 1u);
  BOOST_CHECK_EQUAL(s.counters["msiv2_upstream_requests_total{upstream=\"attestation\",status=\"200\"}"], 1u);
}

// -- persistence (runtime_deps::files) -----------------------------------------------------------

using file_call = msiv2::test::memory_artifact_store::call;

std::string att_file(const cache_fixture& f) {
  return msiv2::persisted::attestation_file_name(endpoint, f.key.key_id);
}

BOOST_AUTO_TEST_CASE(fetched_jwt_is_written_and_another_process_adopts_it) {
  cache_fixture f;
  f.real_jwts = true;
  f.files = std::make_shared<msiv2::test::memory_artifact_store>();
  f.start();
  f.script_ok();
  auto first = f.ask(f.make_req());
  BOOST_REQUIRE(first->value);
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 1u);
  BOOST_REQUIRE_EQUAL(f.files->count(file_call::kind::write, att_file(f)), 1u);
  for (auto& c : f.files->calls)
    if (c.what == file_call::kind::write)
      BOOST_CHECK(c.with_lock);
  BOOST_CHECK(!f.files->locked_by_us(att_file(f)));
  // Another process: reads the file, no provider call, no lock.
  auto other = f.spawn_other();
  auto locks = f.files->count(file_call::kind::lock_and_read);
  auto got = f.request<msiv2::attestation_token>(other, msiv2::attest_atom::value, f.make_req());
  f.run();
  BOOST_REQUIRE(got->value);
  BOOST_CHECK_EQUAL(got->value->jwt, first->value->jwt);
  BOOST_CHECK_EQUAL(got->value->expires_at_ms, first->value->expires_at_ms);
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 1u);
  BOOST_CHECK_EQUAL(f.files->count(file_call::kind::lock_and_read), locks);
  BOOST_CHECK_EQUAL(
    f.stats->snapshot().counters["msiv2_cache_hits_total{artifact=\"attestation\",source=\"disk\"}"],
    1u);
}

BOOST_AUTO_TEST_CASE(renewal_adopts_what_another_process_wrote_while_we_waited_for_the_lock) {
  cache_fixture f;
  f.real_jwts = true;
  f.files = std::make_shared<msiv2::test::memory_artifact_store>();
  f.start();
  f.script_ok(3600s);
  auto first = f.ask(f.make_req());
  BOOST_REQUIRE(first->value);
  f.files->hold(att_file(f));
  f.advance(1800s); // the renewal timer fires: the renewal waits for the lock
  BOOST_CHECK_EQUAL(f.files->waiting(), 1u);
  auto renewed = f.token(3600s); // what the lock holder got
  f.files->files[att_file(f)] =
    msiv2::persisted::encode_attestation(renewed, endpoint, f.key.key_id, f.wall_ms());
  f.files->let_go(att_file(f));
  f.run();
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 1u);
  auto got = f.ask(f.make_req());
  BOOST_REQUIRE(got->value);
  BOOST_CHECK_EQUAL(got->value->jwt, renewed.jwt);
  BOOST_CHECK(!f.files->locked_by_us(att_file(f)));
}

BOOST_AUTO_TEST_CASE(refused_jwt_is_never_readopted_from_the_file) {
  cache_fixture f;
  f.real_jwts = true;
  f.files = std::make_shared<msiv2::test::memory_artifact_store>();
  f.start();
  f.script_ok();
  f.script_ok();
  auto first = f.ask(f.make_req());
  BOOST_REQUIRE(first->value);
  // issuecredential rejected it: cert_issuer evicts, then asks with refuse_cached.
  caf::anon_send(f.cache, msiv2::evict_atom::value, std::string(endpoint), f.key.key_id);
  f.run();
  auto req = f.make_req();
  req.refuse_cached = true;
  auto second = f.ask(req);
  BOOST_REQUIRE(second->value);
  BOOST_CHECK_NE(second->value->jwt, first->value->jwt);
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 2u);
  BOOST_CHECK_EQUAL(f.files->count(file_call::kind::remove, att_file(f)), 1u);
  auto d = msiv2::persisted::decode_attestation(f.files->files[att_file(f)], endpoint,
                                                f.key.key_id, f.wall_ms());
  BOOST_REQUIRE_MESSAGE(d, d.reason);
  BOOST_CHECK_EQUAL(d.value->jwt, second->value->jwt);
}

BOOST_AUTO_TEST_CASE(corrupt_or_foreign_attestation_file_is_a_miss) {
  cache_fixture f;
  f.real_jwts = true;
  f.files = std::make_shared<msiv2::test::memory_artifact_store>();
  f.start();
  f.script_ok();
  f.files->files[att_file(f)] = "{\"schema\":\"msiv2.attestation-token\",\"version\":1";
  auto got = f.ask(f.make_req());
  BOOST_REQUIRE(got->value);
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 1u);
  BOOST_CHECK_EQUAL(f.files->count(file_call::kind::remove, att_file(f)), 1u);
  BOOST_CHECK_GE(
    f.stats->snapshot().counters["msiv2_persistence_errors_total{artifact=\"attestation\"}"], 1u);
}

BOOST_AUTO_TEST_CASE(lock_not_had_in_time_attests_alone_and_writes_without_it) {
  cache_fixture f;
  f.real_jwts = true;
  f.files = std::make_shared<msiv2::test::memory_artifact_store>();
  f.config.lock_wait = 2s;
  f.start();
  f.script_ok();
  f.files->hold(att_file(f));
  auto got = f.request<msiv2::attestation_token>(f.cache, msiv2::attest_atom::value,
                                                 f.make_req(client_a, 30s));
  f.run();
  BOOST_CHECK(!got->answered());
  for (auto& c : f.files->calls)
    if (c.what == file_call::kind::lock_and_read)
      BOOST_CHECK(c.wait == 2s);
  f.files->time_out_waits();
  f.run();
  BOOST_REQUIRE(got->value);
  BOOST_CHECK_EQUAL(f.provider->calls.size(), 1u);
  BOOST_REQUIRE_EQUAL(f.files->count(file_call::kind::write, att_file(f)), 1u);
  for (auto& c : f.files->calls)
    if (c.what == file_call::kind::write)
      BOOST_CHECK(!c.with_lock);
}

BOOST_AUTO_TEST_SUITE_END()
