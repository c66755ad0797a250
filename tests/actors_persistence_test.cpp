#include <boost/test/unit_test.hpp>

#include <sys/stat.h>

#include <openssl/evp.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "actors/persisted.hpp"
#include "actors/software_key_store.hpp"
#include "platform/binding.hpp"
#include "platform/encoding.hpp"
#include "platform/files.hpp"
#include "platform/jwt.hpp"
#include "platform/keys.hpp"
#include "platform/x509.hpp"

using namespace msiv2;

namespace {

constexpr const char* tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
constexpr const char* client = "9a2c7c3e-5e4b-4c55-9f3a-0d1f2e3a4b5c";
constexpr std::int64_t now_s = 1'767'225'600; // 2026-01-01
constexpr const char* artifact = "http://imds.test system-assigned|plain";

key_ref new_key() {
  auto k = make_software_key();
  BOOST_REQUIRE_MESSAGE(k, (k ? "" : k.error()));
  return *k;
}

/// A credential for `key` with a real certificate from a throw-away CA, valid for a week.
credential credential_for(const key_ref& key) {
  auto ca = platform::generate_rsa_key(2048);
  BOOST_REQUIRE(ca);
  platform::issue_params cap;
  cap.subject_key = ca->get();
  cap.subject_cn = "test issuer";
  cap.not_before = now_s - 3600;
  cap.not_after = now_s + 365 * 24 * 3600;
  cap.is_ca = true;
  auto ca_der = platform::issue_certificate(cap, nullptr, ca->get());
  BOOST_REQUIRE(ca_der);
  auto ca_cert = platform::parse_certificate(*ca_der);
  BOOST_REQUIRE(ca_cert);
  platform::issue_params p;
  p.subject_key = key.key->get();
  p.subject_cn = client;
  p.subject_dc = tenant;
  p.not_before = now_s;
  p.not_after = now_s + 7 * 24 * 3600;
  p.client_auth = true;
  auto der = platform::issue_certificate(p, ca_cert->get(), ca->get());
  BOOST_REQUIRE_MESSAGE(der, (der ? "" : der.error()));
  credential c;
  c.identity = managed_identity::system();
  c.metadata.client_id = client;
  c.metadata.tenant_id = tenant;
  c.metadata.cuid_json = R"({"vmId":"5c8b3a7e-1f2d-4e6a-9b8c-7d6e5f4a3b2c"})";
  c.metadata.attestation_endpoint = "https://127.0.0.1:8443";
  c.client_id = client;
  c.tenant_id = tenant;
  c.identity_type = "SystemAssigned";
  c.mtls_endpoint = "https://westus.mtlsauth.test";
  c.certificate_der = *der;
  c.x5t_s256 = platform::x5t_s256(*der);
  c.not_before_ms = p.not_before * 1000;
  c.not_after_ms = p.not_after * 1000;
  c.key = key;
  return c;
}

std::string replaced(std::string s, const std::string& from, const std::string& to) {
  auto at = s.find(from);
  BOOST_REQUIRE_MESSAGE(at != std::string::npos, "'" << from << "' not in the file");
  return s.replace(at, from.size(), to);
}

/// A private temporary cache directory (prepared like a real one), removed at the end.
struct temp_cache {
  temp_cache() {
    char templ[] = "/tmp/msiv2-actors-test-XXXXXX";
    BOOST_REQUIRE(::mkdtemp(templ) != nullptr);
    root = templ;
    dir = root + "/cache";
    auto ok = platform::prepare_private_dir(dir);
    BOOST_REQUIRE_MESSAGE(ok, (ok ? "" : ok.error()));
    boot_path = root + "/boot_id";
    set_boot("6f1d2c3b-0000-4000-8000-000000000001");
  }
  ~temp_cache() {
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
  }
  void set_boot(const std::string& id) const {
    std::ofstream(boot_path, std::ios::trunc) << id << "\n";
  }
  key_store_settings settings() const {
    key_store_settings s;
    s.cache_dir = dir;
    s.boot_id_path = boot_path;
    s.lock_wait = std::chrono::milliseconds(5000);
    return s;
  }
  void put(const std::string& name, const std::string& bytes) const {
    auto ok = platform::write_file_atomically(dir, name, bytes);
    BOOST_REQUIRE_MESSAGE(ok, (ok ? "" : ok.error()));
  }
  bool exists(const std::string& name) const {
    return std::filesystem::exists(dir + "/" + name);
  }
  std::string root, dir, boot_path;
};

result<key_ref> load(key_store& s) {
  std::promise<result<key_ref>> p;
  auto f = p.get_future();
  s.load_or_create([&p](result<key_ref> r) { p.set_value(std::move(r)); });
  return f.get();
}

result<key_ref> rotate(key_store& s, const std::string& id) {
  std::promise<result<key_ref>> p;
  auto f = p.get_future();
  s.rotate(id, [&p](result<key_ref> r) { p.set_value(std::move(r)); });
  return f.get();
}

key_ref load_ok(key_store& s) {
  auto r = load(s);
  BOOST_REQUIRE_MESSAGE(r, (r ? "" : r.error()));
  return *r;
}

} // namespace

/// The token endpoint hosts trusted here: the Azure defaults and the test's own.
static const std::vector<std::string> test_hosts = [] {
  auto h = io::default_token_endpoint_hosts();
  h.push_back("mtlsauth.test");
  h.push_back("127.0.0.1");
  return h;
}();

BOOST_AUTO_TEST_SUITE(actors_persistence_test)

// -- certificate file ----------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(certificate_file_round_trips_bound_to_the_current_key) {
  auto key = new_key();
  auto c = credential_for(key);
  auto bytes = persisted::encode_certificate(c, artifact, now_s * 1000);
  BOOST_CHECK(bytes.find("PRIVATE") == std::string::npos);
  BOOST_CHECK_EQUAL(persisted::key_id_of(bytes), key.key_id);
  auto d = persisted::decode_certificate(bytes, artifact, key, now_s + 60, test_hosts);
  BOOST_REQUIRE_MESSAGE(d, d.reason);
  auto& got = *d.value;
  BOOST_CHECK(got.identity == c.identity);
  BOOST_CHECK_EQUAL(got.metadata.client_id, c.metadata.client_id);
  BOOST_CHECK_EQUAL(got.metadata.tenant_id, c.metadata.tenant_id);
  BOOST_CHECK_EQUAL(got.metadata.cuid_json, c.metadata.cuid_json);
  BOOST_CHECK_EQUAL(got.metadata.attestation_endpoint, c.metadata.attestation_endpoint);
  BOOST_CHECK_EQUAL(got.client_id, c.client_id);
  BOOST_CHECK_EQUAL(got.tenant_id, c.tenant_id);
  BOOST_CHECK_EQUAL(got.identity_type, c.identity_type);
  BOOST_CHECK_EQUAL(got.mtls_endpoint, c.mtls_endpoint);
  BOOST_CHECK(got.certificate_der == c.certificate_der);
  BOOST_CHECK_EQUAL(got.x5t_s256, c.x5t_s256);
  BOOST_CHECK_EQUAL(got.not_before_ms, c.not_before_ms);
  BOOST_CHECK_EQUAL(got.not_after_ms, c.not_after_ms);
  BOOST_CHECK_EQUAL(got.attested, false);
  BOOST_CHECK(got.key.key == key.key);
  // A user-assigned identity and the attested flag survive too.
  c.identity = managed_identity::by_resource_id("/subscriptions/s/resourceGroups/g/x \"q\"");
  c.attested = true;
  auto d2 = persisted::decode_certificate(persisted::encode_certificate(c, artifact, 0), artifact,
                                          key, now_s, test_hosts);
  BOOST_REQUIRE_MESSAGE(d2, d2.reason);
  BOOST_CHECK(d2.value->identity == c.identity);
  BOOST_CHECK(d2.value->attested);
  // Named with the key: another key's certificate of the same identity has another file.
  auto name = persisted::certificate_file_name(artifact, key.key_id);
  BOOST_CHECK_EQUAL(name.rfind("cert-", 0), 0u);
  BOOST_CHECK_EQUAL(name.substr(name.size() - 22), "-" + key.key_id.substr(0, 16) + ".json");
  auto other = new_key();
  BOOST_CHECK_NE(persisted::certificate_file_name(artifact, other.key_id), name);
  BOOST_CHECK_EQUAL(persisted::certificate_file_name(artifact, "not hex"),
                    persisted::certificate_file_name(artifact, "not hex"));
  BOOST_CHECK(persisted::certificate_file_name(artifact, "a/b").find('/') == std::string::npos);
}

BOOST_AUTO_TEST_CASE(certificate_file_refusals_name_the_reason) {
  auto key = new_key();
  auto other = new_key();
  auto good = persisted::encode_certificate(credential_for(key), artifact, now_s * 1000);
  using persisted::refusal;
  struct bad_case {
    std::string bytes;
    refusal why;
    std::string says;
    const key_ref* with = nullptr;
    std::int64_t at = now_s + 60;
  };
  key_ref same_id_other_spki = other;
  same_id_other_spki.key_id = key.key_id;
  std::vector<bad_case> cases = {
    {replaced(good, "\"identity_type\"", "\"identity_typo\""), refusal::malformed, "identity_type"},
    {good.substr(0, good.size() / 2), refusal::malformed, "certificate file"},
    {replaced(good, "msiv2.binding-certificate", "msiv2.other"), refusal::other_format, "schema"},
    {replaced(good, "\"version\":1", "\"version\":2"), refusal::other_format, "version 2"},
    {good, refusal::other_artifact, "not 'http://other'", nullptr},
    {good, refusal::orphan, "not the current key", &other},
    {good, refusal::orphan, "does not certify", &same_id_other_spki},
    {replaced(good, "\"certificate\":\"", "\"certificate\":\"AAAA"), refusal::invalid, "certificate"},
    {good, refusal::expired, "expired", nullptr, now_s + 8 * 24 * 3600},
    // Review M3: a file is trusted no more than the IMDS answer it was made from.
    {replaced(good, "https://westus.mtlsauth.test", "http://127.0.0.1:1"), refusal::invalid,
     "must be an https URL"},
    {replaced(good, "https://westus.mtlsauth.test", "https://evil.example"), refusal::invalid,
     "not on the allow-list"},
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    auto& c = cases[i];
    auto id = c.why == refusal::other_artifact ? std::string("http://other") : std::string(artifact);
    auto d = persisted::decode_certificate(c.bytes, id, c.with ? *c.with : key, c.at, test_hosts);
    BOOST_TEST_CONTEXT("case " << i) {
      BOOST_CHECK(!d);
      BOOST_CHECK(d.why == c.why);
      BOOST_CHECK_MESSAGE(d.reason.find(c.says) != std::string::npos, d.reason);
    }
  }
}

// -- attestation file ----------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(attestation_file_round_trips_and_reads_exp_from_the_jwt) {
  auto signer = platform::generate_rsa_key(2048);
  BOOST_REQUIRE(signer);
  auto jwt = platform::sign_jwt_rs256(signer->get(), R"({"iat":1767225600,"exp":1767229200})");
  BOOST_REQUIRE(jwt);
  attestation_token t;
  t.jwt = *jwt;
  t.issued_at_ms = 1767225600'000;
  t.expires_at_ms = 1767229200'000;
  const std::string ep = "https://127.0.0.1:8443";
  auto bytes = persisted::encode_attestation(t, ep, "kid1", 0);
  BOOST_CHECK_EQUAL(persisted::key_id_of(bytes), "kid1");
  auto d = persisted::decode_attestation(bytes, ep, "kid1", 1767225700'000);
  BOOST_REQUIRE_MESSAGE(d, d.reason);
  BOOST_CHECK_EQUAL(d.value->jwt, t.jwt);
  BOOST_CHECK_EQUAL(d.value->issued_at_ms, t.issued_at_ms);
  BOOST_CHECK_EQUAL(d.value->expires_at_ms, t.expires_at_ms);
  // The file's own exp is not trusted: the JWT's is.
  auto lying = replaced(bytes, "\"exp\":1767229200", "\"exp\":1999999999");
  auto late = persisted::decode_attestation(lying, ep, "kid1", 1767229300'000);
  BOOST_CHECK(!late);
  BOOST_CHECK(late.why == persisted::refusal::expired);
  auto other_key = persisted::decode_attestation(bytes, ep, "kid2", 1767225700'000);
  BOOST_CHECK(other_key.why == persisted::refusal::orphan);
  auto other_ep = persisted::decode_attestation(bytes, "https://other", "kid1", 1767225700'000);
  BOOST_CHECK(other_ep.why == persisted::refusal::other_artifact);
  auto not_jwt = persisted::decode_attestation(replaced(bytes, *jwt, "not-a-jwt"), ep, "kid1",
                                               1767225700'000);
  BOOST_CHECK(not_jwt.why == persisted::refusal::invalid);
  auto v2 = persisted::decode_attestation(replaced(bytes, "\"version\":1", "\"version\":2"), ep,
                                          "kid1", 1767225700'000);
  BOOST_CHECK(v2.why == persisted::refusal::other_format);
  BOOST_CHECK_NE(persisted::attestation_file_name(ep, "kid1"),
                 persisted::attestation_file_name(ep, "kid2"));
}

// -- key file ------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(key_file_round_trips_and_refuses_other_formats) {
  auto key = new_key();
  auto bytes = persisted::encode_key(key.key->get(), "boot-1", key.key_id);
  BOOST_REQUIRE(bytes);
  auto d = persisted::decode_key_file(*bytes);
  BOOST_REQUIRE_MESSAGE(d, d.reason);
  BOOST_CHECK_EQUAL(d.value->boot_id, "boot-1");
  BOOST_CHECK_EQUAL(d.value->key_id, key.key_id);
  BOOST_CHECK_EQUAL(d.value->pem.rfind("-----BEGIN", 0), 0u);
  auto back = platform::private_key_from_pem(d.value->pem);
  BOOST_REQUIRE(back);
  BOOST_CHECK(platform::same_public_key(back->get(), key.key->get()));

  auto pem_only = d.value->pem;
  BOOST_CHECK(persisted::decode_key_file(pem_only).why == persisted::refusal::malformed);
  BOOST_CHECK(persisted::decode_key_file("msiv2-binding-key 1\nboot_id: b\nkey_id: k\n").why ==
              persisted::refusal::malformed);
  BOOST_CHECK(persisted::decode_key_file(replaced(*bytes, "msiv2-binding-key 1", "msiv2-binding-key 2"))
                .why == persisted::refusal::other_format);
  auto no_boot = persisted::decode_key_file(replaced(*bytes, "boot_id: boot-1\n", ""));
  BOOST_CHECK(!no_boot);
  BOOST_CHECK_MESSAGE(no_boot.reason.find("boot_id") != std::string::npos, no_boot.reason);
}

// -- software_key_store with a cache directory ---------------------------------------------------

BOOST_AUTO_TEST_CASE(second_store_on_the_same_dir_gets_the_same_key) {
  temp_cache cache;
  std::string first_id;
  {
    software_key_store a(cache.settings());
    first_id = load_ok(a).key_id;
  }
  struct stat st {};
  BOOST_REQUIRE_EQUAL(::stat((cache.dir + "/" + persisted::key_file_name).c_str(), &st), 0);
  BOOST_CHECK_EQUAL(st.st_mode & 0777, 0600u);
  software_key_store b(cache.settings());
  auto k = load_ok(b);
  BOOST_CHECK_EQUAL(k.key_id, first_id);
  BOOST_CHECK(platform::prove_key_signs(k.key->get()));
}

BOOST_AUTO_TEST_CASE(memory_only_store_writes_nothing) {
  temp_cache cache;
  software_key_store a;
  auto k1 = load_ok(a);
  auto k2 = load_ok(a);
  BOOST_CHECK_EQUAL(k1.key_id, k2.key_id);
  BOOST_CHECK(!cache.exists(persisted::key_file_name));
  auto r = rotate(a, k1.key_id);
  BOOST_REQUIRE(r);
  BOOST_CHECK_NE(r->key_id, k1.key_id);
}

BOOST_AUTO_TEST_CASE(other_boot_id_makes_a_new_key_and_deletes_its_orphans) {
  temp_cache cache;
  std::string old_id;
  {
    software_key_store a(cache.settings());
    old_id = load_ok(a).key_id;
  }
  // Files of the old key: a certificate, an attestation token, and one whose lock another
  // process holds (skipped); a file of an unrelated name is left alone.
  cache.put("cert-aaaa.json", R"({"schema":"msiv2.binding-certificate","key_id":")" + old_id + "\"}");
  cache.put("attestation-bbbb.json", R"({"key_id":")" + old_id + "\"}");
  cache.put("cert-cccc.json", R"({"key_id":")" + old_id + "\"}");
  cache.put("notes.json", R"({"key_id":")" + old_id + "\"}");
  auto busy = platform::file_lock::try_acquire(cache.dir + "/locks/cert-cccc.json.lock");
  BOOST_REQUIRE(busy && *busy);
  cache.set_boot("6f1d2c3b-0000-4000-8000-000000000002"); // a reboot
  software_key_store b(cache.settings());
  auto k = load_ok(b);
  BOOST_CHECK_NE(k.key_id, old_id);
  BOOST_CHECK(!cache.exists("cert-aaaa.json"));
  BOOST_CHECK(!cache.exists("attestation-bbbb.json"));
  BOOST_CHECK(cache.exists("cert-cccc.json"));
  BOOST_CHECK(cache.exists("notes.json"));
  // The new key is the one on disk now.
  software_key_store c(cache.settings());
  BOOST_CHECK_EQUAL(load_ok(c).key_id, k.key_id);
}

BOOST_AUTO_TEST_CASE(group_readable_key_file_is_refused_and_replaced) {
  temp_cache cache;
  std::string old_id;
  {
    software_key_store a(cache.settings());
    old_id = load_ok(a).key_id;
  }
  auto path = cache.dir + "/" + persisted::key_file_name;
  BOOST_REQUIRE_EQUAL(::chmod(path.c_str(), 0640), 0);
  software_key_store b(cache.settings());
  auto k = load_ok(b);
  BOOST_CHECK_NE(k.key_id, old_id);
  struct stat st {};
  BOOST_REQUIRE_EQUAL(::stat(path.c_str(), &st), 0);
  BOOST_CHECK_EQUAL(st.st_mode & 0777, 0600u);
}

BOOST_AUTO_TEST_CASE(key_that_cannot_sign_is_replaced_and_its_certificates_purged) {
  temp_cache cache;
  // A key of this boot whose signatures fail (an EC key cannot make the RSA-PSS proof).
  platform::pkey_ptr ec(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  BOOST_REQUIRE(ec);
  auto ec_id = platform::key_id(ec.get());
  BOOST_REQUIRE(ec_id);
  std::string boot;
  std::getline(std::ifstream(cache.boot_path), boot);
  auto bytes = persisted::encode_key(ec.get(), boot, *ec_id);
  BOOST_REQUIRE(bytes);
  cache.put(persisted::key_file_name, *bytes);
  cache.put("cert-dddd.json", R"({"key_id":")" + *ec_id + "\"}");
  software_key_store a(cache.settings());
  auto k = load_ok(a);
  BOOST_CHECK_NE(k.key_id, *ec_id);
  BOOST_CHECK(platform::prove_key_signs(k.key->get()));
  BOOST_CHECK(!cache.exists("cert-dddd.json"));
  software_key_store b(cache.settings());
  BOOST_CHECK_EQUAL(load_ok(b).key_id, k.key_id);
}

BOOST_AUTO_TEST_CASE(corrupt_key_file_is_replaced) {
  temp_cache cache;
  cache.put(persisted::key_file_name, "msiv2-binding-key 1\nboot_id: x\nkey_id: y\n-----BEGIN junk");
  software_key_store a(cache.settings());
  auto k = load_ok(a);
  software_key_store b(cache.settings());
  BOOST_CHECK_EQUAL(load_ok(b).key_id, k.key_id);
}

BOOST_AUTO_TEST_CASE(rotation_is_shared_through_the_file) {
  temp_cache cache;
  software_key_store a(cache.settings());
  software_key_store b(cache.settings());
  auto old = load_ok(a);
  BOOST_REQUIRE_EQUAL(load_ok(b).key_id, old.key_id);
  auto ra = rotate(a, old.key_id);
  BOOST_REQUIRE(ra);
  BOOST_CHECK_NE(ra->key_id, old.key_id);
  // b finds the same key bad a moment later: it adopts a's new key instead of making a third.
  auto rb = rotate(b, old.key_id);
  BOOST_REQUIRE(rb);
  BOOST_CHECK_EQUAL(rb->key_id, ra->key_id);
  // Rotating away from a key that is no longer current is a no-op.
  auto again = rotate(a, old.key_id);
  BOOST_REQUIRE(again);
  BOOST_CHECK_EQUAL(again->key_id, ra->key_id);
}

BOOST_AUTO_TEST_CASE(eight_stores_starting_together_end_with_one_key) {
  temp_cache cache;
  constexpr int n = 8;
  std::vector<std::unique_ptr<software_key_store>> stores;
  for (int i = 0; i < n; ++i)
    stores.push_back(std::make_unique<software_key_store>(cache.settings()));
  std::vector<std::string> ids(n);
  std::vector<std::string> errors(n);
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      auto r = load(*stores[i]);
      if (r)
        ids[i] = r->key_id;
      else
        errors[i] = r.error();
    });
  for (auto& t : threads)
    t.join();
  std::set<std::string> distinct;
  for (int i = 0; i < n; ++i) {
    BOOST_CHECK_MESSAGE(errors[i].empty(), errors[i]);
    distinct.insert(ids[i]);
  }
  BOOST_CHECK_EQUAL(distinct.size(), 1u);
}

BOOST_AUTO_TEST_SUITE_END()
