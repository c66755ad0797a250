#include <boost/test/unit_test.hpp>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "platform/encoding.hpp"
#include "platform/keys.hpp"
#include "tests/support/test_keys.hpp"

using namespace msiv2::platform;

namespace {

using msiv2::test::contains;
using msiv2::test::error_text;
using msiv2::test::other_key;
using msiv2::test::test_key;

// An independent PSS verification that pins the salt length.
bool openssl_verify_pss(EVP_PKEY* key, std::string_view data, std::string_view sig, int salt) {
  md_ctx_ptr ctx{EVP_MD_CTX_new()};
  EVP_PKEY_CTX* pctx = nullptr;
  bool ok = EVP_DigestVerifyInit(ctx.get(), &pctx, EVP_sha256(), nullptr, key) == 1
            && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1
            && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, salt) == 1
            && EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()),
                                sig.size(), reinterpret_cast<const unsigned char*>(data.data()),
                                data.size())
                 == 1;
  ERR_clear_error();
  return ok;
}

std::string openssl_sign_pss(EVP_PKEY* key, std::string_view data, int salt) {
  md_ctx_ptr ctx{EVP_MD_CTX_new()};
  EVP_PKEY_CTX* pctx = nullptr;
  BOOST_REQUIRE(EVP_DigestSignInit(ctx.get(), &pctx, EVP_sha256(), nullptr, key) == 1);
  BOOST_REQUIRE(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1);
  BOOST_REQUIRE(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, salt) == 1);
  std::size_t len = 0;
  auto in = reinterpret_cast<const unsigned char*>(data.data());
  BOOST_REQUIRE(EVP_DigestSign(ctx.get(), nullptr, &len, in, data.size()) == 1);
  std::string sig(len, '\0');
  BOOST_REQUIRE(EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, in,
                               data.size())
                == 1);
  sig.resize(len);
  return sig;
}

} // namespace

BOOST_AUTO_TEST_SUITE(platform_keys_test)

BOOST_AUTO_TEST_CASE(generates_rsa_2048_with_exponent_65537) {
  EVP_PKEY* key = test_key();
  BOOST_TEST(EVP_PKEY_is_a(key, "RSA"));
  BOOST_TEST(EVP_PKEY_get_bits(key) == 2048);
  auto jwk = rsa_jwk_components(key);
  BOOST_REQUIRE_MESSAGE(jwk.ok(), error_text(jwk));
  BOOST_TEST(jwk->second == "AQAB");
  auto n = base64url_decode(jwk->first);
  BOOST_REQUIRE(n.ok());
  BOOST_TEST(n->size() == 256u);
  BOOST_TEST((std::uint8_t((*n)[0]) & 0x80) != 0);
}

BOOST_AUTO_TEST_CASE(refuses_tiny_key_sizes) {
  auto k = generate_rsa_key(512);
  BOOST_REQUIRE(!k.ok());
  BOOST_TEST(contains(k.error(), "too small"));
}

BOOST_AUTO_TEST_CASE(key_id_is_lower_hex_sha256_of_spki_der) {
  auto der = public_key_der(test_key());
  BOOST_REQUIRE_MESSAGE(der.ok(), error_text(der));
  BOOST_TEST(std::uint8_t((*der)[0]) == 0x30);
  auto id = key_id(test_key());
  BOOST_REQUIRE(id.ok());
  BOOST_TEST(*id == hex_lower(sha256(*der)));
  BOOST_TEST(id->size() == 64u);
  auto other = key_id(other_key());
  BOOST_REQUIRE(other.ok());
  BOOST_TEST(*id != *other);
}

BOOST_AUTO_TEST_CASE(spki_der_round_trips_and_rejects_garbage) {
  auto der = public_key_der(test_key());
  BOOST_REQUIRE(der.ok());
  auto back = public_key_from_der(*der);
  BOOST_REQUIRE_MESSAGE(back.ok(), error_text(back));
  BOOST_TEST(same_public_key(back->get(), test_key()));
  BOOST_TEST(!same_public_key(back->get(), other_key()));
  BOOST_TEST(contains(public_key_from_der(*der + "x").error(), "trailing"));
  BOOST_TEST(contains(public_key_from_der(der->substr(0, 100)).error(), "does not parse"));
  BOOST_TEST(ERR_peek_error() == 0ul);
}

BOOST_AUTO_TEST_CASE(pss_signature_uses_salt_32_and_verifies) {
  auto sig = sign_pss_sha256(test_key(), "payload");
  BOOST_REQUIRE_MESSAGE(sig.ok(), error_text(sig));
  BOOST_TEST(sig->size() == 256u);
  BOOST_TEST(verify_pss_sha256(test_key(), "payload", *sig));
  BOOST_TEST(openssl_verify_pss(test_key(), "payload", *sig, 32));
  BOOST_TEST(!openssl_verify_pss(test_key(), "payload", *sig, 20));
  BOOST_TEST(!verify_pss_sha256(test_key(), "payloaD", *sig));
  BOOST_TEST(!verify_pss_sha256(other_key(), "payload", *sig));
  // PSS is randomized: two signatures of the same data differ.
  BOOST_TEST(*sign_pss_sha256(test_key(), "payload") != *sig);
}

BOOST_AUTO_TEST_CASE(pss_verification_rejects_another_salt_length) {
  auto salt20 = openssl_sign_pss(test_key(), "payload", 20);
  BOOST_TEST(openssl_verify_pss(test_key(), "payload", salt20, 20));
  BOOST_TEST(!verify_pss_sha256(test_key(), "payload", salt20));
  BOOST_TEST(ERR_peek_error() == 0ul);
}

BOOST_AUTO_TEST_CASE(rs256_is_deterministic_pkcs1_and_distinct_from_pss) {
  auto a = sign_rs256(test_key(), "header.payload");
  auto b = sign_rs256(test_key(), "header.payload");
  BOOST_REQUIRE_MESSAGE(a.ok(), error_text(a));
  BOOST_REQUIRE(b.ok());
  BOOST_TEST(*a == *b);
  BOOST_TEST(verify_rs256(test_key(), "header.payload", *a));
  BOOST_TEST(!verify_rs256(test_key(), "header.payloaD", *a));
  BOOST_TEST(!verify_pss_sha256(test_key(), "header.payload", *a));
  auto pss = sign_pss_sha256(test_key(), "header.payload");
  BOOST_TEST(!verify_rs256(test_key(), "header.payload", *pss));
  // Cross-check with the one-shot PKCS#1 v1.5 verification.
  md_ctx_ptr ctx{EVP_MD_CTX_new()};
  BOOST_REQUIRE(EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, test_key()) == 1);
  BOOST_TEST(EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(a->data()),
                              a->size(), reinterpret_cast<const unsigned char*>("header.payload"),
                              14)
             == 1);
}

BOOST_AUTO_TEST_CASE(signing_without_a_key_fails_cleanly) {
  BOOST_TEST(!sign_pss_sha256(nullptr, "x").ok());
  BOOST_TEST(!sign_rs256(nullptr, "x").ok());
  BOOST_TEST(!verify_rs256(nullptr, "x", "y"));
  BOOST_TEST(!public_key_der(nullptr).ok());
}

BOOST_AUTO_TEST_CASE(public_only_key_cannot_prove_it_signs) {
  BOOST_TEST(prove_key_signs(test_key()).ok());
  auto pub = public_key_from_der(*public_key_der(test_key()));
  BOOST_REQUIRE(pub.ok());
  auto proof = prove_key_signs(pub->get());
  BOOST_REQUIRE(!proof.ok());
  BOOST_TEST(contains(proof.error(), "cannot sign"));
  BOOST_TEST(ERR_peek_error() == 0ul);
}

BOOST_AUTO_TEST_CASE(private_key_pem_round_trips_as_pkcs8) {
  auto pem = private_key_pem(test_key());
  BOOST_REQUIRE_MESSAGE(pem.ok(), error_text(pem));
  BOOST_TEST(pem->rfind("-----BEGIN PRIVATE KEY-----\n", 0) == 0u);
  auto back = private_key_from_pem(*pem);
  BOOST_REQUIRE_MESSAGE(back.ok(), error_text(back));
  BOOST_TEST(same_public_key(back->get(), test_key()));
  BOOST_TEST(prove_key_signs(back->get()).ok());
}

BOOST_AUTO_TEST_CASE(private_key_from_pem_reads_traditional_rsa_and_refuses_encrypted) {
  bio_ptr trad{BIO_new(BIO_s_mem())};
  BOOST_REQUIRE(PEM_write_bio_PrivateKey_traditional(trad.get(), test_key(), nullptr, nullptr, 0,
                                                     nullptr, nullptr)
                == 1);
  char* data = nullptr;
  long len = BIO_get_mem_data(trad.get(), &data);
  std::string text(data, std::size_t(len));
  BOOST_TEST(text.rfind("-----BEGIN RSA PRIVATE KEY-----", 0) == 0u);
  auto back = private_key_from_pem(text);
  BOOST_REQUIRE_MESSAGE(back.ok(), error_text(back));
  BOOST_TEST(same_public_key(back->get(), test_key()));

  bio_ptr enc{BIO_new(BIO_s_mem())};
  char pass[] = "secret";
  BOOST_REQUIRE(PEM_write_bio_PKCS8PrivateKey(enc.get(), test_key(), EVP_aes_128_cbc(), pass, 6,
                                              nullptr, nullptr)
                == 1);
  len = BIO_get_mem_data(enc.get(), &data);
  auto refused = private_key_from_pem(std::string(data, std::size_t(len)));
  BOOST_TEST(!refused.ok());
  BOOST_TEST(!private_key_from_pem("not a pem").ok());
  BOOST_TEST(ERR_peek_error() == 0ul);
}

BOOST_AUTO_TEST_SUITE_END()
