#include "actors/keyguard_attestation.hpp"

#include <algorithm>
#include <utility>

#include "io/json.hpp"
#include "platform/binding.hpp"
#include "platform/encoding.hpp"
#include "platform/jwt.hpp"
#include "platform/keys.hpp"

namespace msiv2 {

result<std::string> keyguard_request_body(const key_ref& key, const std::string& client_id,
                                          const std::string& nonce) {
  if (!key.key)
    return fail("attestation: the binding key handle is empty");
  auto signature = platform::sign_pss_sha256(key.key->get(), nonce);
  if (!signature)
    return fail("attestation: the binding key cannot sign the nonce: " + signature.error());
  return "{\"public_key\":" + platform::json_quote(platform::base64_encode(key.spki_der)) +
         ",\"client_id\":" + platform::json_quote(client_id) +
         ",\"nonce\":" + platform::json_quote(nonce) +
         ",\"signature\":" + platform::json_quote(platform::base64_encode(*signature)) + "}";
}

result<attestation_token> read_keyguard_answer(std::string_view body,
                                               const std::string& expected_key_id) {
  auto doc = io::json_object::parse(body, "attestation response");
  if (!doc)
    return fail(doc.error());
  auto jwt = doc->required_string("token");
  if (!jwt)
    return fail(jwt.error());
  auto claims = platform::read_jwt_claims(*jwt);
  if (!claims)
    return fail("malformed attestation response: member \"token\" is not a readable JWT: " +
                claims.error());
  if (!claims->exp)
    return fail("malformed attestation response: member \"token\" has no exp claim");
  if (!expected_key_id.empty() && !claims->key_id.empty() && claims->key_id != expected_key_id)
    return fail("malformed attestation response: member \"token\" has key_id " + claims->key_id +
                ", not the attested key " + expected_key_id);
  attestation_token out;
  out.jwt = std::move(*jwt);
  // Claims from upstream: a time whose milliseconds do not fit in 64 bits is refused.
  if (__builtin_mul_overflow(*claims->exp, std::int64_t{1000}, &out.expires_at_ms) ||
      (claims->iat && __builtin_mul_overflow(*claims->iat, std::int64_t{1000}, &out.issued_at_ms)))
    return fail("malformed attestation response: member \"token\" has an exp or iat out of range");
  if (out.issued_at_ms != 0 && out.issued_at_ms >= out.expires_at_ms)
    return fail("malformed attestation response: member \"token\" has an iat not before its exp");
  return out;
}

std::string attestation_refusal(const std::string& endpoint, const io::http_response& resp,
                                const std::string& step) {
  const std::string where =
    "attestation service " + endpoint + (step.empty() ? "" : " (" + step + ")");
  if (!resp.ok())
    return where + " could not be reached (" + std::string(io::to_string(resp.error)) + ": " +
           resp.error_message + ")";
  std::string why;
  if (auto doc = io::json_object::parse(resp.body, "attestation error")) {
    for (const char* name : {"error", "error_description", "message"})
      if (auto v = doc->optional_string(name); v && *v && !(*v)->empty())
        why += (why.empty() ? "" : ": ") + platform::sanitize_upstream(**v, 300);
  }
  return where + " refused the key (HTTP " + std::to_string(resp.status) +
         (why.empty() ? "" : ", " + why) + ")";
}

keyguard_attestation::keyguard_attestation(std::shared_ptr<io::transport> transport,
                                           std::string ca_file)
  : transport_(std::move(transport)), ca_file_(std::move(ca_file)) {}

void keyguard_attestation::attest(const key_ref& key, const std::string& endpoint,
                                  const std::string& client_id, std::chrono::milliseconds timeout,
                                  std::function<void(result<attestation_token>, int)> done) {
  attest(key, endpoint, client_id, std::string(), timeout, std::move(done));
}

void keyguard_attestation::attest(const key_ref& key, const std::string& endpoint,
                                  const std::string& client_id,
                                  const std::string& correlation_id,
                                  std::chrono::milliseconds timeout,
                                  std::function<void(result<attestation_token>, int)> done) {
  auto body = keyguard_request_body(key, client_id,
                                    platform::base64url_encode(platform::random_bytes(32)));
  if (!body) {
    done(body.fail(), 0);
    return;
  }
  std::string base = endpoint;
  while (!base.empty() && base.back() == '/')
    base.pop_back();
  io::http_request r;
  r.method = "POST";
  r.url = base + "/attest/keyguard";
  r.headers.add("Content-Type", "application/json; charset=utf-8");
  r.headers.add("Accept", "application/json");
  r.headers.add("x-ms-client-request-id",
                correlation_id.empty() ? platform::uuid_v4() : correlation_id);
  r.body = std::move(*body);
  r.ca_file = ca_file_;
  r.timeout = timeout.count() > 0 ? timeout : std::chrono::milliseconds(1);
  r.connect_timeout = std::min(r.connect_timeout, r.timeout);
  transport_->send(std::move(r), [done = std::move(done), endpoint,
                                  key_id = key.key_id](io::http_response resp) {
    if (!resp.ok() || resp.status != 200) {
      done(fail(attestation_refusal(endpoint, resp)), resp.ok() ? resp.status : 0);
      return;
    }
    auto token = read_keyguard_answer(resp.body, key_id);
    if (!token) {
      done(token.fail(), resp.status);
      return;
    }
    done(std::move(*token), resp.status);
  });
}

} // namespace msiv2
