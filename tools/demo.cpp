// msiv2-sim demo: the simulator and a client in one process, walking through the Managed
// Identity v2 flow step by step over real HTTP/TLS on loopback, with a timeline, then a fault
// and a remediation, then a summary of the simulator's counters.
//
// The client side here drives io/ and platform/ directly, one call after another, so that
// every wire step is visible. The actor runtime (actors/) replaces it as the demo's client.

#include "tools/demo.hpp"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "io/curl_transport.hpp"
#include "io/http.hpp"
#include "io/json.hpp"
#include "platform/csr.hpp"
#include "platform/encoding.hpp"
#include "platform/jwt.hpp"
#include "platform/keys.hpp"
#include "platform/x509.hpp"
#include "tools/sim/server.hpp"

namespace msiv2::tools {

namespace {

using clock_type = std::chrono::steady_clock;

/// Prints the timeline and keeps the score.
class timeline {
public:
  timeline() : start_(clock_type::now()) {}

  void section(const char* title) { std::printf("\n== %s\n", title); }

  /// Records one step: `ok` with a detail line, or a failure with the reason.
  bool step(const std::string& what, const result<std::string>& outcome) {
    auto ms = std::chrono::duration<double, std::milli>(clock_type::now() - start_).count();
    if (outcome) {
      ++passed_;
      std::printf("[%9.1f ms] ok    %-48s %s\n", ms, what.c_str(), outcome->c_str());
    } else {
      ++failed_;
      std::printf("[%9.1f ms] FAIL  %-48s %s\n", ms, what.c_str(), outcome.error().c_str());
    }
    std::fflush(stdout);
    return outcome.ok();
  }

  int passed() const { return passed_; }
  int failed() const { return failed_; }

private:
  clock_type::time_point start_;
  int passed_ = 0;
  int failed_ = 0;
};

/// Sends one request and waits for its answer (the demo is sequential on purpose).
io::http_response fetch(io::transport& t, io::http_request req) {
  std::promise<io::http_response> p;
  auto f = p.get_future();
  t.send(std::move(req), [&p](io::http_response r) { p.set_value(std::move(r)); });
  return f.get();
}

std::string describe(const io::http_response& r) {
  if (!r.ok())
    return std::string("transport error ") + io::to_string(r.error) + ": " + r.error_message;
  return "HTTP " + std::to_string(r.status);
}

/// The client's view of one identity's credential, built step by step.
struct binding_state {
  std::string client_id;
  std::string tenant_id;
  std::string cuid_json;
  std::string attestation_endpoint;
  platform::pkey_ptr key;
  std::string attestation_jwt;
  std::string certificate_der;
  std::string x5t;
  std::string mtls_endpoint;
  std::shared_ptr<const io::client_identity> tls_identity;
};

struct demo_options {
  std::string selector; ///< "client_id=<guid>" or empty for system-assigned
  std::string resource = "https://management.azure.com";
};

class walkthrough {
public:
  walkthrough(sim::simulator& s, io::transport& t, timeline& tl) : sim_(s), t_(t), tl_(tl) {}

  io::http_request imds_get(const std::string& path_and_query, bool with_metadata) {
    io::http_request req;
    req.url = sim_.urls().imds + path_and_query;
    req.headers.set("x-ms-client-request-id", platform::uuid_v4());
    if (with_metadata)
      req.headers.set("Metadata", "true");
    req.connect_timeout = std::chrono::milliseconds(1000);
    req.timeout = std::chrono::milliseconds(5000);
    return req;
  }

  io::http_request tls_request(std::string url) {
    io::http_request req;
    req.url = std::move(url);
    req.ca_file = sim_.urls().ca_file;
    req.timeout = std::chrono::milliseconds(5000);
    return req;
  }

  bool probe() {
    auto v2 = fetch(t_, imds_get("/metadata/identity/getplatformmetadata?cred-api-version=2.0",
                                 false));
    bool ok = tl_.step("probe IMDS v2 (no Metadata header)",
                       v2.ok() && v2.status == 400
                         ? result<std::string>("400: IMDS v2 present")
                         : result<std::string>(fail(describe(v2) + ", expected 400")));
    return ok;
  }

  bool metadata(binding_state& b, const demo_options& o) {
    std::string q = "/metadata/identity/getplatformmetadata?cred-api-version=2.0";
    if (!o.selector.empty())
      q += "&" + o.selector;
    // The binding key is generated while the metadata call is in flight (protocol.md §0).
    auto keygen = std::async(std::launch::async, [] { return platform::generate_rsa_key(2048); });
    auto r = fetch(t_, imds_get(q, true));
    auto key = keygen.get();
    auto outcome = [&]() -> result<std::string> {
      if (!r.ok() || r.status != 200)
        return fail(describe(r) + ": " + r.body.substr(0, 200));
      auto server = r.headers.get("Server");
      if (!server || server->find("IMDS") == std::string_view::npos)
        return fail("answer without a Server: IMDS header");
      auto doc = io::json_object::parse(r.body, "getplatformmetadata response");
      if (!doc)
        return fail(doc.error());
      auto client = doc->required_string("clientId");
      auto tenant = doc->required_string("tenantId");
      auto att = doc->required_string("attestationEndpoint");
      auto cu = doc->required_object("cuId");
      if (!client || !tenant || !att || !cu)
        return fail("getplatformmetadata response: a required member is missing");
      platform::cu_id id;
      if (auto vm = cu->optional_string("vmId"); vm && vm->has_value())
        id.vm_id = **vm;
      if (auto vmss = cu->optional_string("vmssId"); vmss && vmss->has_value())
        id.vmss_id = **vmss;
      b.client_id = *client;
      b.tenant_id = *tenant;
      b.attestation_endpoint = *att;
      b.cuid_json = platform::cu_id_json(id);
      return "clientId " + b.client_id + ", cuId " + b.cuid_json;
    }();
    bool ok = tl_.step("getplatformmetadata", outcome);
    ok = tl_.step("RSA-2048 binding key (made during the call)",
                  key ? result<std::string>("key id " + platform::key_id(key->get()).value()
                                              .substr(0, 16) + "...")
                      : result<std::string>(fail(key.error())))
         && ok;
    if (key)
      b.key = std::move(*key);
    return ok;
  }

  bool attest(binding_state& b) {
    auto spki = platform::public_key_der(b.key.get());
    auto nonce = platform::base64url_encode(platform::random_bytes(24));
    auto sig = platform::sign_pss_sha256(b.key.get(), nonce);
    if (!spki || !sig)
      return tl_.step("attest the key", fail("could not sign the attestation nonce"));
    auto req = tls_request(b.attestation_endpoint + "/attest/keyguard");
    req.method = "POST";
    req.headers.set("Content-Type", "application/json");
    req.body = "{\"public_key\":" + platform::json_quote(platform::base64_encode(*spki))
               + ",\"client_id\":" + platform::json_quote(b.client_id)
               + ",\"nonce\":" + platform::json_quote(nonce)
               + ",\"signature\":" + platform::json_quote(platform::base64_encode(*sig)) + "}";
    auto r = fetch(t_, std::move(req));
    return tl_.step("attest the key (simulated keyguard)", [&]() -> result<std::string> {
      if (!r.ok() || r.status != 200)
        return fail(describe(r) + ": " + r.body.substr(0, 200));
      auto doc = io::json_object::parse(r.body, "attestation response");
      if (!doc)
        return fail(doc.error());
      auto jwt = doc->required_string("token");
      if (!jwt)
        return fail(jwt.error());
      auto claims = platform::read_jwt_claims(*jwt);
      if (!claims || !claims->exp)
        return fail("attestation JWT without a readable exp");
      b.attestation_jwt = *jwt;
      auto life = *claims->exp - claims->iat.value_or(*claims->exp);
      return "JWT valid for " + std::to_string(life) + " s";
    }());
  }

  bool issue(binding_state& b, const demo_options& o, bool bypass_cache) {
    auto csr = platform::build_csr(b.key.get(), b.client_id, b.tenant_id, b.cuid_json);
    if (!csr)
      return tl_.step("build the CSR", fail(csr.error()));
    std::string q = "/metadata/identity/issuecredential?cred-api-version=2.0";
    if (!o.selector.empty())
      q += "&" + o.selector;
    if (bypass_cache)
      q += "&bypass_cache=true";
    auto req = imds_get(q, true);
    req.method = "POST";
    req.headers.set("Content-Type", "application/json; charset=utf-8");
    req.body = "{\"csr\":" + platform::json_quote(platform::base64_encode(*csr));
    if (!b.attestation_jwt.empty())
      req.body += ",\"attestation_token\":" + platform::json_quote(b.attestation_jwt);
    req.body += "}";
    auto r = fetch(t_, std::move(req));
    std::string what = bypass_cache ? "issuecredential (bypass_cache=true)"
                                    : "issuecredential (CSR, RSASSA-PSS)";
    return tl_.step(what, [&]() -> result<std::string> {
      if (!r.ok() || r.status != 200)
        return fail(describe(r) + ": " + r.body.substr(0, 200));
      auto doc = io::json_object::parse(r.body, "issuecredential response");
      if (!doc)
        return fail(doc.error());
      auto cert_b64 = doc->required_string("certificate");
      auto endpoint = doc->required_string("mtls_authentication_endpoint");
      if (!cert_b64 || !endpoint)
        return fail("issuecredential response: certificate or endpoint missing");
      auto der = platform::base64_decode(*cert_b64);
      if (!der)
        return fail("certificate: " + der.error());
      auto info = platform::inspect_certificate(*der);
      if (!info)
        return fail(info.error());
      auto spki = platform::public_key_der(b.key.get());
      auto now = std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::system_clock::now().time_since_epoch()).count();
      auto valid = platform::validate_binding_certificate(*info, *spki, b.client_id, now);
      if (!valid)
        return fail(valid.error());
      auto identity = io::client_identity::create({*der}, platform::share_key(b.key.get()));
      if (!identity)
        return fail(identity.error());
      b.certificate_der = *der;
      b.x5t = info->x5t_s256;
      b.mtls_endpoint = *endpoint;
      b.tls_identity = *identity;
      return "CN " + info->subject_cn + ", valid " + std::to_string(info->not_after
                                                                    - info->not_before)
             + " s, x5t#S256 " + b.x5t.substr(0, 12) + "...";
    }());
  }

  /// Returns the access token, or a failure whose text starts with the OAuth error code.
  result<std::string> token(const binding_state& b, const demo_options& o) {
    auto req = tls_request(b.mtls_endpoint + "/" + b.tenant_id + "/oauth2/v2.0/token");
    req.method = "POST";
    req.identity = b.tls_identity;
    req.headers.set("Content-Type", "application/x-www-form-urlencoded");
    req.headers.set("client-request-id", platform::uuid_v4());
    req.headers.set("return-client-request-id", "true");
    req.headers.set("x-ms-lib-capability", "retry-after, h429");
    req.headers.set("Accept", "application/json");
    req.body = "grant_type=client_credentials&client_id=" + platform::url_encode(b.client_id)
               + "&scope=" + platform::url_encode(o.resource + "/.default")
               + "&token_type=mtls_pop";
    auto r = fetch(t_, std::move(req));
    if (!r.ok())
      return fail(describe(r));
    auto doc = io::json_object::parse(r.body, "token response");
    if (!doc)
      return fail(doc.error());
    if (r.status != 200) {
      auto err = doc->optional_string("error");
      auto desc = doc->optional_string("error_description");
      return fail((err && err->has_value() ? **err : "HTTP " + std::to_string(r.status)) + ": "
                  + (desc && *desc ? (*desc)->substr(0, 80) : std::string()));
    }
    auto type = doc->required_string("token_type");
    auto access = doc->required_string("access_token");
    auto expires = doc->required_integer_or_numeric_string("expires_in");
    if (!type || !access || !expires)
      return fail("token response: token_type, access_token or expires_in missing");
    auto claims = platform::read_jwt_claims(*access);
    if (!claims)
      return fail("access token: " + claims.error());
    if (claims->cnf_x5t_s256 != b.x5t)
      return fail("access token cnf does not match the binding certificate");
    return *access;
  }

  result<std::string> call_resource(const std::string& scheme, const std::string& token,
                                    std::shared_ptr<const io::client_identity> identity) {
    auto req = tls_request(sim_.urls().resource + "/api/whoami");
    req.headers.set("Authorization", scheme + " " + token);
    req.identity = std::move(identity);
    auto r = fetch(t_, std::move(req));
    if (!r.ok())
      return fail(describe(r));
    return "HTTP " + std::to_string(r.status);
  }

  /// Full cold start for one identity; fills `b`.
  bool cold_start(binding_state& b, const demo_options& o, bool attest_key) {
    if (!metadata(b, o))
      return false;
    if (attest_key && !attest(b))
      return false;
    return issue(b, o, false);
  }

private:
  sim::simulator& sim_;
  io::transport& t_;
  timeline& tl_;
};

result<std::string> expect_status(const result<std::string>& got, const std::string& want) {
  if (!got)
    return got;
  if (*got != want)
    return fail(*got + ", expected " + want);
  return *got;
}

void print_counters(sim::simulator& s) {
  std::printf("\n== simulator counters (endpoint: status x count)\n");
  auto doc = io::json_object::parse(s.counters_json(), "counters");
  if (!doc)
    return;
  for (const auto& [endpoint, value] : doc->members()) {
    auto per = io::json_object::parse(value.raw, "counters." + endpoint);
    if (!per || per->members().empty())
      continue;
    std::printf("  %-14s", endpoint.c_str());
    for (const auto& [status, n] : per->members())
      std::printf("  %s x %s", status.c_str(), n.raw.c_str());
    std::printf("\n");
  }
}

const char* usage =
  "usage: msiv2-sim demo [--quiet-sim]\n"
  "  Starts msiv2-sim on loopback and walks a client through the Managed Identity v2 flow:\n"
  "  probe, metadata, key, attestation, CSR -> certificate, mTLS token, resource call, a\n"
  "  user-assigned identity, a v1 bearer token, an IMDS outage with retries, and a revoked\n"
  "  certificate remediated with bypass_cache. Exits 1 if any step fails.\n";

} // namespace

int run_demo(int argc, char** argv) {
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::fputs(usage, stdout);
      return 0;
    }
    std::fprintf(stderr, "msiv2-sim demo: unknown argument '%s'\n%s", argv[i], usage);
    return 2;
  }

  auto boot = clock_type::now();
  sim::config cfg;
  cfg.attestation = sim::attestation_policy::required;
  cfg.cert_lifetime = std::chrono::seconds(3600);
  cfg.token_lifetime = std::chrono::seconds(600);
  auto started = sim::simulator::start(cfg);
  if (!started) {
    std::fprintf(stderr, "msiv2-sim demo: cannot start the simulator: %s\n",
                 started.error().c_str());
    return 1;
  }
  auto& s = **started;
  timeline tl;
  std::printf("\n== msiv2-sim on loopback (started in %.0f ms: CAs and signing keys generated)\n",
              std::chrono::duration<double, std::milli>(clock_type::now() - boot).count());
  std::printf("  imds %s\n  attestation %s\n  token %s\n  resource %s\n  admin %s\n",
              s.urls().imds.c_str(), s.urls().attestation.c_str(), s.urls().token.c_str(),
              s.urls().resource.c_str(), s.urls().admin.c_str());

  auto made = io::curl_transport::create();
  if (!made) {
    std::fprintf(stderr, "msiv2-sim demo: %s\n", made.error().c_str());
    return 1;
  }
  auto& t = **made;
  walkthrough w(s, t, tl);
  demo_options system_opts;

  tl.section("cold start, system-assigned identity, attested key");
  binding_state sys;
  bool ok = w.probe() && w.cold_start(sys, system_opts, true);
  std::string token;
  if (ok) {
    auto got = w.token(sys, system_opts);
    ok = tl.step("mTLS token request (token_type=mtls_pop)",
                 got ? result<std::string>("cnf.x5t#S256 matches the certificate")
                     : result<std::string>(got.fail()));
    if (got)
      token = *got;
  }
  if (ok) {
    tl.step("resource call, mtls_pop + same certificate",
            expect_status(w.call_resource("mtls_pop", token, sys.tls_identity), "HTTP 200"));
    tl.step("resource call, mtls_pop without the certificate",
            expect_status(w.call_resource("mtls_pop", token, nullptr), "HTTP 401"));
  }

  tl.section("user-assigned identity (client_id selector)");
  auto uami = s.current_config().user_identities.front();
  demo_options user_opts;
  user_opts.selector = "client_id=" + uami.client_id;
  user_opts.resource = "https://vault.azure.net";
  binding_state user;
  if (w.cold_start(user, user_opts, true)) {
    auto got = w.token(user, user_opts);
    tl.step("mTLS token for https://vault.azure.net",
            got ? result<std::string>("bound to the identity's own certificate")
                : result<std::string>(got.fail()));
    if (got)
      tl.step("resource call with it",
              expect_status(w.call_resource("mtls_pop", *got, user.tls_identity), "HTTP 200"));
  }

  tl.section("IMDS v1 bearer token (what MSAL and azure-identity use today)");
  {
    auto r = fetch(t, w.imds_get("/metadata/identity/oauth2/token?api-version=2018-02-01"
                                 "&resource=https%3A%2F%2Fstorage.azure.com",
                                 true));
    auto doc = r.ok() && r.status == 200 ? io::json_object::parse(r.body, "v1 token response")
                                         : result<io::json_object>(fail(describe(r)));
    auto access = doc ? doc->required_string("access_token") : result<std::string>(doc.fail());
    tl.step("v1 token", access ? result<std::string>("token_type Bearer")
                               : result<std::string>(access.fail()));
    if (access)
      tl.step("resource call with Bearer",
              expect_status(w.call_resource("Bearer", *access, nullptr), "HTTP 200"));
  }

  tl.section("faults: IMDS answers 503, 503, then recovers");
  {
    sim::fault_spec f;
    f.statuses = {503, 503};
    s.set_fault("imds_metadata", f);
    int attempts = 0;
    io::http_response r;
    for (auto delay = std::chrono::milliseconds(100); attempts < 4; delay *= 2) {
      ++attempts;
      r = fetch(t, w.imds_get("/metadata/identity/getplatformmetadata?cred-api-version=2.0",
                              true));
      if (r.ok() && r.status == 200)
        break;
      std::printf("             ...   attempt %d: %s, retrying in %lld ms\n", attempts,
                  describe(r).c_str(), static_cast<long long>(delay.count()));
      std::this_thread::sleep_for(delay);
    }
    tl.step("getplatformmetadata with retries",
            r.ok() && r.status == 200
              ? result<std::string>("200 after " + std::to_string(attempts) + " attempts")
              : result<std::string>(fail(describe(r))));
    s.clear_faults();
  }

  tl.section("remediation: the certificate is revoked");
  if (!sys.x5t.empty()) {
    auto revoked = s.pki().revoke(sys.x5t);
    tl.step("admin revokes the system identity's certificate",
            revoked ? result<std::string>("revoked") : result<std::string>(revoked.fail()));
    auto refused = w.token(sys, system_opts);
    tl.step("token request with the revoked certificate",
            !refused && refused.error().rfind("invalid_client", 0) == 0
              ? result<std::string>("refused: invalid_client (evict the certificate)")
              : result<std::string>(fail("expected invalid_client")));
    if (w.issue(sys, system_opts, true)) {
      auto got = w.token(sys, system_opts);
      tl.step("token request with the new certificate",
              got ? result<std::string>("ok") : result<std::string>(got.fail()));
    }
  }

  print_counters(s);
  t.shutdown();
  s.stop();
  std::printf("\n%d passed, %d failed\n", tl.passed(), tl.failed());
  return tl.failed() == 0 ? 0 : 1;
}

} // namespace msiv2::tools
