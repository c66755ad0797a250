#include <boost/test/unit_test.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include "actors/token_exchanger.hpp"
#include "io/json.hpp"
#include "messages/errors.hpp"
#include "platform/binding.hpp"
#include "platform/encoding.hpp"
#include "platform/jwt.hpp"
#include "platform/x509.hpp"
#include "tests/support/actor_fixture.hpp"

using namespace std::chrono_literals;
using msiv2::error_code;
using msiv2::io::fake_transport;

namespace {

constexpr const char* tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
constexpr const char* client = "5a1f1c5e-0b39-4b8e-9d1e-8f3f6f5b2c11";
constexpr const char* mtls_host = "https://westus.mtlsauth.test";
const std::string token_path = std::string("/") + tenant + "/oauth2/v2.0/token";
constexpr const char* v1_path = "/metadata/identity/oauth2/token";

/// What the cert_issuer double was asked, and what it answers.
struct issuer_script {
  std::vector<msiv2::credential_request> asked;
  std::vector<msiv2::credential_ptr> answers; ///< used in order; none left: issuance_refused
};

/// What a token_service double was told (evict by thumbprint).
struct service_script {
  std::vector<std::string> evicted;
};

/// A token_service double that only records (evict_atom, x5t).
caf::behavior fake_service(caf::event_based_actor*, std::shared_ptr<service_script> script) {
  return {
    [=](msiv2::evict_atom, std::string& x5t) { script->evicted.push_back(x5t); },
  };
}

/// A cert_issuer double that answers from a script (the real one is another engineer's). It
/// is dynamically typed and cast to cert_issuer: the exchanger only ever asks it for a
/// credential, and the double need not follow cert_issuer's internal handlers.
caf::behavior fake_cert_issuer(caf::event_based_actor*, std::shared_ptr<issuer_script> script) {
  return {
    [=](caf::get_atom, msiv2::credential_request& r) -> caf::result<msiv2::credential_ptr> {
      script->asked.push_back(r);
      if (script->answers.empty())
        return msiv2::make_msiv2_error(error_code::issuance_refused, "scripted refusal", 400);
      auto c = script->answers.front();
      script->answers.erase(script->answers.begin());
      return c;
    },
  };
}

std::map<std::string, std::string> form_fields(const std::string& body) {
  std::map<std::string, std::string> out;
  std::size_t pos = 0;
  while (pos <= body.size()) {
    auto amp = body.find('&', pos);
    auto part = body.substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
    auto eq = part.find('=');
    auto name = msiv2::platform::url_decode(part.substr(0, eq));
    auto value = msiv2::platform::url_decode(eq == std::string::npos ? "" : part.substr(eq + 1));
    BOOST_REQUIRE(name && value);
    BOOST_CHECK_MESSAGE(out.count(*name) == 0, "duplicate form field " + *name);
    out[*name] = *value;
    if (amp == std::string::npos)
      break;
    pos = amp + 1;
  }
  return out;
}

struct exchanger_fixture : msiv2::test::actor_fixture {
  msiv2::key_ref key;
  std::shared_ptr<issuer_script> issuer = std::make_shared<issuer_script>();
  std::shared_ptr<service_script> service = std::make_shared<service_script>();
  msiv2::token_exchanger exchanger;
  int serial = 0;

  exchanger_fixture() {
    config.ca_file = "/etc/msiv2-test/ca.pem";
    transport->set_delivery(fake_transport::delivery::immediate);
    keys->load_or_create([this](msiv2::result<msiv2::key_ref> k) { key = *k; });
  }

  /// Spawns the exchanger (after config edits) and wires the cert_issuer double.
  void start() {
    exchanger = keep(sys.spawn(msiv2::token_exchanger_impl, deps()));
    auto certs = keep(sys.spawn(fake_cert_issuer, issuer));
    auto svc = keep(sys.spawn(fake_service, service));
    auto w = std::make_shared<msiv2::wiring>();
    w->certs = caf::actor_cast<msiv2::cert_issuer>(certs);
    w->service = caf::actor_cast<msiv2::token_service>(svc);
    w->exchanger = exchanger;
    caf::anon_send(exchanger, msiv2::wire_atom::value, msiv2::wiring_ptr(w));
    run();
  }

  /// A binding credential with a fresh self-signed certificate of the test key.
  msiv2::credential_ptr make_cred(msiv2::managed_identity id = msiv2::managed_identity::system()) {
    msiv2::platform::issue_params p;
    p.subject_key = key.key->get();
    p.subject_cn = client;
    p.subject_dc = tenant;
    p.not_before = wall_ms() / 1000 - 60;
    p.not_after = wall_ms() / 1000 + 7 * 86400;
    p.client_auth = true;
    p.serial_hex = "0" + std::to_string(++serial);
    auto der = msiv2::platform::issue_certificate(p, nullptr, key.key->get());
    BOOST_REQUIRE(der);
    auto c = std::make_shared<msiv2::credential>();
    c->identity = id;
    c->client_id = client;
    c->tenant_id = tenant;
    c->identity_type = "SystemAssigned";
    c->mtls_endpoint = mtls_host;
    c->certificate_der = *der;
    c->x5t_s256 = msiv2::platform::x5t_s256(*der);
    c->not_before_ms = p.not_before * 1000;
    c->not_after_ms = p.not_after * 1000;
    c->key = key;
    return c;
  }

  /// An access token JWT, bound to `x5t` when not empty.
  std::string jwt(const std::string& x5t) {
    std::string payload = "{\"aud\":\"https://vault.azure.net\",\"iat\":" +
                          std::to_string(wall_ms() / 1000) +
                          ",\"exp\":" + std::to_string(wall_ms() / 1000 + 3600);
    if (!x5t.empty())
      payload += ",\"cnf\":{\"x5t#S256\":\"" + x5t + "\"}";
    payload += "}";
    auto t = msiv2::platform::sign_jwt_rs256(key.key->get(), payload);
    BOOST_REQUIRE(t);
    return *t;
  }

  /// The token endpoint's 200 answer, as the simulator writes it.
  std::string token_body(const std::string& x5t, const std::string& type = "mtls_pop",
                         const std::string& expires_in = "3600") {
    return "{\"token_type\":\"" + type + "\",\"expires_in\":" + expires_in +
           ",\"ext_expires_in\":3600,\"access_token\":\"" + jwt(x5t) + "\"}";
  }

  /// The token endpoint's AADSTS error, as the simulator writes it.
  static std::string aad_error(const std::string& error, int code, const std::string& message) {
    return "{\"error\":\"" + error + "\",\"error_description\":\"AADSTS" + std::to_string(code) +
           ": " + message + " Trace ID: 0f3c Correlation ID: 1234 Timestamp: 2026-01-01 "
           "00:00:00Z\",\"error_codes\":[" + std::to_string(code) +
           "],\"timestamp\":\"2026-01-01 00:00:00Z\",\"trace_id\":\"0f3c\","
           "\"correlation_id\":\"corr-1234\"}";
  }

  std::string v1_body() {
    auto now = std::to_string(wall_ms() / 1000);
    auto exp = std::to_string(wall_ms() / 1000 + 86400);
    return "{\"access_token\":\"" + jwt("") + "\",\"client_id\":\"" + client +
           "\",\"expires_in\":\"86400\",\"expires_on\":\"" + exp +
           "\",\"ext_expires_in\":\"86400\",\"not_before\":\"" + now +
           "\",\"resource\":\"https://vault.azure.net\",\"token_type\":\"Bearer\"}";
  }

  msiv2::exchange_request make_req(msiv2::credential_ptr cred,
                                   std::string resource = "https://vault.azure.net",
                                   msiv2::token_type type = msiv2::token_type::mtls_pop,
                                   std::chrono::nanoseconds timeout = 30s) {
    msiv2::exchange_request r;
    r.request.resource = std::move(resource);
    r.request.type = type;
    r.cred = std::move(cred);
    r.due = due_in(timeout);
    return r;
  }

  std::shared_ptr<msiv2::test::outcome<msiv2::token_result>> ask(msiv2::exchange_request r) {
    auto out = request<msiv2::token_result>(exchanger, msiv2::exchange_atom::value, std::move(r));
    run();
    return out;
  }

  std::size_t token_calls() const {
    std::size_t n = 0;
    for (auto& r : transport->requests())
      n += r.path() == token_path ? 1 : 0;
    return n;
  }
};

error_code code_of(const caf::error& e) {
  return msiv2::describe(e).code;
}

} // namespace

BOOST_AUTO_TEST_SUITE(actors_token_exchanger_test)

BOOST_AUTO_TEST_CASE(mtls_pop_request_has_exact_form_fields_and_headers) {
  exchanger_fixture f;
  f.start();
  auto cred = f.make_cred();
  f.transport->on("POST", token_path).respond(200, f.token_body(cred->x5t_s256));
  auto t0 = f.wall_ms() / 1000;
  auto got = f.ask(f.make_req(cred));
  BOOST_REQUIRE_MESSAGE(got->value, msiv2::render(got->error));
  BOOST_REQUIRE_EQUAL(f.transport->requests().size(), 1u);
  auto recorded = f.transport->requests();
  const auto& r = recorded.at(0).request;
  BOOST_CHECK_EQUAL(r.method, "POST");
  BOOST_CHECK_EQUAL(r.url, std::string(mtls_host) + token_path);
  auto form = form_fields(r.body);
  BOOST_CHECK_EQUAL(form.size(), 4u);
  BOOST_CHECK_EQUAL(form["grant_type"], "client_credentials");
  BOOST_CHECK_EQUAL(form["client_id"], client);
  BOOST_CHECK_EQUAL(form["scope"], "https://vault.azure.net/.default");
  BOOST_CHECK_EQUAL(form["token_type"], "mtls_pop");
  BOOST_CHECK_EQUAL(form.count("claims"), 0u);
  BOOST_CHECK(r.headers.get("client-request-id").has_value());
  BOOST_CHECK_EQUAL(r.headers.get("client-request-id")->size(), 36u);
  BOOST_CHECK(r.headers.get("return-client-request-id") == std::string_view("true"));
  BOOST_CHECK(r.headers.get("x-ms-lib-capability") == std::string_view("retry-after, h429"));
  BOOST_CHECK(r.headers.get("Accept") == std::string_view("application/json"));
  BOOST_CHECK(r.headers.get("Content-Type") ==
              std::string_view("application/x-www-form-urlencoded"));
  BOOST_CHECK(!r.headers.contains("Metadata"));
  BOOST_CHECK_EQUAL(r.ca_file, "/etc/msiv2-test/ca.pem");
  BOOST_REQUIRE(r.identity);
  BOOST_CHECK_EQUAL(r.identity->chain_der().at(0), cred->certificate_der);
  BOOST_CHECK(r.timeout <= 30s);

  const auto& tok = *got->value;
  BOOST_CHECK(tok.type == msiv2::token_type::mtls_pop);
  BOOST_CHECK(tok.source == msiv2::token_source::network);
  BOOST_CHECK_EQUAL(tok.expires_on, t0 + 3600);
  BOOST_CHECK_EQUAL(tok.refresh_on, t0 + 1800); // half-life, midpoint jitter
  BOOST_REQUIRE(tok.binding);
  BOOST_CHECK_EQUAL(tok.binding->x5t_s256, cred->x5t_s256);
  BOOST_CHECK_EQUAL(tok.binding->certificate_chain.at(0), cred->certificate_der);
  BOOST_CHECK(tok.binding->key == cred->key.key);
  auto s = f.stats->snapshot();
  BOOST_CHECK_EQUAL(
    s.counters["msiv2_upstream_requests_total{upstream=\"token_endpoint\",status=\"200\"}"], 1u);
}

BOOST_AUTO_TEST_CASE(refresh_in_and_numeric_string_expires_in_set_the_times) {
  exchanger_fixture f;
  f.start();
  auto cred = f.make_cred();
  auto body = f.token_body(cred->x5t_s256, "MTLS_POP", "\"7200\"");
  body.insert(body.size() - 1, ",\"refresh_in\":600");
  f.transport->on("POST", token_path).respond(200, body);
  auto t0 = f.wall_ms() / 1000;
  auto got = f.ask(f.make_req(cred));
  BOOST_REQUIRE_MESSAGE(got->value, msiv2::render(got->error));
  BOOST_CHECK_EQUAL(got->value->expires_on, t0 + 7200);
  BOOST_CHECK_EQUAL(got->value->refresh_on, t0 + 600);
}

BOOST_AUTO_TEST_CASE(scope_is_normalised_without_doubling_default) {
  BOOST_CHECK_EQUAL(msiv2::token_scope("https://vault.azure.net"), "https://vault.azure.net/.default");
  BOOST_CHECK_EQUAL(msiv2::token_scope("https://vault.azure.net/"), "https://vault.azure.net/.default");
  BOOST_CHECK_EQUAL(msiv2::token_scope("https://vault.azure.net/.default"),
                    "https://vault.azure.net/.default");
  BOOST_CHECK_EQUAL(msiv2::token_scope("api://app-id//"), "api://app-id/.default");

  exchanger_fixture f;
  f.start();
  auto cred = f.make_cred();
  f.transport->on("POST", token_path).respond(200, f.token_body(cred->x5t_s256)).repeat_last();
  for (const char* resource : {"https://management.azure.com/", "https://management.azure.com/.default"}) {
    auto got = f.ask(f.make_req(cred, resource));
    BOOST_REQUIRE(got->value);
  }
  for (auto& r : f.transport->requests())
    BOOST_CHECK_EQUAL(form_fields(r.request.body)["scope"], "https://management.azure.com/.default");
}

BOOST_AUTO_TEST_CASE(claims_carry_client_capabilities_merged_with_the_challenge) {
  BOOST_CHECK_EQUAL(*msiv2::merge_claims("", {}), "");
  BOOST_CHECK_EQUAL(*msiv2::merge_claims("", {"cp1"}),
                    "{\"access_token\":{\"xms_cc\":{\"values\":[\"cp1\"]}}}");
  BOOST_CHECK_EQUAL(*msiv2::merge_claims("{\"access_token\":{\"nbf\":{\"essential\":true}}}", {"cp1"}),
                    "{\"access_token\":{\"nbf\":{\"essential\":true},\"xms_cc\":{\"values\":[\"cp1\"]}}}");
  BOOST_CHECK_EQUAL(*msiv2::merge_claims("{\"id_token\":{}}", {"cp1", "cp2"}),
                    "{\"id_token\":{},\"access_token\":{\"xms_cc\":{\"values\":[\"cp1\",\"cp2\"]}}}");
  BOOST_CHECK(!msiv2::merge_claims("not json", {"cp1"}));

  exchanger_fixture f;
  f.config.client_capabilities = {"cp1"};
  f.start();
  auto cred = f.make_cred();
  f.transport->on("POST", token_path).respond(200, f.token_body(cred->x5t_s256));
  auto req = f.make_req(cred);
  req.request.claims = "{\"access_token\":{\"nbf\":{\"essential\":true,\"value\":\"1700000000\"}}}";
  auto got = f.ask(req);
  BOOST_REQUIRE(got->value);
  auto form = form_fields(f.transport->requests().at(0).request.body);
  BOOST_CHECK_EQUAL(form["claims"], "{\"access_token\":{\"nbf\":{\"essential\":true,\"value\":"
                                    "\"1700000000\"},\"xms_cc\":{\"values\":[\"cp1\"]}}}");
}

BOOST_AUTO_TEST_CASE(invalid_claims_are_an_invalid_request_without_upstream_call) {
  exchanger_fixture f;
  f.start();
  auto req = f.make_req(f.make_cred());
  req.request.claims = "{\"access_token\":";
  auto got = f.ask(req);
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::invalid_request);
  BOOST_CHECK(f.transport->requests().empty());
}

BOOST_AUTO_TEST_CASE(cnf_mismatch_is_invalid_response) {
  exchanger_fixture f;
  f.start();
  auto cred = f.make_cred();
  f.transport->on("POST", token_path)
    .respond(200, f.token_body("bm90LXRoaXMtY2VydGlmaWNhdGU"))
    .respond(200, f.token_body(""));
  auto got = f.ask(f.make_req(cred));
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::invalid_response);
  BOOST_CHECK(msiv2::describe(got->error).description.rfind(
                "malformed token endpoint response: member \"access_token\" is bound to another "
                "certificate", 0) == 0);
  got = f.ask(f.make_req(cred));
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::invalid_response);
  BOOST_CHECK(msiv2::describe(got->error).description.find("cnf") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(token_type_mismatch_is_invalid_response_and_bearer_over_mtls_accepts_Bearer) {
  exchanger_fixture f;
  f.start();
  auto cred = f.make_cred();
  f.transport->on("POST", token_path)
    .respond(200, f.token_body("", "Bearer"))
    .respond(200, f.token_body("", "Bearer"));
  auto got = f.ask(f.make_req(cred));
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::invalid_response);
  got = f.ask(f.make_req(cred, "https://vault.azure.net", msiv2::token_type::bearer));
  BOOST_REQUIRE_MESSAGE(got->value, msiv2::render(got->error));
  BOOST_CHECK(got->value->type == msiv2::token_type::bearer);
  BOOST_CHECK(!got->value->binding);
  BOOST_CHECK_EQUAL(form_fields(f.transport->requests().at(1).request.body)["token_type"], "bearer");
}

BOOST_AUTO_TEST_CASE(malformed_truncated_or_incomplete_json_is_invalid_response) {
  exchanger_fixture f;
  f.start();
  auto cred = f.make_cred();
  auto good = f.token_body(cred->x5t_s256);
  f.transport->on("POST", token_path)
    .respond(200, "<html>oops</html>")
    .respond(200, good.substr(0, good.size() / 2))
    .respond(200, "{\"token_type\":\"mtls_pop\",\"expires_in\":3600}")
    .respond(200, "{\"token_type\":\"mtls_pop\",\"access_token\":\"" + f.jwt(cred->x5t_s256) +
                    "\",\"expires_in\":\"soon\"}");
  // Every message says which leg answered what, naming the member at fault.
  std::vector<std::string> starts = {
    "malformed token endpoint response: not a JSON object",
    "malformed token endpoint response: not valid JSON", // cut in the middle
    "malformed token endpoint response: member \"access_token\" is missing",
    "malformed token endpoint response: member \"expires_in\" is not a decimal integer"};
  for (const auto& start : starts) {
    auto got = f.ask(f.make_req(cred));
    BOOST_REQUIRE(got->error);
    BOOST_CHECK(code_of(got->error) == error_code::invalid_response);
    BOOST_CHECK_EQUAL(msiv2::describe(got->error).http_status, 200);
    BOOST_CHECK_MESSAGE(msiv2::describe(got->error).description.rfind(start, 0) == 0,
                        msiv2::render(got->error));
  }
}

BOOST_AUTO_TEST_CASE(invalid_client_remints_once_with_refused_x5t_and_retries) {
  exchanger_fixture f;
  f.start();
  auto old_cred = f.make_cred();
  auto new_cred = f.make_cred();
  f.issuer->answers.push_back(new_cred);
  f.transport->on("POST", token_path)
    .respond(401, exchanger_fixture::aad_error("invalid_client", 1000614,
                                               "The client certificate has been revoked."))
    .respond(200, f.token_body(new_cred->x5t_s256));
  auto got = f.ask(f.make_req(old_cred));
  BOOST_REQUIRE_MESSAGE(got->value, msiv2::render(got->error));
  BOOST_REQUIRE_EQUAL(f.issuer->asked.size(), 1u);
  BOOST_CHECK_EQUAL(f.issuer->asked[0].refused_x5t, old_cred->x5t_s256);
  BOOST_CHECK(f.issuer->asked[0].identity == msiv2::managed_identity::system());
  BOOST_REQUIRE_EQUAL(f.transport->requests().size(), 2u);
  auto reqs = f.transport->requests();
  BOOST_CHECK_EQUAL(reqs[0].request.identity->chain_der().at(0), old_cred->certificate_der);
  BOOST_CHECK_EQUAL(reqs[1].request.identity->chain_der().at(0), new_cred->certificate_der);
  BOOST_CHECK_EQUAL(got->value->binding->x5t_s256, new_cred->x5t_s256);
  BOOST_CHECK_EQUAL(f.stats->snapshot().counters["msiv2_remediations_total"], 1u);
}

BOOST_AUTO_TEST_CASE(aadsts_certificate_code_without_invalid_client_also_remints) {
  exchanger_fixture f;
  f.start();
  auto old_cred = f.make_cred();
  auto new_cred = f.make_cred();
  f.issuer->answers.push_back(new_cred);
  f.transport->on("POST", token_path)
    .respond(400, exchanger_fixture::aad_error("invalid_request", 1000610, "time range"))
    .respond(200, f.token_body(new_cred->x5t_s256));
  auto got = f.ask(f.make_req(old_cred));
  BOOST_REQUIRE_MESSAGE(got->value, msiv2::render(got->error));
  BOOST_CHECK_EQUAL(f.issuer->asked.size(), 1u);
}

BOOST_AUTO_TEST_CASE(tls_client_cert_rejected_remints_and_retries) {
  exchanger_fixture f;
  f.start();
  auto old_cred = f.make_cred();
  auto new_cred = f.make_cred();
  f.issuer->answers.push_back(new_cred);
  f.transport->on("POST", token_path)
    .fail(msiv2::io::transport_error::tls_client_cert_rejected, "alert bad certificate")
    .respond(200, f.token_body(new_cred->x5t_s256));
  auto got = f.ask(f.make_req(old_cred));
  BOOST_REQUIRE_MESSAGE(got->value, msiv2::render(got->error));
  BOOST_REQUIRE_EQUAL(f.issuer->asked.size(), 1u);
  BOOST_CHECK_EQUAL(f.issuer->asked[0].refused_x5t, old_cred->x5t_s256);
}

BOOST_AUTO_TEST_CASE(telemetry_headers_and_the_request_correlation_id_go_to_the_token_endpoint) {
  exchanger_fixture f;
  f.start();
  auto cred = f.make_cred();
  f.transport->on("POST", token_path).respond(200, f.token_body(cred->x5t_s256));
  auto req = f.make_req(cred);
  req.request.correlation_id = "corr-of-the-request";
  auto got = f.ask(req);
  BOOST_REQUIRE_MESSAGE(got->value, msiv2::render(got->error));
  auto recorded = f.transport->requests(); // a copy: the references below point into it
  const auto& r = recorded.at(0).request;
  BOOST_CHECK(r.headers.get("client-request-id") == std::string_view("corr-of-the-request"));
  BOOST_CHECK(r.headers.get("x-client-SKU") == std::string_view(msiv2::client_sku));
  BOOST_CHECK(r.headers.get("x-client-Ver").has_value());
  BOOST_CHECK(r.headers.get("x-client-OS").has_value());
  BOOST_CHECK_EQUAL(got->value->correlation_id, "corr-of-the-request");
}

BOOST_AUTO_TEST_CASE(aadsts_1000901_token_not_after_remints_once_with_the_same_correlation_id) {
  exchanger_fixture f;
  f.start();
  auto old_cred = f.make_cred();
  auto new_cred = f.make_cred();
  f.issuer->answers.push_back(new_cred);
  f.transport->on("POST", token_path)
    .respond(401, exchanger_fixture::aad_error("invalid_client", 1000901, "past token_not_after"))
    .respond(200, f.token_body(new_cred->x5t_s256));
  auto req = f.make_req(old_cred);
  req.request.correlation_id = "one-id";
  auto got = f.ask(req);
  BOOST_REQUIRE_MESSAGE(got->value, msiv2::render(got->error));
  BOOST_REQUIRE_EQUAL(f.issuer->asked.size(), 1u);
  BOOST_CHECK_EQUAL(f.issuer->asked[0].refused_x5t, old_cred->x5t_s256);
  BOOST_CHECK_EQUAL(f.issuer->asked[0].correlation_id, "one-id");
  BOOST_CHECK_EQUAL(f.token_calls(), 2u);
}

BOOST_AUTO_TEST_CASE(connection_reset_during_the_handshake_remints_once) {
  exchanger_fixture f;
  f.start();
  auto old_cred = f.make_cred();
  auto new_cred = f.make_cred();
  f.issuer->answers.push_back(new_cred);
  f.transport->on("POST", token_path)
    .fail(msiv2::io::transport_error::tls_failed,
          "TLS failed (OpenSSL SSL_connect: Connection reset by peer)")
    .respond(200, f.token_body(new_cred->x5t_s256));
  auto got = f.ask(f.make_req(old_cred));
  BOOST_REQUIRE_MESSAGE(got->value, msiv2::render(got->error));
  BOOST_CHECK_EQUAL(f.issuer->asked.size(), 1u);
}

BOOST_AUTO_TEST_CASE(aadsts_500181_drops_the_bound_tokens_and_retries_once_with_the_same_cert) {
  exchanger_fixture f;
  f.start();
  auto cred = f.make_cred();
  f.transport->on("POST", token_path)
    .respond(400, exchanger_fixture::aad_error("invalid_request", 500181, "not bound"))
    .respond(200, f.token_body(cred->x5t_s256));
  auto got = f.ask(f.make_req(cred));
  BOOST_REQUIRE_MESSAGE(got->value, msiv2::render(got->error));
  BOOST_CHECK_EQUAL(f.issuer->asked.size(), 0u); // no re-mint
  BOOST_REQUIRE_EQUAL(f.service->evicted.size(), 1u);
  BOOST_CHECK_EQUAL(f.service->evicted[0], cred->x5t_s256);
  BOOST_CHECK_EQUAL(f.token_calls(), 2u);
}

BOOST_AUTO_TEST_CASE(aadsts_500181_twice_fails_after_one_retry) {
  exchanger_fixture f;
  f.start();
  auto cred = f.make_cred();
  f.transport->on("POST", token_path)
    .respond(400, exchanger_fixture::aad_error("invalid_request", 500181, "not bound"))
    .respond(400, exchanger_fixture::aad_error("invalid_request", 500181, "not bound"));
  auto got = f.ask(f.make_req(cred));
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::token_refused);
  BOOST_CHECK_EQUAL(f.token_calls(), 2u);
}

BOOST_AUTO_TEST_CASE(repeated_invalid_client_is_bounded) {
  exchanger_fixture f;
  f.config.max_remediations = 2;
  f.start();
  auto refused = exchanger_fixture::aad_error("invalid_client", 1000611, "issuer");
  f.transport->on("POST", token_path).respond(401, refused).repeat_last();
  // One re-mint per request: the fresh certificate refused as well -> token_refused.
  f.issuer->answers = {f.make_cred(), f.make_cred(), f.make_cred()};
  auto got = f.ask(f.make_req(f.make_cred()));
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::token_refused);
  BOOST_CHECK_EQUAL(msiv2::describe(got->error).http_status, 401);
  BOOST_CHECK_EQUAL(msiv2::describe(got->error).correlation_id, "corr-1234");
  BOOST_CHECK_EQUAL(f.issuer->asked.size(), 1u);
  BOOST_CHECK_EQUAL(f.token_calls(), 2u);
  got = f.ask(f.make_req(f.make_cred()));
  BOOST_CHECK_EQUAL(f.issuer->asked.size(), 2u);
  // The budget (2 per window) is used up: refused without asking cert_issuer again.
  got = f.ask(f.make_req(f.make_cred()));
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::token_refused);
  BOOST_CHECK(msiv2::describe(got->error).description.find("re-mints") != std::string::npos);
  BOOST_CHECK_EQUAL(f.issuer->asked.size(), 2u);
  BOOST_CHECK_EQUAL(f.stats->snapshot().counters["msiv2_remediations_total"], 2u);
  // After the window, re-minting is allowed again.
  f.advance(f.config.remediation_window);
  got = f.ask(f.make_req(f.make_cred()));
  BOOST_CHECK_EQUAL(f.issuer->asked.size(), 3u);
}

BOOST_AUTO_TEST_CASE(remint_failure_is_passed_to_the_caller) {
  exchanger_fixture f;
  f.start();
  f.transport->on("POST", token_path)
    .respond(401, exchanger_fixture::aad_error("invalid_client", 1000614, "revoked"));
  auto got = f.ask(f.make_req(f.make_cred()));
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::issuance_refused);
}

// A 5xx without Retry-After, and an answer cut short (connection closed before a complete
// response: a network failure on a request that is safe to repeat), get one retry after 1 s.
const std::vector<std::pair<msiv2::io::http_response, error_code>> retried_once = {
  {msiv2::io::http_response::with_status(503, "{\"error\":\"temporarily_unavailable\"}"),
   error_code::token_refused},
  {msiv2::io::http_response::failure(msiv2::io::transport_error::reset,
                                     "connection lost before a complete response"),
   error_code::transport_failed},
};

BOOST_AUTO_TEST_CASE(server_error_503_or_cut_off_answer_retries_once_after_one_second) {
  for (const auto& [first, code] : retried_once) {
    exchanger_fixture f;
    f.start();
    auto cred = f.make_cred();
    f.transport->on("POST", token_path).respond(first).respond(200, f.token_body(cred->x5t_s256));
    auto got = f.ask(f.make_req(cred));
    BOOST_CHECK_EQUAL(f.token_calls(), 1u);
    f.advance(999ms);
    BOOST_CHECK_EQUAL(f.token_calls(), 1u);
    BOOST_CHECK(!got->answered());
    f.advance(1ms);
    BOOST_CHECK_EQUAL(f.token_calls(), 2u);
    BOOST_REQUIRE_MESSAGE(got->value, msiv2::render(got->error));
    BOOST_CHECK_EQUAL(f.stats->snapshot().counters["msiv2_retries_total{upstream=\"token_endpoint\"}"], 1u);
  }
}

BOOST_AUTO_TEST_CASE(server_error_or_cut_off_answer_twice_fails_after_one_retry) {
  for (const auto& [first, code] : retried_once) {
    exchanger_fixture f;
    f.start();
    f.transport->on("POST", token_path).respond(first).repeat_last();
    auto got = f.ask(f.make_req(f.make_cred()));
    f.advance(2s);
    BOOST_REQUIRE(got->error);
    BOOST_CHECK(code_of(got->error) == code);
    BOOST_CHECK_EQUAL(msiv2::describe(got->error).http_status, first.status);
    BOOST_CHECK_EQUAL(f.token_calls(), 2u);
    f.advance(10s);
    BOOST_CHECK_EQUAL(f.token_calls(), 2u);
  }
}

BOOST_AUTO_TEST_CASE(too_many_requests_with_retry_after_5_waits_5_seconds) {
  exchanger_fixture f;
  f.start();
  auto cred = f.make_cred();
  msiv2::io::http_headers h;
  h.add("Retry-After", "5");
  f.transport->on("POST", token_path)
    .respond(429, "{\"error\":\"too_many_requests\"}", h)
    .respond(200, f.token_body(cred->x5t_s256));
  auto got = f.ask(f.make_req(cred));
  f.advance(4999ms);
  BOOST_CHECK_EQUAL(f.token_calls(), 1u);
  BOOST_CHECK(!got->answered());
  f.advance(1ms);
  BOOST_CHECK_EQUAL(f.token_calls(), 2u);
  BOOST_REQUIRE_MESSAGE(got->value, msiv2::render(got->error));
}

BOOST_AUTO_TEST_CASE(retry_after_beyond_deadline_is_throttled_and_identical_request_fails_fast) {
  exchanger_fixture f;
  f.start();
  auto cred = f.make_cred();
  msiv2::io::http_headers h;
  h.add("Retry-After", "60");
  f.transport->on("POST", token_path).respond(429, "{\"error\":\"too_many_requests\"}", h);
  auto got = f.ask(f.make_req(cred, "https://vault.azure.net", msiv2::token_type::mtls_pop, 10s));
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::throttled);
  BOOST_CHECK_EQUAL(msiv2::describe(got->error).http_status, 429);
  // Identical request right after: throttled without an upstream call.
  got = f.ask(f.make_req(cred, "https://vault.azure.net/", msiv2::token_type::mtls_pop, 10s));
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::throttled);
  BOOST_CHECK_EQUAL(f.token_calls(), 1u);
  // Another scope is not affected.
  f.transport->on("POST", token_path).respond(200, f.token_body(cred->x5t_s256)).repeat_last();
  got = f.ask(f.make_req(cred, "https://storage.azure.com", msiv2::token_type::mtls_pop, 10s));
  BOOST_CHECK(got->value);
  BOOST_CHECK_EQUAL(f.token_calls(), 2u);
  // Once Retry-After has passed, the identical request goes out again.
  f.advance(60s);
  got = f.ask(f.make_req(cred, "https://vault.azure.net", msiv2::token_type::mtls_pop, 10s));
  BOOST_CHECK(got->value);
  BOOST_CHECK_EQUAL(f.token_calls(), 3u);
}

BOOST_AUTO_TEST_CASE(identical_request_during_a_short_throttle_waits_instead_of_calling) {
  exchanger_fixture f;
  f.start();
  auto cred = f.make_cred();
  msiv2::io::http_headers h;
  h.add("Retry-After", "60");
  f.transport->on("POST", token_path).respond(429, "{}", h);
  f.ask(f.make_req(cred, "https://vault.azure.net", msiv2::token_type::mtls_pop, 10s));
  f.transport->on("POST", token_path).respond(200, f.token_body(cred->x5t_s256)).repeat_last();
  f.advance(55s);
  auto got = f.ask(f.make_req(cred, "https://vault.azure.net", msiv2::token_type::mtls_pop, 10s));
  BOOST_CHECK(!got->answered());
  BOOST_CHECK_EQUAL(f.token_calls(), 1u);
  f.advance(5s);
  BOOST_CHECK_EQUAL(f.token_calls(), 2u);
  BOOST_CHECK(got->value);
}

BOOST_AUTO_TEST_CASE(transport_failure_is_transport_failed) {
  exchanger_fixture f;
  f.start();
  f.transport->on("POST", token_path).fail(msiv2::io::transport_error::connect_failed, "refused");
  auto got = f.ask(f.make_req(f.make_cred()));
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::transport_failed);
}

BOOST_AUTO_TEST_CASE(cut_off_answer_is_not_retried_past_the_deadline) {
  exchanger_fixture f;
  f.start();
  f.transport->on("POST", token_path)
    .fail(msiv2::io::transport_error::reset, "connection lost before a complete response")
    .repeat_last();
  auto got = f.ask(f.make_req(f.make_cred(), "https://vault.azure.net", msiv2::token_type::mtls_pop, 800ms));
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::transport_failed);
  BOOST_CHECK_EQUAL(f.token_calls(), 1u);
}

BOOST_AUTO_TEST_CASE(client_identity_is_reused_per_certificate_and_replaced_by_a_new_one) {
  exchanger_fixture f;
  f.start();
  auto a = f.make_cred();
  auto b = f.make_cred();
  f.transport->on("POST", token_path)
    .respond(200, f.token_body(a->x5t_s256))
    .respond(200, f.token_body(a->x5t_s256))
    .respond(200, f.token_body(b->x5t_s256));
  f.ask(f.make_req(a));
  f.ask(f.make_req(a, "https://storage.azure.com"));
  f.ask(f.make_req(b));
  auto reqs = f.transport->requests();
  BOOST_REQUIRE_EQUAL(reqs.size(), 3u);
  BOOST_CHECK(reqs[0].request.identity == reqs[1].request.identity);
  BOOST_CHECK(reqs[2].request.identity != reqs[0].request.identity);
  BOOST_CHECK_EQUAL(reqs[2].request.identity->chain_der().at(0), b->certificate_der);
}

BOOST_AUTO_TEST_CASE(v1_bearer_path_with_each_selector) {
  exchanger_fixture f;
  f.start();
  f.transport->on("GET", v1_path).respond(200, f.v1_body()).repeat_last();
  struct sel {
    msiv2::managed_identity id;
    const char* param;
  };
  std::vector<sel> sels = {
    {msiv2::managed_identity::system(), nullptr},
    {msiv2::managed_identity::by_client_id(client), "client_id"},
    {msiv2::managed_identity::by_object_id("0b1c2d3e-0000-4000-8000-000000000001"), "object_id"},
    {msiv2::managed_identity::by_resource_id(
       "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u"),
     "msi_res_id"},
  };
  auto expires_on = f.wall_ms() / 1000 + 86400;
  for (std::size_t i = 0; i < sels.size(); ++i) {
    auto req = f.make_req(nullptr, "https://vault.azure.net", msiv2::token_type::bearer);
    req.request.identity = sels[i].id;
    auto got = f.ask(req);
    BOOST_REQUIRE_MESSAGE(got->value, msiv2::render(got->error));
    BOOST_CHECK(got->value->type == msiv2::token_type::bearer);
    BOOST_CHECK_EQUAL(got->value->expires_on, expires_on);
    BOOST_CHECK(!got->value->binding);
    auto rec = f.transport->requests().at(i);
    BOOST_CHECK_EQUAL(rec.request.method, "GET");
    BOOST_CHECK_EQUAL(rec.request.url.rfind("http://imds.test/metadata/identity/oauth2/token?", 0), 0u);
    BOOST_CHECK(rec.query("api-version") == std::string("2018-02-01"));
    BOOST_CHECK(rec.query("resource") == std::string("https://vault.azure.net"));
    BOOST_CHECK(rec.request.headers.get("Metadata") == std::string_view("true"));
    BOOST_CHECK(!rec.request.identity);
    for (const char* p : {"client_id", "object_id", "msi_res_id", "mi_res_id"}) {
      if (sels[i].param != nullptr && std::string(p) == sels[i].param)
        BOOST_CHECK(rec.query(p) == sels[i].id.id);
      else
        BOOST_CHECK_MESSAGE(!rec.query(p), p);
    }
  }
  BOOST_CHECK_EQUAL(
    f.stats->snapshot().counters["msiv2_upstream_requests_total{upstream=\"imds_token\",status=\"200\"}"], 4u);
}

BOOST_AUTO_TEST_CASE(v1_400_is_identity_not_found_or_invalid_request_and_not_retried) {
  exchanger_fixture f;
  f.start();
  f.transport->on("GET", v1_path)
    .respond(400, "{\"error\":\"invalid_request\",\"error_description\":\"Identity not found\"}")
    .respond(400, "{\"error\":\"invalid_request\",\"error_description\":\"Required audience parameter not specified\"}");
  auto got = f.ask(f.make_req(nullptr, "https://vault.azure.net", msiv2::token_type::bearer));
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::identity_not_found);
  BOOST_CHECK_EQUAL(msiv2::describe(got->error).http_status, 400);
  got = f.ask(f.make_req(nullptr, "https://vault.azure.net", msiv2::token_type::bearer));
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::invalid_request);
  f.advance(10s);
  BOOST_CHECK_EQUAL(f.transport->requests().size(), 2u);
}

// Review L2: upstream text reaches errors (and so logs) bounded, on one line, escaped.
BOOST_AUTO_TEST_CASE(upstream_error_text_is_cut_and_escaped_in_the_error) {
  exchanger_fixture f;
  f.start();
  std::string flood = "line one\\nFAKE LOG LINE \\u001b[31m" + std::string(10000, 'x');
  f.transport->on("GET", v1_path)
    .respond(400, "{\"error\":\"invalid_request\",\"error_description\":\"" + flood +
                    "\",\"correlation_id\":\"c\\r\\n" + std::string(5000, 'c') + "\"}");
  auto got = f.ask(f.make_req(nullptr, "https://vault.azure.net", msiv2::token_type::bearer));
  BOOST_REQUIRE(got->error);
  auto info = msiv2::describe(got->error);
  BOOST_CHECK(info.code == error_code::invalid_request);
  BOOST_CHECK_MESSAGE(info.description.size() <= 500, info.description.size());
  BOOST_CHECK(info.description.find('\n') == std::string::npos);
  BOOST_CHECK(info.description.find('\x1b') == std::string::npos);
  BOOST_CHECK(info.description.find("line one\\x0aFAKE LOG LINE \\x1b[31m") != std::string::npos);
  BOOST_CHECK(info.description.find("(10") != std::string::npos); // "...(10034 bytes)"
  auto rendered = msiv2::render(got->error);
  BOOST_CHECK(rendered.find('\n') == std::string::npos);
  BOOST_CHECK(rendered.find('\r') == std::string::npos);
  BOOST_CHECK_MESSAGE(rendered.size() <= 800, rendered.size());
}

BOOST_AUTO_TEST_CASE(v1_imds_503_retries_on_the_imds_schedule) {
  exchanger_fixture f;
  f.start();
  f.transport->on("GET", v1_path).respond(503).respond(503).respond(200, f.v1_body());
  auto got = f.ask(f.make_req(nullptr, "https://vault.azure.net", msiv2::token_type::bearer));
  BOOST_CHECK_EQUAL(f.transport->requests().size(), 1u);
  f.advance(1s);
  BOOST_CHECK_EQUAL(f.transport->requests().size(), 2u);
  f.advance(1999ms);
  BOOST_CHECK_EQUAL(f.transport->requests().size(), 2u);
  f.advance(1ms);
  BOOST_CHECK_EQUAL(f.transport->requests().size(), 3u);
  BOOST_REQUIRE_MESSAGE(got->value, msiv2::render(got->error));
}

BOOST_AUTO_TEST_CASE(v1_malformed_answer_is_invalid_response) {
  exchanger_fixture f;
  f.start();
  f.transport->on("GET", v1_path)
    .respond(200, "{\"access_token\":\"abc\",\"token_type\":\"Bearer\"}")
    .respond(200, "{\"access_token\":\"abc\",");
  auto got = f.ask(f.make_req(nullptr, "https://vault.azure.net", msiv2::token_type::bearer));
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::invalid_response);
  BOOST_CHECK_EQUAL(msiv2::describe(got->error).description,
                    "malformed IMDS v1 token response: member \"expires_on\" is missing");
  got = f.ask(f.make_req(nullptr, "https://vault.azure.net", msiv2::token_type::bearer));
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::invalid_response);
  BOOST_CHECK(msiv2::describe(got->error).description.rfind(
                "malformed IMDS v1 token response: not a JSON object", 0) == 0);
}

BOOST_AUTO_TEST_CASE(mtls_pop_without_credential_is_refused_never_downgraded) {
  exchanger_fixture f;
  f.start();
  auto got = f.ask(f.make_req(nullptr));
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::invalid_request);
  BOOST_CHECK(f.transport->requests().empty());
}

BOOST_AUTO_TEST_CASE(exit_answers_pending_exchanges_with_shutting_down) {
  exchanger_fixture f;
  f.transport->set_delivery(fake_transport::delivery::manual);
  f.start();
  auto cred = f.make_cred();
  f.transport->on("POST", token_path).respond(200, f.token_body(cred->x5t_s256));
  auto got = f.ask(f.make_req(cred));
  BOOST_CHECK(!got->answered());
  caf::anon_send_exit(f.exchanger, caf::exit_reason::user_shutdown);
  f.run();
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::shutting_down);
  f.transport->deliver_all(); // the late completion goes nowhere
  f.run();
}

BOOST_AUTO_TEST_SUITE_END()
