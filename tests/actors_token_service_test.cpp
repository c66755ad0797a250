// token_service on the test scheduler, with scripted doubles of its peers (probe, cert_issuer,
// token_exchanger, renewal_timer) sent to it in a wiring. The doubles are untyped actors cast to
// the peers' handles: they answer only what token_service sends them.

#include <boost/test/unit_test.hpp>

#include <caf/actor_cast.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include "actors/renewal_timer.hpp"
#include "actors/token_service.hpp"
#include "tests/support/actor_fixture.hpp"

using namespace msiv2;
using namespace std::chrono_literals;

namespace {

/// What the doubles answer and what they saw.
struct script {
  std::shared_ptr<platform::wall_clock> wall;

  int probes = 0;
  imds_source source = imds_source::v2;
  caf::error probe_error;

  int credentials = 0;
  std::vector<credential_request> credential_requests;
  std::string x5t = "x5t-A";
  caf::error credential_error;

  int exchanges = 0;
  std::vector<exchange_request> exchange_requests;
  caf::error exchange_error;
  std::int64_t lifetime_s = 3600;
  /// Hold exchanges until the double gets ok_atom.
  bool hold = false;
  /// When set, the next exchange first tells `service` to drop the tokens bound to its
  /// certificate (what token_exchanger does on AADSTS500181), then answers.
  bool not_bound_once = false;
  caf::actor service;
  std::vector<std::pair<caf::response_promise, exchange_request>> held;

  std::vector<std::pair<std::string, std::int64_t>> schedules;
  std::vector<std::string> cancels;

  token_result make_token(const exchange_request& r) {
    token_result t;
    t.access_token = "token-" + std::to_string(exchanges);
    t.type = r.request.type;
    t.expires_on = wall->now_s() + lifetime_s;
    t.correlation_id = r.request.correlation_id; // as token_exchanger does
    if (r.cred) {
      auto b = std::make_shared<token_binding>();
      b->x5t_s256 = r.cred->x5t_s256;
      t.binding = b;
    }
    return t;
  }
};

using script_ptr = std::shared_ptr<script>;

caf::behavior probe_double(caf::event_based_actor*, script_ptr s) {
  return {
    [=](probe_atom, deadline) -> caf::result<imds_source> {
      ++s->probes;
      if (s->probe_error)
        return s->probe_error;
      return s->source;
    },
    [=](wire_atom, wiring_ptr) {},
  };
}

caf::behavior cert_double(caf::event_based_actor*, script_ptr s) {
  return {
    [=](caf::get_atom, credential_request& r) -> caf::result<credential_ptr> {
      ++s->credentials;
      s->credential_requests.push_back(r);
      if (s->credential_error)
        return s->credential_error;
      auto c = std::make_shared<credential>();
      c->identity = r.identity;
      c->x5t_s256 = s->x5t;
      return credential_ptr{c};
    },
    [=](wire_atom, wiring_ptr) {},
  };
}

caf::behavior exchanger_double(caf::event_based_actor* self, script_ptr s) {
  return {
    [=](exchange_atom, exchange_request& r) -> caf::result<token_result> {
      ++s->exchanges;
      s->exchange_requests.push_back(r);
      if (s->not_bound_once && r.cred) {
        s->not_bound_once = false;
        self->send(s->service, evict_atom::value, r.cred->x5t_s256);
      }
      if (s->hold) {
        auto rp = self->make_response_promise();
        s->held.emplace_back(rp, r);
        return rp;
      }
      if (s->exchange_error)
        return s->exchange_error;
      return s->make_token(r);
    },
    [=](caf::ok_atom) {
      auto held = std::move(s->held);
      s->held.clear();
      for (auto& [rp, r] : held) {
        if (s->exchange_error)
          rp.deliver(s->exchange_error);
        else
          rp.deliver(s->make_token(r));
      }
    },
    [=](wire_atom, wiring_ptr) {},
  };
}

caf::behavior timer_double(caf::event_based_actor*, script_ptr s) {
  return {
    [=](schedule_atom, std::string& id, std::int64_t at, caf::actor&) {
      s->schedules.emplace_back(id, at);
    },
    [=](cancel_atom, std::string& id) { s->cancels.push_back(id); },
    [=](wire_atom, wiring_ptr) {},
  };
}

struct fixture : test::actor_fixture {
  script_ptr s = std::make_shared<script>();
  caf::actor probe_a, certs_a, exchanger_a, timer_a;
  token_service service;
  /// What token_service publishes for lock-free readers (every test runs with it).
  std::shared_ptr<token_snapshot> published = std::make_shared<token_snapshot>();
  /// The process's retry budget; null unless a test sets one (before start()).
  std::shared_ptr<io::retry_governor> governor;
  /// Run the real renewal_timer instead of the recording double (set before start()): its
  /// renewals fire on virtual time.
  bool real_timer = false;

  fixture() {
    s->wall = wall;
  }

  /// deps() with the snapshot.
  deps_ptr deps_with_snapshot() const {
    auto d = std::make_shared<runtime_deps>(*deps());
    d->snapshot = published;
    d->retries = governor;
    return d;
  }

  /// What a reader on another thread would get now.
  std::optional<token_result> read(const token_request& r) const {
    return published->find(r, wall_ms());
  }

  /// Spawns the doubles and the service (after a test edited `config`).
  void start() {
    probe_a = keep(sys.spawn(probe_double, s));
    certs_a = keep(sys.spawn(cert_double, s));
    exchanger_a = keep(sys.spawn(exchanger_double, s));
    timer_a = real_timer ? caf::actor_cast<caf::actor>(keep(sys.spawn(renewal_timer_impl, deps())))
                         : keep(sys.spawn(timer_double, s));
    service = keep(sys.spawn(token_service_impl, deps_with_snapshot()));
    wire();
  }

  void wire() {
    auto w = std::make_shared<wiring>();
    w->probe_actor = caf::actor_cast<probe>(probe_a);
    w->certs = caf::actor_cast<cert_issuer>(certs_a);
    w->exchanger = caf::actor_cast<token_exchanger>(exchanger_a);
    w->timer = caf::actor_cast<renewal_timer>(timer_a);
    w->service = service;
    caf::anon_send(service, wire_atom::value, wiring_ptr{w});
    run();
  }

  static token_request pop(std::string resource = "https://vault.azure.net") {
    token_request r;
    r.resource = std::move(resource);
    r.timeout = 10s;
    return r;
  }

  std::shared_ptr<test::outcome<token_result>> ask(token_request r) {
    return request<token_result>(service, std::move(r));
  }

  /// Asks and runs; the outcome must be answered.
  test::outcome<token_result> get(token_request r) {
    auto out = ask(std::move(r));
    run();
    BOOST_REQUIRE_MESSAGE(out->answered(), "token_service did not answer");
    return *out;
  }

  void release() {
    caf::anon_send(exchanger_a, caf::ok_atom::value);
    run();
  }

  /// Advances virtual time in small steps, so that timers set by handlers that ran in between
  /// fire in order (advance() moves the clock first: a delay set while it runs counts from
  /// the new time).
  void step(std::chrono::milliseconds total, std::chrono::milliseconds by = 100ms) {
    for (auto done = 0ms; done < total; done += by)
      advance(by);
  }

  std::uint64_t counter(const std::string& k) {
    auto snap = stats->snapshot();
    auto i = snap.counters.find(k);
    return i == snap.counters.end() ? 0 : i->second;
  }
};

error_code code_of(const caf::error& e) {
  return describe(e).code;
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(actors_token_service_test, fixture)

BOOST_AUTO_TEST_CASE(first_request_runs_the_mtls_chain_and_answers_from_the_network) {
  start();
  auto got = get(pop());
  BOOST_REQUIRE(got.value);
  BOOST_CHECK_EQUAL(got.value->access_token, "token-1");
  BOOST_CHECK(got.value->source == token_source::network);
  BOOST_REQUIRE(got.value->binding);
  BOOST_CHECK_EQUAL(got.value->binding->x5t_s256, "x5t-A");
  // No probe on the mtls_pop path (as MSAL .NET): getplatformmetadata itself tells.
  BOOST_CHECK_EQUAL(s->probes, 0);
  BOOST_CHECK_EQUAL(s->credentials, 1);
  BOOST_CHECK_EQUAL(s->exchanges, 1);
  BOOST_REQUIRE(s->exchange_requests.at(0).cred);
  BOOST_CHECK_EQUAL(s->exchange_requests.at(0).cred->x5t_s256, "x5t-A");
  // Renewal at half-life (the fixture's jitter is 0), scheduled with the timer.
  BOOST_REQUIRE_EQUAL(s->schedules.size(), 1u);
  BOOST_CHECK_EQUAL(s->schedules[0].second, wall_ms() + 1800 * 1000);
  BOOST_CHECK_EQUAL(got.value->refresh_on, (wall_ms() + 1800 * 1000) / 1000);
}

BOOST_AUTO_TEST_CASE(cache_hit_makes_no_peer_call) {
  start();
  auto first = get(pop());
  advance(60s);
  auto second = get(pop());
  BOOST_REQUIRE(second.value);
  BOOST_CHECK(second.value->source == token_source::cache);
  BOOST_CHECK_EQUAL(second.value->access_token, first.value->access_token);
  BOOST_CHECK_EQUAL(s->probes, 0);
  BOOST_CHECK_EQUAL(s->credentials, 1);
  BOOST_CHECK_EQUAL(s->exchanges, 1);
  BOOST_CHECK_EQUAL(counter("msiv2_cache_hits_total{artifact=\"access_token\"}"), 1u);
  BOOST_CHECK_EQUAL(counter("msiv2_cache_misses_total{artifact=\"access_token\"}"), 1u);
}

BOOST_AUTO_TEST_CASE(concurrent_identical_requests_share_one_upstream_chain) {
  start();
  s->hold = true;
  std::vector<std::shared_ptr<test::outcome<token_result>>> outs;
  for (int i = 0; i < 5; ++i)
    outs.push_back(ask(pop()));
  run();
  BOOST_CHECK_EQUAL(s->exchanges, 1);
  BOOST_CHECK_EQUAL(s->credentials, 1);
  for (auto& o : outs)
    BOOST_CHECK(!o->answered());
  release();
  for (auto& o : outs) {
    BOOST_REQUIRE(o->value);
    BOOST_CHECK_EQUAL(o->value->access_token, "token-1");
  }
}

BOOST_AUTO_TEST_CASE(concurrent_identical_requests_all_get_the_same_error) {
  start();
  s->hold = true;
  s->exchange_error = make_msiv2_error(error_code::token_refused, "refused", 400, "corr-9");
  auto a = ask(pop());
  auto b = ask(pop());
  run();
  release();
  BOOST_CHECK_EQUAL(s->exchanges, 1);
  BOOST_CHECK(code_of(a->error) == error_code::token_refused);
  BOOST_CHECK(code_of(b->error) == error_code::token_refused);
}

BOOST_AUTO_TEST_CASE(cache_key_includes_certificate_thumbprint_new_cert_means_new_token) {
  start();
  auto vault = get(pop("https://vault.azure.net"));
  BOOST_CHECK_EQUAL(vault.value->binding->x5t_s256, "x5t-A");
  // cert_issuer hands out a new certificate on the next network acquisition.
  s->x5t = "x5t-B";
  get(pop("https://storage.azure.com"));
  // The vault token is bound to the old certificate: never served again.
  auto again = get(pop("https://vault.azure.net"));
  BOOST_REQUIRE(again.value);
  BOOST_CHECK(again.value->source == token_source::network);
  BOOST_CHECK_EQUAL(again.value->binding->x5t_s256, "x5t-B");
  BOOST_CHECK_EQUAL(s->exchanges, 3);
  BOOST_CHECK(!s->cancels.empty()); // the pruned token's timer
}

BOOST_AUTO_TEST_CASE(claims_bypass_the_cache_but_still_share_one_flight) {
  start();
  get(pop());
  s->hold = true;
  auto r = pop();
  r.claims = R"({"access_token":{"nbf":{"essential":true,"value":"1"}}})";
  auto a = ask(r);
  auto b = ask(r);
  run();
  BOOST_CHECK_EQUAL(s->exchanges, 2);
  release();
  BOOST_REQUIRE(a->value);
  BOOST_REQUIRE(b->value);
  BOOST_CHECK(a->value->source == token_source::network);
  BOOST_CHECK_EQUAL(s->exchange_requests.back().request.claims, r.claims);
  // The claims token is not served to plain requests, which still get the cached one.
  auto plain = get(pop());
  BOOST_CHECK(plain.value->source == token_source::cache);
  BOOST_CHECK_EQUAL(plain.value->access_token, "token-1");
}

BOOST_AUTO_TEST_CASE(force_refresh_skips_the_cached_token_and_asks_cert_issuer_again) {
  start();
  get(pop());
  auto r = pop();
  r.force_refresh = true;
  auto fresh = get(r);
  BOOST_REQUIRE(fresh.value);
  BOOST_CHECK(fresh.value->source == token_source::network);
  BOOST_CHECK_EQUAL(fresh.value->access_token, "token-2");
  BOOST_CHECK_EQUAL(s->credentials, 2);
  BOOST_CHECK_EQUAL(s->exchanges, 2);
  auto next = get(pop());
  BOOST_CHECK(next.value->source == token_source::cache);
  BOOST_CHECK_EQUAL(next.value->access_token, "token-2");
}

BOOST_AUTO_TEST_CASE(due_token_is_served_and_renewed_once_in_the_background) {
  start();
  get(pop());
  advance(1801s);
  s->hold = true;
  auto a = ask(pop());
  auto b = ask(pop());
  run();
  BOOST_REQUIRE(a->value);
  BOOST_REQUIRE(b->value);
  BOOST_CHECK(a->value->source == token_source::cache);
  BOOST_CHECK_EQUAL(a->value->access_token, "token-1");
  BOOST_CHECK_EQUAL(b->value->access_token, "token-1");
  BOOST_CHECK_EQUAL(s->exchanges, 2);
  release();
  auto after = get(pop());
  BOOST_CHECK(after.value->source == token_source::cache);
  BOOST_CHECK_EQUAL(after.value->access_token, "token-2");
  BOOST_CHECK_EQUAL(s->exchanges, 2);
  BOOST_CHECK_EQUAL(counter("msiv2_renewals_total{artifact=\"access_token\"}"), 1u);
}

BOOST_AUTO_TEST_CASE(timer_renew_message_renews_in_the_background) {
  start();
  get(pop());
  BOOST_REQUIRE_EQUAL(s->schedules.size(), 1u);
  advance(1800s);
  caf::anon_send(service, renew_atom::value, s->schedules[0].first);
  run();
  BOOST_CHECK_EQUAL(s->exchanges, 2);
  auto after = get(pop());
  BOOST_CHECK(after.value->source == token_source::cache);
  BOOST_CHECK_EQUAL(after.value->access_token, "token-2");
  BOOST_CHECK_EQUAL(s->schedules.size(), 2u);
}

BOOST_AUTO_TEST_CASE(expired_token_makes_callers_wait_for_the_renewal) {
  start();
  get(pop());
  advance(3300s); // usable until t1 - min(5 min, L/10)
  s->hold = true;
  auto a = ask(pop());
  run();
  BOOST_CHECK(!a->answered());
  release();
  BOOST_REQUIRE(a->value);
  BOOST_CHECK(a->value->source == token_source::network);
  BOOST_CHECK_EQUAL(a->value->access_token, "token-2");
}

BOOST_AUTO_TEST_CASE(failed_renewal_keeps_serving_the_usable_token_and_retries_with_backoff) {
  start();
  get(pop());
  advance(1801s);
  s->exchange_error = make_msiv2_error(error_code::transport_failed, "reset");
  auto a = get(pop());
  BOOST_CHECK_EQUAL(a.value->access_token, "token-1");
  BOOST_CHECK_EQUAL(s->exchanges, 2);
  auto b = get(pop());
  BOOST_REQUIRE(b.value);
  BOOST_CHECK_EQUAL(b.value->access_token, "token-1");
  BOOST_CHECK(b.value->source == token_source::cache);
  advance(1s); // first retry within 1 s (full jitter: the fixture draws the midpoint, 0.5 s)
  BOOST_CHECK_EQUAL(s->exchanges, 3);
  s->exchange_error = caf::error{};
  advance(2s); // second retry within 2 s of the first succeeds
  BOOST_CHECK_EQUAL(s->exchanges, 4);
  auto c = get(pop());
  BOOST_CHECK_EQUAL(c.value->access_token, "token-4");
}

BOOST_AUTO_TEST_CASE(renewal_retries_are_drawn_over_the_whole_full_jitter_window) {
  // io::renewal_retry_delay: after n failures, uniform in [1 ms, min(60 s, 1 s x 2^(n-1))].
  // Drawing the window's top gives the old schedule (1 s, 2 s, 4 s); drawing its bottom
  // retries after 1 ms. Symmetric draws (the lifecycle's jitter) stay at their midpoint.
  bool top = true;
  draw = [&top](std::int64_t lo, std::int64_t hi) {
    if (lo != 0)
      return lo + (hi - lo) / 2;
    return top ? hi : lo;
  };
  start();
  get(pop());
  advance(1801s);
  s->exchange_error = make_msiv2_error(error_code::transport_failed, "reset");
  get(pop()); // due: served, renewal fails (failure 1)
  BOOST_CHECK_EQUAL(s->exchanges, 2);
  advance(999ms);
  BOOST_CHECK_EQUAL(s->exchanges, 2);
  advance(1ms); // the top of [1 ms, 1 s]
  BOOST_CHECK_EQUAL(s->exchanges, 3);
  advance(1999ms);
  BOOST_CHECK_EQUAL(s->exchanges, 3);
  top = false; // the delay after the next failure is drawn at the bottom of [1 ms, 4 s]
  advance(1ms); // the top of [1 ms, 2 s]
  BOOST_CHECK_EQUAL(s->exchanges, 4);
  s->exchange_error = caf::error{};
  advance(1ms);
  BOOST_CHECK_EQUAL(s->exchanges, 5);
  auto c = get(pop());
  BOOST_REQUIRE(c.value);
  BOOST_CHECK_EQUAL(c.value->access_token, "token-5");
  BOOST_CHECK(c.value->source == token_source::cache);
}

BOOST_AUTO_TEST_CASE(renewal_retries_take_from_the_retry_budget_and_wait_when_it_is_empty) {
  io::retry_governor_settings budget;
  budget.budget = 2;
  budget.refill_per_minute = 1;
  governor = std::make_shared<io::retry_governor>(budget, draw);
  start();
  get(pop());
  advance(1801s);
  s->exchange_error = make_msiv2_error(error_code::transport_failed, "reset");
  get(pop()); // due: served; the renewal itself is not a retry and takes nothing
  BOOST_CHECK_EQUAL(s->exchanges, 2);
  // Retries after 0.5 s and 1 s more (midpoint draws) take the budget's 2 units; the next
  // ones (2 s and 4 s later, at 3.5 s and 7.5 s) find it empty and make no call.
  step(10s);
  BOOST_CHECK_EQUAL(s->exchanges, 4);
  BOOST_CHECK_EQUAL(counter("msiv2_retries_refused_total{artifact=\"access_token\"}"), 2u);
  BOOST_CHECK_EQUAL(governor->retries_refused(),
                    counter("msiv2_retries_refused_total{artifact=\"access_token\"}"));
  // The token is still served from the cache meanwhile.
  auto held = get(pop());
  BOOST_REQUIRE(held.value);
  BOOST_CHECK_EQUAL(held.value->access_token, "token-1");
  BOOST_CHECK(held.value->source == token_source::cache);
  // The upstream recovers; the budget earns one unit a minute, back to one retry 60.5 s after
  // the failure (59 s after the second retry took the last unit). The backoff steps at 15.5 s
  // and 31.5 s are refused; the one at 63.5 s takes the new unit, goes out and renews the
  // token.
  s->exchange_error = caf::error{};
  step(50s);
  BOOST_CHECK_EQUAL(s->exchanges, 4);
  BOOST_CHECK_EQUAL(counter("msiv2_retries_refused_total{artifact=\"access_token\"}"), 4u);
  step(2min);
  BOOST_CHECK_EQUAL(s->exchanges, 5);
  BOOST_CHECK_EQUAL(governor->retries_refused(), 4u);
  auto renewed = get(pop());
  BOOST_REQUIRE(renewed.value);
  BOOST_CHECK_EQUAL(renewed.value->access_token, "token-5");
  BOOST_CHECK(renewed.value->source == token_source::cache);
}

BOOST_AUTO_TEST_CASE(deadline_exceeded_for_a_slow_chain_while_it_continues_for_others) {
  start();
  s->hold = true;
  auto r = pop();
  r.timeout = 2s;
  auto quick = ask(r);
  auto patient = ask(pop());
  run();
  advance(2s);
  BOOST_REQUIRE(quick->error);
  BOOST_CHECK(code_of(quick->error) == error_code::deadline_exceeded);
  BOOST_CHECK(!patient->answered());
  release();
  BOOST_REQUIRE(patient->value);
}

BOOST_AUTO_TEST_CASE(peer_that_never_answers_ends_in_deadline_exceeded) {
  start();
  s->hold = true;
  auto r = pop();
  r.timeout = 3s;
  auto out = ask(r);
  run();
  advance(3s);
  BOOST_REQUIRE(out->error);
  BOOST_CHECK(code_of(out->error) == error_code::deadline_exceeded);
  BOOST_CHECK(!describe(out->error).description.empty());
}

BOOST_AUTO_TEST_CASE(invalid_requests_are_refused_with_clear_errors_and_no_peer_call) {
  start();
  auto check = [&](token_request r, const std::string& fragment) {
    auto got = get(std::move(r));
    BOOST_REQUIRE(got.error);
    auto info = describe(got.error);
    BOOST_CHECK(info.code == error_code::invalid_request);
    BOOST_CHECK_MESSAGE(info.description.find(fragment) != std::string::npos,
                        info.description << " lacks " << fragment);
  };
  check(pop(""), "resource is empty");
  check(pop("/.default"), "resource is empty");
  check(pop("https://vault.azure.net /x"), "whitespace");
  check(pop("vault"), "neither a URI");
  auto r = pop();
  r.identity = managed_identity::by_client_id("not-a-guid");
  check(r, "GUID");
  r.identity = managed_identity::by_object_id("1234");
  check(r, "GUID");
  r.identity = managed_identity::by_resource_id("rg/identity");
  check(r, "ARM id");
  // Review L12: ids that could not round-trip through a certificate file.
  r.identity = managed_identity::by_resource_id("/subscriptions/s/resourcegroups/rg\xff/x");
  check(r, "printable ASCII");
  r.identity = managed_identity::by_resource_id("/subscriptions/s/r\xc3\xa9sum\xc3\xa9");
  check(r, "printable ASCII");
  check(pop("https://vault.azure.net/\xff"), "not valid UTF-8");
  check(pop("https://vault.azure.net/\xc0\xaf"), "not valid UTF-8"); // overlong '/'
  r = pop();
  r.timeout = 0ms;
  check(r, "timeout");
  BOOST_CHECK_EQUAL(s->probes + s->credentials + s->exchanges, 0);
  // Valid selectors pass.
  r = pop();
  r.identity = managed_identity::by_client_id("6a2bc6e4-0c1f-4d7a-9b7e-2f0d4c1e8a11");
  BOOST_CHECK(get(r).value);
  r.identity = managed_identity::by_resource_id(
    "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/i");
  BOOST_CHECK(get(r).value);
  BOOST_CHECK(get(pop("api://caf\xc3\xa9-app")).value); // valid UTF-8 in a resource passes
}

BOOST_AUTO_TEST_CASE(trailing_default_scope_is_stripped_for_the_cache_key_and_the_exchange) {
  start();
  get(pop("https://vault.azure.net/.default"));
  BOOST_CHECK_EQUAL(s->exchange_requests.at(0).request.resource, "https://vault.azure.net");
  auto again = get(pop("https://vault.azure.net"));
  BOOST_CHECK(again.value->source == token_source::cache);
}

BOOST_AUTO_TEST_CASE(mtls_pop_with_v2_disabled_fails_closed_at_once) {
  config.v2_enabled = false;
  start();
  auto got = get(pop());
  BOOST_REQUIRE(got.error);
  BOOST_CHECK(code_of(got.error) == error_code::v2_disabled);
  BOOST_CHECK_EQUAL(s->probes + s->credentials + s->exchanges, 0);
  auto r = pop();
  r.type = token_type::bearer;
  BOOST_CHECK(get(r).value);
}

BOOST_AUTO_TEST_CASE(v1_only_answer_of_getplatformmetadata_is_remembered_and_refuses_mtls_pop) {
  start();
  s->credential_error = make_msiv2_error(error_code::v1_only_host, "getplatformmetadata: 404", 404);
  auto got = get(pop());
  BOOST_REQUIRE(got.error);
  BOOST_CHECK(code_of(got.error) == error_code::v1_only_host);
  BOOST_CHECK_EQUAL(s->credentials, 1);
  BOOST_CHECK_EQUAL(s->exchanges, 0);
  // Remembered for the process: the next mtls_pop request fails without an upstream call.
  got = get(pop("https://storage.azure.com"));
  BOOST_CHECK(code_of(got.error) == error_code::v1_only_host);
  BOOST_CHECK_EQUAL(s->credentials, 1);
  BOOST_CHECK_EQUAL(s->probes, 0);
}

BOOST_AUTO_TEST_CASE(bearer_request_goes_to_the_exchanger_without_a_credential) {
  start();
  auto r = pop();
  r.type = token_type::bearer;
  auto got = get(r);
  BOOST_REQUIRE(got.value);
  BOOST_CHECK(got.value->type == token_type::bearer);
  BOOST_REQUIRE_EQUAL(s->exchange_requests.size(), 1u);
  BOOST_CHECK(s->exchange_requests[0].cred == nullptr);
  BOOST_CHECK_EQUAL(s->credentials, 0);
  BOOST_CHECK(get(r).value->source == token_source::cache);
}

BOOST_AUTO_TEST_CASE(upstream_errors_propagate_with_code_description_status_and_correlation_id) {
  start();
  s->credential_error = make_msiv2_error(error_code::issuance_refused,
                                         "issuecredential refused the CSR", 400, "corr-1");
  auto got = get(pop());
  BOOST_REQUIRE(got.error);
  auto info = describe(got.error);
  BOOST_CHECK(info.code == error_code::issuance_refused);
  BOOST_CHECK_EQUAL(info.description, "issuecredential refused the CSR");
  BOOST_CHECK_EQUAL(info.http_status, 400);
  BOOST_CHECK_EQUAL(info.correlation_id, "corr-1");
  BOOST_CHECK_EQUAL(s->exchanges, 0);
}

BOOST_AUTO_TEST_CASE(no_imds_from_getplatformmetadata_is_answered_at_once_for_the_transient_ttl) {
  start();
  s->credential_error = make_msiv2_error(error_code::imds_unavailable, "nothing answered");
  auto got = get(pop());
  BOOST_CHECK(code_of(got.error) == error_code::imds_unavailable);
  BOOST_CHECK_EQUAL(s->credentials, 1);
  got = get(pop());
  BOOST_CHECK(code_of(got.error) == error_code::imds_unavailable);
  BOOST_CHECK_EQUAL(s->credentials, 1); // remembered, not asked again
  advance(config.transient_probe_ttl + 1s);
  s->credential_error = caf::error{};
  BOOST_CHECK(get(pop()).value);
  BOOST_CHECK_EQUAL(s->credentials, 2);
  BOOST_CHECK_EQUAL(s->probes, 0);
}

BOOST_AUTO_TEST_CASE(every_leg_of_a_request_carries_one_correlation_id) {
  start();
  auto got = get(pop());
  BOOST_REQUIRE(got.value);
  BOOST_REQUIRE_EQUAL(s->credential_requests.size(), 1u);
  const auto id = s->credential_requests[0].correlation_id;
  BOOST_CHECK_EQUAL(id.size(), 36u); // a UUID made for the request
  BOOST_CHECK_EQUAL(s->exchange_requests.at(0).request.correlation_id, id);
  BOOST_CHECK_EQUAL(got.value->correlation_id, id); // the double echoes it, as the exchanger does
  // The embedder's own id is used as given.
  auto r = pop("https://storage.azure.com");
  r.correlation_id = "embedder-id-42";
  BOOST_REQUIRE(get(r).value);
  BOOST_CHECK_EQUAL(s->credential_requests.at(1).correlation_id, "embedder-id-42");
  BOOST_CHECK_EQUAL(s->exchange_requests.at(1).request.correlation_id, "embedder-id-42");
}

BOOST_AUTO_TEST_CASE(errors_name_the_request_correlation_id_when_the_upstream_gave_none) {
  start();
  s->exchange_error = make_msiv2_error(error_code::token_refused, "refused", 400);
  auto r = pop();
  r.correlation_id = "mine-1";
  auto got = get(r);
  BOOST_REQUIRE(got.error);
  BOOST_CHECK_EQUAL(describe(got.error).correlation_id, "mine-1");
}

BOOST_AUTO_TEST_CASE(background_renewal_gets_a_correlation_id_of_its_own) {
  start();
  auto r = pop();
  r.correlation_id = "first-call";
  BOOST_REQUIRE(get(r).value);
  BOOST_REQUIRE_EQUAL(s->schedules.size(), 1u);
  caf::anon_send(service, renew_atom::value, s->schedules[0].first);
  run();
  BOOST_REQUIRE_EQUAL(s->exchange_requests.size(), 2u);
  const auto renewal_id = s->exchange_requests[1].request.correlation_id;
  BOOST_CHECK(!renewal_id.empty());
  BOOST_CHECK_NE(renewal_id, "first-call");
}

BOOST_AUTO_TEST_CASE(correlation_id_with_control_characters_is_refused) {
  start();
  auto r = pop();
  r.correlation_id = "bad\r\nid";
  auto got = get(r);
  BOOST_REQUIRE(got.error);
  BOOST_CHECK(code_of(got.error) == error_code::invalid_request);
  BOOST_CHECK_NE(describe(got.error).description.find("correlation id"), std::string::npos);
}

BOOST_AUTO_TEST_CASE(software_key_host_fails_closed_when_hardware_binding_is_required) {
  start();
  auto r = pop();
  r.min_binding = binding_strength::hardware_key;
  auto got = get(r);
  BOOST_REQUIRE(got.error);
  auto info = describe(got.error);
  BOOST_CHECK(info.code == error_code::binding_too_weak);
  BOOST_CHECK_NE(info.description.find("software_key"), std::string::npos);
  BOOST_CHECK_NE(info.description.find("hardware key store"), std::string::npos);
  BOOST_CHECK_EQUAL(s->probes + s->credentials + s->exchanges, 0); // nothing minted or sent
  // What the key store gives is accepted.
  r.min_binding = binding_strength::software_key;
  BOOST_CHECK(get(r).value);
}

BOOST_AUTO_TEST_CASE(bearer_request_with_a_binding_minimum_fails_closed) {
  start();
  auto r = pop();
  r.type = token_type::bearer;
  r.min_binding = binding_strength::software_key;
  auto got = get(r);
  BOOST_REQUIRE(got.error);
  BOOST_CHECK(code_of(got.error) == error_code::binding_too_weak);
  BOOST_CHECK_EQUAL(s->exchanges, 0);
}

namespace {
class hardware_store : public test::inline_key_store {
public:
  binding_strength strength() const override { return binding_strength::hardware_key; }
};
} // namespace

BOOST_AUTO_TEST_CASE(hardware_key_store_meets_hardware_but_not_attested_hardware) {
  keys = std::make_shared<hardware_store>();
  start();
  auto r = pop();
  r.min_binding = binding_strength::hardware_key;
  BOOST_CHECK(get(r).value);
  r.min_binding = binding_strength::attested_hardware_key;
  r.resource = "https://storage.azure.com";
  auto got = get(r);
  BOOST_REQUIRE(got.error);
  BOOST_CHECK(code_of(got.error) == error_code::binding_too_weak);
  BOOST_CHECK_NE(describe(got.error).description.find("attestation provider"), std::string::npos);
}

namespace {
/// An attestation provider that is never called here; only its kind matters.
class idle_provider : public attestation_provider {
public:
  explicit idle_provider(bool hardware) : hardware_(hardware) {}
  void attest(const key_ref&, const std::string&, const std::string&, std::chrono::milliseconds,
              std::function<void(result<attestation_token>, int)> done) override {
    done(fail("not used"), 0);
  }
  bool attests_hardware_keys() const override { return hardware_; }

private:
  bool hardware_;
};
} // namespace

BOOST_AUTO_TEST_CASE(a_hardware_key_store_with_a_tpm_attestation_provider_gives_attested_hardware_keys) {
  keys = std::make_shared<hardware_store>();
  attestation = std::make_shared<idle_provider>(true);
  start();
  auto caps = request<host_capabilities>(service, capabilities_atom::value);
  run();
  BOOST_REQUIRE(caps->value);
  BOOST_CHECK(caps->value->strongest == binding_strength::attested_hardware_key);
  auto r = pop();
  r.min_binding = binding_strength::attested_hardware_key;
  BOOST_CHECK(get(r).value);
  BOOST_CHECK(read(r)); // the published token is as strong as the module: readers serve it
}

BOOST_AUTO_TEST_CASE(a_provider_that_proves_possession_only_leaves_a_hardware_key_unattested) {
  keys = std::make_shared<hardware_store>();
  attestation = std::make_shared<idle_provider>(false); // keyguard: possession only
  start();
  auto caps = request<host_capabilities>(service, capabilities_atom::value);
  run();
  BOOST_REQUIRE(caps->value);
  BOOST_CHECK(caps->value->strongest == binding_strength::hardware_key);
  auto r = pop();
  r.min_binding = binding_strength::attested_hardware_key;
  auto got = get(r);
  BOOST_REQUIRE(got.error);
  BOOST_CHECK(code_of(got.error) == error_code::binding_too_weak);
}

BOOST_AUTO_TEST_CASE(capability_query_reports_v2_and_the_key_store_strength_from_the_probe) {
  start();
  auto caps = request<host_capabilities>(service, capabilities_atom::value);
  run();
  BOOST_REQUIRE(caps->value);
  BOOST_CHECK(caps->value->imds == imds_availability::v2);
  BOOST_CHECK(caps->value->strongest == binding_strength::software_key);
  BOOST_CHECK_EQUAL(s->probes, 1);
  BOOST_CHECK_EQUAL(s->credentials + s->exchanges, 0); // nothing minted
}

BOOST_AUTO_TEST_CASE(capability_query_on_a_v1_only_host_reports_bearer_only) {
  start();
  s->source = imds_source::v1_only;
  auto caps = request<host_capabilities>(service, capabilities_atom::value);
  run();
  BOOST_REQUIRE(caps->value);
  BOOST_CHECK(caps->value->imds == imds_availability::v1_only);
  BOOST_CHECK(caps->value->strongest == binding_strength::bearer);
  // And an mtls_pop request now fails at once.
  BOOST_CHECK(code_of(get(pop()).error) == error_code::v1_only_host);
  BOOST_CHECK_EQUAL(s->credentials, 0);
}

BOOST_AUTO_TEST_CASE(capability_query_without_imds_reports_none_and_why) {
  start();
  s->probe_error = make_msiv2_error(error_code::imds_unavailable, "no IMDS answered the probe");
  auto caps = request<host_capabilities>(service, capabilities_atom::value);
  run();
  BOOST_REQUIRE(caps->value);
  BOOST_CHECK(caps->value->imds == imds_availability::none);
  BOOST_CHECK(caps->value->strongest == binding_strength::bearer);
  BOOST_CHECK_NE(caps->value->detail.find("no IMDS answered the probe"), std::string::npos);
}

BOOST_AUTO_TEST_CASE(tokens_bound_to_a_certificate_are_dropped_on_evict_by_thumbprint) {
  start();
  BOOST_REQUIRE(get(pop()).value);
  BOOST_CHECK(get(pop()).value->source == token_source::cache);
  caf::anon_send(service, evict_atom::value, std::string("x5t-A"));
  run();
  auto again = get(pop());
  BOOST_REQUIRE(again.value);
  BOOST_CHECK(again.value->source == token_source::network);
  BOOST_CHECK_EQUAL(s->exchanges, 2);
}

BOOST_AUTO_TEST_CASE(stats_report_counters_and_cache_gauges) {
  start();
  get(pop());
  get(pop());
  auto snap = request<stats_snapshot>(service, stats_atom::value);
  run();
  BOOST_REQUIRE(snap->value);
  BOOST_CHECK_EQUAL(snap->value->gauges["msiv2_cached_tokens"], 1.0);
  BOOST_CHECK_EQUAL(snap->value->counters["msiv2_cache_hits_total{artifact=\"access_token\"}"], 1u);
  BOOST_CHECK(snap->value->gauges.count("msiv2_expiry_seconds{artifact=\"access_token\"}") == 1);
}

BOOST_AUTO_TEST_CASE(shutdown_answers_every_waiting_caller) {
  start();
  s->hold = true;
  auto a = ask(pop());
  auto b = ask(pop("https://storage.azure.com"));
  run();
  caf::anon_send_exit(service, caf::exit_reason::user_shutdown);
  run();
  BOOST_REQUIRE(a->error);
  BOOST_CHECK(code_of(a->error) == error_code::shutting_down);
  BOOST_CHECK(code_of(b->error) == error_code::shutting_down);
}

BOOST_AUTO_TEST_CASE(rewiring_after_a_peer_restart_fails_flights_waiting_on_the_old_peer) {
  start();
  s->hold = true;
  auto a = ask(pop());
  run();
  caf::anon_send_exit(exchanger_a, caf::exit_reason::kill);
  exchanger_a = keep(sys.spawn(exchanger_double, s));
  wire();
  BOOST_REQUIRE(a->error);
  BOOST_CHECK(code_of(a->error) == error_code::internal_failure);
  BOOST_CHECK(describe(a->error).description.find("token_exchanger") != std::string::npos);
  s->hold = false;
  BOOST_CHECK(get(pop()).value);
}

// The snapshot read path (issue 16): what readers see after each change, before anything that
// depends on the change is answered.

BOOST_AUTO_TEST_CASE(a_cached_token_is_published_for_readers_when_it_is_answered) {
  start();
  BOOST_CHECK(!read(pop()));
  auto first = get(pop("https://vault.azure.net/.default"));
  BOOST_REQUIRE(first.value);
  auto seen = read(pop());
  BOOST_REQUIRE(seen);
  BOOST_CHECK_EQUAL(seen->access_token, "token-1");
  BOOST_CHECK(seen->source == token_source::cache);
  BOOST_CHECK_EQUAL(seen->binding->x5t_s256, "x5t-A");
  BOOST_CHECK(!read(pop("https://storage.azure.com")));
  // Hits served from the snapshot are counted with the actor's own.
  get(pop());
  auto snap = request<stats_snapshot>(service, stats_atom::value);
  run();
  BOOST_REQUIRE(snap->value);
  BOOST_CHECK_EQUAL(snap->value->counters["msiv2_cache_hits_total{artifact=\"access_token\"}"], 2u);
}

BOOST_AUTO_TEST_CASE(a_claims_token_is_never_published) {
  start();
  auto r = pop();
  r.claims = R"({"access_token":{"nbf":{"essential":true,"value":"1"}}})";
  get(r);
  BOOST_CHECK(!read(pop()));
  BOOST_CHECK_EQUAL(published->size(), 0u);
}

BOOST_AUTO_TEST_CASE(a_new_certificate_unpublishes_the_old_tokens_before_any_answer) {
  start();
  get(pop("https://vault.azure.net"));
  BOOST_REQUIRE(read(pop("https://vault.azure.net")));
  s->x5t = "x5t-B";
  s->hold = true;
  auto storage = ask(pop("https://storage.azure.com"));
  run();
  // cert_issuer answered with the new certificate; the exchange is still held, and the vault
  // token bound to the old certificate is already gone for readers.
  BOOST_CHECK(!storage->answered());
  BOOST_CHECK(!read(pop("https://vault.azure.net")));
  BOOST_CHECK_EQUAL(published->size(), 0u);
  release();
  BOOST_REQUIRE(storage->value);
  auto seen = read(pop("https://storage.azure.com"));
  BOOST_REQUIRE(seen);
  BOOST_CHECK_EQUAL(seen->binding->x5t_s256, "x5t-B");
}

BOOST_AUTO_TEST_CASE(readers_leave_a_due_token_to_token_service_which_republishes_its_renewal) {
  start();
  get(pop());
  advance(1801s); // past the refresh time (half-life with the fixture's midpoint jitter)
  BOOST_CHECK(!read(pop()));
  s->hold = true;
  auto due = get(pop());
  BOOST_CHECK(due.value->source == token_source::cache);
  BOOST_CHECK_EQUAL(due.value->access_token, "token-1");
  release();
  auto seen = read(pop());
  BOOST_REQUIRE(seen);
  BOOST_CHECK_EQUAL(seen->access_token, "token-2");
}

BOOST_AUTO_TEST_CASE(an_expired_token_is_unpublished_when_token_service_drops_it) {
  start();
  get(pop());
  advance(3300s);
  s->hold = true;
  auto a = ask(pop());
  run();
  BOOST_CHECK_EQUAL(published->size(), 0u);
  release();
  BOOST_REQUIRE(a->value);
  BOOST_CHECK_EQUAL(read(pop())->access_token, "token-2");
}

BOOST_AUTO_TEST_CASE(a_restarted_token_service_unpublishes_its_predecessors_tokens) {
  start();
  get(pop());
  BOOST_REQUIRE(read(pop()));
  auto successor = keep(sys.spawn(token_service_impl, deps_with_snapshot()));
  run();
  BOOST_CHECK(!read(pop()));
  BOOST_CHECK_EQUAL(published->size(), 0u);
}

BOOST_AUTO_TEST_CASE(a_request_asking_a_stronger_binding_than_the_cached_token_is_not_served_it) {
  start(); // the inline key store: software_key
  BOOST_REQUIRE(get(pop()).value);
  auto strong = pop();
  strong.min_binding = binding_strength::hardware_key;
  BOOST_CHECK(!read(strong)); // readers leave it to token_service...
  auto got = get(strong);     // ...which refuses it, as without a cached token
  BOOST_REQUIRE(got.error);
  BOOST_CHECK(code_of(got.error) == error_code::binding_too_weak);
  auto bearer = pop();
  bearer.type = token_type::bearer;
  BOOST_REQUIRE(get(bearer).value);
  bearer.min_binding = binding_strength::software_key;
  BOOST_CHECK(!read(bearer));
  BOOST_CHECK(code_of(get(bearer).error) == error_code::binding_too_weak);
  // What the key store gives is served to readers.
  auto met = pop();
  met.min_binding = binding_strength::software_key;
  BOOST_CHECK(read(met));
  BOOST_CHECK_EQUAL(s->exchanges, 2);
}

BOOST_AUTO_TEST_CASE(aadsts500181_unpublishes_the_certificates_tokens_before_the_retry_answers) {
  start();
  s->service = caf::actor_cast<caf::actor>(service);
  BOOST_REQUIRE(get(pop("https://vault.azure.net")).value);
  BOOST_REQUIRE(get(pop("https://storage.azure.com")).value);
  auto bearer = pop("https://vault.azure.net");
  bearer.type = token_type::bearer;
  BOOST_REQUIRE(get(bearer).value);
  BOOST_REQUIRE(read(pop("https://storage.azure.com")));
  // A forced refresh of vault meets AADSTS500181: the exchanger tells token_service, then asks
  // once more (held here) before it answers.
  s->not_bound_once = true;
  s->hold = true;
  auto forced = pop("https://vault.azure.net");
  forced.force_refresh = true;
  auto a = ask(forced);
  run();
  BOOST_CHECK(!a->answered());
  // The eviction is done: no reader gets a token bound to x5t-A; the bearer token stays.
  BOOST_CHECK(!read(pop("https://vault.azure.net")));
  BOOST_CHECK(!read(pop("https://storage.azure.com")));
  BOOST_CHECK(read(bearer));
  BOOST_CHECK_EQUAL(published->size(), 1u);
  auto version = published->version();
  release();
  BOOST_REQUIRE(a->value);
  // The retry's token is published; storage's is not back.
  auto seen = read(pop("https://vault.azure.net"));
  BOOST_REQUIRE(seen);
  BOOST_CHECK_EQUAL(seen->access_token, a->value->access_token);
  BOOST_CHECK(!read(pop("https://storage.azure.com")));
  BOOST_CHECK_GT(published->version(), version);
}

BOOST_AUTO_TEST_CASE(a_token_whose_renewals_fail_stays_published_until_its_usable_time_ends) {
  // The other drop paths (expiry found by a request, a new certificate, a restart,
  // AADSTS500181) have tests above. A renewal that fails while the token is still usable
  // leaves it to token_service (due: readers miss) and published; the retry that finds it past
  // its usable time drops and unpublishes it.
  start();
  BOOST_REQUIRE(get(pop()).value);
  advance(1801s);
  s->exchange_error = make_msiv2_error(error_code::token_refused, "refused", 400);
  auto due = get(pop()); // served (due), starts the renewal, which fails
  BOOST_REQUIRE(due.value);
  BOOST_CHECK_EQUAL(published->size(), 1u);
  // Past the token's usable time the next retry drops it and unpublishes it.
  advance(3600s);
  BOOST_CHECK_EQUAL(published->size(), 0u);
}

BOOST_AUTO_TEST_CASE(a_snapshot_hit_carries_the_same_correlation_id_as_a_message_path_hit) {
  start();
  auto first = pop();
  first.correlation_id = "the-calls-that-got-it";
  BOOST_REQUIRE(get(first).value);
  auto later = pop();
  later.correlation_id = "a-later-request";
  auto via_message = get(later);
  BOOST_REQUIRE(via_message.value);
  auto via_snapshot = read(later);
  BOOST_REQUIRE(via_snapshot);
  BOOST_CHECK_EQUAL(via_message.value->correlation_id, "the-calls-that-got-it");
  BOOST_CHECK_EQUAL(via_snapshot->correlation_id, via_message.value->correlation_id);
  // A renewal's token carries the renewal's own id, on both paths.
  advance(1801s);
  get(pop());
  auto renewed = read(pop());
  BOOST_REQUIRE(renewed);
  BOOST_CHECK_NE(renewed->correlation_id, "the-calls-that-got-it");
  BOOST_CHECK_EQUAL(renewed->correlation_id.size(), 36u);
  BOOST_CHECK_EQUAL(get(pop()).value->correlation_id, renewed->correlation_id);
}

BOOST_AUTO_TEST_CASE(ten_thousand_resources_asked_once_stay_within_the_bound_and_are_never_renewed) {
  // Review H1, the issue's test: 10,000 distinct resources asked once, then 10 token lifetimes
  // (24 h, renewal at half-life) without a request. The cache never holds more than its bound
  // (the snapshot neither), nothing is renewed (nobody asked within the idle window, 1 h), and
  // the Prometheus series do not grow with the number of tokens.
  config.max_cached_tokens = 1000;
  real_timer = true;
  s->lifetime_s = 24 * 3600;
  start();
  auto series = [&] {
    auto snap = request<stats_snapshot>(service, stats_atom::value);
    run();
    BOOST_REQUIRE(snap->value);
    return snap->value->counters.size() + snap->value->gauges.size();
  };
  auto cached = [&] {
    auto snap = request<stats_snapshot>(service, stats_atom::value);
    run();
    BOOST_REQUIRE(snap->value);
    return snap->value->gauges.at("msiv2_cached_tokens");
  };
  std::size_t series_at_10 = 0;
  for (int i = 0; i < 10'000; ++i) {
    auto got = ask(pop("https://r" + std::to_string(i) + ".example"));
    if (i % 100 == 99) {
      run();
      BOOST_REQUIRE(got->value);
      BOOST_REQUIRE_LE(published->size(), 1000u);
    }
    if (i == 9) {
      run();
      series_at_10 = series();
    }
  }
  run();
  BOOST_CHECK_EQUAL(s->exchanges, 10'000);
  BOOST_CHECK_EQUAL(cached(), 1000.0);
  BOOST_CHECK_EQUAL(published->size(), 1000u);
  BOOST_CHECK_EQUAL(counter("msiv2_token_evictions_total"), 9000u);
  BOOST_CHECK_EQUAL(series(), series_at_10 + 1); // + msiv2_token_evictions_total
  // The last 1,000 asked are the ones kept, and readers find them; the first ones are gone.
  BOOST_CHECK(read(pop("https://r9999.example")));
  BOOST_CHECK(!read(pop("https://r0.example")));
  // 10 lifetimes, no request: no renewal; every token lapses at its usable end (24 h - 5 min)
  // and leaves the snapshot.
  for (int minute = 0; minute < 10 * 24 * 60; ++minute) {
    advance(60s);
    BOOST_REQUIRE_LE(published->size(), 1000u);
  }
  BOOST_CHECK_EQUAL(s->exchanges, 10'000);
  BOOST_CHECK_EQUAL(s->credentials, 10'000);
  BOOST_CHECK_EQUAL(counter("msiv2_renewals_total{artifact=\"access_token\"}"), 0u);
  BOOST_CHECK_EQUAL(counter("msiv2_token_lapses_total"), 1000u);
  BOOST_CHECK_EQUAL(cached(), 0.0);
  BOOST_CHECK_EQUAL(published->size(), 0u);
  BOOST_CHECK_LE(series(), series_at_10 + 2); // + evictions and lapses counters
}

BOOST_AUTO_TEST_CASE(the_least_recently_used_token_is_dropped_and_readers_stop_finding_it_first) {
  config.max_cached_tokens = 2;
  start();
  get(pop("https://a.example"));
  advance(1s);
  get(pop("https://b.example"));
  advance(1s);
  // A read of A on another thread (no message) is a use: B is now the least recently used.
  BOOST_REQUIRE(read(pop("https://a.example")));
  advance(1s);
  auto c = get(pop("https://c.example"));
  BOOST_REQUIRE(c.value);
  // Dropped from the snapshot before C's answer: a reader synchronized with it misses B.
  BOOST_CHECK(!read(pop("https://b.example")));
  BOOST_CHECK(read(pop("https://a.example")));
  BOOST_CHECK(read(pop("https://c.example")));
  BOOST_CHECK_EQUAL(published->size(), 2u);
  BOOST_CHECK_EQUAL(counter("msiv2_token_evictions_total"), 1u);
  BOOST_CHECK(std::find(s->cancels.begin(), s->cancels.end(),
                        s->schedules.at(1).first) != s->cancels.end()); // B's renewal cancelled
  // (The reads above used A and C at 3 s.) C is read again at 4 s; B again at 5 s: a miss, a
  // new token, and now A (last used at 3 s) goes.
  advance(1s);
  BOOST_REQUIRE(read(pop("https://c.example")));
  advance(1s);
  auto b = get(pop("https://b.example"));
  BOOST_REQUIRE(b.value);
  BOOST_CHECK(b.value->source == token_source::network);
  BOOST_CHECK_EQUAL(s->exchanges, 4);
  BOOST_CHECK(!read(pop("https://a.example")));
  BOOST_CHECK(read(pop("https://c.example")));
  BOOST_CHECK_EQUAL(counter("msiv2_token_evictions_total"), 2u);
}

BOOST_AUTO_TEST_CASE(a_token_in_use_is_renewed_and_an_idle_one_lapses) {
  real_timer = true;
  s->lifetime_s = 24 * 3600; // renewal at 12 h, usable until 24 h - 5 min
  start();
  get(pop("https://used.example"));
  get(pop("https://idle.example"));
  BOOST_CHECK_EQUAL(s->exchanges, 2);
  // "used" is read every 30 minutes by a reader without a message; "idle" never again.
  for (int half_hour = 1; half_hour <= 47; ++half_hour) {
    advance(30min);
    BOOST_REQUIRE_MESSAGE(read(pop("https://used.example")), "half hour " << half_hour);
  }
  // Renewed once, at 12 h; "idle" was not (nobody asked within the idle window, 1 h). It is
  // still cached (usable until 23 h 55 min) but readers no longer get it (past its renewal
  // time only token_service serves it).
  BOOST_CHECK_EQUAL(s->exchanges, 3);
  BOOST_CHECK_EQUAL(s->exchange_requests.back().request.resource, "https://used.example");
  BOOST_CHECK_EQUAL(counter("msiv2_renewals_total{artifact=\"access_token\"}"), 1u);
  BOOST_CHECK_EQUAL(counter("msiv2_token_lapses_total"), 0u);
  BOOST_CHECK_EQUAL(published->size(), 2u);
  advance(26min); // 23 h 56 min: it lapsed, unrenewed, and left the snapshot
  BOOST_CHECK_EQUAL(s->exchanges, 3);
  BOOST_CHECK_EQUAL(counter("msiv2_token_lapses_total"), 1u);
  BOOST_CHECK(!read(pop("https://idle.example")));
  BOOST_CHECK_EQUAL(published->size(), 1u);
  // Asked again after it lapsed: a miss, a new token.
  auto again = get(pop("https://idle.example"));
  BOOST_REQUIRE(again.value);
  BOOST_CHECK(again.value->source == token_source::network);
}

BOOST_AUTO_TEST_CASE(an_idle_token_found_due_by_a_request_is_served_and_renewed) {
  // The idle window stops background renewals only: a request that comes back after it, while
  // the token is still usable, is served from the cache and renews it.
  real_timer = true;
  s->lifetime_s = 24 * 3600;
  start();
  get(pop());
  advance(13h); // past the renewal time: the timer fired, nobody had asked: not renewed
  BOOST_CHECK_EQUAL(s->exchanges, 1);
  auto due = get(pop());
  BOOST_REQUIRE(due.value);
  BOOST_CHECK_EQUAL(due.value->access_token, "token-1");
  BOOST_CHECK(due.value->source == token_source::cache);
  BOOST_CHECK_EQUAL(s->exchanges, 2);
  auto fresh = get(pop());
  BOOST_CHECK_EQUAL(fresh.value->access_token, "token-2");
  BOOST_CHECK_EQUAL(counter("msiv2_token_lapses_total"), 0u);
}

BOOST_AUTO_TEST_SUITE_END()
