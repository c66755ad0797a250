#pragma once

// RSA binding keys and raw signatures (PSS for CSRs and attestation proofs, PKCS#1 v1.5
// for RS256 JWTs). Keys travel as EVP_PKEY handles; only public keys are ever exported,
// except by the explicit PEM helpers that the simulator and the per-boot key file use.

#include <atomic>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "platform/openssl.hpp"
#include "platform/result.hpp"

namespace msiv2::platform {

/// A new RSA key (public exponent 65537) from `libctx` (nullptr = default context).
result<pkey_ptr> generate_rsa_key(unsigned bits = 2048, OSSL_LIB_CTX* libctx = nullptr);

/// generate_rsa_key that gives up, failing with "cancelled", soon after `cancel` becomes true
/// (OpenSSL's keygen callback checks it at every prime candidate).
result<pkey_ptr> generate_rsa_key_cancellable(unsigned bits, const std::atomic<bool>& cancel,
                                              OSSL_LIB_CTX* libctx = nullptr);

/// One contestant of race_keygens: makes a key, or fails soon after `cancel` becomes true.
using keygen_racer = std::function<result<pkey_ptr>(const std::atomic<bool>& cancel)>;

/// Runs the racers at once (the first on the calling thread, each other one on a thread of its
/// own), keeps the first key made and cancels the others. Returns only once every racer has
/// ended (no thread outlives the call). A racer that fails does not stop the others; the race
/// fails only when all of them did, with their errors.
result<pkey_ptr> race_keygens(std::vector<keygen_racer> racers);

/// How many generations to race on a machine with `hardware_threads` and a 1-minute load
/// average of `load` (negative: unknown): 2 when there are 2+ hardware threads and the load
/// leaves one idle, else 1. A second racer only helps when it gets a core of its own: on a busy
/// machine the process's share of CPU is split between the racers and both finish later
/// (measured: 280 ms median raced against 208 ms for one generation under a load of 6 on 2
/// cores), while on idle cores the first of two takes about 0.6x the median of one.
unsigned keygen_racers_for(unsigned hardware_threads, double load);
/// keygen_racers_for(std::thread::hardware_concurrency(), getloadavg's 1-minute figure).
unsigned default_keygen_racers();

/// A new RSA key (public exponent 65537) from `racers` independent generations raced
/// (0: default_keygen_racers(); at most 3). RSA generation is a random prime search with a
/// long tail, so on idle cores the first of two finishes well before one alone, on average and
/// in the tail.
result<pkey_ptr> generate_rsa_key_raced(unsigned bits = 2048, unsigned racers = 0);

/// DER SubjectPublicKeyInfo of the key's public half.
result<std::string> public_key_der(EVP_PKEY* key);
/// A public key from DER SubjectPublicKeyInfo.
result<pkey_ptr> public_key_from_der(std::string_view spki_der);
/// Key id for caches: lower-case hex SHA-256 of the DER SubjectPublicKeyInfo (protocol.md §3).
result<std::string> key_id(EVP_PKEY* key);
/// True when both keys have the same public half.
bool same_public_key(EVP_PKEY* a, EVP_PKEY* b);

/// RSASSA-PSS, SHA-256, MGF1-SHA-256, salt length 32, over `data`.
result<std::string> sign_pss_sha256(EVP_PKEY* key, std::string_view data);
/// Verifies an RSASSA-PSS SHA-256 (salt 32) signature.
bool verify_pss_sha256(EVP_PKEY* key, std::string_view data, std::string_view signature);
/// RSASSA-PKCS1-v1_5 with SHA-256 (JWT RS256, X.509 signatures).
result<std::string> sign_rs256(EVP_PKEY* key, std::string_view data);
/// Verifies an RSASSA-PKCS1-v1_5 SHA-256 signature.
bool verify_rs256(EVP_PKEY* key, std::string_view data, std::string_view signature);
/// Proves a key can still sign: signs random bytes and verifies them (protocol.md §3).
result<void> prove_key_signs(EVP_PKEY* key);

/// PKCS#8 PEM of the private key (unencrypted; callers store it 0600 or not at all).
result<std::string> private_key_pem(EVP_PKEY* key);
/// Sets up OpenSSL's secure heap once per process (CRYPTO_secure_malloc_init, 1 MiB: a few
/// hundred live RSA-2048 keys; when it is full OpenSSL's secure allocations fail rather than
/// fall back to ordinary memory): the private parts of RSA keys made afterwards live in pages
/// that are mlock-ed where RLIMIT_MEMLOCK allows and marked MADV_DONTDUMP (kept out of core
/// dumps), and are cleared when freed (review M5). True when the heap is (now or already) in
/// place. msiv2::client calls it; an embedder that runs the module in its own actor system
/// may call it first.
bool enable_secure_heap();
/// A private key from PEM (PKCS#8 or traditional RSA).
result<pkey_ptr> private_key_from_pem(std::string_view pem);

/// RSA modulus and exponent as base64url (the JWK "n" and "e").
result<std::pair<std::string, std::string>> rsa_jwk_components(EVP_PKEY* key);

} // namespace msiv2::platform
