#include <boost/test/unit_test.hpp>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>

#include "platform/der.hpp"
#include "platform/encoding.hpp"
#include "platform/keys.hpp"
#include "platform/x509.hpp"

using namespace msiv2::platform;

namespace {

constexpr std::int64_t t0 = 1'700'000'000; // 2023-11-14T22:13:20Z
constexpr std::int64_t week = 7 * 24 * 3600;
constexpr std::string_view client = "6d9f2c1a-0b7e-4c52-9a3d-1f2e3d4c5b6a";
constexpr std::string_view tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";

template <class R>
std::string why(const R& r) {
  return r.ok() ? std::string() : r.error();
}

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

pkey_ptr make_key() {
  auto k = generate_rsa_key(2048);
  BOOST_REQUIRE_MESSAGE(k.ok(), why(k));
  return std::move(*k);
}

// A CA, a client (binding) certificate and a server certificate, made once.
struct pki {
  pkey_ptr ca_key = make_key();
  pkey_ptr leaf_key = make_key();
  std::string ca_der;
  x509_ptr ca;
  std::string leaf_der;
  std::string server_der;

  pki() {
    issue_params ca_params;
    ca_params.subject_key = ca_key.get();
    ca_params.subject_cn = "managedidentitysnissuer.login.microsoft.com";
    ca_params.not_before = t0 - 3600;
    ca_params.not_after = t0 + 365 * 24 * 3600;
    ca_params.is_ca = true;
    auto c = issue_certificate(ca_params, nullptr, ca_key.get());
    BOOST_REQUIRE_MESSAGE(c.ok(), why(c));
    ca_der = *c;
    auto parsed = parse_certificate(ca_der);
    BOOST_REQUIRE(parsed.ok());
    ca = std::move(*parsed);

    issue_params leaf;
    leaf.subject_key = leaf_key.get();
    leaf.subject_cn = std::string(client);
    leaf.subject_dc = std::string(tenant);
    leaf.not_before = t0;
    leaf.not_after = t0 + week;
    leaf.serial_hex = "0a1b2c3d4e5f";
    leaf.client_auth = true;
    auto l = issue_certificate(leaf, ca.get(), ca_key.get());
    BOOST_REQUIRE_MESSAGE(l.ok(), why(l));
    leaf_der = *l;

    issue_params server;
    server.subject_key = leaf_key.get();
    server.subject_cn = "localhost";
    server.not_before = t0;
    server.not_after = t0 + week;
    server.server_auth = true;
    server.dns_names = {"localhost", "imds.test"};
    server.ip_addresses = {"127.0.0.1", "::1"};
    auto s = issue_certificate(server, ca.get(), ca_key.get());
    BOOST_REQUIRE_MESSAGE(s.ok(), why(s));
    server_der = *s;
  }
};

const pki& the_pki() {
  static pki p;
  return p;
}

x509_ptr must_parse(const std::string& der) {
  auto c = parse_certificate(der);
  BOOST_REQUIRE_MESSAGE(c.ok(), why(c));
  return std::move(*c);
}

cert_info good_binding_info() {
  auto info = inspect_certificate(the_pki().leaf_der);
  BOOST_REQUIRE_MESSAGE(info.ok(), why(info));
  return *info;
}

std::string leaf_spki() {
  return *public_key_der(the_pki().leaf_key.get());
}

} // namespace

BOOST_AUTO_TEST_SUITE(platform_x509_test)

BOOST_AUTO_TEST_CASE(self_signed_ca_has_critical_basic_constraints_and_cert_sign_usage) {
  const auto& p = the_pki();
  X509* ca = p.ca.get();
  BOOST_TEST(X509_get_version(ca) == X509_VERSION_3);
  BOOST_TEST(X509_check_ca(ca) == 1);
  BOOST_TEST(X509_NAME_cmp(X509_get_subject_name(ca), X509_get_issuer_name(ca)) == 0);
  int bc = X509_get_ext_by_NID(ca, NID_basic_constraints, -1);
  BOOST_REQUIRE(bc >= 0);
  BOOST_TEST(X509_EXTENSION_get_critical(X509_get_ext(ca, bc)) == 1);
  BOOST_TEST((X509_get_key_usage(ca) & (KU_KEY_CERT_SIGN | KU_CRL_SIGN))
             == (KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  BOOST_TEST(X509_get0_subject_key_id(ca) != nullptr);
  BOOST_TEST(certificate_signed_by(p.ca_der, p.ca_key.get()));
  BOOST_TEST(!certificate_signed_by(p.ca_der, p.leaf_key.get()));
  auto info = inspect_certificate(p.ca_der);
  BOOST_REQUIRE(info.ok());
  BOOST_TEST(info->subject_cn == "managedidentitysnissuer.login.microsoft.com");
  BOOST_TEST(info->issuer_cn == info->subject_cn);
}

BOOST_AUTO_TEST_CASE(issued_client_certificate_carries_the_requested_fields) {
  const auto& p = the_pki();
  auto info = inspect_certificate(p.leaf_der);
  BOOST_REQUIRE_MESSAGE(info.ok(), why(info));
  BOOST_TEST(info->der == p.leaf_der);
  BOOST_TEST(info->subject_cn == client);
  BOOST_TEST(info->issuer_cn == "managedidentitysnissuer.login.microsoft.com");
  BOOST_TEST(info->not_before == t0);
  BOOST_TEST(info->not_after == t0 + week);
  BOOST_TEST(info->serial_hex == "0a1b2c3d4e5f");
  BOOST_TEST(info->spki_der == leaf_spki());
  BOOST_TEST(info->has_eku);
  BOOST_TEST(info->eku_client_auth);
  BOOST_TEST(info->has_key_usage);
  BOOST_TEST(info->ku_digital_signature);
  BOOST_TEST(info->x5t_s256 == base64url_encode(sha256(p.leaf_der)));
  BOOST_TEST(info->x5t_s256.size() == 43u);

  auto leaf = must_parse(p.leaf_der);
  BOOST_TEST(X509_check_ca(leaf.get()) == 0);
  X509_NAME* subject = X509_get_subject_name(leaf.get());
  BOOST_REQUIRE(X509_NAME_entry_count(subject) == 2);
  X509_NAME_ENTRY* dc = X509_NAME_get_entry(subject, 0);
  BOOST_TEST(OBJ_obj2nid(X509_NAME_ENTRY_get_object(dc)) == NID_domainComponent);
  BOOST_TEST(ASN1_STRING_type(X509_NAME_ENTRY_get_data(dc)) == V_ASN1_IA5STRING);
  BOOST_TEST(X509_NAME_cmp(X509_get_issuer_name(leaf.get()), X509_get_subject_name(p.ca.get()))
             == 0);
  BOOST_TEST(certificate_signed_by(p.leaf_der, p.ca_key.get()));
  BOOST_TEST(!certificate_signed_by(p.leaf_der, p.leaf_key.get()));
  // The authority key identifier points at the CA's subject key identifier.
  const ASN1_OCTET_STRING* akid = X509_get0_authority_key_id(leaf.get());
  BOOST_REQUIRE(akid != nullptr);
  BOOST_TEST(ASN1_OCTET_STRING_cmp(akid, X509_get0_subject_key_id(p.ca.get())) == 0);
}

BOOST_AUTO_TEST_CASE(openssl_verifies_the_chain_for_client_and_server_purposes) {
  const auto& p = the_pki();
  x509_store_ptr store{X509_STORE_new()};
  BOOST_REQUIRE(X509_STORE_add_cert(store.get(), p.ca.get()) == 1);
  auto verify = [&](const std::string& der, int purpose) {
    auto cert = must_parse(der);
    std::unique_ptr<X509_STORE_CTX, ossl_deleter<X509_STORE_CTX, X509_STORE_CTX_free>> ctx{
      X509_STORE_CTX_new()};
    BOOST_REQUIRE(X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr) == 1);
    X509_STORE_CTX_set_purpose(ctx.get(), purpose);
    X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx.get()), time_t(t0 + 60));
    int rc = X509_verify_cert(ctx.get());
    int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    BOOST_TEST_INFO("verify error: " << X509_verify_cert_error_string(err));
    return rc == 1;
  };
  BOOST_TEST(verify(p.leaf_der, X509_PURPOSE_SSL_CLIENT));
  BOOST_TEST(!verify(p.leaf_der, X509_PURPOSE_SSL_SERVER));
  BOOST_TEST(verify(p.server_der, X509_PURPOSE_SSL_SERVER));
  BOOST_TEST(!verify(p.server_der, X509_PURPOSE_SSL_CLIENT));
}

BOOST_AUTO_TEST_CASE(server_certificate_names_dns_and_ip_addresses) {
  auto server = must_parse(the_pki().server_der);
  BOOST_TEST(X509_check_host(server.get(), "localhost", 0, 0, nullptr) == 1);
  BOOST_TEST(X509_check_host(server.get(), "imds.test", 0, 0, nullptr) == 1);
  BOOST_TEST(X509_check_host(server.get(), "other.test", 0, 0, nullptr) == 0);
  BOOST_TEST(X509_check_ip_asc(server.get(), "127.0.0.1", 0) == 1);
  BOOST_TEST(X509_check_ip_asc(server.get(), "::1", 0) == 1);
  BOOST_TEST(X509_check_ip_asc(server.get(), "127.0.0.2", 0) == 0);
  BOOST_TEST((X509_get_key_usage(server.get()) & KU_KEY_ENCIPHERMENT) != 0u);
  auto info = inspect_certificate(the_pki().server_der);
  BOOST_REQUIRE(info.ok());
  BOOST_TEST(!info->eku_client_auth);
}

BOOST_AUTO_TEST_CASE(random_serials_are_16_positive_bytes_and_differ) {
  const auto& p = the_pki();
  issue_params params;
  params.subject_key = p.leaf_key.get();
  params.subject_cn = "x";
  params.not_before = t0;
  params.not_after = t0 + 60;
  auto a = issue_certificate(params, p.ca.get(), p.ca_key.get());
  auto b = issue_certificate(params, p.ca.get(), p.ca_key.get());
  BOOST_REQUIRE(a.ok());
  BOOST_REQUIRE(b.ok());
  auto ia = inspect_certificate(*a);
  auto ib = inspect_certificate(*b);
  BOOST_REQUIRE(ia.ok());
  BOOST_REQUIRE(ib.ok());
  BOOST_TEST(ia->serial_hex.size() == 32u);
  BOOST_TEST(ia->serial_hex[0] < '8');
  BOOST_TEST(ia->serial_hex != ib->serial_hex);
  // Neither EKU nor key usage was asked for: none is written.
  BOOST_TEST(!ia->has_eku);
  BOOST_TEST(!ia->has_key_usage);
}

BOOST_AUTO_TEST_CASE(times_after_2049_round_trip_as_generalized_time) {
  const auto& p = the_pki();
  issue_params params;
  params.subject_key = p.leaf_key.get();
  params.subject_cn = "far";
  params.not_before = 2'524'608'000 - 1; // 2049-12-31T23:59:59Z (UTCTime)
  params.not_after = 4'102'444'800;      // 2100-01-01T00:00:00Z (GeneralizedTime)
  auto der = issue_certificate(params, p.ca.get(), p.ca_key.get());
  BOOST_REQUIRE_MESSAGE(der.ok(), why(der));
  auto info = inspect_certificate(*der);
  BOOST_REQUIRE(info.ok());
  BOOST_TEST(info->not_before == params.not_before);
  BOOST_TEST(info->not_after == params.not_after);
  auto cert = must_parse(*der);
  BOOST_TEST(ASN1_STRING_type(X509_get0_notBefore(cert.get())) == V_ASN1_UTCTIME);
  BOOST_TEST(ASN1_STRING_type(X509_get0_notAfter(cert.get())) == V_ASN1_GENERALIZEDTIME);
}

BOOST_AUTO_TEST_CASE(issue_certificate_refuses_bad_parameters) {
  const auto& p = the_pki();
  issue_params good;
  good.subject_key = p.leaf_key.get();
  good.subject_cn = "x";
  good.not_before = t0;
  good.not_after = t0 + 60;
  auto attempt = [&](issue_params params, X509* issuer, EVP_PKEY* key) {
    auto r = issue_certificate(params, issuer, key);
    BOOST_REQUIRE(!r.ok());
    return r.error();
  };
  auto no_key = good;
  no_key.subject_key = nullptr;
  BOOST_TEST(contains(attempt(no_key, p.ca.get(), p.ca_key.get()), "no subject key"));
  auto backwards = good;
  backwards.not_after = t0;
  BOOST_TEST(contains(attempt(backwards, p.ca.get(), p.ca_key.get()), "notAfter"));
  auto bad_serial = good;
  bad_serial.serial_hex = "12xz";
  BOOST_TEST(contains(attempt(bad_serial, p.ca.get(), p.ca_key.get()), "not hex"));
  bad_serial.serial_hex = "00";
  BOOST_TEST(contains(attempt(bad_serial, p.ca.get(), p.ca_key.get()), "positive"));
  auto bad_ip = good;
  bad_ip.ip_addresses = {"not-an-ip"};
  BOOST_TEST(contains(attempt(bad_ip, p.ca.get(), p.ca_key.get()), "is not an IP address"));
  BOOST_TEST(contains(attempt(good, p.ca.get(), p.leaf_key.get()), "issuer key does not match"));
  BOOST_TEST(contains(attempt(good, nullptr, p.ca_key.get()), "self-signed"));
  BOOST_TEST(ERR_peek_error() == 0ul);
}

BOOST_AUTO_TEST_CASE(parse_and_inspect_reject_garbage_and_trailing_bytes) {
  BOOST_TEST(contains(inspect_certificate("garbage").error(), "does not parse"));
  BOOST_TEST(contains(parse_certificate(the_pki().leaf_der + "x").error(), "trailing"));
  BOOST_TEST(!parse_certificate("").ok());
  BOOST_TEST(ERR_peek_error() == 0ul);
}

BOOST_AUTO_TEST_CASE(certificate_der_round_trips) {
  auto cert = must_parse(the_pki().leaf_der);
  auto der = certificate_der(cert.get());
  BOOST_REQUIRE(der.ok());
  BOOST_TEST(*der == the_pki().leaf_der);
  BOOST_TEST(!certificate_der(nullptr).ok());
}

BOOST_AUTO_TEST_CASE(validate_binding_accepts_a_matching_current_certificate) {
  auto info = good_binding_info();
  auto ok = validate_binding_certificate(info, leaf_spki(), client, t0 + 60);
  BOOST_TEST(ok.ok(), why(ok));
  std::string upper(client);
  for (auto& c : upper)
    c = char(std::toupper(static_cast<unsigned char>(c)));
  BOOST_TEST(validate_binding_certificate(info, leaf_spki(), upper, t0).ok());
  BOOST_TEST(validate_binding_certificate(info, leaf_spki(), client, t0 + week).ok());
}

BOOST_AUTO_TEST_CASE(a_not_before_a_little_ahead_of_our_clock_is_accepted_ten_minutes_is_not) {
  auto info = good_binding_info();
  BOOST_TEST(validate_binding_certificate(info, leaf_spki(), client, t0 - 2).ok());
  BOOST_TEST(validate_binding_certificate(info, leaf_spki(), client, t0 - not_before_skew_s).ok());
  auto ahead = validate_binding_certificate(info, leaf_spki(), client, t0 - 600);
  BOOST_REQUIRE(!ahead.ok());
  BOOST_TEST(contains(ahead.error(), "not valid yet"));
}

BOOST_AUTO_TEST_CASE(validate_binding_names_each_broken_rule) {
  auto info = good_binding_info();
  auto error = [&](const cert_info& c, std::string_view spki, std::string_view id,
                   std::int64_t now) {
    auto r = validate_binding_certificate(c, spki, id, now);
    BOOST_REQUIRE(!r.ok());
    return r.error();
  };
  auto other_spki = *public_key_der(the_pki().ca_key.get());
  BOOST_TEST(error(info, other_spki, client, t0) == "binding certificate public key is not the "
                                                     "binding key");
  BOOST_TEST(contains(error(info, leaf_spki(), "00000000-0000-0000-0000-000000000000", t0),
                      "subject CN"));
  BOOST_TEST(contains(error(info, leaf_spki(), client, t0 - not_before_skew_s - 1), "not valid yet"));
  BOOST_TEST(contains(error(info, leaf_spki(), client, t0 + week + 1), "expired"));
  auto server_only = info;
  server_only.eku_client_auth = false;
  BOOST_TEST(error(server_only, leaf_spki(), client, t0)
             == "binding certificate extended key usage does not allow clientAuth");
  auto no_sign = info;
  no_sign.ku_digital_signature = false;
  BOOST_TEST(error(no_sign, leaf_spki(), client, t0)
             == "binding certificate key usage does not allow digitalSignature");
  // Without the extensions at all there is nothing to refuse.
  auto bare = info;
  bare.has_eku = bare.eku_client_auth = bare.has_key_usage = bare.ku_digital_signature = false;
  BOOST_TEST(validate_binding_certificate(bare, leaf_spki(), client, t0).ok());
}

BOOST_AUTO_TEST_CASE(validate_binding_refuses_a_real_server_certificate) {
  auto info = inspect_certificate(the_pki().server_der);
  BOOST_REQUIRE(info.ok());
  auto r = validate_binding_certificate(*info, leaf_spki(), "localhost", t0);
  BOOST_REQUIRE(!r.ok());
  BOOST_TEST(contains(r.error(), "clientAuth"));
}

BOOST_AUTO_TEST_CASE(pem_encode_wraps_at_64_columns_and_openssl_reads_it) {
  const auto& der = the_pki().leaf_der;
  auto pem = pem_encode(der, "CERTIFICATE");
  BOOST_TEST(pem.rfind("-----BEGIN CERTIFICATE-----\n", 0) == 0u);
  BOOST_TEST(contains(pem, "\n-----END CERTIFICATE-----\n"));
  std::size_t start = pem.find('\n') + 1;
  auto first_line = pem.substr(start, pem.find('\n', start) - start);
  BOOST_TEST(first_line.size() == 64u);
  bio_ptr bio{BIO_new_mem_buf(pem.data(), int(pem.size()))};
  x509_ptr cert{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)};
  BOOST_REQUIRE(cert);
  BOOST_TEST(*certificate_der(cert.get()) == der);
}

BOOST_AUTO_TEST_CASE(pem_certificates_reads_a_bundle_and_skips_other_blocks) {
  const auto& p = the_pki();
  // OpenSSL's own PEM writer for the first, ours for the second, a key block in between.
  bio_ptr bio{BIO_new(BIO_s_mem())};
  BOOST_REQUIRE(PEM_write_bio_X509(bio.get(), must_parse(p.leaf_der).get()) == 1);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  std::string bundle(data, std::size_t(len));
  bundle += "some comment\r\n" + pem_encode("not a key", "PRIVATE KEY");
  auto ca_pem = pem_encode(p.ca_der, "CERTIFICATE");
  for (std::size_t i = 0; (i = ca_pem.find('\n', i)) != std::string::npos; i += 2)
    ca_pem.replace(i, 1, "\r\n");
  bundle += ca_pem;
  auto certs = pem_certificates(bundle);
  BOOST_REQUIRE_MESSAGE(certs.ok(), why(certs));
  BOOST_REQUIRE(certs->size() == 2u);
  BOOST_TEST((*certs)[0] == p.leaf_der);
  BOOST_TEST((*certs)[1] == p.ca_der);
}

BOOST_AUTO_TEST_CASE(pem_certificates_rejects_empty_broken_and_unterminated_blocks) {
  BOOST_TEST(contains(pem_certificates("").error(), "no CERTIFICATE block"));
  auto pem = pem_encode(the_pki().ca_der, "CERTIFICATE");
  BOOST_TEST(contains(pem_certificates(pem.substr(0, pem.size() - 30)).error(), "no END line"));
  auto broken = pem;
  broken[40] = '*';
  BOOST_TEST(contains(pem_certificates(broken).error(), "invalid character"));
  BOOST_TEST(contains(pem_certificates(pem_encode("junk!", "CERTIFICATE")).error(),
                      "does not parse"));
  BOOST_TEST(ERR_peek_error() == 0ul);
}

BOOST_AUTO_TEST_CASE(token_not_after_extension_is_written_and_read_back_and_absent_is_zero) {
  const auto& p = the_pki();
  BOOST_TEST(good_binding_info().token_not_after == 0); // a certificate without it
  issue_params leaf;
  leaf.subject_key = p.leaf_key.get();
  leaf.subject_cn = std::string(client);
  leaf.not_before = t0;
  leaf.not_after = t0 + week;
  leaf.token_not_after = t0 + 3600;
  leaf.client_auth = true;
  auto der = issue_certificate(leaf, p.ca.get(), p.ca_key.get());
  BOOST_REQUIRE_MESSAGE(der.ok(), why(der));
  auto info = inspect_certificate(*der);
  BOOST_REQUIRE_MESSAGE(info.ok(), why(info));
  BOOST_TEST(info->token_not_after == t0 + 3600);
  BOOST_TEST(info->not_after == t0 + week);
  // OpenSSL sees the extension with our OID and a GeneralizedTime value.
  auto cert = must_parse(*der);
  auto oid = OBJ_txt2obj(std::string(token_not_after_oid).c_str(), 1);
  int at = X509_get_ext_by_OBJ(cert.get(), oid, -1);
  ASN1_OBJECT_free(oid);
  BOOST_REQUIRE(at >= 0);
  const ASN1_OCTET_STRING* v = X509_EXTENSION_get_data(X509_get_ext(cert.get(), at));
  BOOST_REQUIRE(v != nullptr);
  BOOST_TEST(ASN1_STRING_get0_data(v)[0] == der::generalized_time);
}

BOOST_AUTO_TEST_SUITE_END()
