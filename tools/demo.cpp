// msiv2-sim demo: the simulator and a client in one process, walking through the Managed
// Identity v2 flow step by step over real HTTP/TLS on loopback, with a timeline, then a fault
// and a remediation, then a summary of the simulator's counters.
//
// Part 1 drives io/ and platform/ directly, one call after another, so that every wire step
// is visible. Part 2 runs the real runtime (msiv2::client and its actors) against the same
// simulator with lifetimes of seconds, and shows caching and renewals over --duration seconds.
// Part 3, when swtpm is installed, runs the runtime with its binding key in a software TPM
// (key store tpm, TPM key attestation) and through a simulated reboot.

#include "tools/demo.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/pem.h>

#include "actors/cert_issuer.hpp"
#include "actors/client.hpp"
#include "actors/keyguard_attestation.hpp"
#include "actors/tpm_key_store.hpp"
#include "io/curl_transport.hpp"
#include "io/http.hpp"
#include "io/json.hpp"
#include "platform/csr.hpp"
#include "platform/encoding.hpp"
#include "platform/jwt.hpp"
#include "platform/keys.hpp"
#include "platform/binding.hpp"
#include "platform/tpm_key.hpp"
#include "platform/tpm_provider.hpp"
#include "platform/x509.hpp"
#include "tools/sim/server.hpp"
#include "tools/swtpm_process.hpp"

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

  /// Milliseconds since the demo started (the timeline's time axis).
  double ms() const { return std::chrono::duration<double, std::milli>(clock_type::now() - start_).count(); }
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
      auto meta = parse_platform_metadata(r.body);
      if (!meta)
        return fail(meta.error());
      b.client_id = meta->client_id;
      b.tenant_id = meta->tenant_id;
      b.attestation_endpoint = meta->attestation_endpoint;
      b.cuid_json = meta->cuid_json;
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
        return fail("malformed issuecredential response: certificate or endpoint missing");
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

void print_counters(sim::simulator& s, const char* title = "simulator counters") {
  std::printf("\n== %s (endpoint: status x count)\n", title);
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


// --- part 2: the runtime -------------------------------------------------------------------

/// One (identity, resource) the runtime part keeps asking for.
struct flow {
  std::string label;
  token_request request;
  bool have = false;
  std::string last_token; ///< compared, never printed
  std::int64_t last_expires_on = 0;
  std::string last_x5t;
  std::shared_ptr<const io::client_identity> tls; ///< for last_x5t
  int requests = 0;
  int cache_hits = 0;
  int token_changes = 0;
  int cert_changes = 0;
  int resource_ok = 0;
};

std::uint64_t counter(const stats_snapshot& s, const std::string& key) {
  auto i = s.counters.find(key);
  return i == s.counters.end() ? 0 : i->second;
}

std::string short_x5t(const std::string& x5t) {
  return x5t.size() > 10 ? x5t.substr(0, 10) + "..." : x5t;
}

class runtime_part {
public:
  runtime_part(sim::simulator& s, std::shared_ptr<io::transport> t, client& c, timeline& tl)
    : sim_(s), t_(std::move(t)), c_(c), tl_(tl) {}

  /// Calls the resource with the flow's current token; the HTTP status or a failure.
  result<int> call(flow& f, const token_result& tok) {
    io::http_request req;
    req.url = sim_.urls().resource + "/api/whoami";
    req.ca_file = sim_.urls().ca_file;
    req.timeout = std::chrono::milliseconds(5000);
    req.headers.set("Authorization", std::string(tok.type == token_type::mtls_pop ? "mtls_pop "
                                                                                   : "Bearer ")
                                       + tok.access_token);
    if (tok.binding)
      req.headers.set("x-ms-tokenboundauth", "true");
    if (tok.binding && tok.binding->key) {
      if (!f.tls || f.last_x5t != tok.binding->x5t_s256) {
        auto made = io::client_identity::create(tok.binding->certificate_chain,
                                                platform::share_key(tok.binding->key->get()));
        if (!made)
          return fail("binding certificate: " + made.error());
        f.tls = *made;
      }
      req.identity = f.tls;
    }
    auto r = fetch(*t_, std::move(req));
    if (!r.ok())
      return fail(describe(r));
    return r.status;
  }

  /// Asks for the flow's token and calls the resource with it; prints what changed.
  /// `first` prints a step line whatever happened.
  void tick(flow& f, bool first) {
    ++f.requests;
    auto got = c_.get_token_blocking(f.request);
    if (!got) {
      tl_.step(f.label + ": token", fail(render(got.error())));
      return;
    }
    const auto& tok = *got;
    std::string x5t = tok.binding ? tok.binding->x5t_s256 : std::string();
    if (tok.source == token_source::cache)
      ++f.cache_hits;
    auto status = call(f, tok);
    bool resource_ok = status && *status == 200;
    if (resource_ok)
      ++f.resource_ok;
    auto now_unix = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch()).count();
    std::string facts = std::string(tok.source == token_source::cache ? "cache" : "network")
                        + ", expires in " + std::to_string(tok.expires_on - now_unix)
                        + " s, refresh in " + std::to_string(tok.refresh_on - now_unix) + " s"
                        + (x5t.empty() ? std::string() : ", cert " + short_x5t(x5t));
    if (first) {
      tl_.step(f.label + ": token", result<std::string>(facts));
      tl_.step(f.label + ": resource call (mtls_pop + binding)",
               resource_ok ? result<std::string>("HTTP 200")
                           : result<std::string>(fail(status ? "HTTP " + std::to_string(*status)
                                                             : status.error())));
    } else {
      if (f.have && tok.access_token != f.last_token) {
        ++f.token_changes;
        std::printf("[%9.1f ms] renewed %-34s new token (expires_on %+lld s), %s\n", tl_.ms(),
                    f.label.c_str(), static_cast<long long>(tok.expires_on - f.last_expires_on),
                    facts.c_str());
      }
      if (f.have && x5t != f.last_x5t) {
        ++f.cert_changes;
        std::printf("[%9.1f ms] cert    %-34s binding certificate %s -> %s\n", tl_.ms(),
                    f.label.c_str(), short_x5t(f.last_x5t).c_str(), short_x5t(x5t).c_str());
      }
      if (!resource_ok)
        tl_.step(f.label + ": resource call",
                 fail(status ? "HTTP " + std::to_string(*status) : status.error()));
    }
    f.have = true;
    f.last_token = tok.access_token;
    f.last_expires_on = tok.expires_on;
    f.last_x5t = x5t;
  }

  /// Prints the module's renewal and upstream counters that moved since the last call.
  void module_events() {
    auto now = c_.stats();
    std::string moved;
    for (const auto& [key, value] : now.counters) {
      bool interesting = key.rfind("msiv2_renewals_total", 0) == 0
                         || key.rfind("msiv2_upstream_requests_total", 0) == 0
                         || key.rfind("msiv2_retries_total", 0) == 0
                         || key.rfind("msiv2_remediations_total", 0) == 0;
      auto before = counter(last_stats_, key);
      if (interesting && value > before)
        moved += "\n                       " + key + " +" + std::to_string(value - before);
    }
    if (!moved.empty())
      std::printf("[%9.1f ms] module  %s\n", tl_.ms(), moved.c_str() + 24);
    last_stats_ = std::move(now);
  }

  const stats_snapshot& last_stats() const { return last_stats_; }

private:
  sim::simulator& sim_;
  std::shared_ptr<io::transport> t_;
  client& c_;
  timeline& tl_;
  stats_snapshot last_stats_;
};

void print_summary(const std::vector<flow>& flows, const stats_snapshot& stats) {
  std::printf("\n== summary of the runtime part\n");
  std::printf("  %-36s %8s %10s %8s %8s %9s\n", "identity -> resource", "requests",
              "cache hits", "renewed", "new cert", "resource");
  for (const auto& f : flows)
    std::printf("  %-36s %8d %10d %8d %8d %5d/%-3d\n", f.label.c_str(), f.requests, f.cache_hits,
                f.token_changes, f.cert_changes, f.resource_ok, f.requests);
  std::printf("\n  module counters (msiv2::client::stats)\n");
  for (const auto& [key, value] : stats.counters)
    std::printf("    %-72s %llu\n", key.c_str(), static_cast<unsigned long long>(value));
}

/// Part 2: msiv2::client against the simulator for `duration` seconds.
void run_runtime_part(sim::simulator& s, timeline& tl, int duration) {
  tl.section("part 2: the msiv2 runtime (msiv2::client, keyguard attestation, attestation "
             "required)");
  auto cfg = s.current_config();
  std::printf("  lifetimes: certificate %lld s, token %lld s, attestation %lld s; the module renews "
              "each at about half its life\n",
              static_cast<long long>(cfg.cert_lifetime.count()),
              static_cast<long long>(cfg.token_lifetime.count()),
              static_cast<long long>(cfg.attestation_lifetime.count()));
  s.reset(); // counters from here on are the runtime's own
  auto made = io::curl_transport::create();
  if (!made) {
    tl.step("HTTP transport", fail(made.error()));
    return;
  }
  std::shared_ptr<io::transport> transport(std::move(*made));
  // Shared artifacts go to a fresh private directory of this run, never the user's cache.
  char cache_root[] = "/tmp/msiv2-demo-XXXXXX";
  if (::mkdtemp(cache_root) == nullptr) {
    tl.step("cache directory", fail(std::string("mkdtemp: ") + std::strerror(errno)));
    transport->shutdown();
    return;
  }
  struct remove_at_exit {
    std::string dir;
    ~remove_at_exit() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cache_guard{cache_root};
  const std::string cache_dir = std::string(cache_root) + "/cache";
  client_options opts;
  opts.config.cache_dir = cache_dir;
  opts.config.persist_key_on_disk = true; // a throwaway mkdtemp dir, removed at the end
  opts.config.cache_dir_error.clear();
  opts.config.imds_base_url = s.urls().imds;
  opts.config.ca_file = s.urls().ca_file;
  opts.config.trust_hosts(msiv2::io::loopback_hosts()); // the simulator's endpoints
  opts.transport = transport;
  opts.attestation = std::make_shared<keyguard_attestation>(transport, s.urls().ca_file);
  std::vector<flow> flows;
  {
    auto c = client::create(std::move(opts));
    if (!c) {
      tl.step("start msiv2::client", fail(c.error()));
      transport->shutdown();
      return;
    }
    auto add = [&](std::string label, managed_identity id, std::string resource) {
      flow f;
      f.label = std::move(label);
      f.request.identity = std::move(id);
      f.request.resource = std::move(resource);
      f.request.timeout = std::chrono::seconds(15);
      flows.push_back(std::move(f));
    };
    const auto& users = cfg.user_identities;
    add("system -> management", managed_identity::system(), "https://management.azure.com");
    add("system -> vault", managed_identity::system(), "https://vault.azure.net");
    if (users.size() >= 2) {
      add("uami-1 (client_id) -> vault", managed_identity::by_client_id(users[0].client_id),
          "https://vault.azure.net");
      add("uami-2 (resource_id) -> storage", managed_identity::by_resource_id(users[1].resource_id),
          "https://storage.azure.com");
    }
    runtime_part rt(s, transport, **c, tl);

    std::printf("\n-- first acquisitions (cold: metadata, key, attestation, certificate, token)\n");
    for (auto& f : flows)
      rt.tick(f, true);
    rt.module_events();
    {
      // What other processes of this user would share: certificates, attestation tokens and
      // the per-boot key (access tokens are never written).
      // Files are written behind the callers' backs: give the writer a moment.
      std::vector<std::string> names;
      auto give_up = clock_type::now() + std::chrono::seconds(3);
      for (;;) {
        names.clear();
        std::error_code ec;
        for (std::filesystem::directory_iterator it(cache_dir, ec), end; !ec && it != end;
             it.increment(ec))
          if (it->is_regular_file())
            names.push_back(it->path().filename().string());
        bool any_cert = std::any_of(names.begin(), names.end(), [](const std::string& n) {
          return n.rfind("cert-", 0) == 0;
        });
        if (any_cert || clock_type::now() >= give_up)
          break;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      std::sort(names.begin(), names.end());
      std::printf("\n-- cache directory %s (shared with this user's other processes)\n",
                  cache_dir.c_str());
      int certs = 0;
      for (auto& n : names) {
        std::printf("  %s\n", n.c_str());
        certs += n.rfind("cert-", 0) == 0 ? 1 : 0;
      }
      tl.step("certificates written to the cache directory",
              certs > 0 ? result<std::string>(std::to_string(certs) + " certificate file(s)")
                        : result<std::string>(fail("no certificate file in " + cache_dir)));
    }

    std::printf("\n-- every second for %d s: each identity asks again and calls the resource\n",
                duration);
    int failed_before = tl.failed();
    auto next = clock_type::now();
    for (int second = 1; second <= duration; ++second) {
      next += std::chrono::seconds(1);
      std::this_thread::sleep_until(next);
      for (auto& f : flows)
        rt.tick(f, false);
      rt.module_events();
      if (second % 10 == 0 || second == duration) {
        int hits = 0, requests = 0;
        for (const auto& f : flows) {
          hits += f.cache_hits;
          requests += f.requests;
        }
        std::printf("[%9.1f ms] so far   %d requests, %d cache hits, %d failures\n", tl.ms(),
                    requests, hits, tl.failed() - failed_before);
      }
      std::fflush(stdout);
    }
    int hits = 0;
    for (const auto& f : flows)
      hits += f.cache_hits;
    tl.step("the runtime served repeated requests from its cache",
            hits > 0 ? result<std::string>(std::to_string(hits) + " cache hits")
                     : result<std::string>(fail("no cache hits")));
    print_summary(flows, rt.last_stats());
  } // the client stops its module first
  transport->shutdown();
}

// --- part 3: the hardware path (a binding key in a TPM 2.0) --------------------------------

/// The upstream calls the simulator counted (answered 200, and the header-less probes).
struct upstream_calls {
  std::uint64_t metadata = 0, attestation = 0, issue = 0, token = 0, probe = 0;

  static upstream_calls of(sim::simulator& s) {
    return {s.count("imds_metadata", 200), s.count("attestation", 200), s.count("imds_issue"),
            s.count("token", 200), s.count("imds_metadata", 400)};
  }
  upstream_calls since(const upstream_calls& before) const {
    return {metadata - before.metadata, attestation - before.attestation, issue - before.issue,
            token - before.token, probe - before.probe};
  }
  std::uint64_t total() const { return metadata + attestation + issue + token + probe; }
  std::string describe() const {
    return std::to_string(total()) + " upstream calls: getplatformmetadata "
           + std::to_string(metadata) + ", attestation " + std::to_string(attestation)
           + ", issuecredential " + std::to_string(issue) + ", token " + std::to_string(token)
           + ", probe " + std::to_string(probe);
  }
};

/// What trying to take the private key out of an EVP_PKEY gives: the refusals, or a failure
/// naming the form in which the key came out.
result<std::string> try_export(EVP_PKEY* key) {
  ERR_clear_error();
  unsigned char* der = nullptr;
  const int der_len = i2d_PrivateKey(key, &der);
  OPENSSL_free(der);
  const std::string der_error = platform::drain_openssl_errors("i2d_PrivateKey");
  platform::bio_ptr bio(BIO_new(BIO_s_mem()));
  const int pem_ok =
    PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  const auto pem_bytes = BIO_pending(bio.get());
  platform::drain_openssl_errors("PEM_write_bio_PrivateKey");
  OSSL_PARAM* params = nullptr;
  const int todata_ok = EVP_PKEY_todata(key, EVP_PKEY_KEYPAIR, &params);
  OSSL_PARAM_free(params);
  platform::drain_openssl_errors("EVP_PKEY_todata");
  if (der_len > 0)
    return fail("i2d_PrivateKey wrote " + std::to_string(der_len) + " bytes of private key");
  if (pem_ok == 1 || pem_bytes > 0)
    return fail("PEM_write_bio_PrivateKey wrote the private key");
  if (todata_ok == 1)
    return fail("EVP_PKEY_todata exported the key pair");
  return "refused: i2d_PrivateKey (" + der_error + "), PEM_write_bio_PrivateKey, "
         "EVP_PKEY_todata(KEYPAIR)";
}

class hardware_part {
public:
  explicit hardware_part(timeline& tl) : tl_(tl) {}

  void run() {
    tl_.section("part 3: the hardware path (binding key in a TPM 2.0, TPM attestation, reboot)");
    const std::string why = swtpm_process::unavailable();
    if (!why.empty()) {
      std::printf("  hardware part skipped: no software TPM: %s\n", why.c_str());
      return;
    }
    char root[] = "/tmp/msiv2-demo-tpm-XXXXXX";
    if (::mkdtemp(root) == nullptr) {
      tl_.step("work directory", fail(std::string("mkdtemp: ") + std::strerror(errno)));
      return;
    }
    dir_ = root;
    run_steps();
    // Stopped in this order also on every early return: modules, transport, simulator, swtpm
    // (by its pid), then the files.
    module_.reset();
    if (transport_)
      transport_->shutdown();
    if (sim_)
      sim_->stop();
    if (tpm_) {
      const auto pid = tpm_->pid();
      auto stopped = tpm_->stop();
      tl_.step("swtpm stopped by its pid",
               stopped ? result<std::string>("pid " + std::to_string(pid))
                       : result<std::string>(stopped.fail()));
      tpm_.reset();
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

private:
  void run_steps() {
    auto tpm = swtpm_process::start(dir_ + "/swtpm");
    if (!tl_.step("software TPM (swtpm) on loopback",
                  tpm ? result<std::string>("pid " + std::to_string((*tpm)->pid()) + ", TCTI "
                                            + (*tpm)->tcti() + ", state by tools/swtpm.sh init")
                      : result<std::string>(tpm.fail())))
      return;
    tpm_ = std::move(*tpm);

    sim::config cfg;
    cfg.attestation = sim::attestation_policy::required;
    cfg.tpm_ek_ca = tpm_->ek_ca(); // the TPM attestation service trusts swtpm's local EK CA
    auto started = sim::simulator::start(cfg);
    if (!tl_.step("msiv2-sim with TPM attestation (--tpm-ek-ca, attestation required)",
                  started ? result<std::string>("attestation " + (*started)->urls().attestation
                                                + "/attest/tpm/{challenge,proof}")
                          : result<std::string>(started.fail())))
      return;
    sim_ = std::move(*started);
    auto made = io::curl_transport::create();
    if (!tl_.step("HTTP transport", made ? result<std::string>("curl")
                                         : result<std::string>(made.fail())))
      return;
    transport_ = std::move(*made);
    boot_id_file_ = dir_ + "/boot_id";
    cache_dir_ = dir_ + "/cache";
    if (!write_boot_id())
      return;

    // First boot: a TPM key, attested by the TPM, and a certificate for it.
    if (!start_module("module on boot 1: key_store tpm, attest"))
      return;
    auto before = upstream_calls::of(*sim_);
    auto t0 = clock_type::now();
    auto first = module_->get_token_blocking(request());
    const double first_ms = ms_since(t0);
    if (!tl_.step("first mtls_pop token (TPM key made, TPM-attested, certificate)",
                  first ? result<std::string>(fmt_ms(first_ms) + ", "
                                              + upstream_calls::of(*sim_).since(before).describe())
                        : result<std::string>(fail(render(first.error())))))
      return;
    if (!first->binding || !first->binding->key) {
      tl_.step("the token's binding", fail("an mtls_pop token without a binding key"));
      return;
    }
    EVP_PKEY* key = first->binding->key->get();
    show_key_in_tpm(key);
    tl_.step("export of the TPM key's private half", try_export(key));
    show_bound(*first, key);
    call_resource("resource call over mTLS (TLS client signature in the TPM)", *first);
    const std::string x5t = first->binding->x5t_s256;
    const std::string key_id = first->binding->key->key_id();
    module_.reset(); // the process ends with the boot

    // A reboot: a new boot id, the TPM restarted on its state (volatile objects gone).
    tl_.section("simulated reboot: new boot id, swtpm restarted on the same state, new module");
    if (!write_boot_id())
      return;
    const auto old_pid = tpm_->pid();
    auto stopped = tpm_->stop();
    auto again = stopped ? tpm_->start_again() : result<void>(stopped.fail());
    if (!tl_.step("swtpm stopped (swtpm_ioctl -s, pid " + std::to_string(old_pid)
                    + ") and started again",
                  again ? result<std::string>("pid " + std::to_string(tpm_->pid())
                                              + ", same state and TCTI")
                        : result<std::string>(again.fail())))
      return;
    if (!start_module("module on boot 2: same cache directory"))
      return;
    before = upstream_calls::of(*sim_);
    t0 = clock_type::now();
    auto next = module_->get_token_blocking(request());
    const double next_ms = ms_since(t0);
    const auto calls = upstream_calls::of(*sim_).since(before);
    if (!tl_.step("first token after the reboot",
                  next ? result<std::string>(fmt_ms(next_ms))
                       : result<std::string>(fail(render(next.error())))))
      return;
    const bool two = calls.metadata == 1 && calls.token == 1 && calls.total() == 2;
    tl_.step("upstream calls of it (simulator counters)",
             two ? result<std::string>(calls.describe() + ": metadata + token only")
                 : result<std::string>(fail(calls.describe() + ", expected getplatformmetadata "
                                            "+ token only")));
    const bool same = next->binding && next->binding->x5t_s256 == x5t && next->binding->key
                      && next->binding->key->key_id() == key_id;
    tl_.step("same TPM key and persisted certificate adopted",
             same ? result<std::string>("key id " + key_id.substr(0, 16) + "..., x5t#S256 "
                                        + short_x5t(x5t))
                  : result<std::string>(fail("a different key or certificate after the reboot")));
    if (next->binding && next->binding->key)
      call_resource("resource call with it", *next);
  }

  bool write_boot_id() {
    const std::string id = platform::uuid_v4();
    std::FILE* f = std::fopen(boot_id_file_.c_str(), "w");
    const bool ok = f != nullptr && std::fprintf(f, "%s\n", id.c_str()) > 0;
    if (f != nullptr)
      std::fclose(f);
    return tl_.step("boot id", ok ? result<std::string>(id + " (" + boot_id_file_ + ")")
                                  : result<std::string>(fail("cannot write " + boot_id_file_)));
  }

  bool start_module(const std::string& what) {
    client_options opts;
    opts.config.imds_base_url = sim_->urls().imds;
    opts.config.ca_file = sim_->urls().ca_file;
    opts.config.trust_hosts(msiv2::io::loopback_hosts()); // the simulator's endpoints
    opts.config.cache_dir = cache_dir_;
    opts.config.boot_id_path = boot_id_file_;
    opts.config.key_store = key_store_choice::tpm;
    opts.config.tpm_tcti = tpm_->tcti();
    opts.config.attest = true; // the client builds TPM key attestation for the TPM store
    opts.config.eager_key = true;
    opts.transport = transport_;
    auto c = client::create(std::move(opts));
    if (!tl_.step(what, c ? result<std::string>("TCTI " + tpm_->tcti() + ", cache " + cache_dir_)
                          : result<std::string>(c.fail())))
      return false;
    module_ = std::move(*c);
    return true;
  }

  token_request request() const {
    token_request r;
    r.resource = "https://management.azure.com";
    r.timeout = std::chrono::seconds(120); // TPM key generation on swtpm takes seconds
    return r;
  }

  void show_key_in_tpm(EVP_PKEY* key) {
    auto ref = platform::tpm_pkey_reference(key);
    if (!ref) {
      tl_.step("the binding key lives in the TPM", fail(ref.error()));
      return;
    }
    auto pub = platform::tpm_key_public(ref->blob);
    std::error_code ec;
    const bool blob_file = std::filesystem::exists(cache_dir_ + "/" + tpm_key_file_name, ec);
    const bool pem_file = std::filesystem::exists(cache_dir_ + "/binding-key.pem", ec);
    char attrs[16];
    std::snprintf(attrs, sizeof attrs, "0x%08x", pub ? pub->attributes : 0u);
    tl_.step("the binding key lives in the TPM",
             platform::is_tpm_pkey(key) && pub && blob_file && !pem_file
               ? result<std::string>("EVP_PKEY of provider msiv2-tpm on " + ref->tpm.tcti
                                     + ", attributes " + attrs
                                     + " (fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|"
                                       "noDA|sign); the cache holds only the TPM-wrapped "
                                     + tpm_key_file_name)
               : result<std::string>(fail(!pub ? pub.error()
                                               : pem_file ? "a binding-key.pem is in the cache"
                                                          : "no " + std::string(tpm_key_file_name)
                                                              + " in the cache")));
  }

  void show_bound(const token_result& tok, EVP_PKEY* key) {
    auto claims = platform::read_jwt_claims(tok.access_token);
    const auto& chain = tok.binding->certificate_chain;
    auto info = chain.empty() ? result<platform::cert_info>(fail("no certificate"))
                              : platform::inspect_certificate(chain.front());
    auto key_spki = platform::public_key_der(key);
    tl_.step("token bound to the TPM key", [&]() -> result<std::string> {
      if (!claims)
        return fail("access token: " + claims.error());
      if (!info)
        return fail("binding certificate: " + info.error());
      if (!key_spki)
        return fail("TPM key: " + key_spki.error());
      const std::string thumbprint = platform::x5t_s256(chain.front());
      if (claims->cnf_x5t_s256 != thumbprint)
        return fail("cnf x5t#S256 " + claims->cnf_x5t_s256 + " is not the certificate's "
                    + thumbprint);
      if (info->spki_der != *key_spki)
        return fail("the certificate's public key is not the TPM key");
      return "cnf x5t#S256 " + short_x5t(thumbprint) + " = SHA-256 of the certificate, whose "
             "public key is the TPM key";
    }());
    std::string type;
    for (const auto& c : sim_->pki().issued())
      if (c.x5t_s256 == tok.binding->x5t_s256)
        type = c.attestation_type;
    tl_.step("certificate issued for a TPM-attested key",
             tok.binding->attested && type == "tpm"
               ? result<std::string>("the CSR carried the TPM attestation JWT "
                                     "(attestation_type tpm): attested_hardware_key")
               : result<std::string>(fail("attestation_type '" + type + "'")));
  }

  void call_resource(const std::string& what, const token_result& tok) {
    auto identity = io::client_identity::create(tok.binding->certificate_chain,
                                                platform::share_key(tok.binding->key->get()));
    if (!identity) {
      tl_.step(what, fail(identity.error()));
      return;
    }
    io::http_request req;
    req.url = sim_->urls().resource + "/api/whoami";
    req.ca_file = sim_->urls().ca_file;
    req.timeout = std::chrono::milliseconds(20000);
    req.headers.set("Authorization", "mtls_pop " + tok.access_token);
    req.headers.set("x-ms-tokenboundauth", "true");
    req.identity = *identity;
    auto r = fetch(*transport_, std::move(req));
    tl_.step(what, r.ok() && r.status == 200 ? result<std::string>("HTTP 200: accepted")
                                             : result<std::string>(fail(describe(r) + " "
                                                                        + r.body.substr(0, 120))));
  }

  static double ms_since(clock_type::time_point t0) {
    return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
  }

  static std::string fmt_ms(double ms) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f ms", ms);
    return buf;
  }

  timeline& tl_;
  std::string dir_, boot_id_file_, cache_dir_;
  std::unique_ptr<swtpm_process> tpm_;
  std::unique_ptr<sim::simulator> sim_;
  std::shared_ptr<io::transport> transport_;
  std::unique_ptr<client> module_;
};

const char* usage =
  "usage: msiv2-sim demo [--duration S]\n"
  "  Starts msiv2-sim on loopback (certificate 40 s, token 12 s, attestation 30 s, attestation\n"
  "  required) and\n"
  "  1. walks a hand-driven client through the Managed Identity v2 wire flow: probe, metadata,\n"
  "     key, attestation, CSR -> certificate, mTLS token, resource call, a user-assigned\n"
  "     identity, a v1 bearer token, an IMDS outage with retries, and a revoked certificate\n"
  "     remediated with bypass_cache;\n"
  "  2. runs the msiv2 runtime (msiv2::client) for several identities and resources, asking\n"
  "     once a second for S seconds (default 60, at least 5) and calling the resource each\n"
  "     time: a timeline of renewals and certificate changes, then a summary;\n"
  "  3. when swtpm is installed (else one line says why this part is skipped): the hardware\n"
  "     path on a software TPM on loopback (tools/swtpm.sh init, swtpm stopped by its pid):\n"
  "     key_store tpm with TPM key attestation, the key in the TPM refusing export, the token\n"
  "     bound to it and accepted by the resource, then a simulated reboot (new boot id, swtpm\n"
  "     restarted on its state, a new module) whose first token costs getplatformmetadata +\n"
  "     token only, judged by the simulator's counters.\n"
  "  Exits 1 if any step fails.\n";

} // namespace

int run_demo(int argc, char** argv) {
  int duration = 60;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::fputs(usage, stdout);
      return 0;
    }
    std::string arg = argv[i];
    std::string value;
    if (arg.rfind("--duration=", 0) == 0) {
      value = arg.substr(11);
    } else if (arg == "--duration" && i + 1 < argc) {
      value = argv[++i];
    } else {
      std::fprintf(stderr, "msiv2-sim demo: unknown argument '%s'\n%s", argv[i], usage);
      return 2;
    }
    char* end = nullptr;
    long v = std::strtol(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0' || v < 5 || v > 86400) {
      std::fprintf(stderr, "msiv2-sim demo: --duration: must be an integer from 5 to 86400, "
                           "got '%s'\n", value.c_str());
      return 2;
    }
    duration = static_cast<int>(v);
  }

  auto boot = clock_type::now();
  sim::config cfg;
  cfg.attestation = sim::attestation_policy::required;
  cfg.cert_lifetime = std::chrono::seconds(40);
  cfg.token_lifetime = std::chrono::seconds(12);
  cfg.attestation_lifetime = std::chrono::seconds(30);
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

  tl.section("part 1: the wire flow, step by step (io/ and platform/ driven by hand)");
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

  print_counters(s, "part 1: simulator counters");
  t.shutdown();

  run_runtime_part(s, tl, duration);
  print_counters(s, "part 2: upstream calls of the runtime (simulator counters)");
  s.stop();

  hardware_part(tl).run();
  std::printf("\n%d passed, %d failed\n", tl.passed(), tl.failed());
  return tl.failed() == 0 ? 0 : 1;
}

} // namespace msiv2::tools
