// The retry policy of the whole runtime on virtual time (review H3, M4): token_service with the
// real token_exchanger and renewal_timer, a cert_issuer double that hands out one real binding
// credential, and a scripted token endpoint behind a transport that records when each call
// went out. The retry budget and circuits are the production ones (io::retry_governor), and
// every random draw comes from a seeded generator, so the spread of retries is real.

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <functional>
#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <caf/actor_cast.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

#include "actors/keyguard_attestation.hpp"
#include "actors/renewal_timer.hpp"
#include "actors/token_exchanger.hpp"
#include "actors/token_service.hpp"
#include "io/retry.hpp"
#include "platform/binding.hpp"
#include "platform/encoding.hpp"
#include "platform/jwt.hpp"
#include "platform/x509.hpp"
#include "tests/support/actor_fixture.hpp"

using namespace msiv2;
using namespace std::chrono_literals;
using io::fake_transport;

namespace {

constexpr const char* tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
constexpr const char* client = "5a1f1c5e-0b39-4b8e-9d1e-8f3f6f5b2c11";
constexpr const char* mtls_host = "https://westus.mtlsauth.test";
const std::string token_path = std::string("/") + tenant + "/oauth2/v2.0/token";

/// Forwards to the fake transport and remembers the virtual time (ms since the test started)
/// of every call to the token endpoint.
class recording_transport : public io::transport {
public:
  recording_transport(std::shared_ptr<io::transport> inner, std::function<std::int64_t()> now)
      : inner_(std::move(inner)), now_(std::move(now)) {}
  void send(io::http_request request, io::completion done) override {
    if (request.url.find(token_path) != std::string::npos)
      calls.push_back(now_());
    inner_->send(std::move(request), std::move(done));
  }
  void shutdown() override { inner_->shutdown(); }

  std::vector<std::int64_t> calls;

private:
  std::shared_ptr<io::transport> inner_;
  std::function<std::int64_t()> now_;
};

caf::behavior probe_double(caf::event_based_actor*, int) {
  return {
    [=](probe_atom, deadline) -> caf::result<imds_source> { return imds_source::v2; },
    [=](wire_atom, wiring_ptr) {},
  };
}

caf::behavior cert_double(caf::event_based_actor*, credential_ptr cred) {
  return {
    [=](caf::get_atom, credential_request&) -> caf::result<credential_ptr> { return cred; },
    [=](wire_atom, wiring_ptr) {},
  };
}

struct policy_fixture : test::actor_fixture {
  std::shared_ptr<std::mt19937_64> rng = std::make_shared<std::mt19937_64>(20261203);
  std::shared_ptr<recording_transport> recorder;
  std::shared_ptr<io::retry_governor> governor;
  key_ref key;
  credential_ptr cred;
  token_service service;
  token_exchanger exchanger;
  std::int64_t t0_ms = 0;
  /// While true the token endpoint answers 503, else a token (expires_in 3600).
  std::shared_ptr<bool> outage = std::make_shared<bool>(false);
  /// Answers of the token endpoint before the rules above (used up in order).
  std::vector<io::http_response> first_answers;
  /// Scripts more answers ahead of the outage and token rules (called once `cred` exists).
  std::function<void(fake_transport&)> script_first;

  policy_fixture() {
    draw = [rng = rng](std::int64_t lo, std::int64_t hi) {
      return std::uniform_int_distribution<std::int64_t>(lo, hi)(*rng);
    };
    transport->set_delivery(fake_transport::delivery::immediate);
    keys->load_or_create([this](result<key_ref> k) { key = *k; });
    t0_ms = wall_ms();
  }

  /// A binding credential with a self-signed certificate of the test key.
  credential_ptr make_cred() {
    platform::issue_params p;
    p.subject_key = key.key->get();
    p.subject_cn = client;
    p.subject_dc = tenant;
    p.not_before = wall_ms() / 1000 - 60;
    p.not_after = wall_ms() / 1000 + 7 * 86400;
    p.client_auth = true;
    p.serial_hex = "01";
    auto der = platform::issue_certificate(p, nullptr, key.key->get());
    BOOST_REQUIRE(der);
    auto c = std::make_shared<credential>();
    c->identity = managed_identity::system();
    c->client_id = client;
    c->tenant_id = tenant;
    c->identity_type = "SystemAssigned";
    c->mtls_endpoint = mtls_host;
    c->certificate_der = *der;
    c->x5t_s256 = platform::x5t_s256(*der);
    c->not_before_ms = p.not_before * 1000;
    c->not_after_ms = p.not_after * 1000;
    c->key = key;
    return c;
  }

  std::string token_body(const std::string& x5t) {
    auto jwt = platform::sign_jwt_rs256(
      key.key->get(), "{\"aud\":\"https://vault.azure.net\",\"cnf\":{\"x5t#S256\":\"" + x5t + "\"}}");
    BOOST_REQUIRE(jwt);
    return "{\"token_type\":\"mtls_pop\",\"expires_in\":3600,\"access_token\":\"" + *jwt + "\"}";
  }

  /// Scripts the token endpoint, spawns every actor and wires them.
  void start() {
    cred = make_cred();
    auto flag = outage;
    auto is_token = [](const io::http_request& r) {
      return r.url.find(token_path) != std::string::npos;
    };
    if (script_first)
      script_first(*transport);
    if (!first_answers.empty()) {
      auto& first = transport->on(is_token, "first answers");
      for (auto& a : first_answers)
        first.respond(a);
    }
    transport->on([=](const io::http_request& r) { return is_token(r) && *flag; }, "outage")
      .respond(503, "{\"error\":\"temporarily_unavailable\"}")
      .repeat_last();
    transport->on([=](const io::http_request& r) { return is_token(r) && !*flag; }, "token")
      .respond(200, token_body(cred->x5t_s256))
      .repeat_last();
    recorder = std::make_shared<recording_transport>(transport, [this] { return wall_ms() - t0_ms; });
    governor = std::make_shared<io::retry_governor>(config.retry_policy, draw);
    auto d = std::make_shared<runtime_deps>(*deps());
    d->transport = recorder;
    d->retries = governor;
    deps_ptr dp = d;
    auto probe_a = keep(sys.spawn(probe_double, 0));
    auto certs_a = keep(sys.spawn(cert_double, cred));
    auto timer = keep(sys.spawn(renewal_timer_impl, dp));
    exchanger = keep(sys.spawn(token_exchanger_impl, dp));
    service = keep(sys.spawn(token_service_impl, dp));
    auto w = std::make_shared<wiring>();
    w->probe_actor = caf::actor_cast<probe>(probe_a);
    w->certs = caf::actor_cast<cert_issuer>(certs_a);
    w->exchanger = exchanger;
    w->timer = timer;
    w->service = service;
    for (auto a : {caf::actor_cast<caf::actor>(service), caf::actor_cast<caf::actor>(exchanger),
                   caf::actor_cast<caf::actor>(timer)})
      caf::anon_send(a, wire_atom::value, wiring_ptr{w});
    run();
  }

  /// Advances virtual time by `d`, firing every timeout at its own time (advance() fires all
  /// that fall within `d` at its end, which would put every call of a step in one
  /// millisecond).
  void advance_precisely(std::chrono::nanoseconds d) {
    auto& clk = sched.clock();
    auto end = clk.now() + d;
    while (!clk.schedule().empty() && clk.schedule().begin()->first <= end) {
      clk.trigger_timeout();
      sched.run();
    }
    if (clk.now() < end)
      clk.advance_time(end - clk.now());
    sched.run();
  }

  static std::string resource(int i) {
    return "https://r" + std::to_string(i) + ".example";
  }

  std::shared_ptr<test::outcome<token_result>> ask(const std::string& res) {
    token_request r;
    r.resource = res;
    r.timeout = 30s;
    return request<token_result>(service, r);
  }

  /// The wall time (ms since the test started) of the last exchange of each resource that
  /// got a token, by the token-endpoint calls (only successes end in a cached token).
  std::int64_t since_start() const { return wall_ms() - t0_ms; }
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(actors_reliability_test, policy_fixture)

BOOST_AUTO_TEST_CASE(a_ten_minute_token_endpoint_outage_stays_within_the_budget_and_recovers) {
  const int n = 1000;
  start();
  for (int i = 0; i < n; ++i)
    ask(resource(i));
  run();
  BOOST_REQUIRE_EQUAL(recorder->calls.size(), static_cast<std::size_t>(n));
  // Renewals are due at 30 min +- 5 min (1 h tokens); the outage covers all of them.
  advance(25min - 1s);
  auto before = recorder->calls.size();
  *outage = true;
  const std::int64_t outage_start = since_start();
  std::map<std::int64_t, int> calls_per_minute;
  int served = 0, not_from_cache = 0;
  for (int minute = 0; minute < 10; ++minute) {
    advance_precisely(60s);
    // Every token is still usable (until 55 min): each one is served from the cache.
    std::vector<std::shared_ptr<test::outcome<token_result>>> outs;
    for (int i = 0; i < n; i += 10)
      outs.push_back(ask(resource(i)));
    run();
    for (auto& o : outs) {
      ++served;
      if (!o->value || o->value->source != token_source::cache)
        ++not_from_cache;
    }
  }
  const std::int64_t outage_end = since_start();
  *outage = false;
  for (std::size_t i = before; i < recorder->calls.size(); ++i)
    ++calls_per_minute[(recorder->calls[i] - outage_start) / 60000];
  BOOST_CHECK_EQUAL(not_from_cache, 0);
  BOOST_CHECK_EQUAL(served, 1000);
  const auto& pol = config.retry_policy;
  const double per_minute_budget = pol.budget + pol.refill_per_minute;
  int outage_calls = 0;
  for (auto& [minute, count] : calls_per_minute) {
    BOOST_TEST_MESSAGE("outage minute " << minute << ": " << count << " token endpoint calls");
    BOOST_CHECK_LE(count, per_minute_budget);
    outage_calls += count;
  }
  BOOST_TEST_MESSAGE("outage: " << outage_calls << " token endpoint calls for " << n
                                << " tokens in 10 min; circuits opened "
                                << governor->circuits_opened() << ", retries refused "
                                << governor->retries_refused());
  // Recovery, watched for one backoff cap plus the circuit's open time (a retry that comes
  // while the circuit is still open is refused and backs off again).
  auto recovery_start = recorder->calls.size();
  const auto bound = config.renewal_retry_cap + config.retry_policy.circuit_open;
  auto counter = [&](const std::string& k) {
    auto c = stats->snapshot().counters;
    return c.count(k) ? c[k] : 0;
  };
  auto budget_refusals = [&] { return counter("msiv2_retries_refused_total{artifact=\"access_token\"}"); };
  auto circuit_refusals = [&] { return counter("msiv2_circuit_refusals_total{upstream=\"token_endpoint\"}"); };
  auto b0 = budget_refusals(), c0 = circuit_refusals();
  for (int s = 0; s < 70; s += 10) {
    advance_precisely(10s);
    BOOST_TEST_MESSAGE("recovery +" << s + 10 << " s: budget refusals " << budget_refusals() - b0
                       << ", circuit refusals " << circuit_refusals() - c0);
  }
  auto recovery_calls = recorder->calls.size() - recovery_start;
  BOOST_TEST_MESSAGE("recovery: " << recovery_calls << " token endpoint calls within "
                                  << bound.count() / 1000 << " s of the outage's end");
  // How many were renewed within that bound (a new token expires ~1 h after the outage).
  auto renewed_now = [&] {
    std::vector<std::shared_ptr<test::outcome<token_result>>> outs;
    for (int i = 0; i < n; ++i)
      outs.push_back(ask(resource(i)));
    run();
    int renewed = 0;
    for (auto& o : outs)
      if (o->value && o->value->source == token_source::cache
          && o->value->expires_on * 1000 > t0_ms + outage_end + 3000 * 1000)
        ++renewed;
    return renewed;
  };
  auto calls_before_asking = recorder->calls.size();
  int within_bound = renewed_now();
  // Asking makes no call: a token whose renewal is still failing is served and left to its
  // backoff.
  BOOST_CHECK_EQUAL(recorder->calls.size(), calls_before_asking);
  BOOST_TEST_MESSAGE("renewed within " << bound.count() / 1000 << " s of the outage's end: "
                                       << within_bound << " of " << n);
  BOOST_CHECK_GE(within_bound * 100, n * 85);
  // Every token is renewed well before it stops being usable (55 min after it came).
  advance_precisely(5min);
  BOOST_CHECK_EQUAL(renewed_now(), n);
  auto calls_now = recorder->calls.size();
  std::map<std::int64_t, int> per_10s;
  for (std::size_t i = recovery_start; i < calls_now; ++i)
    ++per_10s[(recorder->calls[i] - outage_end) / 10000];
  for (auto& [b, k] : per_10s)
    BOOST_TEST_MESSAGE("recovery +" << b * 10 << " s: " << k << " calls");
  // Retries spread: at most 5 % of the calls after the outage began share their millisecond.
  std::map<std::int64_t, int> per_ms;
  for (std::size_t i = before; i < recorder->calls.size(); ++i)
    ++per_ms[recorder->calls[i]];
  std::size_t shared = 0, total = recorder->calls.size() - before;
  for (auto& [ms, k] : per_ms)
    if (k > 1)
      shared += static_cast<std::size_t>(k);
  BOOST_TEST_MESSAGE("calls sharing a millisecond: " << shared << " of " << total);
  BOOST_CHECK_LE(shared * 100, total * 5);
}

BOOST_AUTO_TEST_CASE(retry_after_of_31_years_is_capped_at_max_retry_after) {
  config.max_retry_after = 60s;
  io::http_headers h;
  h.set("Retry-After", "999999999");
  first_answers.push_back(io::http_response::with_status(429, "{\"error\":\"throttled\"}", h));
  start();
  auto first = ask(resource(1));
  run();
  BOOST_REQUIRE(first->error);
  BOOST_CHECK(describe(first->error).code == error_code::throttled);
  BOOST_CHECK_EQUAL(recorder->calls.size(), 1u);
  // Identical requests are refused without a call while the capped wait lasts...
  advance(30s);
  auto during = ask(resource(1));
  run();
  BOOST_REQUIRE(during->error);
  BOOST_CHECK(describe(during->error).code == error_code::throttled);
  BOOST_CHECK_EQUAL(recorder->calls.size(), 1u);
  // ...and the first one after max_retry_after reaches the endpoint and gets a token.
  advance(31s);
  auto after = ask(resource(1));
  run();
  BOOST_REQUIRE(after->value);
  BOOST_CHECK(after->value->source == token_source::network);
  BOOST_CHECK_EQUAL(recorder->calls.size(), 2u);
}

BOOST_AUTO_TEST_CASE(an_expires_in_of_2_pow_63_is_clamped_to_max_token_lifetime) {
  config.max_token_lifetime = 48h;
  script_first = [this](fake_transport& t) {
    auto huge = token_body(cred->x5t_s256);
    huge.replace(huge.find("3600"), 4, "9223372036854775807");
    auto refresh = token_body(cred->x5t_s256);
    refresh.replace(refresh.find("3600"), 4, "3600,\"refresh_in\":9223372036854775");
    t.on("POST", token_path).respond(200, huge).respond(200, refresh);
  };
  start();
  auto got = ask(resource(1));
  run();
  BOOST_REQUIRE(got->value);
  BOOST_CHECK_LE(got->value->expires_on * 1000, wall_ms() + 48 * 3'600'000);
  BOOST_CHECK_GE(got->value->expires_on * 1000, wall_ms() + 47 * 3'600'000);
  auto refreshed = ask(resource(2));
  run();
  BOOST_REQUIRE(refreshed->value);
  BOOST_CHECK_LE(refreshed->value->refresh_on, refreshed->value->expires_on);
}

BOOST_AUTO_TEST_CASE(an_expires_in_of_zero_or_below_is_an_invalid_response) {
  script_first = [this](fake_transport& t) {
    for (auto v : {"0", "-1", "-9223372036854775808"}) {
      auto body = token_body(cred->x5t_s256);
      body.replace(body.find("3600"), 4, v);
      t.on("POST", token_path).respond(200, body);
    }
  };
  start();
  for (int i = 0; i < 3; ++i) {
    auto got = ask(resource(i));
    run();
    BOOST_REQUIRE(got->error);
    BOOST_CHECK(describe(got->error).code == error_code::invalid_response);
  }
}

BOOST_AUTO_TEST_CASE(an_attestation_jwt_with_exp_2_pow_63_or_iat_minus_2_pow_63_is_refused) {
  auto answer = [](const std::string& payload) {
    return "{\"token\":\"" + platform::base64url_encode("{\"alg\":\"RS256\"}") + "." +
           platform::base64url_encode(payload) + ".c2ln\"}";
  };
  for (std::string p : {"{\"exp\":9223372036854775807}",
                        "{\"exp\":1900000000,\"iat\":-9223372036854775808}",
                        "{\"exp\":-1}"}) {
    auto r = read_keyguard_answer(answer(p));
    BOOST_CHECK_MESSAGE(!r, p);
    if (!r)
      BOOST_CHECK_NE(r.error().find("plausible Unix time"), std::string::npos);
  }
  auto ok = read_keyguard_answer(answer("{\"exp\":1900000000,\"iat\":1800000000}"));
  BOOST_REQUIRE(ok);
  BOOST_CHECK_EQUAL(ok->expires_at_ms, 1'900'000'000'000);
}

BOOST_AUTO_TEST_CASE(retry_after_as_a_far_http_date_is_capped_and_does_not_overflow) {
  io::http_response r = io::http_response::with_status(503);
  r.headers.set("Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT");
  io::retry_state st;
  st.max_retry_after = 60s;
  auto d = io::next_retry_delay(io::retry_leg::token_endpoint, st, r, draw, 1'800'000'000);
  BOOST_REQUIRE(d);
  BOOST_CHECK_EQUAL(d->count(), 60'000);
}

BOOST_AUTO_TEST_CASE(renewal_retry_delays_have_full_jitter_up_to_the_cap) {
  std::vector<std::int64_t> seen;
  for (int i = 0; i < 2000; ++i)
    seen.push_back(io::renewal_retry_delay(8, 1s, 60s, draw).count());
  auto [lo, hi] = std::minmax_element(seen.begin(), seen.end());
  BOOST_CHECK_GE(*lo, 1);
  BOOST_CHECK_LE(*hi, 60'000);
  BOOST_CHECK_LT(*lo, 3'000);  // spread over the whole range, not bunched at the cap
  BOOST_CHECK_GT(*hi, 57'000);
  BOOST_CHECK_LE(io::renewal_retry_delay(1, 1s, 60s, draw).count(), 1000);
}

BOOST_AUTO_TEST_CASE(circuit_opens_after_consecutive_failures_and_a_probe_closes_it) {
  io::retry_governor_settings s;
  s.circuit_failures = 3;
  s.circuit_open = 10s;
  io::retry_governor g(s, draw);
  auto t = std::chrono::steady_clock::time_point{} + 1h;
  const std::string up = "token_endpoint https://x";
  for (int i = 0; i < 3; ++i) {
    BOOST_CHECK(g.admit(up, t));
    g.record(up, true, t);
  }
  BOOST_CHECK(!g.admit(up, t));
  BOOST_CHECK(!g.admit(up, t + 4s));
  BOOST_CHECK(g.admit("imds http://y", t)); // per upstream
  BOOST_CHECK(g.admit(up, t + 10s));         // the probe
  BOOST_CHECK(!g.admit(up, t + 10s));        // one probe at a time
  g.record(up, false, t + 10s);
  BOOST_CHECK(g.admit(up, t + 10s));
  BOOST_CHECK_EQUAL(g.circuits_opened(), 1u);
}

BOOST_AUTO_TEST_CASE(retry_budget_refuses_beyond_its_size_and_refills_over_time) {
  io::retry_governor_settings s;
  s.budget = 5;
  s.refill_per_minute = 60;
  io::retry_governor g(s, draw);
  auto t = std::chrono::steady_clock::time_point{} + 1h;
  for (int i = 0; i < 5; ++i)
    BOOST_CHECK(g.take_retry(t));
  BOOST_CHECK(!g.take_retry(t));
  BOOST_CHECK(g.take_retry(t + 1s));
  BOOST_CHECK(!g.take_retry(t + 1s));
  g.record("x", false, t + 1s); // a success gives one back
  BOOST_CHECK(g.take_retry(t + 1s));
  BOOST_CHECK_EQUAL(g.retries_refused(), 2u);
}

BOOST_AUTO_TEST_SUITE_END()
