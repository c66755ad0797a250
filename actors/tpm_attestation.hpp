#pragma once

// tpm_attestation: the attestation_provider for binding keys held in a TPM. It proves to the
// attestation service that the key cannot leave the TPM (README "TPM attestation"):
//
//   1. TPM: read the EK certificate, create an AK under the EK   (platform/tpm_attest)
//   2. POST {endpoint}/attest/tpm/challenge
//      {"client_id","ek_certificate","ak_public","binding_public","public_key"}
//      -> {"challenge_id","credential_blob","encrypted_secret","nonce","expires_in"}
//   3. TPM: ActivateCredential (recovers the secret), Certify(binding key, AK, nonce)
//   4. POST {endpoint}/attest/tpm/proof {"challenge_id","secret","certify_info","signature"}
//      -> {"token":"<JWT>"} (attestation_type "tpm", key_exportable false, key_id)
//
// TPM operations block (tens of ms to seconds on hardware), so they run on this provider's
// worker thread, never on an actor thread or on the transport's I/O thread.

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "actors/runtime.hpp"
#include "io/http.hpp"
#include "platform/clock.hpp"
#include "platform/tpm.hpp"
#include "platform/tpm_attest.hpp"

namespace msiv2 {

/// The challenge step's request body (exposed for tests).
std::string tpm_challenge_request_body(const std::string& client_id,
                                       const platform::tpm_attestation_material& material,
                                       const std::string& binding_public,
                                       const std::string& spki_der);

/// The service's challenge, decoded.
struct tpm_challenge {
  std::string challenge_id;
  std::string credential_blob;
  std::string encrypted_secret;
  std::string nonce;
};

/// Reads the challenge answer; the error names the member that is missing or malformed.
result<tpm_challenge> read_tpm_challenge(const std::string& body);

/// The proof step's request body (exposed for tests).
std::string tpm_proof_request_body(const std::string& challenge_id,
                                   const platform::tpm_attestation_answer& answer);

/// Finds a binding key's TPM public area and loader; an error for a key that is not a TPM key.
using tpm_binding_of = std::function<result<platform::tpm_binding>(const key_ref&)>;

/// The tpm_binding_of of the TPM key store's keys: platform::tpm_binding_of on the key's
/// EVP_PKEY (our provider knows the key's wrapped blob).
result<platform::tpm_binding> tpm_store_binding(const key_ref& key);

/// The TPM attestation provider. Thread-safe; one attempt per attest() call (attestation_cache
/// drives retries). done() gets the HTTP status of the step that ended the attempt, 0 when no
/// HTTP answer came or the TPM failed.
class tpm_attestation final : public attestation_provider {
public:
  /// Talks to the TPM of `tpm`, finds binding keys with `binding_of`, sends through
  /// `transport` trusting `ca_file` (empty: the system store); `wall` bounds the attempt by its
  /// timeout across both HTTP steps.
  tpm_attestation(platform::tpm_config tpm, tpm_binding_of binding_of,
                  std::shared_ptr<io::transport> transport, std::string ca_file,
                  std::shared_ptr<platform::wall_clock> wall);
  /// Answers the attempts still queued with an error, then stops the worker.
  ~tpm_attestation() override;
  tpm_attestation(const tpm_attestation&) = delete;
  tpm_attestation& operator=(const tpm_attestation&) = delete;

  void attest(const key_ref& key, const std::string& endpoint, const std::string& client_id,
              std::chrono::milliseconds timeout,
              std::function<void(result<attestation_token>, int http_status)> done) override;
  /// Sends `correlation_id` as x-ms-client-request-id on both steps (a fresh UUID when empty).
  void attest(const key_ref& key, const std::string& endpoint, const std::string& client_id,
              const std::string& correlation_id, std::chrono::milliseconds timeout,
              std::function<void(result<attestation_token>, int http_status)> done) override;
  /// True: the JWT says the key is a non-exportable TPM key.
  bool attests_hardware_keys() const override { return true; }

private:
  struct shared;
  struct attempt;
  static void run(std::shared_ptr<shared> s);
  static void post(const std::shared_ptr<shared>& s, std::function<void()> job,
                   const std::function<void()>& on_stopped);
  static void begin(const std::shared_ptr<shared>& s, std::shared_ptr<attempt> a);
  static void challenged(const std::shared_ptr<shared>& s, std::shared_ptr<attempt> a,
                         io::http_response resp);
  static void answer(const std::shared_ptr<shared>& s, std::shared_ptr<attempt> a,
                     tpm_challenge challenge);
  static void proved(std::shared_ptr<attempt> a, io::http_response resp);
  static io::http_request post_json(const shared& s, const attempt& a, const std::string& path,
                                    std::string body);

  std::shared_ptr<shared> s_;
  std::thread worker_;
};

/// The provider for a module whose key store may hold either kind of key (`auto`): TPM keys go
/// to `tpm` (TPM key attestation), any other key to `software` (the keyguard protocol). The
/// choice is made per key, so an `auto` store that fell back to software keys is attested
/// the way its keys can be.
class per_key_attestation final : public attestation_provider {
public:
  per_key_attestation(std::shared_ptr<attestation_provider> tpm,
                      std::shared_ptr<attestation_provider> software);

  void attest(const key_ref& key, const std::string& endpoint, const std::string& client_id,
              std::chrono::milliseconds timeout,
              std::function<void(result<attestation_token>, int http_status)> done) override;
  void attest(const key_ref& key, const std::string& endpoint, const std::string& client_id,
              const std::string& correlation_id, std::chrono::milliseconds timeout,
              std::function<void(result<attestation_token>, int http_status)> done) override;
  /// True: hardware keys go to the TPM provider.
  bool attests_hardware_keys() const override { return true; }

private:
  attestation_provider& pick(const key_ref& key) const;

  std::shared_ptr<attestation_provider> tpm_;
  std::shared_ptr<attestation_provider> software_;
};

} // namespace msiv2
