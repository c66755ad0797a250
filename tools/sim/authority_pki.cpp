#include "tools/sim/authority_pki.hpp"

#include "tools/sim/authority_support.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <sstream>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "platform/encoding.hpp"
#include "platform/keys.hpp"
#include "platform/x509.hpp"

namespace msiv2::sim::detail {
namespace {

// CAs and the TLS leaf outlive any realistic run; clients check TLS against the real
// clock, so start a day early in case the simulator clock was set back.
constexpr std::int64_t ca_backdate = 24 * 3600;
constexpr std::int64_t ca_lifetime = 10LL * 365 * 24 * 3600;

std::string errno_text() {
  return std::strerror(errno);
}

// RSA keygen costs 50-100 ms a key: split the batch over two threads.
result<std::vector<platform::pkey_ptr>> generate_keys(std::size_t n) {
  const std::size_t background = n / 2;
  auto other = std::async(std::launch::async, [background] {
    std::vector<result<platform::pkey_ptr>> keys;
    for (std::size_t i = 0; i < background; ++i)
      keys.push_back(platform::generate_rsa_key(2048));
    return keys;
  });
  std::vector<result<platform::pkey_ptr>> mine;
  for (std::size_t i = background; i < n; ++i)
    mine.push_back(platform::generate_rsa_key(2048));
  std::vector<result<platform::pkey_ptr>> all = other.get();
  for (auto& k : mine)
    all.push_back(std::move(k));

  std::vector<platform::pkey_ptr> out;
  for (auto& k : all) {
    if (!k)
      return fail("generating the simulator's RSA keys: " + k.error());
    out.push_back(std::move(*k));
  }
  return out;
}

result<std::string> read_file(const std::string& path, std::string_view member) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return fail(std::string(member) + " '" + path + "': cannot read: " + errno_text());
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad())
    return fail(std::string(member) + " '" + path + "': read failed");
  return ss.str();
}

struct loaded_ca {
  platform::x509_ptr cert;
  platform::pkey_ptr key;
};

result<loaded_ca> load_issuer(const config& cfg) {
  if (cfg.ca_cert_file.empty() != cfg.ca_key_file.empty())
    return fail("ca_cert_file and ca_key_file must be given together");
  auto cert_pem = read_file(cfg.ca_cert_file, "ca_cert_file");
  if (!cert_pem)
    return cert_pem.fail();
  auto ders = platform::pem_certificates(*cert_pem);
  if (!ders || ders->empty())
    return fail("ca_cert_file '" + cfg.ca_cert_file + "': no PEM certificate in it" +
                (ders ? std::string() : ": " + ders.error()));
  auto cert = platform::parse_certificate(ders->front());
  if (!cert)
    return fail("ca_cert_file '" + cfg.ca_cert_file + "': " + cert.error());
  if (X509_check_ca(cert->get()) <= 0)
    return fail("ca_cert_file '" + cfg.ca_cert_file +
                "': not a CA certificate (basicConstraints CA:TRUE needed)");

  auto key_pem = read_file(cfg.ca_key_file, "ca_key_file");
  if (!key_pem)
    return key_pem.fail();
  auto key = platform::private_key_from_pem(*key_pem);
  if (!key)
    return fail("ca_key_file '" + cfg.ca_key_file + "': not a PEM private key: " + key.error());
  if (!platform::same_public_key(X509_get0_pubkey(cert->get()), key->get()))
    return fail("ca_key_file '" + cfg.ca_key_file + "' does not match the certificate in "
                "ca_cert_file '" + cfg.ca_cert_file + "'");
  return loaded_ca{std::move(*cert), std::move(*key)};
}

result<std::string> prepare_state_dir(std::string dir) {
  if (dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
                        "/msiv2-sim-XXXXXX";
    if (mkdtemp(templ.data()) == nullptr)
      return fail("state directory: cannot create a temporary directory from '" + templ +
                  "': " + errno_text());
    return templ; // mkdtemp makes it 0700
  }
  struct stat st{};
  if (::lstat(dir.c_str(), &st) == 0) {
    // A planted ca.pem would become the CA the clients trust (review L11).
    if (auto ok = detail::check_state_dir(dir); !ok)
      return ok.fail();
    return dir;
  }
  if (errno != ENOENT)
    return fail("state_dir '" + dir + "': " + errno_text());
  if (::mkdir(dir.c_str(), 0700) != 0)
    return fail("state_dir '" + dir + "': cannot create: " + errno_text());
  return dir;
}

// A client never reads a half-written CA bundle, and no planted name is followed (L11).
result<void> write_file_atomically(const std::string& path, std::string_view content) {
  return detail::write_file_safely(path, content, 0644, "CA bundle");
}

result<std::string> make_jwks(EVP_PKEY* key, const std::string& kid) {
  auto ne = platform::rsa_jwk_components(key);
  if (!ne)
    return fail("token signing key as JWK: " + ne.error());
  return "{\"keys\":[{\"kty\":\"RSA\",\"use\":\"sig\",\"kid\":" + platform::json_quote(kid) +
         ",\"n\":" + platform::json_quote(ne->first) + ",\"e\":" +
         platform::json_quote(ne->second) + ",\"alg\":\"RS256\"}]}";
}

} // namespace

result<authority_pki> authority_pki_create(const config& cfg, std::string state_dir,
                                           std::int64_t now_unix) {
  authority_pki pki;

  // Load the configured CA first: a bad file should fail before any keygen cost.
  const bool load_ca = !cfg.ca_cert_file.empty() || !cfg.ca_key_file.empty();
  if (load_ca) {
    auto ca = load_issuer(cfg);
    if (!ca)
      return ca.fail();
    pki.issuer_cert = std::move(ca->cert);
    pki.issuer_key = std::move(ca->key);
  }

  auto dir = prepare_state_dir(std::move(state_dir));
  if (!dir)
    return dir.fail();
  pki.state_dir = std::move(*dir);
  pki.ca_file = pki.state_dir + "/ca.pem";

  auto keys = generate_keys(load_ca ? 4 : 5);
  if (!keys)
    return keys.fail();
  platform::pkey_ptr root_key = std::move((*keys)[0]);
  platform::pkey_ptr server_key = std::move((*keys)[1]);
  pki.attestation_key = std::move((*keys)[2]);
  pki.token_key = std::move((*keys)[3]);
  if (!load_ca)
    pki.issuer_key = std::move((*keys)[4]);

  // TLS root and server leaf.
  platform::issue_params root_params;
  root_params.subject_key = root_key.get();
  root_params.subject_cn = tls_root_cn;
  root_params.not_before = now_unix - ca_backdate;
  root_params.not_after = now_unix + ca_lifetime;
  root_params.is_ca = true;
  auto root_der = platform::issue_certificate(root_params, nullptr, root_key.get());
  if (!root_der)
    return fail("TLS root certificate: " + root_der.error());
  auto root_cert = platform::parse_certificate(*root_der);
  if (!root_cert)
    return fail("TLS root certificate: " + root_cert.error());

  platform::issue_params leaf_params;
  leaf_params.subject_key = server_key.get();
  leaf_params.subject_cn = "localhost";
  leaf_params.not_before = now_unix - ca_backdate;
  leaf_params.not_after = now_unix + ca_lifetime;
  leaf_params.server_auth = true;
  leaf_params.dns_names = {"localhost"};
  leaf_params.ip_addresses = {"127.0.0.1"};
  auto leaf_der = platform::issue_certificate(leaf_params, root_cert->get(), root_key.get());
  if (!leaf_der)
    return fail("TLS server certificate: " + leaf_der.error());

  const std::string root_pem = platform::pem_encode(*root_der, "CERTIFICATE");
  pki.server_chain_pem = platform::pem_encode(*leaf_der, "CERTIFICATE") + root_pem;
  auto server_key_pem = platform::private_key_pem(server_key.get());
  if (!server_key_pem)
    return fail("TLS server key: " + server_key_pem.error());
  pki.server_key_pem = std::move(*server_key_pem);
  if (auto w = write_file_atomically(pki.ca_file, root_pem); !w)
    return fail("CA bundle: " + w.error());

  // Binding-certificate issuer.
  if (!load_ca) {
    platform::issue_params ca_params;
    ca_params.subject_key = pki.issuer_key.get();
    ca_params.subject_cn = issuer_cn;
    ca_params.not_before = now_unix - ca_backdate;
    ca_params.not_after = now_unix + ca_lifetime;
    ca_params.is_ca = true;
    auto ca_der = platform::issue_certificate(ca_params, nullptr, pki.issuer_key.get());
    if (!ca_der)
      return fail("issuing CA certificate: " + ca_der.error());
    auto ca_cert = platform::parse_certificate(*ca_der);
    if (!ca_cert)
      return fail("issuing CA certificate: " + ca_cert.error());
    pki.issuer_cert = std::move(*ca_cert);
  }

  auto kid = platform::key_id(pki.token_key.get());
  if (!kid)
    return fail("token signing key id: " + kid.error());
  pki.token_kid = std::move(*kid);
  auto jwks = make_jwks(pki.token_key.get(), pki.token_kid);
  if (!jwks)
    return jwks.fail();
  pki.jwks_json = std::move(*jwks);
  return pki;
}

} // namespace msiv2::sim::detail
