#include <boost/test/unit_test.hpp>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <thread>

#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <simdjson.h>
#include <strings.h>
#include <sys/stat.h>

#include "platform/csr.hpp"
#include "platform/der.hpp"
#include "platform/encoding.hpp"
#include "platform/jwt.hpp"
#include "platform/keys.hpp"
#include "platform/x509.hpp"
#include "tools/sim/authority.hpp"
#include "tests/support/test_keys.hpp"

using namespace msiv2;
using namespace msiv2::sim;
namespace der = msiv2::platform::der;

namespace {

constexpr std::int64_t base_time = 1'750'000'000; // 2025-06-15
const std::string attestation_url = "https://127.0.0.1:4431";
const std::string token_url = "https://127.0.0.1:4432";
const std::string issuer_cn = "managedidentitysnissuer.login.microsoft.com";

template <class R>
std::string why(const R& r) {
  return r.ok() ? std::string() : r.error();
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

platform::pkey_ptr new_key(unsigned bits = 2048) {
  auto k = platform::generate_rsa_key(bits);
  BOOST_REQUIRE_MESSAGE(k.ok(), why(k));
  return std::move(*k);
}

// Keygen costs real time: the test keys are made once per run.
EVP_PKEY* binding_key() {
  static platform::pkey_ptr k = new_key();
  return k.get();
}
EVP_PKEY* other_binding_key() {
  static platform::pkey_ptr k = new_key();
  return k.get();
}
EVP_PKEY* foreign_ca_key() {
  static platform::pkey_ptr k = new_key();
  return k.get();
}

// --- JSON of answers ---

using msiv2::test::json_string;

std::optional<std::int64_t> json_int(std::string_view json, std::string_view key) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(simdjson::padded_string(json)).get(root) != simdjson::SUCCESS)
    return std::nullopt;
  std::int64_t v = 0;
  if (root[key].get_int64().get(v) != simdjson::SUCCESS)
    return std::nullopt;
  return v;
}

bool json_has(std::string_view json, std::string_view key) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(simdjson::padded_string(json)).get(root) != simdjson::SUCCESS)
    return false;
  return root[key].error() == simdjson::SUCCESS;
}

std::optional<std::int64_t> first_error_code(std::string_view json) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(simdjson::padded_string(json)).get(root) != simdjson::SUCCESS)
    return std::nullopt;
  simdjson::dom::array codes;
  if (root["error_codes"].get_array().get(codes) != simdjson::SUCCESS || codes.size() != 1)
    return std::nullopt;
  std::int64_t v = 0;
  if (codes.at(0).get_int64().get(v) != simdjson::SUCCESS)
    return std::nullopt;
  return v;
}

std::string header_of(const response& r, std::string_view name) {
  for (const auto& [k, v] : r.headers)
    if (k.size() == name.size() && strncasecmp(k.data(), name.data(), k.size()) == 0)
      return v;
  return {};
}

// --- one authority per configuration, shared by the suite ---

struct world {
  std::shared_ptr<std::atomic<std::int64_t>> clock =
    std::make_shared<std::atomic<std::int64_t>>(base_time);
  config cfg;
  std::string dir;
  std::unique_ptr<authority> auth;

  explicit world(config c) : cfg(std::move(c)) {
    char templ[] = "/tmp/msiv2-authority-test-XXXXXX";
    BOOST_REQUIRE(mkdtemp(templ) != nullptr);
    dir = templ;
    auto clk = clock;
    auto a = authority::create(cfg, dir + "/state", [clk] { return clk->load(); });
    BOOST_REQUIRE_MESSAGE(a.ok(), why(a));
    auth = std::move(*a);
    auth->set_urls({attestation_url, token_url});
  }
  ~world() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  std::int64_t now() const { return clock->load(); }
  void advance(std::int64_t s) { clock->fetch_add(s); }
};

std::map<std::string, std::unique_ptr<world>>& worlds() {
  static std::map<std::string, std::unique_ptr<world>> w;
  return w;
}

world& world_named(const std::string& name, const std::function<config()>& make) {
  auto& w = worlds()[name];
  if (!w)
    w = std::make_unique<world>(make());
  return *w;
}

// Default configuration: attestation optional.
world& optional_world() {
  return world_named("optional", [] { return config{}; });
}
world& required_world() {
  return world_named("required", [] {
    config c;
    c.attestation = attestation_policy::required;
    return c;
  });
}
world& off_world() {
  return world_named("off", [] {
    config c;
    c.attestation = attestation_policy::off;
    c.token_lifetime = std::chrono::seconds(3600);
    c.refresh_in = std::chrono::seconds(1800);
    c.vmss_id = "9d8c7b6a-5f4e-4d3c-2b1a-0f9e8d7c6b5a";
    return c;
  });
}

// Every test starts at base time with no certificates issued.
struct fresh_state {
  fresh_state() {
    for (auto& [name, w] : worlds()) {
      w->clock->store(base_time);
      w->auth->reset();
    }
  }
};

// --- CSRs, good and forged ---

constexpr std::string_view pss_oid = "1.2.840.113549.1.1.10";
constexpr std::string_view mgf1_oid = "1.2.840.113549.1.1.8";
constexpr std::string_view sha256_oid = "2.16.840.1.101.3.4.2.1";

std::string cuid_of(const config& c) {
  return platform::cu_id_json({c.vm_id, c.vmss_id});
}

std::string good_csr(const world& w, EVP_PKEY* key, const std::string& client_id) {
  auto csr = platform::build_csr(key, client_id, w.cfg.tenant_id, cuid_of(w.cfg));
  BOOST_REQUIRE_MESSAGE(csr.ok(), why(csr));
  return *csr;
}

std::string subject(std::uint8_t dc_tag, std::string_view tenant, std::string_view client) {
  return der::seq({der::set_of({der::seq({der::oid(platform::dc_oid), der::tlv(dc_tag, tenant)})}),
                   der::set_of({der::seq({der::oid(platform::cn_oid),
                                          der::tlv(der::printable_string, client)})})});
}

std::string sha256_id(bool null_params) {
  return null_params ? der::seq({der::oid(sha256_oid), der::null_value()})
                     : der::seq({der::oid(sha256_oid)});
}

std::string pss_algorithm(bool null_hash_params, bool trailer_field) {
  const std::string hash = sha256_id(null_hash_params);
  const std::string mgf = der::seq({der::oid(mgf1_oid), hash});
  const std::string params =
    trailer_field ? der::seq({der::tlv(der::context_0, hash), der::tlv(der::context_1, mgf),
                              der::tlv(der::context_2, der::small_integer(32)),
                              der::tlv(der::context_3, der::small_integer(1))})
                  : der::seq({der::tlv(der::context_0, hash), der::tlv(der::context_1, mgf),
                              der::tlv(der::context_2, der::small_integer(32))});
  return der::seq({der::oid(pss_oid), params});
}

std::string forge_csr(EVP_PKEY* key, const std::string& subject_der, const std::string& cuid_json,
                      const std::string& algorithm_der) {
  auto spki = platform::public_key_der(key);
  BOOST_REQUIRE_MESSAGE(spki.ok(), why(spki));
  const std::string info =
    platform::csr_info_der(subject_der, *spki, platform::csr_attributes_der(cuid_json));
  auto sig = platform::sign_pss_sha256(key, info);
  BOOST_REQUIRE_MESSAGE(sig.ok(), why(sig));
  return platform::assemble_csr(info, algorithm_der, *sig);
}

request issue_request(const std::string& csr_der, std::optional<std::string> attestation = {}) {
  request r;
  r.method = "POST";
  r.path = "/metadata/identity/issuecredential";
  r.target = r.path + "?cred-api-version=2.0";
  r.query = {{"cred-api-version", "2.0"}};
  r.headers = {{"Metadata", "true"}, {"Content-Type", "application/json; charset=utf-8"}};
  r.body = "{\"csr\":" + platform::json_quote(platform::base64_encode(csr_der));
  if (attestation)
    r.body += ",\"attestation_token\":" + platform::json_quote(*attestation);
  r.body += "}";
  return r;
}

request raw_issue_request(std::string body) {
  request r = issue_request("");
  r.body = std::move(body);
  return r;
}

void expect_invalid_request(const response& r, std::string_view description_part) {
  BOOST_TEST(r.status == 400);
  BOOST_TEST(json_string(r.body, "error").value_or("") == "invalid_request");
  const std::string desc = json_string(r.body, "error_description").value_or("");
  BOOST_TEST_MESSAGE("error_description: " << desc);
  BOOST_TEST(contains(desc, description_part), "'" << desc << "' should contain '"
                                                   << description_part << "'");
}

// --- attestation ---

request attest_request(EVP_PKEY* key, const std::string& client_id, const std::string& nonce) {
  auto spki = platform::public_key_der(key);
  BOOST_REQUIRE(spki.ok());
  auto sig = platform::sign_pss_sha256(key, nonce);
  BOOST_REQUIRE(sig.ok());
  request r;
  r.method = "POST";
  r.path = "/attest/keyguard";
  r.target = r.path;
  r.body = "{\"public_key\":" + platform::json_quote(platform::base64_encode(*spki)) +
           ",\"client_id\":" + platform::json_quote(client_id) +
           ",\"nonce\":" + platform::json_quote(nonce) +
           ",\"signature\":" + platform::json_quote(platform::base64_encode(*sig)) + "}";
  return r;
}

std::string attestation_token(world& w, EVP_PKEY* key) {
  const response r = w.auth->attest(attest_request(key, w.cfg.system_identity.client_id,
                                                   platform::uuid_v4()));
  BOOST_REQUIRE_MESSAGE(r.status == 200, r.body);
  auto token = json_string(r.body, "token");
  BOOST_REQUIRE(token.has_value());
  return *token;
}

// Issues a binding certificate for key and identity; returns its DER.
std::string issue_cert(world& w, EVP_PKEY* key, const identity& who,
                       std::optional<std::string> attestation = {}) {
  const response r = w.auth->issue_credential(issue_request(good_csr(w, key, who.client_id),
                                                            attestation), who);
  BOOST_REQUIRE_MESSAGE(r.status == 200, r.body);
  auto b64 = json_string(r.body, "certificate");
  BOOST_REQUIRE(b64.has_value());
  auto cert = platform::base64_decode(*b64);
  BOOST_REQUIRE(cert.ok());
  return *cert;
}

// --- token endpoint ---

request token_request(const world& w, const std::string& cert_der,
                      std::map<std::string, std::string> form_overrides = {},
                      std::string tenant = {}) {
  std::map<std::string, std::string> form{
    {"grant_type", "client_credentials"},
    {"client_id", w.cfg.system_identity.client_id},
    {"scope", "https://management.azure.com/.default"},
    {"token_type", "mtls_pop"}};
  for (auto& [k, v] : form_overrides) {
    if (v == "<omit>")
      form.erase(k);
    else
      form[k] = v;
  }
  request r;
  r.method = "POST";
  r.path = "/" + (tenant.empty() ? w.cfg.tenant_id : tenant) + "/oauth2/v2.0/token";
  r.target = r.path;
  r.headers = {{"Content-Type", "application/x-www-form-urlencoded"},
               {"Accept", "application/json"}};
  for (auto& [k, v] : form) {
    if (!r.body.empty())
      r.body += "&";
    r.body += platform::url_encode(k) + "=" + platform::url_encode(v);
  }
  r.client_cert_der = cert_der;
  return r;
}

void expect_aad_error(const response& r, int status, std::string_view error, std::int64_t code) {
  BOOST_TEST(r.status == status);
  BOOST_TEST(json_string(r.body, "error").value_or("") == error);
  BOOST_TEST(first_error_code(r.body).value_or(0) == code);
  const std::string desc = json_string(r.body, "error_description").value_or("");
  BOOST_TEST_MESSAGE("error_description: " << desc);
  BOOST_TEST(contains(desc, "AADSTS" + std::to_string(code) + ": "), desc);
  BOOST_TEST(json_has(r.body, "timestamp"));
  BOOST_TEST(json_has(r.body, "trace_id"));
  BOOST_TEST(json_has(r.body, "correlation_id"));
}

std::string access_token(world& w, const std::string& cert_der, std::string token_type) {
  const response r = w.auth->token(token_request(w, cert_der, {{"token_type", token_type}}));
  BOOST_REQUIRE_MESSAGE(r.status == 200, r.body);
  auto t = json_string(r.body, "access_token");
  BOOST_REQUIRE(t.has_value());
  return *t;
}

// A certificate for `key` and the system identity, signed by a CA that is not the simulator's
// but carries the same issuer name.
std::string foreign_cert(const world& w, EVP_PKEY* key) {
  platform::issue_params ca;
  ca.subject_key = foreign_ca_key();
  ca.subject_cn = issuer_cn;
  ca.not_before = w.now() - 3600;
  ca.not_after = w.now() + 86400;
  ca.is_ca = true;
  auto ca_der = platform::issue_certificate(ca, nullptr, foreign_ca_key());
  BOOST_REQUIRE_MESSAGE(ca_der.ok(), why(ca_der));
  auto ca_cert = platform::parse_certificate(*ca_der);
  BOOST_REQUIRE(ca_cert.ok());
  platform::issue_params leaf;
  leaf.subject_key = key;
  leaf.subject_cn = w.cfg.system_identity.client_id;
  leaf.subject_dc = w.cfg.tenant_id;
  leaf.not_before = w.now();
  leaf.not_after = w.now() + 3600;
  leaf.client_auth = true;
  auto der = platform::issue_certificate(leaf, ca_cert->get(), foreign_ca_key());
  BOOST_REQUIRE_MESSAGE(der.ok(), why(der));
  return *der;
}

// --- resource ---

request resource_request(std::string authorization, std::string cert_der) {
  request r;
  r.method = "GET";
  r.path = "/resource";
  r.target = r.path;
  if (!authorization.empty())
    r.headers = {{"Authorization", std::move(authorization)}};
  r.client_cert_der = std::move(cert_der);
  return r;
}

// The public key of a JWKS entry, rebuilt from n and e.
platform::pkey_ptr key_from_jwk(const std::string& n_b64u, const std::string& e_b64u) {
  auto n = platform::base64url_decode(n_b64u);
  auto e = platform::base64url_decode(e_b64u);
  BOOST_REQUIRE(n.ok() && e.ok());
  platform::bn_ptr bn_n{BN_bin2bn(reinterpret_cast<const unsigned char*>(n->data()),
                                  static_cast<int>(n->size()), nullptr)};
  platform::bn_ptr bn_e{BN_bin2bn(reinterpret_cast<const unsigned char*>(e->data()),
                                  static_cast<int>(e->size()), nullptr)};
  std::unique_ptr<OSSL_PARAM_BLD, platform::ossl_deleter<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>>
    bld{OSSL_PARAM_BLD_new()};
  BOOST_REQUIRE(OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) == 1);
  BOOST_REQUIRE(OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) == 1);
  std::unique_ptr<OSSL_PARAM, platform::ossl_deleter<OSSL_PARAM, OSSL_PARAM_free>> params{
    OSSL_PARAM_BLD_to_param(bld.get())};
  platform::pkey_ctx_ptr ctx{EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr)};
  EVP_PKEY* raw = nullptr;
  BOOST_REQUIRE(EVP_PKEY_fromdata_init(ctx.get()) == 1);
  BOOST_REQUIRE(EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) == 1);
  return platform::pkey_ptr{raw};
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(sim_authority_test, fresh_state)

// ---------------------------------------------------------------- PKI

BOOST_AUTO_TEST_CASE(create_writes_tls_root_and_serves_a_loopback_server_chain) {
  world& w = optional_world();
  BOOST_TEST(w.auth->ca_file() == w.dir + "/state/ca.pem");
  struct stat st{};
  BOOST_REQUIRE(::stat((w.dir + "/state").c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == 0700u);

  std::ifstream in(w.auth->ca_file());
  const std::string ca_pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto roots = platform::pem_certificates(ca_pem);
  BOOST_REQUIRE_MESSAGE(roots.ok(), why(roots));
  BOOST_REQUIRE(roots->size() == 1u);
  auto root = platform::inspect_certificate(roots->front());
  BOOST_REQUIRE(root.ok());
  BOOST_TEST(root->subject_cn == "msiv2-sim TLS root");

  auto chain = platform::pem_certificates(w.auth->server_chain_pem());
  BOOST_REQUIRE(chain.ok());
  BOOST_REQUIRE(chain->size() == 2u);
  BOOST_TEST((*chain)[1] == roots->front());
  auto leaf = platform::parse_certificate((*chain)[0]);
  auto root_cert = platform::parse_certificate(roots->front());
  BOOST_REQUIRE(leaf.ok() && root_cert.ok());
  BOOST_TEST(platform::certificate_signed_by((*chain)[0], X509_get0_pubkey(root_cert->get())));
  BOOST_TEST(X509_check_ip_asc(leaf->get(), "127.0.0.1", 0) == 1);
  BOOST_TEST(X509_check_host(leaf->get(), "localhost", 0, 0, nullptr) == 1);
  BOOST_TEST(X509_check_purpose(leaf->get(), X509_PURPOSE_SSL_SERVER, 0) == 1);

  auto key = platform::private_key_from_pem(w.auth->server_key_pem());
  BOOST_REQUIRE(key.ok());
  BOOST_TEST(platform::same_public_key(key->get(), X509_get0_pubkey(leaf->get())));
}

BOOST_AUTO_TEST_CASE(create_loads_the_issuing_ca_from_pem_files) {
  char templ[] = "/tmp/msiv2-authority-ca-XXXXXX";
  BOOST_REQUIRE(mkdtemp(templ) != nullptr);
  const std::string dir = templ;
  platform::issue_params ca;
  ca.subject_key = foreign_ca_key();
  ca.subject_cn = issuer_cn;
  ca.not_before = base_time - 3600;
  ca.not_after = base_time + 365 * 86400;
  ca.is_ca = true;
  auto ca_der = platform::issue_certificate(ca, nullptr, foreign_ca_key());
  BOOST_REQUIRE(ca_der.ok());
  auto key_pem = platform::private_key_pem(foreign_ca_key());
  auto wrong_key_pem = platform::private_key_pem(other_binding_key());
  BOOST_REQUIRE(key_pem.ok() && wrong_key_pem.ok());
  std::ofstream(dir + "/ca.crt") << platform::pem_encode(*ca_der, "CERTIFICATE");
  std::ofstream(dir + "/ca.key") << *key_pem;
  std::ofstream(dir + "/wrong.key") << *wrong_key_pem;
  std::ofstream(dir + "/garbage.crt") << "not a certificate\n";
  auto clock = [] { return base_time; };

  config missing;
  missing.ca_cert_file = dir + "/absent.crt";
  missing.ca_key_file = dir + "/ca.key";
  auto a = authority::create(missing, dir + "/s1", clock);
  BOOST_REQUIRE(!a.ok());
  BOOST_TEST(contains(a.error(), "ca_cert_file"));
  BOOST_TEST(contains(a.error(), "absent.crt"));

  config garbage = missing;
  garbage.ca_cert_file = dir + "/garbage.crt";
  a = authority::create(garbage, dir + "/s2", clock);
  BOOST_REQUIRE(!a.ok());
  BOOST_TEST(contains(a.error(), "garbage.crt"));

  config mismatch = missing;
  mismatch.ca_cert_file = dir + "/ca.crt";
  mismatch.ca_key_file = dir + "/wrong.key";
  a = authority::create(mismatch, dir + "/s3", clock);
  BOOST_REQUIRE(!a.ok());
  BOOST_TEST(contains(a.error(), "wrong.key"));
  BOOST_TEST(contains(a.error(), "does not match"));

  config only_cert;
  only_cert.ca_cert_file = dir + "/ca.crt";
  a = authority::create(only_cert, dir + "/s4", clock);
  BOOST_REQUIRE(!a.ok());
  BOOST_TEST(contains(a.error(), "together"));

  config good = missing;
  good.ca_cert_file = dir + "/ca.crt";
  a = authority::create(good, dir + "/s5", clock);
  BOOST_REQUIRE_MESSAGE(a.ok(), why(a));
  const identity& who = good.system_identity;
  auto csr = platform::build_csr(binding_key(), who.client_id, good.tenant_id, cuid_of(good));
  BOOST_REQUIRE(csr.ok());
  const response r = (*a)->issue_credential(issue_request(*csr), who);
  BOOST_REQUIRE_MESSAGE(r.status == 200, r.body);
  auto cert = platform::base64_decode(json_string(r.body, "certificate").value_or(""));
  BOOST_REQUIRE(cert.ok());
  BOOST_TEST(platform::certificate_signed_by(*cert, foreign_ca_key()));

  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

// ---------------------------------------------------------------- issuecredential

BOOST_AUTO_TEST_CASE(issue_credential_returns_a_valid_binding_certificate) {
  world& w = optional_world();
  const identity& who = w.cfg.system_identity;
  const response r =
    w.auth->issue_credential(issue_request(good_csr(w, binding_key(), who.client_id)), who);
  BOOST_REQUIRE_MESSAGE(r.status == 200, r.body);
  BOOST_TEST(json_string(r.body, "client_id").value_or("") == who.client_id);
  BOOST_TEST(json_string(r.body, "tenant_id").value_or("") == w.cfg.tenant_id);
  BOOST_TEST(json_string(r.body, "identity_type").value_or("") == "SystemAssigned");
  BOOST_TEST(json_string(r.body, "mtls_authentication_endpoint").value_or("") == token_url);

  auto der = platform::base64_decode(json_string(r.body, "certificate").value_or(""));
  BOOST_REQUIRE(der.ok());
  auto info = platform::inspect_certificate(*der);
  BOOST_REQUIRE_MESSAGE(info.ok(), why(info));
  auto spki = platform::public_key_der(binding_key());
  BOOST_REQUIRE(spki.ok());
  auto valid = platform::validate_binding_certificate(*info, *spki, who.client_id, w.now());
  BOOST_TEST(valid.ok(), why(valid));
  BOOST_TEST(info->issuer_cn == issuer_cn);
  BOOST_TEST(info->not_before == base_time);
  BOOST_TEST(info->not_after == base_time + w.cfg.cert_lifetime.count());
  BOOST_TEST(info->has_eku);
  BOOST_TEST(info->eku_client_auth);
  BOOST_TEST(info->ku_digital_signature);

  const auto issued = w.auth->issued();
  BOOST_REQUIRE(issued.size() == 1u);
  BOOST_TEST(issued[0].serial_hex == info->serial_hex);
  BOOST_TEST(issued[0].x5t_s256 == info->x5t_s256);
  BOOST_TEST(issued[0].client_id == who.client_id);
  BOOST_TEST(issued[0].not_after == info->not_after);
  BOOST_TEST(!issued[0].attested);
  BOOST_TEST(!issued[0].revoked);
}

BOOST_AUTO_TEST_CASE(issue_credential_for_a_user_assigned_identity_says_so) {
  world& w = optional_world();
  const identity& who = w.cfg.user_identities.at(0);
  request req = issue_request(good_csr(w, binding_key(), who.client_id));
  req.query.emplace_back("client_id", who.client_id);
  req.query.emplace_back("bypass_cache", "true");
  const response r = w.auth->issue_credential(req, who);
  BOOST_REQUIRE_MESSAGE(r.status == 200, r.body);
  BOOST_TEST(json_string(r.body, "identity_type").value_or("") == "UserAssigned");
  BOOST_TEST(json_string(r.body, "client_id").value_or("") == who.client_id);
}

BOOST_AUTO_TEST_CASE(issue_credential_accepts_a_scale_set_cuid_and_ignores_unknown_members) {
  world& w = off_world(); // has a vmssId
  const identity& who = w.cfg.system_identity;
  const std::string csr = good_csr(w, binding_key(), who.client_id);
  BOOST_TEST(contains(cuid_of(w.cfg), "vmssId"));
  request req = raw_issue_request("{\"extra\":{\"a\":[1,2]},\"csr\":" +
                                  platform::json_quote(platform::base64_encode(csr)) +
                                  ",\"more\":null}");
  const response r = w.auth->issue_credential(req, who);
  BOOST_TEST(r.status == 200, r.body);
}

BOOST_AUTO_TEST_CASE(issue_credential_rejects_malformed_bodies) {
  world& w = optional_world();
  const identity& who = w.cfg.system_identity;
  const std::string csr_b64 = platform::base64_encode(good_csr(w, binding_key(), who.client_id));
  auto issue = [&](std::string body) {
    return w.auth->issue_credential(raw_issue_request(std::move(body)), who);
  };
  expect_invalid_request(issue("not json"), "not a JSON object");
  expect_invalid_request(issue("[1,2]"), "not a JSON object");
  expect_invalid_request(issue("{\"csr\":\"" + csr_b64 + "\"} trailing"), "not a JSON object");
  expect_invalid_request(issue("{}"), "csr is missing");
  expect_invalid_request(issue("{\"csr\":42}"), "csr must be a string");
  expect_invalid_request(issue("{\"csr\":\"\"}"), "csr is empty");
  expect_invalid_request(
    issue("{\"csr\":\"" + csr_b64 + "\",\"attestation_token\":7}"),
    "attestation_token must be a string");
  expect_invalid_request(issue("{\"csr\":\"-----BEGIN CERTIFICATE REQUEST-----\\n" + csr_b64 +
                               "\\n-----END CERTIFICATE REQUEST-----\"}"),
                         "PEM");
  expect_invalid_request(issue("{\"csr\":\"" + csr_b64.substr(0, 64) + "\\n" +
                               csr_b64.substr(64) + "\"}"),
                         "line breaks");
  expect_invalid_request(issue("{\"csr\":\"!!notbase64!!\"}"), "base64");
  expect_invalid_request(issue("{\"csr\":\"" + platform::base64_encode("garbage") + "\"}"), "");
  BOOST_TEST(w.auth->issued().empty());
}

BOOST_AUTO_TEST_CASE(forged_csr_helpers_reproduce_the_correct_encoding) {
  // The forgeries below differ from a good CSR by exactly one rule only if the helpers
  // build the good parts as platform/csr does.
  world& w = optional_world();
  BOOST_TEST(pss_algorithm(false, false) == platform::pss_sha256_algorithm_der());
  BOOST_TEST(subject(der::ia5_string, w.cfg.tenant_id, w.cfg.system_identity.client_id) ==
             platform::csr_subject_der(w.cfg.system_identity.client_id, w.cfg.tenant_id));
  const std::string csr = forge_csr(binding_key(),
                                    subject(der::ia5_string, w.cfg.tenant_id,
                                            w.cfg.system_identity.client_id),
                                    cuid_of(w.cfg), pss_algorithm(false, false));
  const response r = w.auth->issue_credential(issue_request(csr), w.cfg.system_identity);
  BOOST_TEST(r.status == 200, r.body);
}

BOOST_AUTO_TEST_CASE(issue_credential_rejects_each_broken_csr_rule) {
  world& w = optional_world();
  const identity& who = w.cfg.system_identity;
  const std::string& tenant = w.cfg.tenant_id;
  const std::string good_subject = subject(der::ia5_string, tenant, who.client_id);
  const std::string good_alg = pss_algorithm(false, false);

  auto expect_parse_rule = [&](const std::string& csr, std::string_view part) {
    auto parsed = platform::parse_csr(csr);
    BOOST_REQUIRE_MESSAGE(!parsed.ok(), "parse_csr should refuse this CSR");
    const response r = w.auth->issue_credential(issue_request(csr), who);
    // parse_csr's message is passed through unchanged.
    expect_invalid_request(r, parsed.error());
    expect_invalid_request(r, part);
  };

  BOOST_TEST_CONTEXT("DC as PrintableString") {
    expect_parse_rule(forge_csr(binding_key(), subject(der::printable_string, tenant,
                                                       who.client_id),
                                cuid_of(w.cfg), good_alg),
                      "IA5String");
  }
  BOOST_TEST_CONTEXT("PSS hash identifiers with NULL parameters") {
    expect_parse_rule(forge_csr(binding_key(), good_subject, cuid_of(w.cfg),
                                pss_algorithm(true, false)),
                      "NULL");
  }
  BOOST_TEST_CONTEXT("PSS trailerField spelled out") {
    expect_parse_rule(forge_csr(binding_key(), good_subject, cuid_of(w.cfg),
                                pss_algorithm(false, true)),
                      "trailerField");
  }
  BOOST_TEST_CONTEXT("bad signature") {
    std::string csr = good_csr(w, binding_key(), who.client_id);
    csr[csr.size() - 5] ^= 0x01; // inside the signature BIT STRING
    auto parsed = platform::parse_csr(csr);
    BOOST_REQUIRE_MESSAGE(parsed.ok(), why(parsed));
    auto sig = platform::verify_csr_signature(*parsed);
    BOOST_REQUIRE(!sig.ok());
    const response r = w.auth->issue_credential(issue_request(csr), who);
    expect_invalid_request(r, sig.error());
  }
  BOOST_TEST_CONTEXT("wrong cuId") {
    const std::string csr = forge_csr(binding_key(), good_subject,
                                      platform::cu_id_json({"00000000-1111-2222-3333-444444444444",
                                                            ""}),
                                      good_alg);
    expect_invalid_request(w.auth->issue_credential(issue_request(csr), who), "cuId");
  }
  BOOST_TEST_CONTEXT("cuId with different spacing") {
    std::string spaced = cuid_of(w.cfg);
    spaced.insert(1, " ");
    const std::string csr = forge_csr(binding_key(), good_subject, spaced, good_alg);
    expect_invalid_request(w.auth->issue_credential(issue_request(csr), who), "cuId");
  }
  BOOST_TEST_CONTEXT("CN is another identity") {
    const std::string csr =
      good_csr(w, binding_key(), w.cfg.user_identities.at(0).client_id);
    expect_invalid_request(w.auth->issue_credential(issue_request(csr), who), "CN");
  }
  BOOST_TEST_CONTEXT("DC is another tenant") {
    const std::string csr = forge_csr(
      binding_key(),
      subject(der::ia5_string, "00000000-0000-4000-8000-000000000000", who.client_id),
      cuid_of(w.cfg), good_alg);
    expect_invalid_request(w.auth->issue_credential(issue_request(csr), who), "DC");
  }
  BOOST_TEST(w.auth->issued().empty());
}

BOOST_AUTO_TEST_CASE(issue_credential_compares_the_cn_case_insensitively) {
  world& w = optional_world();
  identity who = w.cfg.user_identities.at(1); // has hex letters
  std::string upper = who.client_id;
  for (char& c : upper)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const response r = w.auth->issue_credential(issue_request(good_csr(w, binding_key(), upper)),
                                              who);
  BOOST_TEST(r.status == 200, r.body);
}

// ---------------------------------------------------------------- attestation policy

BOOST_AUTO_TEST_CASE(required_attestation_refuses_a_missing_or_empty_token) {
  world& w = required_world();
  const identity& who = w.cfg.system_identity;
  const std::string csr = good_csr(w, binding_key(), who.client_id);
  for (std::optional<std::string> token : {std::optional<std::string>{}, std::optional<std::string>{""}}) {
    const response r = w.auth->issue_credential(issue_request(csr, token), who);
    BOOST_TEST(r.status == 400);
    BOOST_TEST(r.body == "{\"error\":\"invalid_request\",\"error_description\":\"Attestation "
                         "Token is missing / empty in the issue credential request\"}");
  }
}

BOOST_AUTO_TEST_CASE(required_attestation_issues_with_a_valid_token_and_records_it) {
  world& w = required_world();
  const identity& who = w.cfg.system_identity;
  issue_cert(w, binding_key(), who, attestation_token(w, binding_key()));
  const auto issued = w.auth->issued();
  BOOST_REQUIRE(issued.size() == 1u);
  BOOST_TEST(issued[0].attested);
}

BOOST_AUTO_TEST_CASE(optional_attestation_issues_without_a_token_and_verifies_one_when_sent) {
  world& w = optional_world();
  const identity& who = w.cfg.system_identity;
  issue_cert(w, binding_key(), who);
  issue_cert(w, binding_key(), who, attestation_token(w, binding_key()));
  const response bad = w.auth->issue_credential(
    issue_request(good_csr(w, binding_key(), who.client_id), "not.a.jwt"), who);
  expect_invalid_request(bad, "attestation token");
  const auto issued = w.auth->issued();
  BOOST_REQUIRE(issued.size() == 2u);
  BOOST_TEST(!issued[0].attested);
  BOOST_TEST(issued[1].attested);
}

BOOST_AUTO_TEST_CASE(attestation_off_ignores_the_token) {
  world& w = off_world();
  const identity& who = w.cfg.system_identity;
  issue_cert(w, binding_key(), who, std::string("garbage"));
  const auto issued = w.auth->issued();
  BOOST_REQUIRE(issued.size() == 1u);
  BOOST_TEST(!issued[0].attested);
}

BOOST_AUTO_TEST_CASE(attestation_token_for_another_key_is_refused) {
  world& w = required_world();
  const identity& who = w.cfg.system_identity;
  const std::string token = attestation_token(w, other_binding_key());
  const response r =
    w.auth->issue_credential(issue_request(good_csr(w, binding_key(), who.client_id), token), who);
  expect_invalid_request(r, "another key");
}

BOOST_AUTO_TEST_CASE(expired_attestation_token_is_refused) {
  world& w = required_world();
  const identity& who = w.cfg.system_identity;
  const std::string token = attestation_token(w, binding_key());
  w.advance(w.cfg.attestation_lifetime.count());
  const response r =
    w.auth->issue_credential(issue_request(good_csr(w, binding_key(), who.client_id), token), who);
  expect_invalid_request(r, "expired");
}

BOOST_AUTO_TEST_CASE(attestation_token_not_signed_by_the_attestation_service_is_refused) {
  world& w = required_world();
  const identity& who = w.cfg.system_identity;
  auto kid = platform::key_id(binding_key());
  BOOST_REQUIRE(kid.ok());
  const std::string payload = "{\"iat\":" + std::to_string(w.now()) + ",\"exp\":" +
                              std::to_string(w.now() + 3600) + ",\"iss\":" +
                              platform::json_quote(attestation_url) + ",\"key_id\":" +
                              platform::json_quote(*kid) + "}";
  auto forged = platform::sign_jwt_rs256(foreign_ca_key(), payload);
  BOOST_REQUIRE(forged.ok());
  const response r = w.auth->issue_credential(
    issue_request(good_csr(w, binding_key(), who.client_id), *forged), who);
  expect_invalid_request(r, "signature");
}

// ---------------------------------------------------------------- attest endpoint

BOOST_AUTO_TEST_CASE(attest_returns_a_jwt_for_the_key) {
  world& w = optional_world();
  const std::string client_id = w.cfg.system_identity.client_id;
  const response r = w.auth->attest(attest_request(binding_key(), client_id, "nonce-123"));
  BOOST_REQUIRE_MESSAGE(r.status == 200, r.body);
  const std::string token = json_string(r.body, "token").value_or("");
  auto parts = platform::split_jwt(token);
  BOOST_REQUIRE_MESSAGE(parts.ok(), why(parts));
  BOOST_TEST(contains(parts->header_json, "\"RS256\""));
  auto claims = platform::parse_jwt_claims(parts->payload_json);
  BOOST_REQUIRE(claims.ok());
  auto kid = platform::key_id(binding_key());
  BOOST_REQUIRE(kid.ok());
  BOOST_TEST(claims->key_id == *kid);
  BOOST_TEST(claims->iss == attestation_url);
  BOOST_TEST(claims->iat.value_or(0) == base_time);
  BOOST_TEST(claims->nbf.value_or(0) == base_time);
  BOOST_TEST(claims->exp.value_or(0) == base_time + w.cfg.attestation_lifetime.count());
  BOOST_TEST(json_string(parts->payload_json, "client_id").value_or("") == client_id);
}

BOOST_AUTO_TEST_CASE(attest_rejects_bad_proofs_and_bodies) {
  world& w = optional_world();
  const std::string client_id = w.cfg.system_identity.client_id;

  request wrong_sig = attest_request(binding_key(), client_id, "nonce-a");
  const std::string other_sig = platform::base64_encode(
    *platform::sign_pss_sha256(binding_key(), "nonce-b"));
  const auto at = wrong_sig.body.find("\"signature\":\"") + 13;
  wrong_sig.body.replace(at, wrong_sig.body.find('"', at) - at, other_sig);
  expect_invalid_request(w.auth->attest(wrong_sig), "signature does not verify");

  // Signed by another key than the one whose attestation is asked for.
  request foreign = attest_request(other_binding_key(), client_id, "nonce-a");
  const std::string signer_spki =
    platform::base64_encode(*platform::public_key_der(other_binding_key()));
  const std::string claimed_spki = platform::base64_encode(*platform::public_key_der(binding_key()));
  foreign.body.replace(foreign.body.find(signer_spki), signer_spki.size(), claimed_spki);
  expect_invalid_request(w.auth->attest(foreign), "signature does not verify");

  platform::pkey_ptr small = new_key(1024);
  expect_invalid_request(w.auth->attest(attest_request(small.get(), client_id, "n")), "2048");

  expect_invalid_request(w.auth->attest(attest_request(binding_key(), "not-a-guid", "n")),
                         "client_id must be a GUID");
  request missing = attest_request(binding_key(), client_id, "n");
  missing.body = "{\"public_key\":\"AAAA\",\"client_id\":\"" + client_id + "\",\"nonce\":\"n\"}";
  expect_invalid_request(w.auth->attest(missing), "signature is missing");
  missing.body = "{\"public_key\":\"AAAA\"";
  expect_invalid_request(w.auth->attest(missing), "not a JSON object");
}

// ---------------------------------------------------------------- token endpoint

BOOST_AUTO_TEST_CASE(token_endpoint_refuses_a_certificate_past_its_token_not_after_with_1000901) {
  world& w = world_named("token_not_after", [] {
    config c;
    c.token_not_after = std::chrono::seconds(600);
    return c;
  });
  const identity& who = w.cfg.system_identity;
  const std::string cert = issue_cert(w, binding_key(), who);
  auto info = platform::inspect_certificate(cert);
  BOOST_REQUIRE(info.ok());
  BOOST_TEST(info->token_not_after == w.now() + 600);
  BOOST_TEST(info->not_after == w.now() + w.cfg.cert_lifetime.count());
  BOOST_TEST(w.auth->token(token_request(w, cert)).status == 200);
  w.advance(600);
  const response r = w.auth->token(token_request(w, cert));
  BOOST_TEST(r.status == 401);
  BOOST_TEST(json_string(r.body, "error").value_or("") == "invalid_client");
  BOOST_TEST(r.body.find("[1000901]") != std::string::npos, r.body);
}

BOOST_AUTO_TEST_CASE(token_endpoint_issues_an_mtls_pop_token_bound_to_the_certificate) {
  world& w = optional_world();
  const identity& who = w.cfg.system_identity;
  const std::string cert = issue_cert(w, binding_key(), who);
  request req = token_request(w, cert);
  req.headers.emplace_back("client-request-id", "0e7b3d7a-1c2b-4d5e-8f90-123456789abc");
  req.headers.emplace_back("return-client-request-id", "true");
  const response r = w.auth->token(req);
  BOOST_REQUIRE_MESSAGE(r.status == 200, r.body);
  BOOST_TEST(header_of(r, "client-request-id") == "0e7b3d7a-1c2b-4d5e-8f90-123456789abc");
  BOOST_TEST(json_string(r.body, "token_type").value_or("") == "mtls_pop");
  BOOST_TEST(json_int(r.body, "expires_in").value_or(0) == w.cfg.token_lifetime.count());
  BOOST_TEST(json_int(r.body, "ext_expires_in").has_value());
  BOOST_TEST(!json_has(r.body, "refresh_in"));

  auto claims = platform::read_jwt_claims(json_string(r.body, "access_token").value_or(""));
  BOOST_REQUIRE_MESSAGE(claims.ok(), why(claims));
  BOOST_TEST(claims->cnf_x5t_s256 == platform::x5t_s256(cert));
  BOOST_TEST(claims->aud == "https://management.azure.com");
  BOOST_TEST(claims->iss == token_url + "/" + w.cfg.tenant_id + "/v2.0");
  BOOST_TEST(claims->tid == w.cfg.tenant_id);
  BOOST_TEST(claims->appid == who.client_id);
  BOOST_TEST(claims->iat.value_or(0) == base_time);
  BOOST_TEST(claims->nbf.value_or(0) == base_time);
  BOOST_TEST(claims->exp.value_or(0) == base_time + w.cfg.token_lifetime.count());
}

BOOST_AUTO_TEST_CASE(token_endpoint_issues_a_bearer_token_without_cnf_and_sends_refresh_in) {
  world& w = off_world(); // token lifetime 3600, refresh_in 1800
  const std::string cert = issue_cert(w, binding_key(), w.cfg.system_identity);
  for (const char* type : {"bearer", "<omit>"}) {
    const response r = w.auth->token(token_request(w, cert, {{"token_type", type}}));
    BOOST_REQUIRE_MESSAGE(r.status == 200, r.body);
    BOOST_TEST(json_string(r.body, "token_type").value_or("") == "Bearer");
    BOOST_TEST(json_int(r.body, "expires_in").value_or(0) == 3600);
    BOOST_TEST(json_int(r.body, "refresh_in").value_or(0) == 1800);
    auto claims = platform::read_jwt_claims(json_string(r.body, "access_token").value_or(""));
    BOOST_REQUIRE(claims.ok());
    BOOST_TEST(claims->cnf_x5t_s256.empty());
  }
}

BOOST_AUTO_TEST_CASE(jwks_verifies_the_issued_token) {
  world& w = optional_world();
  const std::string cert = issue_cert(w, binding_key(), w.cfg.system_identity);
  const std::string token = access_token(w, cert, "mtls_pop");

  const response r = w.auth->jwks(request{});
  BOOST_REQUIRE(r.status == 200);
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  BOOST_REQUIRE(parser.parse(simdjson::padded_string(r.body)).get(root) == simdjson::SUCCESS);
  simdjson::dom::array keys;
  BOOST_REQUIRE(root["keys"].get_array().get(keys) == simdjson::SUCCESS);
  BOOST_REQUIRE(keys.size() == 1u);
  std::string_view kty, use, alg, kid, n, e;
  BOOST_REQUIRE(keys.at(0)["kty"].get(kty) == simdjson::SUCCESS);
  BOOST_REQUIRE(keys.at(0)["use"].get(use) == simdjson::SUCCESS);
  BOOST_REQUIRE(keys.at(0)["alg"].get(alg) == simdjson::SUCCESS);
  BOOST_REQUIRE(keys.at(0)["kid"].get(kid) == simdjson::SUCCESS);
  BOOST_REQUIRE(keys.at(0)["n"].get(n) == simdjson::SUCCESS);
  BOOST_REQUIRE(keys.at(0)["e"].get(e) == simdjson::SUCCESS);
  BOOST_TEST(kty == "RSA");
  BOOST_TEST(use == "sig");
  BOOST_TEST(alg == "RS256");

  auto parts = platform::split_jwt(token);
  BOOST_REQUIRE(parts.ok());
  BOOST_TEST(json_string(parts->header_json, "kid").value_or("") == std::string(kid));
  platform::pkey_ptr key = key_from_jwk(std::string(n), std::string(e));
  auto verified = platform::verify_jwt_rs256(*parts, key.get());
  BOOST_TEST(verified.ok(), why(verified));
  auto key_kid = platform::key_id(key.get());
  BOOST_REQUIRE(key_kid.ok());
  BOOST_TEST(*key_kid == std::string(kid));
}

BOOST_AUTO_TEST_CASE(token_endpoint_requires_a_client_certificate) {
  world& w = optional_world();
  request req = token_request(w, "");
  req.headers.emplace_back("client-request-id", "corr-1");
  const response r = w.auth->token(req);
  expect_aad_error(r, 401, "invalid_client", 7000218);
  BOOST_TEST(json_string(r.body, "correlation_id").value_or("") == "corr-1");
  BOOST_TEST(header_of(r, "client-request-id").empty()); // not asked to return it
}

BOOST_AUTO_TEST_CASE(token_endpoint_refuses_a_certificate_from_another_ca) {
  world& w = optional_world();
  const response r = w.auth->token(token_request(w, foreign_cert(w, binding_key())));
  expect_aad_error(r, 401, "invalid_client", 1000611);
  const response garbage = w.auth->token(token_request(w, "not a certificate"));
  expect_aad_error(garbage, 401, "invalid_client", 1000611);
}

BOOST_AUTO_TEST_CASE(token_endpoint_refuses_an_expired_certificate) {
  world& w = optional_world();
  const std::string cert = issue_cert(w, binding_key(), w.cfg.system_identity);
  w.advance(w.cfg.cert_lifetime.count());
  BOOST_TEST(w.auth->token(token_request(w, cert)).status == 200); // notAfter is inclusive
  w.advance(1);
  expect_aad_error(w.auth->token(token_request(w, cert)), 401, "invalid_client", 1000610);
}

BOOST_AUTO_TEST_CASE(token_endpoint_refuses_a_not_yet_valid_certificate) {
  world& w = optional_world();
  w.advance(600);
  const std::string cert = issue_cert(w, binding_key(), w.cfg.system_identity);
  w.clock->store(base_time); // the clock went back
  expect_aad_error(w.auth->token(token_request(w, cert)), 401, "invalid_client", 1000610);
}

BOOST_AUTO_TEST_CASE(token_endpoint_refuses_a_revoked_certificate) {
  world& w = optional_world();
  const std::string by_serial = issue_cert(w, binding_key(), w.cfg.system_identity);
  const std::string by_x5t = issue_cert(w, binding_key(), w.cfg.system_identity);
  auto serial = platform::inspect_certificate(by_serial);
  BOOST_REQUIRE(serial.ok());

  auto revoked = w.auth->revoke(serial->serial_hex);
  BOOST_TEST(revoked.ok(), why(revoked));
  revoked = w.auth->revoke(platform::x5t_s256(by_x5t));
  BOOST_TEST(revoked.ok(), why(revoked));
  auto unknown = w.auth->revoke("00ff");
  BOOST_REQUIRE(!unknown.ok());
  BOOST_TEST(contains(unknown.error(), "00ff"));

  expect_aad_error(w.auth->token(token_request(w, by_serial)), 401, "invalid_client", 1000614);
  expect_aad_error(w.auth->token(token_request(w, by_x5t)), 401, "invalid_client", 1000614);
  for (const auto& c : w.auth->issued())
    BOOST_TEST(c.revoked);

  const std::string fresh = issue_cert(w, binding_key(), w.cfg.system_identity);
  BOOST_TEST(w.auth->token(token_request(w, fresh)).status == 200);
}

BOOST_AUTO_TEST_CASE(token_endpoint_refuses_a_client_id_other_than_the_certificate_cn) {
  world& w = optional_world();
  const std::string cert = issue_cert(w, binding_key(), w.cfg.system_identity);
  const response r = w.auth->token(
    token_request(w, cert, {{"client_id", w.cfg.user_identities.at(0).client_id}}));
  expect_aad_error(r, 401, "invalid_client", 1000612);
}

BOOST_AUTO_TEST_CASE(token_endpoint_refuses_a_scope_without_default_suffix) {
  world& w = optional_world();
  const std::string cert = issue_cert(w, binding_key(), w.cfg.system_identity);
  for (const char* scope : {"https://management.azure.com", "https://management.azure.com/",
                            "/.default", "https://a/.default https://b/.default"}) {
    BOOST_TEST_CONTEXT("scope " << scope) {
      expect_aad_error(w.auth->token(token_request(w, cert, {{"scope", scope}})), 400,
                       "invalid_scope", 1002012);
    }
  }
  expect_aad_error(w.auth->token(token_request(w, cert, {{"scope", "<omit>"}})), 400,
                   "invalid_request", 900144);
}

BOOST_AUTO_TEST_CASE(token_endpoint_refuses_a_bad_grant_type) {
  world& w = optional_world();
  const std::string cert = issue_cert(w, binding_key(), w.cfg.system_identity);
  expect_aad_error(w.auth->token(token_request(w, cert, {{"grant_type", "password"}})), 400,
                   "unsupported_grant_type", 70003);
  expect_aad_error(w.auth->token(token_request(w, cert, {{"grant_type", "<omit>"}})), 400,
                   "invalid_request", 900144);
}

BOOST_AUTO_TEST_CASE(token_endpoint_refuses_other_request_mistakes) {
  world& w = optional_world();
  const std::string cert = issue_cert(w, binding_key(), w.cfg.system_identity);
  BOOST_TEST_CONTEXT("another tenant") {
    expect_aad_error(
      w.auth->token(token_request(w, cert, {}, "00000000-0000-4000-8000-000000000000")), 400,
      "invalid_request", 90002);
  }
  BOOST_TEST_CONTEXT("client secret") {
    expect_aad_error(w.auth->token(token_request(w, cert, {{"client_secret", "s"}})), 400,
                     "invalid_request", 700025);
  }
  BOOST_TEST_CONTEXT("client assertion") {
    expect_aad_error(w.auth->token(token_request(w, cert, {{"client_assertion", "a.b.c"}})), 400,
                     "invalid_request", 700025);
  }
  BOOST_TEST_CONTEXT("unknown token_type") {
    expect_aad_error(w.auth->token(token_request(w, cert, {{"token_type", "pop"}})), 400,
                     "invalid_request", 70011);
  }
  BOOST_TEST_CONTEXT("empty claims") {
    expect_aad_error(w.auth->token(token_request(w, cert, {{"claims", ""}})), 400,
                     "invalid_request", 70011);
  }
  BOOST_TEST_CONTEXT("missing client_id") {
    expect_aad_error(w.auth->token(token_request(w, cert, {{"client_id", "<omit>"}})), 400,
                     "invalid_request", 900144);
  }
  BOOST_TEST_CONTEXT("JSON body") {
    request req = token_request(w, cert);
    req.headers = {{"Content-Type", "application/json"}};
    expect_aad_error(w.auth->token(req), 400, "invalid_request", 900144);
  }
  BOOST_TEST_CONTEXT("GET") {
    request req = token_request(w, cert);
    req.method = "GET";
    expect_aad_error(w.auth->token(req), 400, "invalid_request", 900561);
  }
  BOOST_TEST_CONTEXT("duplicate parameter") {
    request req = token_request(w, cert);
    req.body += "&scope=https%3A%2F%2Fother%2F.default";
    expect_aad_error(w.auth->token(req), 400, "invalid_request", 70011);
  }
}

BOOST_AUTO_TEST_CASE(token_endpoint_accepts_client_capability_claims) {
  world& w = optional_world();
  const std::string cert = issue_cert(w, binding_key(), w.cfg.system_identity);
  const response r = w.auth->token(token_request(
    w, cert, {{"claims", "{\"access_token\":{\"xms_cc\":{\"values\":[\"cp1\"]}}}"}}));
  BOOST_TEST(r.status == 200, r.body);
}

// ---------------------------------------------------------------- resource

BOOST_AUTO_TEST_CASE(resource_accepts_a_bound_token_only_with_its_certificate) {
  world& w = optional_world();
  const std::string cert = issue_cert(w, binding_key(), w.cfg.system_identity);
  const std::string other = issue_cert(w, other_binding_key(), w.cfg.system_identity);
  const std::string token = access_token(w, cert, "mtls_pop");

  const response ok = w.auth->resource(resource_request("mtls_pop " + token, cert));
  BOOST_REQUIRE_MESSAGE(ok.status == 200, ok.body);
  BOOST_TEST(ok.body == "{\"ok\":true,\"appid\":\"" + w.cfg.system_identity.client_id +
                          "\",\"token_type\":\"mtls_pop\",\"token_bound_auth\":false}");

  const response wrong = w.auth->resource(resource_request("mtls_pop " + token, other));
  BOOST_TEST(wrong.status == 401);
  BOOST_TEST(header_of(wrong, "WWW-Authenticate").rfind("mtls_pop error=\"invalid_token\", "
                                                        "error_description=\"", 0) == 0);
  BOOST_TEST(json_string(wrong.body, "error").value_or("") == "invalid_token");

  const response none = w.auth->resource(resource_request("mtls_pop " + token, ""));
  BOOST_TEST(none.status == 401);
  BOOST_TEST(contains(header_of(none, "WWW-Authenticate"), "no client certificate"));
}

BOOST_AUTO_TEST_CASE(resource_applies_the_bearer_rules) {
  world& w = optional_world();
  const std::string cert = issue_cert(w, binding_key(), w.cfg.system_identity);
  const std::string pop = access_token(w, cert, "mtls_pop");
  const std::string bearer = access_token(w, cert, "bearer");

  const response ok = w.auth->resource(resource_request("Bearer " + bearer, ""));
  BOOST_TEST(ok.status == 200, ok.body);
  BOOST_TEST(json_string(ok.body, "token_type").value_or("") == "Bearer");

  const response pop_as_bearer = w.auth->resource(resource_request("Bearer " + pop, cert));
  BOOST_TEST(pop_as_bearer.status == 401);
  BOOST_TEST(header_of(pop_as_bearer, "WWW-Authenticate").rfind("Bearer error=\"invalid_token\"",
                                                                0) == 0);

  const response bearer_as_pop = w.auth->resource(resource_request("mtls_pop " + bearer, cert));
  BOOST_TEST(bearer_as_pop.status == 401);
  BOOST_TEST(contains(header_of(bearer_as_pop, "WWW-Authenticate"), "cnf"));

  auto v1 = w.auth->v1_token_response(w.cfg.system_identity, "https://vault.azure.net");
  BOOST_REQUIRE_MESSAGE(v1.ok(), why(v1));
  const response v1_ok = w.auth->resource(
    resource_request("Bearer " + json_string(*v1, "access_token").value_or(""), ""));
  BOOST_TEST(v1_ok.status == 200, v1_ok.body);
}

BOOST_AUTO_TEST_CASE(resource_refuses_expired_forged_and_missing_tokens) {
  world& w = optional_world();
  const std::string cert = issue_cert(w, binding_key(), w.cfg.system_identity);
  const std::string token = access_token(w, cert, "mtls_pop");

  auto parts = platform::split_jwt(token);
  BOOST_REQUIRE(parts.ok());
  auto forged = platform::sign_jwt_rs256(foreign_ca_key(), parts->payload_json);
  BOOST_REQUIRE(forged.ok());
  const response f = w.auth->resource(resource_request("mtls_pop " + *forged, cert));
  BOOST_TEST(f.status == 401);
  BOOST_TEST(contains(header_of(f, "WWW-Authenticate"), "signature"));

  BOOST_TEST(w.auth->resource(resource_request("mtls_pop garbage", cert)).status == 401);
  BOOST_TEST(w.auth->resource(resource_request("", cert)).status == 401);
  BOOST_TEST(w.auth->resource(resource_request("Basic dXNlcjpwYXNz", cert)).status == 401);

  w.advance(w.cfg.token_lifetime.count());
  const response expired = w.auth->resource(resource_request("mtls_pop " + token, cert));
  BOOST_TEST(expired.status == 401);
  BOOST_TEST(contains(header_of(expired, "WWW-Authenticate"), "expired"));
}

// ---------------------------------------------------------------- IMDS v1

BOOST_AUTO_TEST_CASE(v1_token_response_has_the_imds_v1_shape) {
  world& w = optional_world();
  const identity& who = w.cfg.user_identities.at(0);
  auto v1 = w.auth->v1_token_response(who, "https://management.azure.com/");
  BOOST_REQUIRE_MESSAGE(v1.ok(), why(v1));
  const std::string lifetime = std::to_string(w.cfg.v1_token_lifetime.count());
  BOOST_TEST(json_string(*v1, "client_id").value_or("") == who.client_id);
  BOOST_TEST(json_string(*v1, "expires_in").value_or("") == lifetime);
  BOOST_TEST(json_string(*v1, "ext_expires_in").value_or("") == lifetime);
  BOOST_TEST(json_string(*v1, "expires_on").value_or("") ==
             std::to_string(base_time + w.cfg.v1_token_lifetime.count()));
  BOOST_TEST(json_string(*v1, "not_before").value_or("") == std::to_string(base_time));
  BOOST_TEST(json_string(*v1, "resource").value_or("") == "https://management.azure.com/");
  BOOST_TEST(json_string(*v1, "token_type").value_or("") == "Bearer");
  auto claims = platform::read_jwt_claims(json_string(*v1, "access_token").value_or(""));
  BOOST_REQUIRE(claims.ok());
  BOOST_TEST(claims->aud == "https://management.azure.com/");
  BOOST_TEST(claims->appid == who.client_id);
  BOOST_TEST(claims->cnf_x5t_s256.empty());

  BOOST_TEST(!w.auth->v1_token_response(who, "").ok());
}

// ---------------------------------------------------------------- administration, threads

BOOST_AUTO_TEST_CASE(reset_forgets_issued_certificates_and_revocations) {
  world& w = optional_world();
  const std::string cert = issue_cert(w, binding_key(), w.cfg.system_identity);
  BOOST_REQUIRE(w.auth->revoke(platform::x5t_s256(cert)).ok());
  w.auth->reset();
  BOOST_TEST(w.auth->issued().empty());
  BOOST_TEST(!w.auth->revoke(platform::x5t_s256(cert)).ok());
  BOOST_TEST(w.auth->token(token_request(w, cert)).status == 200);
}

BOOST_AUTO_TEST_CASE(concurrent_issuance_and_token_requests_are_all_answered) {
  world& w = optional_world();
  const identity& who = w.cfg.system_identity;
  const std::string csr = good_csr(w, binding_key(), who.client_id);
  constexpr int per_thread = 6;
  std::atomic<int> good{0};
  auto work = [&] {
    for (int i = 0; i < per_thread; ++i) {
      const response r = w.auth->issue_credential(issue_request(csr), who);
      if (r.status != 200)
        continue;
      auto der = platform::base64_decode(json_string(r.body, "certificate").value_or(""));
      if (!der.ok())
        continue;
      if (w.auth->token(token_request(w, *der)).status == 200)
        ++good;
      (void)w.auth->issued();
    }
  };
  std::thread a(work), b(work);
  a.join();
  b.join();
  BOOST_TEST(good.load() == 2 * per_thread);
  BOOST_TEST(w.auth->issued().size() == 2u * per_thread);
}

BOOST_AUTO_TEST_SUITE_END()
