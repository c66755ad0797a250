#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
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

BOOST_AUTO_TEST_CASE(a_raced_key_is_rsa_2048_with_exponent_65537_and_signs) {
  for (unsigned racers : {0u, 1u, 2u, 3u}) {
    auto k = generate_rsa_key_raced(2048, racers);
    BOOST_REQUIRE_MESSAGE(k.ok(), error_text(k));
    BOOST_TEST(EVP_PKEY_is_a(k->get(), "RSA"));
    BOOST_TEST(EVP_PKEY_get_bits(k->get()) == 2048);
    auto jwk = rsa_jwk_components(k->get());
    BOOST_REQUIRE(jwk.ok());
    BOOST_TEST(jwk->second == "AQAB");
    auto sig = sign_pss_sha256(k->get(), "raced");
    BOOST_REQUIRE(sig.ok());
    BOOST_TEST(verify_pss_sha256(k->get(), "raced", *sig));
    BOOST_TEST(!verify_pss_sha256(k->get(), "other", *sig));
  }
  auto tiny = generate_rsa_key_raced(512);
  BOOST_REQUIRE(!tiny.ok());
  BOOST_TEST(contains(tiny.error(), "too small"));
  BOOST_TEST(default_keygen_racers() >= 1u);
  BOOST_TEST(default_keygen_racers() <= 2u);
}

BOOST_AUTO_TEST_CASE(keys_are_raced_only_with_a_core_to_spare) {
  BOOST_TEST(keygen_racers_for(1, 0.0) == 1u);
  BOOST_TEST(keygen_racers_for(2, 0.2) == 2u);
  BOOST_TEST(keygen_racers_for(2, 1.0) == 2u);
  BOOST_TEST(keygen_racers_for(2, 1.5) == 1u);
  BOOST_TEST(keygen_racers_for(2, 6.0) == 1u);
  BOOST_TEST(keygen_racers_for(8, 6.0) == 2u);
  BOOST_TEST(keygen_racers_for(8, -1.0) == 1u); // load unknown: one generation
}

BOOST_AUTO_TEST_CASE(a_cancelled_generation_gives_up_cleanly) {
  std::atomic<bool> cancel{true};
  auto t0 = std::chrono::steady_clock::now();
  auto k = generate_rsa_key_cancellable(4096, cancel);
  BOOST_REQUIRE(!k.ok());
  BOOST_TEST(contains(k.error(), "cancelled"));
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2)));
  BOOST_TEST(ERR_peek_error() == 0ul); // nothing left on the error queue
  std::atomic<bool> go_on{false};
  auto made = generate_rsa_key_cancellable(2048, go_on);
  BOOST_REQUIRE_MESSAGE(made.ok(), error_text(made));
  BOOST_TEST(prove_key_signs(made->get()).ok());
}

std::size_t threads_of_this_process() {
  std::size_t n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
    (void)entry;
    ++n;
  }
  return n;
}

pkey_ptr copy_of(EVP_PKEY* key) {
  EVP_PKEY_up_ref(key);
  return pkey_ptr{key};
}

BOOST_AUTO_TEST_CASE(the_first_key_wins_and_the_losers_are_cancelled_and_joined) {
  auto before = threads_of_this_process();
  std::atomic<bool> loser_ended{false};
  std::string loser_error;
  std::vector<keygen_racer> racers;
  racers.push_back([](const std::atomic<bool>&) -> msiv2::result<pkey_ptr> {
    return copy_of(test_key());
  });
  for (int i = 0; i < 2; ++i)
    racers.push_back([&, i](const std::atomic<bool>& cancel) {
      auto k = generate_rsa_key_cancellable(4096, cancel);
      if (i == 0)
        loser_error = k.ok() ? "made a key" : k.error();
      loser_ended = true;
      return k;
    });
  auto t0 = std::chrono::steady_clock::now();
  auto k = race_keygens(std::move(racers));
  BOOST_REQUIRE_MESSAGE(k.ok(), error_text(k));
  BOOST_TEST(same_public_key(k->get(), test_key()));
  // Returned only after the losers ended; their generations were cut short.
  BOOST_TEST(loser_ended.load());
  BOOST_TEST(contains(loser_error, "cancelled"));
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2)));
  BOOST_TEST(threads_of_this_process() == before);
}

BOOST_AUTO_TEST_CASE(a_failing_racer_does_not_lose_the_others_key) {
  for (bool failing_first : {true, false}) {
    std::vector<keygen_racer> racers;
    keygen_racer broken = [](const std::atomic<bool>&) -> msiv2::result<pkey_ptr> {
      return msiv2::fail("entropy source broken");
    };
    keygen_racer thrower = [](const std::atomic<bool>&) -> msiv2::result<pkey_ptr> {
      throw std::runtime_error("out of memory");
    };
    keygen_racer real = [](const std::atomic<bool>& cancel) {
      return generate_rsa_key_cancellable(2048, cancel);
    };
    if (failing_first)
      racers = {broken, thrower, real};
    else
      racers = {real, broken, thrower};
    auto k = race_keygens(std::move(racers));
    BOOST_REQUIRE_MESSAGE(k.ok(), error_text(k));
    BOOST_TEST(EVP_PKEY_get_bits(k->get()) == 2048);
    BOOST_TEST(prove_key_signs(k->get()).ok());
  }
}

BOOST_AUTO_TEST_CASE(a_race_fails_only_when_every_racer_failed) {
  std::vector<keygen_racer> racers;
  racers.push_back([](const std::atomic<bool>&) -> msiv2::result<pkey_ptr> {
    return msiv2::fail("first broken");
  });
  racers.push_back([](const std::atomic<bool>&) -> msiv2::result<pkey_ptr> {
    return msiv2::fail("second broken");
  });
  auto k = race_keygens(std::move(racers));
  BOOST_REQUIRE(!k.ok());
  BOOST_TEST(contains(k.error(), "first broken"));
  BOOST_TEST(contains(k.error(), "second broken"));
  auto none = race_keygens({});
  BOOST_REQUIRE(!none.ok());
  BOOST_TEST(contains(none.error(), "no racers"));
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

// Review M5: key material lives in pages kept out of core dumps, and buffers that held a key
// are cleared.
BOOST_AUTO_TEST_CASE(the_secure_heap_is_kept_out_of_core_dumps) {
  BOOST_REQUIRE(enable_secure_heap());
  BOOST_REQUIRE(enable_secure_heap()); // idempotent
  void* p = CRYPTO_secure_malloc(64, __FILE__, __LINE__);
  BOOST_REQUIRE(p != nullptr);
  BOOST_TEST(CRYPTO_secure_allocated(p) == 1);
  auto at = reinterpret_cast<std::uintptr_t>(p);
  // Find the mapping that holds it in /proc/self/smaps and read its VmFlags.
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  std::string flags;
  while (std::getline(smaps, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > line.find(' ')) {
      inside = at >= lo && at < hi;
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) {
      flags = line;
      break;
    }
  }
  CRYPTO_secure_free(p, __FILE__, __LINE__);
  BOOST_REQUIRE_MESSAGE(!flags.empty(), "no mapping found for the secure heap");
  BOOST_TEST(flags.find(" dd") != std::string::npos, flags); // MADV_DONTDUMP
}

BOOST_AUTO_TEST_CASE(secure_clear_overwrites_the_whole_buffer) {
  std::string s(100, 'k');
  s.resize(10);
  const char* data = s.data();
  auto capacity = s.capacity();
  secure_clear(s);
  BOOST_TEST(s.empty());
  BOOST_TEST(s.data() == data); // the same buffer, not a new one
  for (std::size_t i = 0; i < capacity; ++i)
    BOOST_REQUIRE_MESSAGE(data[i] != 'k', "byte " << i << " still holds key material");
}

BOOST_AUTO_TEST_SUITE_END()
