// supervisor and module on the test scheduler: the real token_service, doubles for the other
// actors (one untyped double that answers what token_service sends and records its wirings).

#include <boost/test/unit_test.hpp>

#include <caf/actor_cast.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include "actors/supervisor.hpp"
#include "actors/token_service.hpp"
#include "io/json.hpp"
#include "platform/csr.hpp"
#include "platform/encoding.hpp"
#include "platform/jwt.hpp"
#include "platform/keys.hpp"
#include "platform/x509.hpp"
#include "tests/support/actor_fixture.hpp"

using namespace msiv2;
using namespace std::chrono_literals;

namespace {

struct record {
  std::shared_ptr<platform::wall_clock> wall;
  std::array<int, actor_role_count> spawns{};
  std::array<std::vector<wiring_ptr>, actor_role_count> wirings;
  std::array<caf::actor, actor_role_count> current;
  int exchanges = 0;
  bool hold = false;
  std::vector<caf::response_promise> held;

  token_result token() {
    token_result t;
    t.access_token = "token-" + std::to_string(exchanges);
    t.expires_on = wall->now_s() + 3600;
    return t;
  }
};

using record_ptr = std::shared_ptr<record>;

caf::behavior double_impl(caf::event_based_actor* self, record_ptr r, actor_role role) {
  return {
    [=](wire_atom, wiring_ptr w) { r->wirings[static_cast<std::size_t>(role)].push_back(w); },
    [=](probe_atom, deadline) { return imds_source::v2; },
    [=](caf::get_atom, credential_request& req) {
      auto c = std::make_shared<credential>();
      c->identity = req.identity;
      c->x5t_s256 = "x5t-A";
      return credential_ptr{c};
    },
    [=](exchange_atom, exchange_request&) -> caf::result<token_result> {
      ++r->exchanges;
      if (r->hold) {
        r->held.push_back(self->make_response_promise());
        return r->held.back();
      }
      return r->token();
    },
    [=](caf::ok_atom) {
      auto held = std::move(r->held);
      r->held.clear();
      for (auto& rp : held)
        rp.deliver(r->token());
    },
    [=](schedule_atom, std::string&, std::int64_t, caf::actor&) {},
    [=](cancel_atom, std::string&) {},
  };
}

/// IMDS v2 and the token endpoint as msiv2-sim answers them: the probe gets 400, metadata
/// names one identity, issuecredential certifies the CSR's key with a test CA, the token
/// endpoint answers a JWT bound (cnf x5t#S256) to the presented client certificate.
class v2_host : public io::transport {
public:
  explicit v2_host(std::shared_ptr<platform::wall_clock> wall) : wall_(std::move(wall)) {
    ca_key_ = std::move(platform::generate_rsa_key(2048).value());
    platform::issue_params p;
    p.subject_key = ca_key_.get();
    p.subject_cn = "managedidentitysnissuer.login.microsoft.com";
    p.not_before = wall_->now_s() - 3600;
    p.not_after = wall_->now_s() + 365 * 86400;
    p.is_ca = true;
    ca_cert_ = std::move(platform::parse_certificate(*platform::issue_certificate(p, nullptr, ca_key_.get())).value());
  }

  void send(io::http_request req, io::completion done) override {
    auto parts = io::split_url(req.url);
    auto path = parts ? parts->path : std::string{};
    ++calls[path];
    done(answer(req, path));
  }
  void shutdown() override {}

  std::map<std::string, int> calls;

private:
  static io::http_headers imds() {
    io::http_headers h;
    h.set("Content-Type", "application/json; charset=utf-8");
    h.set("Server", "IMDS/150.870.65.1854");
    return h;
  }

  io::http_response answer(const io::http_request& req, const std::string& path) {
    const std::string client = "9a2c7c3e-5e4b-4c55-9f3a-0d1f2e3a4b5c";
    const std::string tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    if (!req.headers.contains("Metadata") && path.rfind("/metadata/", 0) == 0)
      return io::http_response::with_status(400, R"({"error":"invalid_request"})", imds());
    if (path == "/metadata/identity/getplatformmetadata")
      return io::http_response::with_status(
        200,
        R"({"cuId":{"vmId":"5c8b3a7e-1f2d-4e6a-9b8c-7d6e5f4a3b2c"},"clientId":")" + client +
          R"(","tenantId":")" + tenant + R"(","attestationEndpoint":"https://127.0.0.1:8443"})",
        imds());
    if (path == "/metadata/identity/issuecredential") {
      auto doc = io::json_object::parse(req.body, "issuecredential request");
      auto csr = platform::parse_csr(*platform::base64_decode(*doc->required_string("csr")));
      auto subject = platform::public_key_from_der(csr->spki_der);
      platform::issue_params p;
      p.subject_key = subject->get();
      p.subject_cn = csr->client_id;
      p.subject_dc = csr->tenant_id;
      p.not_before = wall_->now_s();
      p.not_after = wall_->now_s() + 7 * 86400;
      p.client_auth = true;
      auto cert = platform::issue_certificate(p, ca_cert_.get(), ca_key_.get());
      return io::http_response::with_status(
        200,
        "{\"client_id\":\"" + client + "\",\"tenant_id\":\"" + tenant +
          "\",\"certificate\":\"" + platform::base64_encode(*cert) +
          "\",\"identity_type\":\"SystemAssigned\",\"mtls_authentication_endpoint\":"
          "\"https://westus.mtlsauth.test\"}",
        imds());
    }
    if (path == "/" + tenant + "/oauth2/v2.0/token" && req.identity) {
      auto x5t = platform::x5t_s256(req.identity->chain_der().front());
      auto now = wall_->now_s();
      auto jwt = platform::sign_jwt_rs256(
        ca_key_.get(), "{\"aud\":\"https://vault.azure.net\",\"iat\":" + std::to_string(now) +
                         ",\"exp\":" + std::to_string(now + 3600) + ",\"cnf\":{\"x5t#S256\":\"" +
                         x5t + "\"}}");
      return io::http_response::with_status(
        200, "{\"token_type\":\"mtls_pop\",\"expires_in\":3600,\"access_token\":\"" + *jwt + "\"}");
    }
    return io::http_response::failure(io::transport_error::other, "unexpected " + req.url);
  }

  std::shared_ptr<platform::wall_clock> wall_;
  platform::pkey_ptr ca_key_;
  platform::x509_ptr ca_cert_;
};

struct fixture : test::actor_fixture {
  record_ptr r = std::make_shared<record>();
  module m;

  fixture() {
    r->wall = wall;
  }

  actor_factories factories() {
    actor_factories f;
    for (std::size_t i = 0; i < actor_role_count; ++i) {
      auto role = static_cast<actor_role>(i);
      auto rec = r;
      if (role == actor_role::service) {
        f.make[i] = [rec](caf::actor_system& sys, deps_ptr d) {
          ++rec->spawns[static_cast<std::size_t>(actor_role::service)];
          auto a = caf::actor_cast<caf::actor>(sys.spawn(token_service_impl, std::move(d)));
          rec->current[static_cast<std::size_t>(actor_role::service)] = a;
          return a;
        };
        continue;
      }
      f.make[i] = [rec, role](caf::actor_system& sys, deps_ptr) {
        auto a = sys.spawn(double_impl, rec, role);
        ++rec->spawns[static_cast<std::size_t>(role)];
        rec->current[static_cast<std::size_t>(role)] = a;
        return a;
      };
    }
    return f;
  }

  void start() {
    auto d = deps();
    m = module::start(sys, *d, factories());
    run();
  }

  static token_request pop() {
    token_request q;
    q.resource = "https://vault.azure.net";
    q.timeout = 10s;
    return q;
  }

  std::shared_ptr<test::outcome<token_result>> ask() {
    return request<token_result>(m.service(), pop());
  }

  caf::actor current(actor_role role) {
    return r->current[static_cast<std::size_t>(role)];
  }

  const std::vector<wiring_ptr>& wirings(actor_role role) {
    return r->wirings[static_cast<std::size_t>(role)];
  }

  ~fixture() {
    m.stop();
    run();
  }
};

error_code code_of(const caf::error& e) {
  return describe(e).code;
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(actors_supervisor_test, fixture)

BOOST_AUTO_TEST_CASE(spawns_every_actor_and_sends_the_wiring_to_all) {
  start();
  for (std::size_t i = 0; i < actor_role_count; ++i)
    BOOST_CHECK_EQUAL(r->spawns[i], 1);
  BOOST_REQUIRE_EQUAL(wirings(actor_role::certs).size(), 1u);
  auto w = wirings(actor_role::certs).front();
  BOOST_CHECK(caf::actor_cast<caf::actor>(w->exchanger) == current(actor_role::exchanger));
  BOOST_CHECK(caf::actor_cast<caf::actor>(w->service) == current(actor_role::service));
  BOOST_CHECK(w->probe_actor && w->keys && w->attestation && w->timer);
  BOOST_CHECK_EQUAL(wirings(actor_role::probe).size(), 1u);
}

BOOST_AUTO_TEST_CASE(requests_through_the_module_handle_reach_token_service) {
  start();
  auto a = ask();
  run();
  BOOST_REQUIRE(a->value);
  BOOST_CHECK_EQUAL(a->value->access_token, "token-1");
  auto b = ask();
  run();
  BOOST_REQUIRE(b->value);
  BOOST_CHECK(b->value->source == token_source::cache);
  auto s = request<stats_snapshot>(m.service(), stats_atom::value);
  run();
  BOOST_REQUIRE(s->value);
  BOOST_CHECK_EQUAL(s->value->gauges["msiv2_cached_tokens"], 1.0);
}

BOOST_AUTO_TEST_CASE(crashed_actor_is_respawned_after_backoff_and_everyone_is_rewired) {
  start();
  auto old = current(actor_role::exchanger);
  caf::anon_send_exit(old, caf::exit_reason::kill);
  run();
  BOOST_CHECK_EQUAL(r->spawns[static_cast<std::size_t>(actor_role::exchanger)], 1);
  advance(99ms);
  BOOST_CHECK_EQUAL(r->spawns[static_cast<std::size_t>(actor_role::exchanger)], 1);
  advance(1ms);
  BOOST_CHECK_EQUAL(r->spawns[static_cast<std::size_t>(actor_role::exchanger)], 2);
  BOOST_CHECK(current(actor_role::exchanger) != old);
  for (auto role : {actor_role::probe, actor_role::certs, actor_role::timer, actor_role::exchanger}) {
    BOOST_REQUIRE(!wirings(role).empty());
    BOOST_CHECK(caf::actor_cast<caf::actor>(wirings(role).back()->exchanger)
                == current(actor_role::exchanger));
  }
  // The rewired service uses the new exchanger.
  auto a = ask();
  run();
  BOOST_CHECK(a->value);
  auto snap = stats->snapshot();
  BOOST_CHECK_EQUAL(snap.counters["msiv2_actor_restarts_total{actor=\"token_exchanger\"}"], 1u);
}

BOOST_AUTO_TEST_CASE(restart_backoff_doubles_for_a_crash_loop) {
  start();
  caf::anon_send_exit(current(actor_role::certs), caf::exit_reason::kill);
  run();
  advance(100ms);
  BOOST_CHECK_EQUAL(r->spawns[static_cast<std::size_t>(actor_role::certs)], 2);
  caf::anon_send_exit(current(actor_role::certs), caf::exit_reason::kill);
  run();
  advance(199ms);
  BOOST_CHECK_EQUAL(r->spawns[static_cast<std::size_t>(actor_role::certs)], 2);
  advance(1ms);
  BOOST_CHECK_EQUAL(r->spawns[static_cast<std::size_t>(actor_role::certs)], 3);
  // After a stable run the backoff starts over.
  advance(61s);
  caf::anon_send_exit(current(actor_role::certs), caf::exit_reason::kill);
  run();
  advance(100ms);
  BOOST_CHECK_EQUAL(r->spawns[static_cast<std::size_t>(actor_role::certs)], 4);
}

BOOST_AUTO_TEST_CASE(a_crash_loop_reports_the_module_degraded_until_a_quiet_minute) {
  start();
  auto degraded = [&] {
    auto g = stats->snapshot().gauges;
    return g.count("msiv2_degraded") ? g["msiv2_degraded"] : -1.0;
  };
  for (int i = 0; i < 5; ++i) {
    caf::anon_send_exit(current(actor_role::probe), caf::exit_reason::kill);
    run();
    advance(2s);
  }
  BOOST_CHECK_EQUAL(degraded(), -1.0); // five restarts within a minute: not yet
  caf::anon_send_exit(current(actor_role::probe), caf::exit_reason::kill);
  run();
  BOOST_CHECK_EQUAL(degraded(), 1.0);
  advance(30s);
  BOOST_CHECK_EQUAL(degraded(), 1.0);
  advance(61s); // a whole window without a restart
  BOOST_CHECK_EQUAL(degraded(), 0.0);
  // It kept restarting the actor all along.
  BOOST_CHECK_EQUAL(r->spawns[static_cast<std::size_t>(actor_role::probe)], 7);
}

BOOST_AUTO_TEST_CASE(pending_callers_of_a_crashed_actor_get_an_error_not_silence) {
  start();
  r->hold = true;
  auto a = ask();
  run();
  BOOST_CHECK(!a->answered());
  caf::anon_send_exit(current(actor_role::exchanger), caf::exit_reason::kill);
  run();
  advance(100ms); // respawn + rewire
  BOOST_REQUIRE(a->error);
  BOOST_CHECK(code_of(a->error) == error_code::internal_failure);
  r->hold = false;
  auto b = ask();
  run();
  BOOST_CHECK(b->value);
}

BOOST_AUTO_TEST_CASE(crashed_token_service_answers_its_callers_and_the_module_handle_keeps_working) {
  start();
  r->hold = true;
  auto a = ask();
  run();
  caf::anon_send_exit(current(actor_role::service), caf::exit_reason::kill);
  run();
  BOOST_REQUIRE(a->error);
  BOOST_CHECK(code_of(a->error) == error_code::internal_failure);
  // While it restarts, requests get a clear error at once.
  auto during = ask();
  run();
  BOOST_CHECK(code_of(during->error) == error_code::internal_failure);
  advance(100ms);
  r->hold = false;
  auto b = ask();
  run();
  BOOST_REQUIRE(b->value);
  BOOST_CHECK_EQUAL(r->spawns[static_cast<std::size_t>(actor_role::service)], 2);
}

BOOST_AUTO_TEST_CASE(shutdown_stops_every_actor_and_answers_pending_callers) {
  start();
  r->hold = true;
  auto a = ask();
  run();
  auto sup = caf::actor_cast<caf::actor>(m.handle());
  auto downs = std::make_shared<int>(0);
  auto watched = r->current;
  keep(sys.spawn([=](caf::event_based_actor* self, int) -> caf::behavior {
    for (auto& x : watched)
      self->monitor(x);
    self->monitor(sup);
    self->set_down_handler([=](caf::down_msg&) { ++*downs; });
    return {[](caf::ok_atom) {}};
  }, 0));
  run();
  m.stop();
  run();
  BOOST_REQUIRE(a->error);
  BOOST_CHECK(code_of(a->error) == error_code::shutting_down);
  BOOST_CHECK_EQUAL(*downs, static_cast<int>(actor_role_count) + 1);
  // No restart after a shutdown, even when time passes.
  advance(1s);
  for (std::size_t i = 0; i < actor_role_count; ++i)
    BOOST_CHECK_EQUAL(r->spawns[i], 1);
  auto late = request<token_result>(caf::actor_cast<token_service>(sup), pop());
  run();
  BOOST_CHECK(late->answered());
}

BOOST_AUTO_TEST_CASE(killed_supervisor_takes_every_actor_down_with_it) {
  start();
  auto downs = std::make_shared<int>(0);
  auto watched = r->current;
  keep(sys.spawn([=](caf::event_based_actor* self, int) -> caf::behavior {
    for (auto& x : watched)
      self->monitor(x);
    self->set_down_handler([=](caf::down_msg&) { ++*downs; });
    return {[](caf::ok_atom) {}};
  }, 0));
  run();
  caf::anon_send_exit(m.handle(), caf::exit_reason::kill);
  run();
  BOOST_CHECK_EQUAL(*downs, static_cast<int>(actor_role_count));
}

BOOST_AUTO_TEST_CASE(default_actors_serve_a_bearer_token_over_imds_v1) {
  auto now_s = wall_ms() / 1000;
  transport->on("GET", "/metadata/identity/oauth2/token")
    .respond(200, R"({"access_token":"v1-token","client_id":"6a2bc6e4-0c1f-4d7a-9b7e-2f0d4c1e8a11",)"
                  R"("expires_in":"3600","expires_on":")" + std::to_string(now_s + 3600) +
                  R"(","ext_expires_in":"3600","not_before":")" + std::to_string(now_s) +
                  R"(","resource":"https://vault.azure.net","token_type":"Bearer"})",
             io::http_headers{{{"Server", "IMDS/150.870.65.1854"}, {"Content-Type", "application/json"}}});
  m = module::start(sys, *deps());
  run();
  auto q = pop();
  q.type = token_type::bearer;
  auto a = request<token_result>(m.service(), q);
  run();
  transport->deliver_all();
  run();
  BOOST_REQUIRE_MESSAGE(a->value, (a->value ? std::string() : render(a->error)));
  BOOST_CHECK_EQUAL(a->value->access_token, "v1-token");
  BOOST_CHECK_EQUAL(a->value->expires_on, now_s + 3600);
  auto b = request<token_result>(m.service(), q);
  run();
  BOOST_REQUIRE(b->value);
  BOOST_CHECK(b->value->source == token_source::cache);
  BOOST_CHECK_EQUAL(transport->requests().size(), 1u);
}

BOOST_AUTO_TEST_CASE(default_actors_cold_start_an_mtls_pop_token_then_serve_it_from_the_cache) {
  auto host = std::make_shared<v2_host>(wall);
  auto d = std::make_shared<runtime_deps>(*deps());
  d->transport = host;
  m = module::start(sys, *d);
  run();
  auto a = request<token_result>(m.service(), pop());
  run();
  BOOST_REQUIRE_MESSAGE(a->value, (a->value ? std::string() : render(a->error)));
  BOOST_CHECK(a->value->type == token_type::mtls_pop);
  BOOST_REQUIRE(a->value->binding);
  BOOST_CHECK(!a->value->binding->x5t_s256.empty());
  BOOST_CHECK_EQUAL(host->calls["/metadata/identity/issuecredential"], 1);
  auto b = request<token_result>(m.service(), pop());
  run();
  BOOST_REQUIRE(b->value);
  BOOST_CHECK(b->value->source == token_source::cache);
  BOOST_CHECK_EQUAL(b->value->access_token, a->value->access_token);
  BOOST_CHECK_EQUAL(host->calls["/metadata/identity/issuecredential"], 1);
}

BOOST_AUTO_TEST_SUITE_END()
