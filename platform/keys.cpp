#include "platform/keys.hpp"

#include <stdlib.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <algorithm>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>

#include "platform/encoding.hpp"
#include "platform/tpm_provider.hpp"

namespace msiv2::platform {

namespace {

const unsigned char* as_bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

enum class padding { pss, pkcs1 };

// Configures the signature context: PSS uses salt 32 and leaves MGF1 at its default (the
// signing digest), because some providers reject setting it explicitly.
bool set_padding(EVP_PKEY_CTX* pctx, padding pad) {
  if (pad == padding::pkcs1)
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) > 0;
  return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0
         && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) > 0;
}

result<std::string> sign_sha256(EVP_PKEY* key, std::string_view data, padding pad,
                                std::string_view what) {
  if (key == nullptr)
    return fail(std::string(what) + ": no key");
  md_ctx_ptr ctx{EVP_MD_CTX_new()};
  if (!ctx)
    return fail(drain_openssl_errors(std::string(what) + ": EVP_MD_CTX_new failed"));
  EVP_PKEY_CTX* pctx = nullptr; // owned by ctx
  if (EVP_DigestSignInit_ex(ctx.get(), &pctx, "SHA256", nullptr, nullptr, key, nullptr) != 1)
    return fail(drain_openssl_errors(std::string(what) + ": EVP_DigestSignInit_ex failed"));
  if (!set_padding(pctx, pad))
    return fail(drain_openssl_errors(std::string(what) + ": setting RSA padding failed"));
  std::size_t len = 0;
  if (EVP_DigestSign(ctx.get(), nullptr, &len, as_bytes(data), data.size()) != 1)
    return fail(drain_openssl_errors(std::string(what) + ": EVP_DigestSign (size) failed"));
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     as_bytes(data), data.size())
      != 1)
    return fail(drain_openssl_errors(std::string(what) + ": EVP_DigestSign failed"));
  sig.resize(len);
  return sig;
}

bool verify_sha256(EVP_PKEY* key, std::string_view data, std::string_view signature,
                   padding pad) {
  if (key == nullptr)
    return false;
  // A TPM key's provider only signs: verify with a software copy of its public half.
  pkey_ptr twin;
  if (is_tpm_pkey(key)) {
    auto soft = software_public_key(key);
    if (!soft)
      return false;
    twin = std::move(*soft);
    key = twin.get();
  }
  md_ctx_ptr ctx{EVP_MD_CTX_new()};
  EVP_PKEY_CTX* pctx = nullptr;
  bool ok = ctx
            && EVP_DigestVerifyInit_ex(ctx.get(), &pctx, "SHA256", nullptr, nullptr, key, nullptr)
                 == 1
            && set_padding(pctx, pad)
            && EVP_DigestVerify(ctx.get(), as_bytes(signature), signature.size(), as_bytes(data),
                                data.size())
                 == 1;
  // A failed verification leaves entries on the queue; they must not leak into later errors.
  ERR_clear_error();
  return ok;
}

result<std::string> bn_param_base64url(EVP_PKEY* key, const char* name) {
  BIGNUM* raw = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &raw) != 1)
    return fail(drain_openssl_errors(std::string("reading RSA parameter '") + name + "' failed"));
  bn_ptr bn{raw};
  std::string bytes(std::size_t(BN_num_bytes(bn.get())), '\0');
  BN_bn2bin(bn.get(), reinterpret_cast<unsigned char*>(bytes.data()));
  return base64url_encode(bytes);
}

// OpenSSL's keygen progress callback: returning 0 aborts the generation.
int keygen_progress(EVP_PKEY_CTX* ctx) {
  const auto* cancel = static_cast<const std::atomic<bool>*>(EVP_PKEY_CTX_get_app_data(ctx));
  return cancel != nullptr && cancel->load(std::memory_order_relaxed) ? 0 : 1;
}

result<void> check_rsa_bits(unsigned bits) {
  if (bits < 1024)
    return fail("RSA key size " + std::to_string(bits) + " is too small (at least 1024 bits)");
  return ok();
}

} // namespace

result<pkey_ptr> generate_rsa_key_cancellable(unsigned bits, const std::atomic<bool>& cancel,
                                              OSSL_LIB_CTX* libctx) {
  if (auto checked = check_rsa_bits(bits); !checked)
    return checked.fail();
  const auto what = "RSA-" + std::to_string(bits) + " key generation";
  pkey_ctx_ptr ctx{EVP_PKEY_CTX_new_from_name(libctx, "RSA", nullptr)};
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_rsa_keygen_bits(ctx.get(), static_cast<int>(bits)) != 1)
    return fail(drain_openssl_errors(what + ": setting up the RSA context failed"));
  EVP_PKEY_CTX_set_app_data(ctx.get(), const_cast<std::atomic<bool>*>(&cancel));
  EVP_PKEY_CTX_set_cb(ctx.get(), keygen_progress);
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_keygen(ctx.get(), &raw) != 1) {
    if (cancel.load()) {
      ERR_clear_error();
      return fail(what + " cancelled");
    }
    return fail(drain_openssl_errors(what + " failed"));
  }
  return pkey_ptr{raw};
}

result<pkey_ptr> race_keygens(std::vector<keygen_racer> racers) {
  if (racers.empty())
    return fail("race_keygens: no racers");
  std::mutex mtx;
  std::atomic<bool> cancel{false};
  pkey_ptr winner;
  std::vector<std::string> errors;
  auto run = [&](const keygen_racer& racer) {
    result<pkey_ptr> k = fail("no key");
    try {
      k = racer(cancel);
    } catch (const std::exception& e) {
      k = fail(std::string("key generation threw: ") + e.what());
    }
    std::lock_guard<std::mutex> guard(mtx);
    if (k) {
      if (!winner) {
        winner = std::move(*k);
        cancel.store(true);
      }
    } else if (!winner) {
      errors.push_back(k.error()); // a failure of its own, not the cancellation
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(racers.size() - 1);
  for (std::size_t i = 1; i < racers.size(); ++i) {
    try {
      threads.emplace_back(run, std::cref(racers[i]));
    } catch (const std::system_error&) {
      break; // no thread to be had: fewer racers
    }
  }
  run(racers[0]);
  for (auto& t : threads)
    t.join();
  if (winner)
    return winner;
  std::string all;
  for (const auto& e : errors)
    all += (all.empty() ? "" : "; ") + e;
  return fail(all);
}

unsigned keygen_racers_for(unsigned hardware_threads, double load) {
  if (hardware_threads < 2 || load < 0)
    return 1;
  return load <= double(hardware_threads) - 1.0 ? 2u : 1u;
}

unsigned default_keygen_racers() {
  double load[1] = {-1.0};
  if (::getloadavg(load, 1) != 1)
    load[0] = -1.0;
  return keygen_racers_for(std::thread::hardware_concurrency(), load[0]);
}

result<pkey_ptr> generate_rsa_key_raced(unsigned bits, unsigned racers) {
  if (auto checked = check_rsa_bits(bits); !checked)
    return checked.fail();
  auto n = std::min(racers == 0 ? default_keygen_racers() : racers, 3u);
  std::vector<keygen_racer> all(n, [bits](const std::atomic<bool>& cancel) {
    return generate_rsa_key_cancellable(bits, cancel);
  });
  return race_keygens(std::move(all));
}

result<pkey_ptr> generate_rsa_key(unsigned bits, OSSL_LIB_CTX* libctx) {
  static const std::atomic<bool> never{false};
  return generate_rsa_key_cancellable(bits, never, libctx);
}

result<std::string> public_key_der(EVP_PKEY* key) {
  if (key == nullptr)
    return fail("public_key_der: no key");
  if (is_tpm_pkey(key)) {
    // A TPM key has no encoder of its own (no export): encode a software copy of (n, e).
    auto soft = software_public_key(key);
    if (!soft)
      return soft.fail();
    return public_key_der(soft->get());
  }
  unsigned char* out = nullptr;
  int len = i2d_PUBKEY(key, &out);
  if (len <= 0)
    return fail(drain_openssl_errors("encoding the public key as SubjectPublicKeyInfo failed"));
  std::string der(reinterpret_cast<char*>(out), std::size_t(len));
  OPENSSL_free(out);
  return der;
}

result<pkey_ptr> public_key_from_der(std::string_view spki_der) {
  const unsigned char* p = as_bytes(spki_der);
  pkey_ptr key{d2i_PUBKEY(nullptr, &p, long(spki_der.size()))};
  if (!key)
    return fail(drain_openssl_errors("SubjectPublicKeyInfo does not parse"));
  if (p != as_bytes(spki_der) + spki_der.size())
    return fail("SubjectPublicKeyInfo has trailing bytes");
  return key;
}

result<std::string> key_id(EVP_PKEY* key) {
  auto der = public_key_der(key);
  if (!der)
    return der.fail();
  return hex_lower(sha256(*der));
}

bool same_public_key(EVP_PKEY* a, EVP_PKEY* b) {
  // Comparing encodings works across providers (a hardware key and its software twin).
  auto da = public_key_der(a);
  auto db = public_key_der(b);
  return da.ok() && db.ok() && *da == *db;
}

result<std::string> sign_pss_sha256(EVP_PKEY* key, std::string_view data) {
  return sign_sha256(key, data, padding::pss, "RSA-PSS SHA-256 signing");
}

bool verify_pss_sha256(EVP_PKEY* key, std::string_view data, std::string_view signature) {
  return verify_sha256(key, data, signature, padding::pss);
}

result<std::string> sign_rs256(EVP_PKEY* key, std::string_view data) {
  return sign_sha256(key, data, padding::pkcs1, "RSA PKCS#1 v1.5 SHA-256 signing");
}

bool verify_rs256(EVP_PKEY* key, std::string_view data, std::string_view signature) {
  return verify_sha256(key, data, signature, padding::pkcs1);
}

result<void> prove_key_signs(EVP_PKEY* key) {
  auto probe = random_bytes(32);
  auto sig = sign_pss_sha256(key, probe);
  if (!sig)
    return fail("key cannot sign: " + sig.error());
  if (!verify_pss_sha256(key, probe, *sig))
    return fail("key signed, but the signature does not verify with its public key");
  return ok();
}

bool enable_secure_heap() {
  static const bool enabled = [] {
    if (CRYPTO_secure_malloc_initialized() == 1)
      return true;
    return CRYPTO_secure_malloc_init(1024 * 1024, 32) != 0;
  }();
  return enabled;
}

result<std::string> private_key_pem(EVP_PKEY* key) {
  if (key == nullptr)
    return fail("private_key_pem: no key");
  // A secure-memory BIO: its buffer comes from the secure heap when there is one and is
  // cleared when freed.
  bio_ptr bio{BIO_new(BIO_s_secmem())};
  if (!bio)
    return fail(drain_openssl_errors("private_key_pem: BIO_new failed"));
  if (PEM_write_bio_PKCS8PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return fail(drain_openssl_errors("writing the private key as PKCS#8 PEM failed"));
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, std::size_t(len));
}

result<pkey_ptr> private_key_from_pem(std::string_view pem) {
  bio_ptr bio{BIO_new_mem_buf(pem.data(), int(pem.size()))};
  if (!bio)
    return fail(drain_openssl_errors("private_key_from_pem: BIO_new_mem_buf failed"));
  // A null password callback result makes an encrypted key fail instead of prompting.
  auto no_password = [](char*, int, int, void*) -> int { return 0; };
  pkey_ptr key{PEM_read_bio_PrivateKey(bio.get(), nullptr, no_password, nullptr)};
  if (!key)
    return fail(drain_openssl_errors("PEM does not hold an unencrypted private key"));
  return key;
}

result<std::pair<std::string, std::string>> rsa_jwk_components(EVP_PKEY* key) {
  if (key == nullptr)
    return fail("rsa_jwk_components: no key");
  if (!EVP_PKEY_is_a(key, "RSA"))
    return fail("rsa_jwk_components: key is not RSA");
  auto n = bn_param_base64url(key, OSSL_PKEY_PARAM_RSA_N);
  if (!n)
    return n.fail();
  auto e = bn_param_base64url(key, OSSL_PKEY_PARAM_RSA_E);
  if (!e)
    return e.fail();
  return std::make_pair(std::move(*n), std::move(*e));
}

} // namespace msiv2::platform
