#include <boost/test/unit_test.hpp>

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <caf/event_based_actor.hpp>

#include "actors/cert_issuer.hpp"
#include "actors/key_manager.hpp"
#include "actors/persisted.hpp"
#include "io/json.hpp"
#include "messages/errors.hpp"
#include "platform/csr.hpp"
#include "platform/encoding.hpp"
#include "platform/files.hpp"
#include "platform/keys.hpp"
#include "platform/x509.hpp"
#include "tests/support/actor_fixture.hpp"
#include "tests/support/memory_artifact_store.hpp"

using namespace msiv2;
using namespace std::chrono_literals;

namespace {

constexpr const char* metadata_path = "/metadata/identity/getplatformmetadata";
constexpr const char* issue_path = "/metadata/identity/issuecredential";
constexpr const char* tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
constexpr const char* client_a = "9a2c7c3e-5e4b-4c55-9f3a-0d1f2e3a4b5c";
constexpr const char* client_b = "1b2c3d4e-5f60-4172-8394-a5b6c7d8e9f0";
constexpr std::int64_t cert_lifetime_s = 7 * 24 * 3600;

/// An IMDS v2 double answering like msiv2-sim: getplatformmetadata with the configured
/// identity, issuecredential with a real certificate from a test CA for the CSR's key (so the
/// actor's validation really runs). Scripted answers (`metadata_script`, `issue_script`) go
/// first. Completions run inside send() or, in manual mode, when the test delivers them.
class imds_double : public io::transport {
public:
  explicit imds_double(std::function<std::int64_t()> now_s) : now_s_(std::move(now_s)) {
    ca_key_ = std::move(platform::generate_rsa_key(2048).value());
    platform::issue_params p;
    p.subject_key = ca_key_.get();
    p.subject_cn = "managedidentitysnissuer.login.microsoft.com";
    p.not_before = now_s_() - 3600;
    p.not_after = now_s_() + 3650LL * 24 * 3600;
    p.is_ca = true;
    auto der = platform::issue_certificate(p, nullptr, ca_key_.get());
    ca_cert_ = std::move(platform::parse_certificate(*der).value());
  }

  struct seen {
    io::http_request request;
    std::string path() const {
      auto parts = io::split_url(request.url);
      return parts ? parts->path : std::string{};
    }
    std::optional<std::string> query(std::string_view name) const {
      return io::query_param(request.url, name);
    }
  };

  void send(io::http_request request, io::completion done) override {
    requests.push_back({request});
    auto r = answer(request);
    if (manual)
      pending.emplace_back(std::move(done), std::move(r));
    else
      done(std::move(r));
  }
  void shutdown() override {
    auto all = std::move(pending);
    pending.clear();
    for (auto& [done, r] : all)
      done(io::http_response::failure(io::transport_error::cancelled, "shut down"));
  }
  void deliver_all() {
    auto all = std::move(pending);
    pending.clear();
    for (auto& [done, r] : all)
      done(std::move(r));
  }

  std::size_t count(const std::string& path) const {
    std::size_t n = 0;
    for (auto& s : requests)
      n += s.path() == path ? 1 : 0;
    return n;
  }
  std::vector<seen> of(const std::string& path) const {
    std::vector<seen> out;
    for (auto& s : requests)
      if (s.path() == path)
        out.push_back(s);
    return out;
  }

  static io::http_headers imds_headers() {
    io::http_headers h;
    h.set("Content-Type", "application/json; charset=utf-8");
    h.set("Server", "IMDS/150.870.65.1854");
    return h;
  }
  static io::http_response error(int status, const std::string& description) {
    return io::http_response::with_status(
      status,
      R"({"error":"invalid_request","error_description":)" + platform::json_quote(description) + "}",
      imds_headers());
  }

  std::string client_id = client_a;
  /// When positive, certificates carry token_not_after = issue time + this.
  std::int64_t token_not_after_s = 0;
  bool require_attestation = false;
  bool manual = false;
  /// Certifies a key other than the CSR's (a broken issuer).
  bool certify_other_key = false;
  std::string mtls_endpoint = "https://westus.mtlsauth.test/";
  std::deque<io::http_response> metadata_script;
  std::deque<io::http_response> issue_script;
  std::vector<seen> requests;
  std::vector<std::pair<io::completion, io::http_response>> pending;
  /// Attestation tokens issuecredential refuses (as if signed by a rotated key).
  std::vector<std::string> refused_attestation;

private:
  io::http_response answer(const io::http_request& req) {
    auto parts = io::split_url(req.url);
    auto path = parts ? parts->path : std::string{};
    if (path == metadata_path) {
      if (!metadata_script.empty()) {
        auto r = metadata_script.front();
        metadata_script.pop_front();
        return r;
      }
      return io::http_response::with_status(
        200,
        std::string(R"({"cuId":{"vmId":"5c8b3a7e-1f2d-4e6a-9b8c-7d6e5f4a3b2c"},"clientId":")") +
          client_id + R"(","tenantId":")" + tenant +
          R"(","attestationEndpoint":"https://127.0.0.1:8443"})",
        imds_headers());
    }
    if (path == issue_path) {
      if (!issue_script.empty()) {
        auto r = issue_script.front();
        issue_script.pop_front();
        return r;
      }
      auto doc = io::json_object::parse(req.body, "issuecredential request");
      if (!doc)
        return error(400, doc.error());
      auto csr_b64 = doc->required_string("csr");
      if (!csr_b64)
        return error(400, "csr is missing");
      auto att = doc->optional_string("attestation_token");
      if (require_attestation && (!att || !*att || (*att)->empty()))
        return error(400, "Attestation Token is missing / empty in the issue credential request");
      if (att && *att)
        for (auto& bad : refused_attestation)
          if (**att == bad)
            return error(400, "attestation token signature does not verify with the attestation "
                              "service key");
      auto der = platform::base64_decode(*csr_b64);
      if (!der)
        return error(400, "csr is not valid base64");
      auto csr = platform::parse_csr(*der);
      if (!csr)
        return error(400, csr.error());
      if (!platform::verify_csr_signature(*csr))
        return error(400, "CSR signature does not verify");
      auto subject = platform::public_key_from_der(csr->spki_der);
      platform::issue_params p;
      p.subject_key = certify_other_key ? ca_key_.get() : subject->get();
      p.subject_cn = csr->client_id;
      p.subject_dc = csr->tenant_id;
      p.not_before = now_s_();
      p.not_after = now_s_() + cert_lifetime_s;
      if (token_not_after_s > 0)
        p.token_not_after = now_s_() + token_not_after_s;
      p.client_auth = true;
      auto cert = platform::issue_certificate(p, ca_cert_.get(), ca_key_.get());
      std::string body = "{\"client_id\":" + platform::json_quote(client_id) +
                         ",\"tenant_id\":" + platform::json_quote(tenant) +
                         ",\"certificate\":" + platform::json_quote(platform::base64_encode(*cert)) +
                         ",\"identity_type\":\"SystemAssigned\"" +
                         ",\"mtls_authentication_endpoint\":" + platform::json_quote(mtls_endpoint) +
                         "}";
      return io::http_response::with_status(200, body, imds_headers());
    }
    return io::http_response::failure(io::transport_error::other, "unexpected request " + req.url);
  }

  std::function<std::int64_t()> now_s_;
  platform::pkey_ptr ca_key_;
  platform::x509_ptr ca_cert_;
};

/// What the peer doubles saw.
struct peer_log {
  std::vector<attestation_request> attest_requests;
  std::vector<std::pair<std::string, std::string>> attest_evictions;
  std::vector<std::pair<std::string, std::int64_t>> schedules;
  std::vector<std::string> cancels;
  int attest_count = 0;
};

// The peer doubles are dynamically typed (cast to the typed handles): they implement only
// what cert_issuer uses, so internal handlers the peers' owners add don't concern them.

caf::behavior attestation_double(caf::event_based_actor*, std::shared_ptr<peer_log> log,
                                 std::function<std::int64_t()> now_ms) {
  return {
    [=](attest_atom, attestation_request& req) {
      log->attest_requests.push_back(req);
      attestation_token t;
      t.jwt = "att-jwt-" + std::to_string(++log->attest_count);
      t.issued_at_ms = now_ms();
      t.expires_at_ms = t.issued_at_ms + 3600'000;
      return t;
    },
    [=](evict_atom, std::string& endpoint, std::string& key_id) {
      log->attest_evictions.emplace_back(endpoint, key_id);
    },
  };
}

caf::behavior timer_double(caf::event_based_actor*, std::shared_ptr<peer_log> log) {
  return {
    [=](schedule_atom, std::string& id, std::int64_t at, caf::actor&) {
      log->schedules.emplace_back(id, at);
    },
    [=](cancel_atom, std::string& id) { log->cancels.push_back(id); },
  };
}

struct cert_fixture : test::actor_fixture {
  cert_fixture()
    : imds(std::make_shared<imds_double>([this] { return wall_ms() / 1000; })),
      log(std::make_shared<peer_log>()) {}

  /// Spawns cert_issuer with a real key_manager (inline key store) and the peer doubles.
  cert_issuer spawn(bool with_attestation = false, std::shared_ptr<key_store> own_keys = nullptr) {
    auto d = std::make_shared<runtime_deps>(*deps());
    if (own_keys)
      d->keys = std::move(own_keys); // another process, with a key of its own
    d->transport = imds;
    d->files = real_files ? real_files : std::shared_ptr<artifact_store>(files);
    if (with_attestation)
      d->attestation = std::make_shared<dummy_provider>();
    deps_ptr dp = d;
    auto w = std::make_shared<wiring>();
    w->keys = keep(sys.spawn(key_manager_impl, dp));
    w->attestation = caf::actor_cast<attestation_cache>(
      keep(sys.spawn(attestation_double, log, [this] { return wall_ms(); })));
    w->timer = caf::actor_cast<renewal_timer>(keep(sys.spawn(timer_double, log)));
    key_actor = w->keys;
    auto ci = keep(sys.spawn(cert_issuer_impl, dp));
    w->certs = ci;
    caf::anon_send(ci, wire_atom::value, wiring_ptr(w));
    run();
    return ci;
  }

  std::shared_ptr<test::outcome<credential_ptr>> get(const cert_issuer& ci,
                                                     managed_identity id = managed_identity::system(),
                                                     std::string refused = {},
                                                     std::chrono::nanoseconds timeout = 60s) {
    credential_request req;
    req.identity = std::move(id);
    req.due = due_in(timeout);
    req.refused_x5t = std::move(refused);
    return request<credential_ptr>(ci, caf::get_atom::value, req);
  }

  credential_ptr get_ok(const cert_issuer& ci) {
    auto got = get(ci);
    run();
    BOOST_REQUIRE_MESSAGE(got->value, "no credential: " << render(got->error));
    return *got->value;
  }

  // Never called: its presence makes cert_issuer ask attestation_cache.
  struct dummy_provider : attestation_provider {
    void attest(const key_ref&, const std::string&, const std::string&, std::chrono::milliseconds,
                std::function<void(result<attestation_token>, int)> done) override {
      done(fail("not used"), 0);
    }
  };

  ~cert_fixture() { imds->shutdown(); }

  /// Another process of this user, without a cache directory: mints its own certificate
  /// (through the same IMDS double and key) and returns it.
  credential_ptr mint_elsewhere() {
    auto keep_files = files;
    files = nullptr;
    auto other = spawn();
    files = keep_files;
    return get_ok(other);
  }

  /// The certificate file of the system-assigned identity (not attested) for key `key_id`.
  std::string cert_file_for(const std::string& key_id) const {
    return persisted::certificate_file_name(
      persisted::certificate_artifact_id(config.imds_base_url,
                                         certificate_cache_key(managed_identity::system(), false)),
      key_id);
  }
  /// The same for the fixture key store's current key (made now when there is none yet: the
  /// inline store then hands the same key to the actors).
  std::string cert_file() const {
    std::string id;
    keys->load_or_create([&](result<key_ref> k) {
      BOOST_REQUIRE_MESSAGE(k, "no key: " << (k ? "" : k.error()));
      id = k->key_id;
    });
    return cert_file_for(id);
  }
  /// The certificate file's bytes for `c` (as another process would write them).
  std::string file_of(const credential& c) const {
    return persisted::encode_certificate(
      c,
      persisted::certificate_artifact_id(config.imds_base_url,
                                         certificate_cache_key(managed_identity::system(), false)),
      wall_ms());
  }
  /// The x5t#S256 of the certificate in the file, decoded for `key` ("" when refused).
  std::string file_x5t(const key_ref& key) {
    auto i = files->files.find(cert_file());
    if (i == files->files.end())
      return {};
    auto d = persisted::decode_certificate(
      i->second,
      persisted::certificate_artifact_id(config.imds_base_url,
                                         certificate_cache_key(managed_identity::system(), false)),
      key, wall_ms() / 1000, config.token_endpoint_hosts);
    return d ? d.value->x5t_s256 : std::string{};
  }

  std::shared_ptr<test::memory_artifact_store> files;
  /// A real cache directory (file_artifact_store in inline mode); wins over `files`.
  std::shared_ptr<artifact_store> real_files;

  std::shared_ptr<imds_double> imds;
  std::shared_ptr<peer_log> log;
  key_manager key_actor;
};

error_code code_of(const caf::error& e) {
  return describe(e).code;
}

std::uint64_t counter(cert_fixture& f, const std::string& name) {
  return f.stats->snapshot().counters[name];
}

} // namespace

BOOST_AUTO_TEST_SUITE(actors_cert_issuer_test)

BOOST_FIXTURE_TEST_CASE(cold_mint_sends_metadata_then_issuecredential_with_a_valid_csr,
                        cert_fixture) {
  auto ci = spawn();
  auto cred = get_ok(ci);
  BOOST_REQUIRE_EQUAL(imds->requests.size(), 2u);
  auto& meta = imds->requests[0].request;
  auto& issue = imds->requests[1].request;
  BOOST_CHECK_EQUAL(imds->requests[0].path(), metadata_path);
  BOOST_CHECK_EQUAL(imds->requests[1].path(), issue_path);
  BOOST_CHECK_EQUAL(meta.method, "GET");
  BOOST_CHECK_EQUAL(issue.method, "POST");
  BOOST_CHECK_EQUAL(std::string(*meta.headers.get("Metadata")), "true");
  BOOST_CHECK_EQUAL(std::string(*issue.headers.get("Metadata")), "true");
  auto rid = meta.headers.get("x-ms-client-request-id");
  BOOST_REQUIRE(rid);
  BOOST_CHECK(platform::is_guid(*rid));
  BOOST_CHECK_EQUAL(std::string(*issue.headers.get("x-ms-client-request-id")), std::string(*rid));
  BOOST_CHECK_EQUAL(imds->requests[0].query("cred-api-version").value_or(""), "2.0");
  BOOST_CHECK(!imds->requests[1].query("bypass_cache"));

  auto body = io::json_object::parse(issue.body, "issuecredential request");
  BOOST_REQUIRE(body);
  BOOST_CHECK(!body->has("attestation_token"));
  auto der = platform::base64_decode(*body->required_string("csr"));
  BOOST_REQUIRE(der);
  auto csr = platform::parse_csr(*der);
  BOOST_REQUIRE_MESSAGE(csr, (csr ? "" : csr.error()));
  BOOST_CHECK_EQUAL(csr->client_id, client_a);
  BOOST_CHECK_EQUAL(csr->tenant_id, tenant);
  BOOST_CHECK_EQUAL(csr->cuid_json, R"({"vmId":"5c8b3a7e-1f2d-4e6a-9b8c-7d6e5f4a3b2c"})");

  BOOST_CHECK_EQUAL(cred->client_id, client_a);
  BOOST_CHECK_EQUAL(cred->mtls_endpoint, "https://westus.mtlsauth.test");
  BOOST_CHECK_EQUAL(cred->x5t_s256, platform::x5t_s256(cred->certificate_der));
  BOOST_CHECK_EQUAL(cred->not_after_ms - cred->not_before_ms, cert_lifetime_s * 1000);
  BOOST_CHECK_EQUAL(cred->key.spki_der, csr->spki_der);
  BOOST_CHECK(!cred->attested);
  // Renewal at half-life (the test draw gives zero jitter).
  BOOST_REQUIRE_EQUAL(log->schedules.size(), 1u);
  BOOST_CHECK_EQUAL(log->schedules[0].second, cred->not_before_ms + cert_lifetime_s * 500);
  BOOST_CHECK_EQUAL(counter(*this, "msiv2_upstream_requests_total{upstream=\"imds_issue\",status=\"200\"}"), 1u);
}

BOOST_FIXTURE_TEST_CASE(key_is_requested_before_the_metadata_answer_arrives, cert_fixture) {
  imds->manual = true;
  auto ci = spawn();
  auto got = get(ci);
  run();
  BOOST_CHECK_EQUAL(imds->pending.size(), 1u); // metadata call not answered yet
  BOOST_CHECK_EQUAL(keys->creates, 1);         // ... and the key is already made
  imds->deliver_all();
  run();
  imds->deliver_all();
  run();
  BOOST_REQUIRE(got->value);
}

BOOST_FIXTURE_TEST_CASE(n_concurrent_requests_share_one_metadata_call_and_one_issuance,
                        cert_fixture) {
  imds->manual = true;
  auto ci = spawn();
  std::vector<std::shared_ptr<test::outcome<credential_ptr>>> got;
  for (int i = 0; i < 6; ++i)
    got.push_back(get(ci));
  run();
  imds->deliver_all();
  run();
  imds->deliver_all();
  run();
  BOOST_CHECK_EQUAL(imds->count(metadata_path), 1u);
  BOOST_CHECK_EQUAL(imds->count(issue_path), 1u);
  for (auto& g : got) {
    BOOST_REQUIRE(g->value);
    BOOST_CHECK(*g->value == *got.front()->value);
  }
}

BOOST_FIXTURE_TEST_CASE(warm_request_makes_one_metadata_call_and_no_issuance, cert_fixture) {
  auto ci = spawn();
  auto first = get_ok(ci);
  advance(1h);
  auto second = get_ok(ci);
  BOOST_CHECK(first == second);
  BOOST_CHECK_EQUAL(imds->count(metadata_path), 2u);
  BOOST_CHECK_EQUAL(imds->count(issue_path), 1u);
  BOOST_CHECK_EQUAL(counter(*this, "msiv2_cache_hits_total{artifact=\"certificate\"}"), 1u);
}

BOOST_FIXTURE_TEST_CASE(reassigned_identity_gets_a_new_certificate, cert_fixture) {
  auto ci = spawn();
  auto first = get_ok(ci);
  imds->client_id = client_b;
  auto second = get_ok(ci);
  BOOST_CHECK_EQUAL(imds->count(issue_path), 2u);
  BOOST_CHECK_EQUAL(second->client_id, client_b);
  BOOST_CHECK_NE(second->x5t_s256, first->x5t_s256);
  BOOST_CHECK_EQUAL(log->cancels.size(), 1u);
}

BOOST_FIXTURE_TEST_CASE(user_assigned_identity_uses_its_selector, cert_fixture) {
  auto ci = spawn();
  auto got = get(ci, managed_identity::by_resource_id("/subscriptions/s/resourceGroups/g/x"));
  run();
  BOOST_REQUIRE(got->value);
  for (auto& s : imds->requests) {
    BOOST_CHECK_EQUAL(s.query("mi_res_id").value_or(""), "/subscriptions/s/resourceGroups/g/x");
    BOOST_CHECK(!s.query("msi_res_id"));
  }
  auto by_client = get(ci, managed_identity::by_client_id(client_a));
  run();
  BOOST_REQUIRE(by_client->value);
  BOOST_CHECK_EQUAL(imds->requests.back().query("client_id").value_or(""), client_a);
}

BOOST_FIXTURE_TEST_CASE(metadata_404_after_retries_is_v1_only_host, cert_fixture) {
  for (int i = 0; i < 4; ++i)
    imds->metadata_script.push_back(imds_double::error(404, "The requested path is not found"));
  auto ci = spawn();
  auto got = get(ci);
  run();
  advance(1s);
  advance(2s);
  BOOST_CHECK(!got->answered());
  advance(4s);
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::v1_only_host);
  BOOST_CHECK_EQUAL(describe(got->error).http_status, 404);
  BOOST_CHECK_EQUAL(imds->count(metadata_path), 4u);
  BOOST_CHECK_EQUAL(imds->count(issue_path), 0u);
}

BOOST_FIXTURE_TEST_CASE(connection_refused_before_imds_ever_answered_is_imds_unavailable_at_once,
                        cert_fixture) {
  // No probe in front of the mtls_pop path: getplatformmetadata is the first contact.
  imds->metadata_script.push_back(
    io::http_response::failure(io::transport_error::connect_failed, "could not connect"));
  auto ci = spawn();
  auto got = get(ci);
  run();
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::imds_unavailable);
  BOOST_CHECK_NE(describe(got->error).description.find("no usable IMDS"), std::string::npos);
  BOOST_CHECK_EQUAL(imds->count(metadata_path), 1u); // a refused connection is final
}

BOOST_FIXTURE_TEST_CASE(short_connect_timeout_applies_until_imds_answered_once, cert_fixture) {
  auto ci = spawn();
  get_ok(ci);
  advance(1s);
  get_ok(ci);
  auto calls = imds->of(metadata_path);
  BOOST_REQUIRE_EQUAL(calls.size(), 2u);
  BOOST_CHECK(calls[0].request.connect_timeout == config.probe_connect_timeout);
  BOOST_CHECK(calls[1].request.connect_timeout > config.probe_connect_timeout);
}

BOOST_FIXTURE_TEST_CASE(imds_calls_carry_the_request_correlation_id_and_telemetry, cert_fixture) {
  auto ci = spawn();
  credential_request req;
  req.identity = managed_identity::system();
  req.due = due_in(60s);
  req.correlation_id = "request-7";
  auto got = request<credential_ptr>(ci, caf::get_atom::value, req);
  run();
  BOOST_REQUIRE(got->value);
  BOOST_REQUIRE_EQUAL(imds->requests.size(), 2u);
  for (auto& s : imds->requests) {
    BOOST_CHECK(s.request.headers.get("x-ms-client-request-id") == std::string_view("request-7"));
    BOOST_CHECK(s.request.headers.get("x-client-SKU") == std::string_view(client_sku));
    BOOST_CHECK(s.request.headers.get("x-client-OS").has_value());
  }
}

BOOST_FIXTURE_TEST_CASE(token_not_after_bounds_the_certificate_and_its_renewal, cert_fixture) {
  imds->token_not_after_s = 3600; // the token window closes long before notAfter
  auto ci = spawn();
  auto cred = get_ok(ci);
  BOOST_CHECK_EQUAL(cred->token_not_after_ms, cred->not_before_ms + 3600 * 1000);
  BOOST_CHECK_EQUAL(cred->usable_until_ms(), cred->token_not_after_ms);
  // Renewal at half of the token window, not of the certificate's lifetime.
  BOOST_REQUIRE_EQUAL(log->schedules.size(), 1u);
  BOOST_CHECK_EQUAL(log->schedules[0].second, cred->not_before_ms + 1800 * 1000);
}

BOOST_FIXTURE_TEST_CASE(metadata_timed_out_at_the_deadline_is_deadline_exceeded, cert_fixture) {
  // The transfer timeout is clipped to what is left of the deadline; when it fires, the caller
  // ran out of time: deadline_exceeded, not metadata_failed (found against the simulator).
  imds->manual = true;
  imds->metadata_script.push_back(
    io::http_response::failure(io::transport_error::timeout, "no complete response in time"));
  auto ci = spawn();
  auto got = get(ci, managed_identity::system(), {}, 1500ms);
  run();
  advance(1498ms);
  imds->deliver_all();
  run();
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::deadline_exceeded);
}

BOOST_FIXTURE_TEST_CASE(metadata_without_server_header_is_metadata_failed, cert_fixture) {
  io::http_headers no_server;
  no_server.set("Content-Type", "application/json");
  imds->metadata_script.push_back(io::http_response::with_status(
    200,
    std::string(R"({"cuId":{"vmId":"x"},"clientId":")") + client_a + R"(","tenantId":")" + tenant +
      R"(","attestationEndpoint":"https://a"})",
    no_server));
  auto ci = spawn();
  auto got = get(ci);
  run();
  BOOST_REQUIRE(got->error);
  auto info = describe(got->error);
  BOOST_CHECK(info.code == error_code::metadata_failed);
  BOOST_CHECK_EQUAL(info.http_status, 200);
  BOOST_CHECK(platform::is_guid(info.correlation_id));
  BOOST_CHECK_NE(info.description.find("Server"), std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(metadata_missing_member_is_metadata_failed, cert_fixture) {
  imds->metadata_script.push_back(io::http_response::with_status(
    200, std::string(R"({"cuId":{"vmId":"x"},"clientId":")") + client_a + R"(","tenantId":")" +
           tenant + R"("})",
    imds_double::imds_headers()));
  auto ci = spawn();
  auto got = get(ci);
  run();
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::metadata_failed);
  BOOST_CHECK_NE(describe(got->error).description.find("attestationEndpoint"), std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(unknown_identity_is_identity_not_found, cert_fixture) {
  imds->metadata_script.push_back(imds_double::error(400, "Identity not found"));
  auto ci = spawn();
  auto got = get(ci, managed_identity::by_client_id(client_b));
  run();
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::identity_not_found);
  BOOST_CHECK_EQUAL(describe(got->error).http_status, 400);
  BOOST_CHECK_EQUAL(imds->requests[0].query("client_id").value_or(""), client_b);
}

BOOST_FIXTURE_TEST_CASE(refused_x5t_evicts_and_mints_with_bypass_cache, cert_fixture) {
  auto ci = spawn();
  auto first = get_ok(ci);
  auto got = get(ci, managed_identity::system(), first->x5t_s256);
  run();
  BOOST_REQUIRE(got->value);
  BOOST_CHECK_NE((*got->value)->x5t_s256, first->x5t_s256);
  auto issues = imds->of(issue_path);
  BOOST_REQUIRE_EQUAL(issues.size(), 2u);
  BOOST_CHECK(!issues[0].query("bypass_cache"));
  BOOST_CHECK_EQUAL(issues[1].query("bypass_cache").value_or(""), "true");
  // A stale refusal (the certificate was already replaced) serves the new one, no issuance.
  auto stale = get(ci, managed_identity::system(), first->x5t_s256);
  run();
  BOOST_REQUIRE(stale->value);
  BOOST_CHECK(*stale->value == *got->value);
  BOOST_CHECK_EQUAL(imds->count(issue_path), 2u);
}

BOOST_FIXTURE_TEST_CASE(due_certificate_is_served_and_renewed_in_the_background, cert_fixture) {
  auto ci = spawn();
  auto first = get_ok(ci);
  advance(std::chrono::seconds(cert_lifetime_s / 2 + 60)); // past renew_at, well before expiry
  imds->manual = true;
  auto got = get(ci);
  run();
  imds->deliver_all(); // metadata
  run();
  BOOST_REQUIRE(got->value);
  BOOST_CHECK(*got->value == first); // served at once, before the new certificate exists
  BOOST_CHECK_EQUAL(imds->count(issue_path), 2u);
  // While the renewal is under way, callers get the usable certificate without waiting.
  auto meanwhile = get(ci);
  run();
  BOOST_REQUIRE(meanwhile->value);
  BOOST_CHECK(*meanwhile->value == first);
  BOOST_CHECK_EQUAL(imds->count(metadata_path), 2u);
  imds->deliver_all(); // the background issuance
  run();
  imds->manual = false;
  auto next = get_ok(ci);
  BOOST_CHECK_NE(next->x5t_s256, first->x5t_s256);
  BOOST_CHECK_EQUAL(imds->count(issue_path), 2u);
  BOOST_CHECK_EQUAL(counter(*this, "msiv2_renewals_total{artifact=\"certificate\"}"), 1u);
}

BOOST_FIXTURE_TEST_CASE(timer_renewal_mints_in_the_background, cert_fixture) {
  auto ci = spawn();
  auto first = get_ok(ci);
  advance(std::chrono::seconds(cert_lifetime_s / 2));
  BOOST_REQUIRE_EQUAL(log->schedules.size(), 1u);
  caf::anon_send(ci, renew_atom::value, log->schedules[0].first);
  run();
  BOOST_CHECK_EQUAL(imds->count(issue_path), 2u);
  BOOST_CHECK_EQUAL(log->schedules.size(), 2u);
  auto next = get_ok(ci);
  BOOST_CHECK_NE(next->x5t_s256, first->x5t_s256);
}

BOOST_FIXTURE_TEST_CASE(expired_certificate_waits_for_the_renewal, cert_fixture) {
  auto ci = spawn();
  auto first = get_ok(ci);
  advance(std::chrono::seconds(cert_lifetime_s - 240)); // inside the 5-minute margin
  imds->manual = true;
  auto got = get(ci);
  run();
  imds->deliver_all(); // metadata
  run();
  BOOST_CHECK(!got->answered());
  imds->deliver_all(); // issuance
  run();
  BOOST_REQUIRE(got->value);
  BOOST_CHECK_NE((*got->value)->x5t_s256, first->x5t_s256);
}

BOOST_FIXTURE_TEST_CASE(failed_renewal_keeps_serving_the_usable_certificate, cert_fixture) {
  auto ci = spawn();
  auto first = get_ok(ci);
  advance(std::chrono::seconds(cert_lifetime_s / 2 + 60));
  imds->issue_script.push_back(imds_double::error(400, "CSR cuId attribute must equal the cuId"));
  auto got = get(ci);
  run();
  BOOST_REQUIRE(got->value);
  BOOST_CHECK(*got->value == first);
  BOOST_CHECK_EQUAL(imds->count(issue_path), 2u);
  // The failure rescheduled the renewal at a draw in the first backoff step's full-jitter
  // window, [1 ms, 30 s] (io::renewal_retry_delay): the fixture draws the midpoint, 15 s. The
  // certificate stays.
  BOOST_REQUIRE_EQUAL(log->schedules.size(), 2u);
  BOOST_CHECK_EQUAL(log->schedules[1].second, wall_ms() + 15'000);
  auto again = get(ci);
  run();
  BOOST_REQUIRE(again->value);
  BOOST_CHECK_EQUAL(imds->count(issue_path), 3u); // still due: tries again in the background
  auto renewed = get_ok(ci);
  BOOST_CHECK_NE(renewed->x5t_s256, first->x5t_s256);
}

BOOST_FIXTURE_TEST_CASE(attested_mint_sends_the_attestation_token, cert_fixture) {
  imds->require_attestation = true;
  auto ci = spawn(true);
  auto cred = get_ok(ci);
  BOOST_CHECK(cred->attested);
  BOOST_REQUIRE_EQUAL(log->attest_requests.size(), 1u);
  BOOST_CHECK_EQUAL(log->attest_requests[0].client_id, client_a);
  BOOST_CHECK_EQUAL(log->attest_requests[0].endpoint, "https://127.0.0.1:8443");
  BOOST_CHECK(!log->attest_requests[0].refuse_cached);
  auto body = io::json_object::parse(imds->of(issue_path)[0].request.body, "request");
  BOOST_CHECK_EQUAL(*body->required_string("attestation_token"), "att-jwt-1");
}

BOOST_FIXTURE_TEST_CASE(attestation_rejection_reattests_once_and_retries, cert_fixture) {
  imds->require_attestation = true;
  imds->refused_attestation = {"att-jwt-1"};
  auto ci = spawn(true);
  auto cred = get_ok(ci);
  BOOST_CHECK(cred->attested);
  BOOST_REQUIRE_EQUAL(log->attest_requests.size(), 2u);
  BOOST_CHECK(log->attest_requests[1].refuse_cached);
  BOOST_REQUIRE_EQUAL(log->attest_evictions.size(), 1u);
  BOOST_CHECK_EQUAL(log->attest_evictions[0].second, cred->key.key_id);
  BOOST_CHECK_EQUAL(imds->count(issue_path), 2u);
  // A second rejection is not remediated again.
  imds->refused_attestation = {"att-jwt-3", "att-jwt-4"};
  auto next = get(ci, managed_identity::by_client_id(client_a));
  run();
  BOOST_REQUIRE(next->error);
  BOOST_CHECK(code_of(next->error) == error_code::issuance_refused);
  BOOST_CHECK_EQUAL(log->attest_requests.size(), 4u);
}

BOOST_FIXTURE_TEST_CASE(imds_503_503_200_is_retried_after_1s_and_2s, cert_fixture) {
  imds->metadata_script.push_back(imds_double::error(503, "busy"));
  imds->metadata_script.push_back(imds_double::error(503, "busy"));
  auto ci = spawn();
  auto got = get(ci);
  run();
  BOOST_CHECK_EQUAL(imds->count(metadata_path), 1u);
  advance(999ms);
  BOOST_CHECK_EQUAL(imds->count(metadata_path), 1u);
  advance(1ms);
  BOOST_CHECK_EQUAL(imds->count(metadata_path), 2u);
  advance(1999ms);
  BOOST_CHECK(!got->answered());
  advance(1ms);
  BOOST_REQUIRE(got->value);
  BOOST_CHECK_EQUAL(imds->count(metadata_path), 3u);
  BOOST_CHECK_EQUAL(counter(*this, "msiv2_retries_total{upstream=\"imds\"}"), 2u);
}

BOOST_FIXTURE_TEST_CASE(caller_deadline_is_answered_while_the_flight_goes_on, cert_fixture) {
  imds->manual = true;
  auto ci = spawn();
  auto got = get(ci, managed_identity::system(), {}, 2s);
  run();
  advance(2s);
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::deadline_exceeded);
}

BOOST_FIXTURE_TEST_CASE(evict_drops_the_certificate, cert_fixture) {
  auto ci = spawn();
  auto first = get_ok(ci);
  caf::anon_send(ci, evict_atom::value, managed_identity::system());
  run();
  BOOST_CHECK_EQUAL(log->cancels.size(), 1u);
  auto second = get_ok(ci);
  BOOST_CHECK_NE(second->x5t_s256, first->x5t_s256);
  BOOST_CHECK_EQUAL(imds->count(issue_path), 2u);
}

BOOST_FIXTURE_TEST_CASE(certificate_of_a_rotated_key_is_replaced, cert_fixture) {
  auto ci = spawn();
  auto first = get_ok(ci);
  auto rotated = request<key_ref>(key_actor, rotate_atom::value, first->key.key_id);
  run();
  BOOST_REQUIRE(rotated->value);
  auto second = get_ok(ci);
  BOOST_CHECK_EQUAL(second->key.key_id, rotated->value->key_id);
  BOOST_CHECK_NE(second->x5t_s256, first->x5t_s256);
}

BOOST_FIXTURE_TEST_CASE(certificate_for_another_key_is_refused_and_the_key_rotated, cert_fixture) {
  imds->certify_other_key = true;
  auto ci = spawn();
  auto got = get(ci);
  run();
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::issuance_refused);
  BOOST_CHECK_EQUAL(keys->rotations, 1);
}

BOOST_FIXTURE_TEST_CASE(issued_credential_must_match_metadata_and_use_an_https_endpoint,
                        cert_fixture) {
  imds->mtls_endpoint = "http://westus.mtlsauth.test";
  auto ci = spawn();
  auto got = get(ci);
  run();
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::issuance_refused);
  BOOST_CHECK_NE(describe(got->error).description.find("https"), std::string::npos);

  imds->mtls_endpoint = "https://user:pw@westus.mtlsauth.test";
  got = get(ci);
  run();
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::issuance_refused);

  imds->mtls_endpoint = "https://westus.mtlsauth.test";
  imds->issue_script.push_back(io::http_response::with_status(
    200,
    std::string(R"({"client_id":")") + client_b + R"(","tenant_id":")" + tenant +
      R"(","certificate":"AAAA","identity_type":"SystemAssigned","mtls_authentication_endpoint":"https://x"})",
    imds_double::imds_headers()));
  got = get(ci);
  run();
  BOOST_REQUIRE(got->error);
  BOOST_CHECK(code_of(got->error) == error_code::issuance_refused);
  BOOST_CHECK_NE(describe(got->error).description.find("client_id"), std::string::npos);

  auto ok = get_ok(ci);
  BOOST_CHECK_EQUAL(ok->mtls_endpoint, "https://westus.mtlsauth.test");
}

// Review L1: the identity (embedder text) never becomes label text.
BOOST_FIXTURE_TEST_CASE(certificate_gauges_label_identities_by_hash_only, cert_fixture) {
  auto ci = spawn();
  auto got = get(ci, managed_identity::by_resource_id(R"(/subscriptions/a"b\c)"));
  run();
  BOOST_REQUIRE_MESSAGE(got->value, render(got->error));
  auto text = to_prometheus(stats->snapshot());
  BOOST_CHECK(text.find("a\"b") == std::string::npos);
  BOOST_CHECK(text.find("subscriptions") == std::string::npos);
  BOOST_CHECK(text.find("msiv2_expiry_seconds{artifact=\"certificate\",id=\"") != std::string::npos);
}

// Review M3: an IMDS answer alone cannot send our certificate to a host off the allow-list.
BOOST_FIXTURE_TEST_CASE(a_token_endpoint_off_the_allow_list_is_refused, cert_fixture) {
  auto ci = spawn();
  for (const char* url : {"https://evil.example", "https://1.2.3.4",
                          "https://x.mtlsauth.test.evil.example", "https://x/y?",
                          "https://westus.mtlsauth.test/some/path"}) {
    imds->mtls_endpoint = url;
    auto got = get(ci);
    run();
    BOOST_REQUIRE_MESSAGE(got->error, url);
    BOOST_CHECK(code_of(got->error) == error_code::issuance_refused);
    BOOST_CHECK_MESSAGE(describe(got->error).description.find("is not trusted") != std::string::npos,
                        describe(got->error).description);
  }
  imds->mtls_endpoint = "https://EastUS.mtlsauth.test/";
  BOOST_CHECK_EQUAL(get_ok(ci)->mtls_endpoint, "https://eastus.mtlsauth.test");
}

BOOST_FIXTURE_TEST_CASE(an_attestation_endpoint_off_the_allow_list_is_metadata_failed,
                        cert_fixture) {
  imds->require_attestation = true;
  imds->metadata_script.push_back(io::http_response::with_status(
    200,
    std::string(R"({"cuId":{"vmId":"x"},"clientId":")") + client_a + R"(","tenantId":")" + tenant +
      R"(","attestationEndpoint":"http://127.0.0.1:8443"})",
    imds_double::imds_headers()));
  imds->metadata_script.push_back(io::http_response::with_status(
    200,
    std::string(R"({"cuId":{"vmId":"x"},"clientId":")") + client_a + R"(","tenantId":")" + tenant +
      R"(","attestationEndpoint":"https://attest.evil.example"})",
    imds_double::imds_headers()));
  auto ci = spawn(true);
  for (const char* why : {"https URL", "not on the allow-list"}) {
    auto got = get(ci);
    run();
    BOOST_REQUIRE(got->error);
    BOOST_CHECK(code_of(got->error) == error_code::metadata_failed);
    BOOST_CHECK_MESSAGE(describe(got->error).description.find(why) != std::string::npos,
                        describe(got->error).description);
  }
  BOOST_CHECK(log->attest_requests.empty()); // the key's attestation request never left
  BOOST_CHECK_EQUAL(imds->count(issue_path), 0u);
  BOOST_CHECK(get_ok(ci)->attested);
}

// -- persistence (runtime_deps::files) -----------------------------------------------------------

using call = test::memory_artifact_store::call;

BOOST_FIXTURE_TEST_CASE(minted_certificate_is_written_under_the_lock, cert_fixture) {
  files = std::make_shared<test::memory_artifact_store>();
  config.lock_wait = 3s;
  auto ci = spawn();
  auto cred = get_ok(ci);
  BOOST_CHECK_EQUAL(files->count(call::kind::read, cert_file()), 1u);
  BOOST_REQUIRE_EQUAL(files->count(call::kind::lock_and_read, cert_file()), 1u);
  BOOST_REQUIRE_EQUAL(files->count(call::kind::write, cert_file()), 1u);
  for (auto& c : files->calls) {
    if (c.what == call::kind::lock_and_read)
      BOOST_CHECK(c.wait == 3s);
    if (c.what == call::kind::write)
      BOOST_CHECK(c.with_lock);
  }
  BOOST_CHECK(!files->locked_by_us(cert_file())); // released once written
  BOOST_CHECK_EQUAL(file_x5t(cred->key), cred->x5t_s256);
  // The file never holds an access token nor the key: only public material and metadata.
  auto& bytes = files->files[cert_file()];
  BOOST_CHECK(bytes.find("PRIVATE") == std::string::npos);
  BOOST_CHECK(bytes.find(client_a) != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(cold_start_with_a_disk_certificate_makes_no_issuecredential, cert_fixture) {
  files = std::make_shared<test::memory_artifact_store>();
  auto first = spawn();
  auto minted = get_ok(first);
  BOOST_REQUIRE_EQUAL(imds->count(issue_path), 1u);
  // A restarted process: one metadata call, the file, no issuance, no lock.
  auto restarted = spawn();
  auto locks_before = files->count(call::kind::lock_and_read);
  auto cred = get_ok(restarted);
  BOOST_CHECK_EQUAL(imds->count(issue_path), 1u);
  BOOST_CHECK_EQUAL(imds->count(metadata_path), 2u);
  BOOST_CHECK_EQUAL(files->count(call::kind::lock_and_read), locks_before);
  BOOST_CHECK_EQUAL(cred->x5t_s256, minted->x5t_s256);
  BOOST_CHECK_EQUAL(cred->mtls_endpoint, minted->mtls_endpoint);
  BOOST_CHECK_EQUAL(cred->metadata.cuid_json, minted->metadata.cuid_json);
  BOOST_CHECK(cred->key.key == minted->key.key);
  BOOST_CHECK_EQUAL(
    counter(*this, "msiv2_cache_hits_total{artifact=\"certificate\",source=\"disk\"}"), 1u);
  // Adopted with this process's own plan: a renewal timer is scheduled for it too.
  BOOST_CHECK_EQUAL(log->schedules.size(), 2u);
  // Next request: memory, no new read of the file.
  auto reads = files->count(call::kind::read);
  get_ok(restarted);
  BOOST_CHECK_EQUAL(files->count(call::kind::read), reads);
  BOOST_CHECK_EQUAL(imds->count(issue_path), 1u);
}

BOOST_FIXTURE_TEST_CASE(a_new_key_mints_into_its_own_file_and_leaves_the_old_keys_file,
                        cert_fixture) {
  files = std::make_shared<test::memory_artifact_store>();
  auto first = spawn();
  auto old = get_ok(first);
  const auto old_file = cert_file_for(old->key.key_id);
  const auto old_bytes = files->files[old_file];
  BOOST_REQUIRE(!old_bytes.empty());
  // The key was replaced (another boot, a rotation): the certificate file is named with the
  // key, so the new key's flight neither reads nor deletes the old key's (that is the key
  // store's job when it replaces the key file).
  keys->rotate(old->key.key_id, [](result<key_ref>) {});
  auto restarted = spawn();
  auto cred = get_ok(restarted);
  BOOST_CHECK_NE(cred->key.key_id, old->key.key_id);
  BOOST_CHECK_NE(cred->x5t_s256, old->x5t_s256);
  BOOST_CHECK_EQUAL(imds->count(issue_path), 2u);
  BOOST_CHECK_NE(cert_file(), old_file);
  BOOST_CHECK_EQUAL(files->count(call::kind::read, old_file), 1u); // the first flight's only
  BOOST_CHECK_EQUAL(files->count(call::kind::remove), 0u);
  BOOST_CHECK_EQUAL(files->files[old_file], old_bytes);
  BOOST_CHECK_EQUAL(persisted::key_id_of(files->files[cert_file()]), cred->key.key_id);
  BOOST_CHECK_EQUAL(file_x5t(cred->key), cred->x5t_s256);
  BOOST_CHECK_EQUAL(counter(*this, "msiv2_persistence_errors_total{artifact=\"certificate\"}"), 0u);
}

BOOST_FIXTURE_TEST_CASE(processes_with_different_keys_keep_their_own_files_through_renewals,
                        cert_fixture) {
  // Review M6: two processes of one user share the cache directory but hold different keys (one
  // went ahead alone, or has not reloaded a rotated key). Each renews through three periods
  // with one issuance per period and never deletes or overwrites the other's file.
  files = std::make_shared<test::memory_artifact_store>();
  auto a = spawn();
  auto b = spawn(false, std::make_shared<test::inline_key_store>());
  auto ca = get_ok(a);
  auto cb = get_ok(b);
  BOOST_REQUIRE_NE(ca->key.key_id, cb->key.key_id);
  const auto file_a = cert_file_for(ca->key.key_id);
  const auto file_b = cert_file_for(cb->key.key_id);
  BOOST_REQUIRE_NE(file_a, file_b);
  BOOST_CHECK_EQUAL(imds->count(issue_path), 2u);
  for (std::size_t period = 1; period <= 3; ++period) {
    advance(std::chrono::seconds(cert_lifetime_s / 2 + 60)); // due: served, renewed behind
    get_ok(a);
    get_ok(b);
    run();
    BOOST_CHECK_EQUAL(imds->count(issue_path), 2u + 2u * period);
    BOOST_CHECK_EQUAL(persisted::key_id_of(files->files[file_a]), ca->key.key_id);
    BOOST_CHECK_EQUAL(persisted::key_id_of(files->files[file_b]), cb->key.key_id);
  }
  BOOST_CHECK_EQUAL(files->count(call::kind::remove), 0u);
  BOOST_CHECK_EQUAL(file_x5t(ca->key), get_ok(a)->x5t_s256);
  BOOST_CHECK_NE(get_ok(a)->x5t_s256, ca->x5t_s256); // renewed
  BOOST_CHECK_EQUAL(counter(*this, "msiv2_persistence_errors_total{artifact=\"certificate\"}"), 0u);
}

BOOST_FIXTURE_TEST_CASE(corrupt_or_other_version_file_is_a_miss_deleted_under_the_lock,
                        cert_fixture) {
  files = std::make_shared<test::memory_artifact_store>();
  auto model = mint_elsewhere();
  auto good = file_of(*model);
  auto v2 = good;
  auto at = v2.find("\"version\":1");
  BOOST_REQUIRE(at != std::string::npos);
  v2.replace(at, 11, "\"version\":2");
  std::vector<std::string> bad = {"{\"schema\":", good.substr(0, good.size() / 2), v2, ""};
  std::size_t issues = imds->count(issue_path);
  for (auto& content : bad) {
    files->files[cert_file()] = content;
    files->calls.clear();
    auto ci = spawn();
    auto cred = get_ok(ci);
    BOOST_CHECK_EQUAL(imds->count(issue_path), ++issues);
    BOOST_REQUIRE_EQUAL(files->count(call::kind::remove, cert_file()), 1u);
    for (auto& c : files->calls)
      if (c.what == call::kind::remove)
        BOOST_CHECK(c.with_lock);
    BOOST_CHECK_EQUAL(file_x5t(cred->key), cred->x5t_s256);
  }
}

BOOST_FIXTURE_TEST_CASE(lock_not_had_in_time_mints_alone_and_writes_without_the_lock,
                        cert_fixture) {
  files = std::make_shared<test::memory_artifact_store>();
  files->refuse_locks = true;
  auto ci = spawn();
  auto cred = get_ok(ci);
  BOOST_CHECK_EQUAL(imds->count(issue_path), 1u);
  BOOST_REQUIRE_EQUAL(files->count(call::kind::write, cert_file()), 1u);
  for (auto& c : files->calls)
    if (c.what == call::kind::write)
      BOOST_CHECK(!c.with_lock);
  BOOST_CHECK_EQUAL(file_x5t(cred->key), cred->x5t_s256);
}

BOOST_FIXTURE_TEST_CASE(lock_wait_is_bounded_by_the_deadline_and_a_timed_out_wait_goes_alone,
                        cert_fixture) {
  files = std::make_shared<test::memory_artifact_store>();
  config.lock_wait = 10s;
  auto ci = spawn();
  files->hold(cert_file()); // another process is minting and does not finish in time
  auto got = get(ci, managed_identity::system(), {}, 4s);
  run();
  BOOST_CHECK(!got->answered());
  BOOST_REQUIRE_EQUAL(files->waiting(), 1u);
  for (auto& c : files->calls)
    if (c.what == call::kind::lock_and_read)
      BOOST_CHECK(c.wait <= 4s);
  files->time_out_waits();
  run();
  BOOST_REQUIRE_MESSAGE(got->value, "no credential: " << render(got->error));
  BOOST_CHECK_EQUAL(imds->count(issue_path), 1u);
}

BOOST_FIXTURE_TEST_CASE(another_process_renewed_while_we_waited_for_the_lock, cert_fixture) {
  files = std::make_shared<test::memory_artifact_store>();
  auto ci = spawn();
  auto first = get_ok(ci);
  advance(std::chrono::seconds(cert_lifetime_s / 2 + 60)); // due
  files->hold(cert_file());
  auto got = get(ci);
  run();
  BOOST_REQUIRE(got->value);
  BOOST_CHECK(*got->value == first); // due: served at once, renewal waits for the lock
  BOOST_REQUIRE_EQUAL(files->waiting(), 1u);
  auto renewed = mint_elsewhere(); // the lock holder renews and writes
  files->files[cert_file()] = file_of(*renewed);
  auto issues = imds->count(issue_path);
  files->let_go(cert_file());
  run();
  BOOST_CHECK_EQUAL(imds->count(issue_path), issues); // adopted, no upstream call
  BOOST_CHECK(!files->locked_by_us(cert_file()));
  BOOST_CHECK_EQUAL(files->count(call::kind::write), 1u); // only our first mint wrote
  auto next = get_ok(ci);
  BOOST_CHECK_EQUAL(next->x5t_s256, renewed->x5t_s256);
}

BOOST_FIXTURE_TEST_CASE(renewal_timer_after_another_process_renewed_adopts_the_file,
                        cert_fixture) {
  files = std::make_shared<test::memory_artifact_store>();
  auto ci = spawn();
  auto first = get_ok(ci);
  BOOST_REQUIRE_EQUAL(log->schedules.size(), 1u);
  advance(std::chrono::seconds(cert_lifetime_s / 2));
  auto renewed = mint_elsewhere();
  files->files[cert_file()] = file_of(*renewed);
  auto issues = imds->count(issue_path);
  auto schedules = log->schedules.size();
  caf::anon_send(ci, renew_atom::value, log->schedules[0].first);
  run();
  BOOST_CHECK_EQUAL(imds->count(issue_path), issues);
  BOOST_CHECK_EQUAL(log->schedules.size(), schedules + 1); // the adopted one's own timer
  BOOST_CHECK_EQUAL(log->schedules.back().second,
                    renewed->not_before_ms + cert_lifetime_s * 500);
  auto next = get_ok(ci);
  BOOST_CHECK_EQUAL(next->x5t_s256, renewed->x5t_s256);
  BOOST_CHECK_NE(next->x5t_s256, first->x5t_s256);
}

BOOST_FIXTURE_TEST_CASE(invalid_client_removes_the_file_and_never_readopts_the_refused_one,
                        cert_fixture) {
  files = std::make_shared<test::memory_artifact_store>();
  auto ci = spawn();
  auto first = get_ok(ci);
  auto got = get(ci, managed_identity::system(), first->x5t_s256);
  run();
  BOOST_REQUIRE(got->value);
  auto cred = *got->value;
  BOOST_CHECK_NE(cred->x5t_s256, first->x5t_s256);
  auto issues = imds->of(issue_path);
  BOOST_REQUIRE_EQUAL(issues.size(), 2u);
  BOOST_CHECK_EQUAL(issues[1].query("bypass_cache").value_or(""), "true");
  BOOST_REQUIRE_EQUAL(files->count(call::kind::remove, cert_file()), 1u);
  BOOST_CHECK_EQUAL(file_x5t(cred->key), cred->x5t_s256);
  // A restarted process never gets the refused certificate either.
  auto restarted = spawn();
  auto again = get_ok(restarted);
  BOOST_CHECK_EQUAL(again->x5t_s256, cred->x5t_s256);
  // The refusal came while another process still had the old file: not adopted, removed.
  files->files[cert_file()] = file_of(*first);
  auto refused = get(ci, managed_identity::system(), cred->x5t_s256);
  run();
  BOOST_REQUIRE(refused->value);
  BOOST_CHECK_NE((*refused->value)->x5t_s256, first->x5t_s256);
  BOOST_CHECK_NE((*refused->value)->x5t_s256, cred->x5t_s256);
  BOOST_CHECK_EQUAL(imds->count(issue_path), 3u);
}

BOOST_FIXTURE_TEST_CASE(reassigned_identity_removes_the_file, cert_fixture) {
  files = std::make_shared<test::memory_artifact_store>();
  auto ci = spawn();
  auto first = get_ok(ci);
  imds->client_id = client_b;
  auto second = get_ok(ci);
  BOOST_CHECK_EQUAL(second->client_id, client_b);
  BOOST_REQUIRE_EQUAL(files->count(call::kind::remove, cert_file()), 1u);
  BOOST_CHECK_EQUAL(file_x5t(second->key), second->x5t_s256);
  // A process started after the reassignment does not adopt the old identity's file.
  imds->client_id = client_a;
  files->files[cert_file()] = file_of(*first);
  imds->client_id = client_b;
  auto restarted = spawn();
  auto third = get_ok(restarted);
  BOOST_CHECK_EQUAL(third->client_id, client_b);
  BOOST_CHECK_NE(third->x5t_s256, first->x5t_s256);
}

BOOST_FIXTURE_TEST_CASE(refused_file_read_is_a_miss_counted_once_logged, cert_fixture) {
  files = std::make_shared<test::memory_artifact_store>();
  files->refused.insert(cert_file());
  auto ci = spawn();
  auto cred = get_ok(ci);
  BOOST_CHECK_EQUAL(imds->count(issue_path), 1u);
  BOOST_CHECK_GE(counter(*this, "msiv2_persistence_errors_total{artifact=\"certificate\"}"), 1u);
  BOOST_CHECK(cred);
}

BOOST_FIXTURE_TEST_CASE(real_cache_directory_shares_the_certificate_and_replaces_bad_files,
                        cert_fixture) {
  char templ[] = "/tmp/msiv2-cert-test-XXXXXX";
  BOOST_REQUIRE(::mkdtemp(templ) != nullptr);
  struct cleanup {
    std::string root;
    ~cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(root, ec);
    }
  } guard{templ};
  const std::string dir = std::string(templ) + "/cache";
  auto prepared = platform::prepare_private_dir(dir);
  BOOST_REQUIRE_MESSAGE(prepared, (prepared ? "" : prepared.error()));
  real_files = file_artifact_store::create(dir, platform::null_log_sink(), /*inline_mode=*/true);
  auto first = spawn();
  auto minted = get_ok(first);
  run();
  const auto path = dir + "/" + cert_file();
  struct stat st {};
  BOOST_REQUIRE_EQUAL(::stat(path.c_str(), &st), 0);
  BOOST_CHECK_EQUAL(st.st_mode & 0777, 0600u);
  // A restarted process adopts it: no second issuance.
  auto restarted = spawn();
  auto adopted = get_ok(restarted);
  BOOST_CHECK_EQUAL(adopted->x5t_s256, minted->x5t_s256);
  BOOST_CHECK_EQUAL(imds->count(issue_path), 1u);
  // A truncated file is a miss: a new certificate replaces it on disk.
  auto bytes = platform::read_private_file(dir, cert_file());
  BOOST_REQUIRE(bytes.status == platform::read_status::ok);
  BOOST_REQUIRE(platform::write_file_atomically(dir, cert_file(),
                                                bytes.bytes.substr(0, bytes.bytes.size() / 3)));
  auto third = spawn();
  auto fresh = get_ok(third);
  run();
  BOOST_CHECK_EQUAL(imds->count(issue_path), 2u);
  auto now = platform::read_private_file(dir, cert_file());
  BOOST_REQUIRE(now.status == platform::read_status::ok);
  auto d = persisted::decode_certificate(
    now.bytes,
    persisted::certificate_artifact_id(config.imds_base_url,
                                       certificate_cache_key(managed_identity::system(), false)),
    fresh->key, wall_ms() / 1000, config.token_endpoint_hosts);
  BOOST_REQUIRE_MESSAGE(d, d.reason);
  BOOST_CHECK_EQUAL(d.value->x5t_s256, fresh->x5t_s256);
}

BOOST_AUTO_TEST_SUITE_END()
