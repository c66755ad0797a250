#include "tools/sim/tpm_attestation.hpp"

#include <openssl/crypto.h>

#include <utility>

#include "platform/encoding.hpp"
#include "platform/keys.hpp"
#include "tools/sim/authority_support.hpp"

namespace msiv2::sim {
namespace {

constexpr std::size_t nonce_size = 32;
constexpr std::size_t secret_size = 32;

response malformed(std::string_view description) {
  return response::oauth_error(400, "invalid_request", description);
}

response refused(std::string_view description) {
  return response::oauth_error(400, "attestation_refused", description);
}

// The named members, each present, non-empty and (except `plain`) valid base64.
result<detail::string_members> read_fields(std::string_view body,
                                           std::initializer_list<std::string_view> names,
                                           std::string_view plain) {
  auto members = detail::read_string_members(body, names);
  if (!members)
    return members.fail();
  for (std::string_view name : names) {
    auto it = members->find(name);
    if (it == members->end())
      return fail(std::string(name) + " is missing");
    if (it->second.empty())
      return fail(std::string(name) + " is empty");
    if (name == plain)
      continue;
    auto bytes = platform::base64_decode(it->second);
    if (!bytes)
      return fail(std::string(name) + " is not valid base64: " + bytes.error());
    it->second = std::move(*bytes);
  }
  return members;
}

} // namespace

result<std::unique_ptr<tpm_attestation>> tpm_attestation::create(
  const std::string& ek_ca_file, std::chrono::seconds challenge_lifetime,
  std::size_t max_challenges) {
  auto trust = tpm::load_ek_ca(ek_ca_file);
  if (!trust)
    return trust.fail();
  if (challenge_lifetime.count() < 1 || max_challenges < 1)
    return fail("TPM attestation: the challenge lifetime and count must be positive");
  return std::unique_ptr<tpm_attestation>(
    new tpm_attestation(std::move(*trust), challenge_lifetime, max_challenges));
}

tpm_attestation::tpm_attestation(platform::x509_store_ptr trust, std::chrono::seconds lifetime,
                                 std::size_t max_challenges)
  : trust_(std::move(trust)), lifetime_(lifetime), max_challenges_(max_challenges) {}

response tpm_attestation::challenge(const request& req, std::int64_t now_unix) {
  auto f = read_fields(req.body,
                       {"client_id", "ek_certificate", "ak_public", "binding_public", "public_key"},
                       "client_id");
  if (!f)
    return malformed(f.error());
  const std::string& client_id = f->at("client_id");
  if (!platform::is_guid(client_id))
    return malformed("client_id must be a GUID");

  // The SPKI the client will put in its CSR, and the TPM areas.
  auto spki_key = platform::public_key_from_der(f->at("public_key"));
  if (!spki_key)
    return malformed("public_key is not a DER SubjectPublicKeyInfo: " + spki_key.error());
  auto ak = tpm::parse_public(f->at("ak_public"), "ak_public");
  if (!ak)
    return malformed(ak.error());
  auto binding = tpm::parse_public(f->at("binding_public"), "binding_public");
  if (!binding)
    return malformed(binding.error());

  auto ek_key = tpm::verify_ek_certificate(f->at("ek_certificate"), trust_.get(), now_unix);
  if (!ek_key)
    return refused(ek_key.error());
  if (auto r = tpm::check_attestation_key(*ak); !r)
    return refused(r.error());
  if (auto r = tpm::check_binding_key(*binding); !r)
    return refused(r.error());
  auto binding_key = tpm::rsa_key_of(binding->pub, "binding key");
  if (!binding_key)
    return refused(binding_key.error());
  if (!platform::same_public_key(binding_key->get(), spki_key->get()))
    return refused("public_key is not the key of binding_public: the CSR would carry another "
                   "key than the one the TPM certifies");
  auto key_id = platform::key_id(spki_key->get());
  if (!key_id)
    return response::oauth_error(500, "server_error", "public key id: " + key_id.error());

  pending_challenge c;
  c.expires_at = now_unix + lifetime_.count();
  c.nonce = platform::random_bytes(nonce_size);
  c.secret = platform::random_bytes(secret_size);
  auto cred = tpm::make_credential(ek_key->get(), c.secret, ak->name);
  if (!cred)
    return response::oauth_error(500, "server_error", cred.error());
  c.key.client_id = client_id;
  c.key.key_id = std::move(*key_id);
  c.key.ek_cert_sha256 = platform::hex_lower(platform::sha256(f->at("ek_certificate")));
  c.key.ak_name = platform::hex_lower(ak->name);
  c.ak = std::move(*ak);
  c.binding = std::move(*binding);
  const std::string nonce = c.nonce;

  std::string id = platform::uuid_v4();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    drop_expired(now_unix);
    if (challenges_.size() >= max_challenges_)
      return response::oauth_error(
               503, "temporarily_unavailable",
               "too many TPM attestation challenges are pending (" +
                 std::to_string(max_challenges_) + "); answer or let them expire and try again")
        .set("Retry-After", "1");
    challenges_.emplace(id, std::move(c));
  }
  std::string body = "{\"challenge_id\":" + platform::json_quote(id);
  body += ",\"credential_blob\":" + platform::json_quote(platform::base64_encode(cred->credential_blob));
  body += ",\"encrypted_secret\":" + platform::json_quote(platform::base64_encode(cred->encrypted_secret));
  body += ",\"nonce\":" + platform::json_quote(platform::base64_encode(nonce));
  body += ",\"expires_in\":" + std::to_string(lifetime_.count()) + "}";
  return response::json(200, std::move(body));
}

std::variant<tpm_attested_key, response> tpm_attestation::proof(const request& req,
                                                                std::int64_t now_unix) {
  auto f = read_fields(req.body, {"challenge_id", "secret", "certify_info", "signature"},
                       "challenge_id");
  if (!f)
    return malformed(f.error());

  pending_challenge c;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = challenges_.find(f->at("challenge_id"));
    if (it == challenges_.end())
      return refused("challenge_id names no pending challenge (unknown, already answered, or "
                     "expired)");
    c = std::move(it->second);
    challenges_.erase(it); // single use: a wrong answer cannot be retried against it
  }
  if (now_unix >= c.expires_at)
    return refused("the challenge has expired; ask for a new one");
  const std::string& secret = f->at("secret");
  if (secret.size() != c.secret.size() ||
      CRYPTO_memcmp(secret.data(), c.secret.data(), secret.size()) != 0)
    return refused("secret is not the challenge's credential: the AK was not activated by the "
                   "TPM that holds the certified EK (ActivateCredential did not recover it)");
  auto certified =
    tpm::verify_certify(c.ak, f->at("certify_info"), f->at("signature"), c.nonce, c.binding);
  if (!certified)
    return refused(certified.error());
  return c.key;
}

std::size_t tpm_attestation::pending() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return challenges_.size();
}

void tpm_attestation::reset() {
  std::lock_guard<std::mutex> lock(mutex_);
  challenges_.clear();
}

void tpm_attestation::drop_expired(std::int64_t now_unix) {
  for (auto it = challenges_.begin(); it != challenges_.end();)
    it = now_unix >= it->second.expires_at ? challenges_.erase(it) : std::next(it);
}

} // namespace msiv2::sim
