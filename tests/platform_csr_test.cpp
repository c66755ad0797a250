#include <boost/test/unit_test.hpp>

#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/rsa.h>

#include "platform/csr.hpp"
#include "platform/der.hpp"
#include "platform/encoding.hpp"
#include "platform/keys.hpp"

using namespace msiv2::platform;

namespace {

constexpr std::string_view client = "6d9f2c1a-0b7e-4c52-9a3d-1f2e3d4c5b6a";
constexpr std::string_view tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
constexpr std::string_view cuid = R"({"vmId":"1f0e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"})";
constexpr std::string_view sha256_oid = "2.16.840.1.101.3.4.2.1";
constexpr std::string_view mgf1_oid = "1.2.840.113549.1.1.8";
constexpr std::string_view pss_oid = "1.2.840.113549.1.1.10";

template <class R>
std::string why(const R& r) {
  return r.ok() ? std::string() : r.error();
}

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string unhex(std::string_view hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out += char(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16));
  return out;
}

EVP_PKEY* test_key() {
  static pkey_ptr key = [] {
    auto k = generate_rsa_key(2048);
    BOOST_REQUIRE_MESSAGE(k.ok(), why(k));
    return std::move(*k);
  }();
  return key.get();
}

std::string built_csr() {
  static std::string csr = [] {
    auto c = build_csr(test_key(), client, tenant, cuid);
    BOOST_REQUIRE_MESSAGE(c.ok(), why(c));
    return std::move(*c);
  }();
  return csr;
}

// The pieces of a CSR, each replaceable, signed for real so that only the rule under test
// is broken.
struct forge {
  std::string version = der::small_integer(0);
  std::string subject = csr_subject_der(client, tenant);
  std::string spki = *public_key_der(test_key());
  std::string attributes = csr_attributes_der(cuid);
  std::string algorithm = pss_sha256_algorithm_der();

  std::string info() const { return der::seq({version, subject, spki, attributes}); }
  std::string encode() const {
    auto i = info();
    auto sig = sign_pss_sha256(test_key(), i);
    BOOST_REQUIRE(sig.ok());
    return assemble_csr(i, algorithm, *sig);
  }
};

std::string rdn(std::string_view oid, std::uint8_t tag, std::string_view value) {
  return der::set_of({der::seq({der::oid(oid), der::tlv(tag, value)})});
}

std::string pss_algorithm(std::string_view hash_id, std::string_view mgf_hash_id,
                          std::string_view extra = {}) {
  auto params = der::seq({der::tlv(der::context_0, hash_id),
                          der::tlv(der::context_1, der::seq({der::oid(mgf1_oid), mgf_hash_id})),
                          der::tlv(der::context_2, der::small_integer(32)), extra});
  return der::seq({der::oid(pss_oid), params});
}

std::string parse_error(const std::string& csr) {
  auto p = parse_csr(csr);
  BOOST_REQUIRE_MESSAGE(!p.ok(), "the broken CSR was accepted");
  return p.error();
}

} // namespace

BOOST_AUTO_TEST_SUITE(platform_csr_test)

BOOST_AUTO_TEST_CASE(pss_algorithm_identifier_has_absent_hash_parameters_and_no_trailer_field) {
  // Written out by hand from protocol.md §4:
  // SEQ { OID rsassa-pss, SEQ { [0] SEQ { sha256 }, [1] SEQ { mgf1, SEQ { sha256 } }, [2] 32 } }
  auto expected = unhex("303d"
                        "06092a864886f70d01010a"
                        "3030"
                        "a00d300b0609608648016503040201"
                        "a11a301806092a864886f70d010108300b0609608648016503040201"
                        "a203020120");
  BOOST_TEST(expected.size() == 63u);
  BOOST_TEST(hex_lower(pss_sha256_algorithm_der()) == hex_lower(expected));
}

BOOST_AUTO_TEST_CASE(cu_id_json_keeps_member_order_and_drops_empty_members) {
  BOOST_TEST(cu_id_json({"vm", ""}) == R"({"vmId":"vm"})");
  BOOST_TEST(cu_id_json({"", "ss"}) == R"({"vmssId":"ss"})");
  BOOST_TEST(cu_id_json({"vm", "ss"}) == R"({"vmId":"vm","vmssId":"ss"})");
  BOOST_TEST(cu_id_json({"a\"b", ""}) == R"({"vmId":"a\"b"})");
}

BOOST_AUTO_TEST_CASE(built_csr_has_the_exact_structure_of_the_spec) {
  auto csr = built_csr();
  der::reader top(csr);
  auto request = top.expect(der::sequence, "request");
  BOOST_REQUIRE(request.ok());
  BOOST_TEST(top.done());
  der::reader body(request->content);
  auto info = body.expect(der::sequence, "info");
  auto alg = body.expect(der::sequence, "alg");
  auto sig = body.expect(der::bit_string, "sig");
  BOOST_REQUIRE(info.ok());
  BOOST_REQUIRE(alg.ok());
  BOOST_REQUIRE(sig.ok());
  BOOST_TEST(body.done());

  der::reader ri(info->content);
  auto version = ri.next();
  BOOST_REQUIRE(version.ok());
  BOOST_TEST(hex_lower(version->whole) == "020100");

  // Subject: DC (IA5String) first, then CN (PrintableString).
  auto subject = ri.expect(der::sequence, "subject");
  BOOST_REQUIRE(subject.ok());
  der::reader rdns(subject->content);
  std::vector<std::pair<std::string, der::node>> atvs;
  while (!rdns.done()) {
    auto set = rdns.expect(der::set, "rdn");
    BOOST_REQUIRE(set.ok());
    der::reader rs(set->content);
    auto atv = rs.expect(der::sequence, "atv");
    BOOST_REQUIRE(atv.ok());
    BOOST_TEST(rs.done());
    der::reader ra(atv->content);
    auto type = ra.expect(der::object_identifier, "type");
    BOOST_REQUIRE(type.ok());
    auto value = ra.next();
    BOOST_REQUIRE(value.ok());
    atvs.emplace_back(*der::decode_oid(type->content), *value);
  }
  BOOST_REQUIRE(atvs.size() == 2u);
  BOOST_TEST(atvs[0].first == std::string(dc_oid));
  BOOST_TEST(atvs[0].second.tag == 0x16);
  BOOST_TEST(atvs[0].second.content == tenant);
  BOOST_TEST(atvs[1].first == std::string(cn_oid));
  BOOST_TEST(atvs[1].second.tag == 0x13);
  BOOST_TEST(atvs[1].second.content == client);

  // SPKI is i2d_PUBKEY's, rsaEncryption with NULL parameters.
  auto spki = ri.expect(der::sequence, "spki");
  BOOST_REQUIRE(spki.ok());
  BOOST_TEST(spki->whole == *public_key_der(test_key()));
  der::reader rk(spki->content);
  auto key_alg = rk.expect(der::sequence, "key alg");
  BOOST_REQUIRE(key_alg.ok());
  BOOST_TEST(hex_lower(key_alg->whole) == "300d06092a864886f70d0101010500");

  // Attributes: [0] with exactly one cuId attribute holding one UTF8String.
  auto attrs = ri.expect(der::context_0, "attributes");
  BOOST_REQUIRE(attrs.ok());
  BOOST_TEST(ri.done());
  der::reader rattrs(attrs->content);
  auto attr = rattrs.expect(der::sequence, "attribute");
  BOOST_REQUIRE(attr.ok());
  BOOST_TEST(rattrs.done());
  der::reader rattr(attr->content);
  auto attr_type = rattr.expect(der::object_identifier, "attr type");
  BOOST_REQUIRE(attr_type.ok());
  BOOST_TEST(*der::decode_oid(attr_type->content) == std::string(cuid_attribute_oid));
  auto values = rattr.expect(der::set, "values");
  BOOST_REQUIRE(values.ok());
  BOOST_TEST(rattr.done());
  der::reader rvalues(values->content);
  auto value = rvalues.expect(der::utf8_string, "value");
  BOOST_REQUIRE(value.ok());
  BOOST_TEST(value->content == cuid);
  BOOST_TEST(rvalues.done());

  BOOST_TEST(hex_lower(alg->whole) == hex_lower(pss_sha256_algorithm_der()));
  BOOST_TEST(sig->content.size() == 257u);
  BOOST_TEST(sig->content[0] == '\0');
}

BOOST_AUTO_TEST_CASE(openssl_parses_the_built_csr_and_accepts_its_signature) {
  auto csr = built_csr();
  auto p = reinterpret_cast<const unsigned char*>(csr.data());
  x509_req_ptr req{d2i_X509_REQ(nullptr, &p, long(csr.size()))};
  BOOST_REQUIRE(req);
  BOOST_TEST(p == reinterpret_cast<const unsigned char*>(csr.data()) + csr.size());
  BOOST_TEST(X509_REQ_get_version(req.get()) == 0);

  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  BOOST_REQUIRE(X509_NAME_entry_count(name) == 2);
  X509_NAME_ENTRY* first = X509_NAME_get_entry(name, 0);
  X509_NAME_ENTRY* second = X509_NAME_get_entry(name, 1);
  BOOST_TEST(OBJ_obj2nid(X509_NAME_ENTRY_get_object(first)) == NID_domainComponent);
  BOOST_TEST(ASN1_STRING_type(X509_NAME_ENTRY_get_data(first)) == V_ASN1_IA5STRING);
  BOOST_TEST(OBJ_obj2nid(X509_NAME_ENTRY_get_object(second)) == NID_commonName);
  BOOST_TEST(ASN1_STRING_type(X509_NAME_ENTRY_get_data(second)) == V_ASN1_PRINTABLESTRING);

  BOOST_TEST(X509_REQ_get_attr_count(req.get()) == 1);
  STACK_OF(X509_EXTENSION)* exts = X509_REQ_get_extensions(req.get());
  BOOST_TEST(sk_X509_EXTENSION_num(exts) <= 0);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);

  const X509_ALGOR* sig_alg = nullptr;
  X509_REQ_get0_signature(req.get(), nullptr, &sig_alg);
  const ASN1_OBJECT* alg_oid = nullptr;
  X509_ALGOR_get0(&alg_oid, nullptr, nullptr, sig_alg);
  BOOST_TEST(OBJ_obj2nid(alg_oid) == NID_rsassaPss);

  pkey_ptr pub{X509_REQ_get_pubkey(req.get())};
  BOOST_REQUIRE(pub);
  BOOST_TEST(same_public_key(pub.get(), test_key()));
  BOOST_TEST(X509_REQ_verify(req.get(), pub.get()) == 1);
  ERR_clear_error();
}

BOOST_AUTO_TEST_CASE(parse_csr_returns_the_fields_and_the_signature_verifies) {
  auto parsed = parse_csr(built_csr());
  BOOST_REQUIRE_MESSAGE(parsed.ok(), why(parsed));
  BOOST_TEST(parsed->client_id == client);
  BOOST_TEST(parsed->tenant_id == tenant);
  BOOST_TEST(parsed->cuid_json == cuid);
  BOOST_TEST(parsed->spki_der == *public_key_der(test_key()));
  BOOST_TEST(parsed->signature.size() == 256u);
  BOOST_TEST(verify_pss_sha256(test_key(), parsed->info_der, parsed->signature));
  auto verified = verify_csr_signature(*parsed);
  BOOST_TEST(verified.ok(), why(verified));
}

BOOST_AUTO_TEST_CASE(cn_that_is_not_printable_becomes_a_utf8_string) {
  auto subject = csr_subject_der("client_\xc3\xa9", tenant);
  BOOST_TEST(contains(subject, std::string("\x0c\x09") + "client_\xc3\xa9"));
  auto csr = build_csr(test_key(), "client_\xc3\xa9", tenant, cuid);
  BOOST_REQUIRE_MESSAGE(csr.ok(), why(csr));
  auto parsed = parse_csr(*csr);
  BOOST_REQUIRE_MESSAGE(parsed.ok(), why(parsed));
  BOOST_TEST(parsed->client_id == "client_\xc3\xa9");
}

BOOST_AUTO_TEST_CASE(build_csr_refuses_missing_inputs) {
  BOOST_TEST(contains(build_csr(nullptr, client, tenant, cuid).error(), "no key"));
  BOOST_TEST(contains(build_csr(test_key(), "", tenant, cuid).error(), "client id is empty"));
  BOOST_TEST(contains(build_csr(test_key(), client, "", cuid).error(), "tenant id is empty"));
  BOOST_TEST(contains(build_csr(test_key(), client, "t\xc3\xa9", cuid).error(), "IA5String"));
  BOOST_TEST(contains(build_csr(test_key(), client, tenant, "").error(), "cuId JSON is empty"));
}

BOOST_AUTO_TEST_CASE(build_csr_refuses_a_key_that_cannot_sign) {
  auto pub = public_key_from_der(*public_key_der(test_key()));
  BOOST_REQUIRE(pub.ok());
  auto csr = build_csr(pub->get(), client, tenant, cuid);
  BOOST_REQUIRE(!csr.ok());
  BOOST_TEST(contains(csr.error(), "signing"));
  BOOST_TEST(ERR_peek_error() == 0ul);
}

BOOST_AUTO_TEST_CASE(a_csr_built_with_the_prepared_public_key_is_the_same_request) {
  auto pub = prepare_csr_public_key(*public_key_der(test_key()));
  BOOST_REQUIRE_MESSAGE(pub.ok(), why(pub));
  for (int i = 0; i < 3; ++i) { // one preparation serves every CSR of the key
    auto csr = build_csr(test_key(), **pub, client, tenant, cuid);
    BOOST_REQUIRE_MESSAGE(csr.ok(), why(csr));
    auto parsed = parse_csr(*csr);
    BOOST_REQUIRE_MESSAGE(parsed.ok(), why(parsed));
    BOOST_TEST(parsed->spki_der == (*pub)->spki_der);
    BOOST_TEST(verify_csr_signature(*parsed).ok());
    // PSS is randomized: the same fields as the unprepared build, not the same bytes.
    auto other = parse_csr(built_csr());
    BOOST_REQUIRE(other.ok());
    BOOST_TEST(parsed->info_der == other->info_der);
  }
}

BOOST_AUTO_TEST_CASE(a_prepared_public_key_of_another_key_fails_the_self_check) {
  auto other = generate_rsa_key(2048);
  BOOST_REQUIRE(other.ok());
  auto pub = prepare_csr_public_key(*public_key_der(other->get()));
  BOOST_REQUIRE(pub.ok());
  auto csr = build_csr(test_key(), **pub, client, tenant, cuid);
  BOOST_REQUIRE(!csr.ok());
  BOOST_TEST(contains(csr.error(), "signer and the key store disagree"), csr.error());
  auto bad = prepare_csr_public_key("not DER");
  BOOST_REQUIRE(!bad.ok());
  BOOST_TEST(contains(bad.error(), "public key"), bad.error());
  ERR_clear_error();
}

BOOST_AUTO_TEST_CASE(forged_csr_with_all_rules_kept_is_accepted) {
  // Guards the forge itself: with nothing replaced it must produce the built CSR's shape.
  auto parsed = parse_csr(forge{}.encode());
  BOOST_REQUIRE_MESSAGE(parsed.ok(), why(parsed));
  BOOST_TEST(verify_csr_signature(*parsed).ok());
}

BOOST_AUTO_TEST_CASE(rejects_dc_as_printable_string) {
  forge f;
  f.subject = der::seq({rdn(dc_oid, der::printable_string, tenant),
                        rdn(cn_oid, der::printable_string, client)});
  BOOST_TEST(parse_error(f.encode()) == "CSR subject DC must be an IA5String");
}

BOOST_AUTO_TEST_CASE(rejects_cn_before_dc) {
  forge f;
  f.subject = der::seq(
    {rdn(cn_oid, der::printable_string, client), rdn(dc_oid, der::ia5_string, tenant)});
  BOOST_TEST(parse_error(f.encode()) == "CSR subject must be DC then CN (found CN, DC)");
}

BOOST_AUTO_TEST_CASE(rejects_subject_without_dc) {
  forge f;
  f.subject = der::seq({rdn(cn_oid, der::printable_string, client)});
  BOOST_TEST(parse_error(f.encode()) == "CSR subject must be DC then CN (found CN)");
}

BOOST_AUTO_TEST_CASE(rejects_cn_of_another_string_type) {
  forge f;
  f.subject = der::seq({rdn(dc_oid, der::ia5_string, tenant), rdn(cn_oid, der::ia5_string, client)});
  BOOST_TEST(parse_error(f.encode()) == "CSR subject CN must be a PrintableString or UTF8String");
}

BOOST_AUTO_TEST_CASE(rejects_null_hash_parameters_as_openssl_writes_them) {
  auto with_null = der::seq({der::oid(sha256_oid), der::null_value()});
  auto without = der::seq({der::oid(sha256_oid)});
  forge both;
  both.algorithm = pss_algorithm(with_null, with_null);
  BOOST_TEST(parse_error(both.encode())
             == "CSR signature algorithm parameters must not contain NULL hash parameters");
  forge mgf_only;
  mgf_only.algorithm = pss_algorithm(without, with_null);
  BOOST_TEST(parse_error(mgf_only.encode())
             == "CSR signature algorithm parameters must not contain NULL hash parameters");
}

BOOST_AUTO_TEST_CASE(rejects_explicit_trailer_field) {
  forge f;
  auto sha = der::seq({der::oid(sha256_oid)});
  f.algorithm = pss_algorithm(sha, sha, der::tlv(der::context_3, der::small_integer(1)));
  BOOST_TEST(parse_error(f.encode()) == "CSR signature algorithm must not spell out trailerField");
}

BOOST_AUTO_TEST_CASE(rejects_wrong_salt_length_hash_and_algorithm) {
  auto sha = der::seq({der::oid(sha256_oid)});
  auto params = [&](std::string_view hash, std::uint64_t salt) {
    return der::seq(
      {der::oid(pss_oid),
       der::seq({der::tlv(der::context_0, hash),
                 der::tlv(der::context_1, der::seq({der::oid(mgf1_oid), hash})),
                 der::tlv(der::context_2, der::small_integer(salt))})});
  };
  forge salt20;
  salt20.algorithm = params(sha, 20);
  BOOST_TEST(parse_error(salt20.encode()) == "CSR signature salt length must be 32");
  forge sha1;
  sha1.algorithm = params(der::seq({der::oid("1.3.14.3.2.26")}), 32);
  BOOST_TEST(contains(parse_error(sha1.encode()), "CSR signature hash must be SHA-256"));
  forge pkcs1;
  pkcs1.algorithm = der::seq({der::oid("1.2.840.113549.1.1.11"), der::null_value()});
  BOOST_TEST(contains(parse_error(pkcs1.encode()), "CSR signature algorithm must be RSASSA-PSS"));
  forge defaults;
  defaults.algorithm = der::seq({der::oid(pss_oid), der::seq({})});
  BOOST_TEST(contains(parse_error(defaults.encode()), "must name the SHA-256 hash"));
}

BOOST_AUTO_TEST_CASE(rejects_two_attributes) {
  forge f;
  auto cuid_attr = der::seq(
    {der::oid(cuid_attribute_oid), der::set_of({der::tlv(der::utf8_string, cuid)})});
  auto challenge = der::seq(
    {der::oid("1.2.840.113549.1.9.7"), der::set_of({der::tlv(der::utf8_string, "pw")})});
  f.attributes = der::tlv(der::context_0, cuid_attr + challenge);
  BOOST_TEST(parse_error(f.encode()) == "CSR must have exactly one attribute (cuId)");
}

BOOST_AUTO_TEST_CASE(rejects_missing_attributes) {
  forge empty;
  empty.attributes = der::tlv(der::context_0, "");
  BOOST_TEST(parse_error(empty.encode()) == "CSR must have exactly one attribute (cuId)");
  forge absent;
  absent.attributes.clear();
  BOOST_TEST(parse_error(absent.encode()) == "CSR must have exactly one attribute (cuId)");
}

BOOST_AUTO_TEST_CASE(rejects_an_extension_request_attribute) {
  forge f;
  auto cuid_attr = der::seq(
    {der::oid(cuid_attribute_oid), der::set_of({der::tlv(der::utf8_string, cuid)})});
  // extensionRequest { basicConstraints CA:FALSE }
  auto bc = der::seq({der::oid("2.5.29.19"), der::tlv(der::octet_string, der::seq({}))});
  auto ext_req = der::seq({der::oid("1.2.840.113549.1.9.14"), der::set_of({der::seq({bc})})});
  f.attributes = der::tlv(der::context_0, cuid_attr + ext_req);
  BOOST_TEST(parse_error(f.encode()) == "CSR must not carry extensions");
}

BOOST_AUTO_TEST_CASE(rejects_cuid_value_as_printable_string) {
  forge f;
  f.attributes = der::tlv(
    der::context_0,
    der::seq({der::oid(cuid_attribute_oid), der::set_of({der::tlv(der::printable_string, "vm")})}));
  BOOST_TEST(parse_error(f.encode()) == "CSR cuId attribute value must be a UTF8String");
}

BOOST_AUTO_TEST_CASE(rejects_another_attribute_in_place_of_cuid) {
  forge f;
  f.attributes = der::tlv(der::context_0,
                          der::seq({der::oid("1.2.840.113549.1.9.7"),
                                    der::set_of({der::tlv(der::utf8_string, cuid)})}));
  BOOST_TEST(contains(parse_error(f.encode()), "CSR attribute must be cuId"));
}

BOOST_AUTO_TEST_CASE(rejects_version_1) {
  forge f;
  f.version = der::small_integer(1);
  BOOST_TEST(parse_error(f.encode()) == "CSR version must be 0");
}

BOOST_AUTO_TEST_CASE(rejects_rsa_key_without_null_parameters) {
  forge f;
  der::reader r(f.spki);
  auto spki = r.next();
  BOOST_REQUIRE(spki.ok());
  der::reader in(spki->content);
  BOOST_REQUIRE(in.next().ok()); // algorithm
  auto bits = in.next();
  BOOST_REQUIRE(bits.ok());
  f.spki = der::seq({der::seq({der::oid("1.2.840.113549.1.1.1")}), bits->whole});
  BOOST_TEST(parse_error(f.encode())
             == "CSR public key algorithm rsaEncryption must have NULL parameters");
}

BOOST_AUTO_TEST_CASE(rejects_truncated_der_and_trailing_bytes) {
  auto csr = built_csr();
  for (std::size_t cut : {std::size_t(0), std::size_t(1), std::size_t(4), csr.size() / 2,
                          csr.size() - 1}) {
    auto err = parse_error(csr.substr(0, cut));
    BOOST_TEST(contains(err, "CSR"), err);
    BOOST_TEST(contains(err, "truncated"), err);
  }
  BOOST_TEST(parse_error(csr + std::string(1, '\0')) == "CSR has trailing bytes after the request");
}

BOOST_AUTO_TEST_CASE(bad_signature_parses_but_does_not_verify) {
  auto csr = built_csr();
  csr[csr.size() - 5] = char(csr[csr.size() - 5] ^ 0x01);
  auto parsed = parse_csr(csr);
  BOOST_REQUIRE_MESSAGE(parsed.ok(), why(parsed));
  auto verified = verify_csr_signature(*parsed);
  BOOST_REQUIRE(!verified.ok());
  BOOST_TEST(verified.error() == "CSR signature does not verify with the CSR's own public key");
  BOOST_TEST(ERR_peek_error() == 0ul);
}

BOOST_AUTO_TEST_CASE(signature_over_other_bytes_does_not_verify) {
  forge f;
  auto i = f.info();
  auto sig = sign_pss_sha256(test_key(), i + "x");
  BOOST_REQUIRE(sig.ok());
  auto parsed = parse_csr(assemble_csr(i, f.algorithm, *sig));
  BOOST_REQUIRE_MESSAGE(parsed.ok(), why(parsed));
  BOOST_TEST(!verify_csr_signature(*parsed).ok());
}

BOOST_AUTO_TEST_CASE(rejects_the_csr_openssl_itself_writes_for_pss) {
  // OpenSSL 3.0 puts NULL inside the hash identifiers (toolchain.md pitfall 8); the
  // simulator must refuse such a request exactly like IMDS.
  x509_req_ptr req{X509_REQ_new()};
  BOOST_REQUIRE(req);
  BOOST_REQUIRE(X509_REQ_set_version(req.get(), 0) == 1);
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  BOOST_REQUIRE(X509_NAME_add_entry_by_NID(name, NID_domainComponent, V_ASN1_IA5STRING,
                                           reinterpret_cast<const unsigned char*>(tenant.data()),
                                           int(tenant.size()), -1, 0)
                == 1);
  BOOST_REQUIRE(X509_NAME_add_entry_by_NID(name, NID_commonName, V_ASN1_PRINTABLESTRING,
                                           reinterpret_cast<const unsigned char*>(client.data()),
                                           int(client.size()), -1, 0)
                == 1);
  BOOST_REQUIRE(X509_REQ_set_pubkey(req.get(), test_key()) == 1);
  ASN1_OBJECT* cuid_obj = OBJ_txt2obj(std::string(cuid_attribute_oid).c_str(), 1);
  BOOST_REQUIRE(cuid_obj != nullptr);
  BOOST_REQUIRE(X509_REQ_add1_attr_by_OBJ(req.get(), cuid_obj, V_ASN1_UTF8STRING,
                                          reinterpret_cast<const unsigned char*>(cuid.data()),
                                          int(cuid.size()))
                == 1);
  ASN1_OBJECT_free(cuid_obj);
  md_ctx_ptr ctx{EVP_MD_CTX_new()};
  EVP_PKEY_CTX* pctx = nullptr;
  BOOST_REQUIRE(EVP_DigestSignInit(ctx.get(), &pctx, EVP_sha256(), nullptr, test_key()) == 1);
  BOOST_REQUIRE(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1);
  BOOST_REQUIRE(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) == 1);
  BOOST_REQUIRE(X509_REQ_sign_ctx(req.get(), ctx.get()) > 0);
  unsigned char* out = nullptr;
  int len = i2d_X509_REQ(req.get(), &out);
  BOOST_REQUIRE(len > 0);
  std::string der(reinterpret_cast<char*>(out), std::size_t(len));
  OPENSSL_free(out);
  BOOST_TEST(parse_error(der)
             == "CSR signature algorithm parameters must not contain NULL hash parameters");
}

BOOST_AUTO_TEST_CASE(lenient_profile_accepts_what_msal_python_and_go_send_and_strict_refuses) {
  const auto with_null = der::seq({der::oid(sha256_oid), der::null_value()});
  // MSAL Python: CN first, DC an IA5String (UTF8String as its fallback), NULL hash parameters.
  forge python;
  python.subject = der::seq(
    {rdn(cn_oid, der::utf8_string, client), rdn(dc_oid, der::utf8_string, tenant)});
  python.algorithm = pss_algorithm(with_null, with_null);
  // MSAL Go branch: CN first, DC a PrintableString, NULL hash parameters.
  forge go;
  go.subject = der::seq(
    {rdn(cn_oid, der::printable_string, client), rdn(dc_oid, der::printable_string, tenant)});
  go.algorithm = pss_algorithm(with_null, with_null);
  for (const auto& csr : {python.encode(), go.encode()}) {
    BOOST_TEST(!parse_csr(csr, csr_profile::strict).ok());
    auto lenient = parse_csr(csr, csr_profile::lenient);
    BOOST_REQUIRE_MESSAGE(lenient.ok(), why(lenient));
    BOOST_TEST(lenient->client_id == client);
    BOOST_TEST(lenient->tenant_id == tenant);
    BOOST_TEST(verify_csr_signature(*lenient).ok());
  }
  // Our own CSR passes both.
  BOOST_TEST(parse_csr(built_csr(), csr_profile::lenient).ok());
}

BOOST_AUTO_TEST_CASE(lenient_profile_still_refuses_trailer_field_other_hashes_and_bad_dc_types) {
  forge trailer;
  auto sha = der::seq({der::oid(sha256_oid)});
  trailer.algorithm = pss_algorithm(sha, sha, der::tlv(der::context_3, der::small_integer(1)));
  auto t = parse_csr(trailer.encode(), csr_profile::lenient);
  BOOST_REQUIRE(!t.ok());
  BOOST_TEST(t.error() == "CSR signature algorithm must not spell out trailerField");
  forge bmp_dc;
  bmp_dc.subject = der::seq({rdn(dc_oid, 0x1e /* BMPString */, tenant),
                             rdn(cn_oid, der::printable_string, client)});
  auto b = parse_csr(bmp_dc.encode(), csr_profile::lenient);
  BOOST_REQUIRE(!b.ok());
  BOOST_TEST(b.error() == "CSR subject DC must be an IA5String, PrintableString or UTF8String");
  forge sha1_null;
  auto sha1 = der::seq({der::oid("1.3.14.3.2.26"), der::null_value()});
  sha1_null.algorithm = pss_algorithm(sha1, sha1);
  BOOST_TEST(!parse_csr(sha1_null.encode(), csr_profile::lenient).ok());
}

BOOST_AUTO_TEST_SUITE_END()
