#include "actors/tpm_attestation.hpp"

#include <algorithm>
#include <utility>

#include "actors/keyguard_attestation.hpp"
#include "io/json.hpp"
#include "platform/binding.hpp"
#include "platform/encoding.hpp"
#include "platform/tpm_provider.hpp"

namespace msiv2 {

std::string tpm_challenge_request_body(const std::string& client_id,
                                       const platform::tpm_attestation_material& material,
                                       const std::string& binding_public,
                                       const std::string& spki_der) {
  using platform::base64_encode;
  using platform::json_quote;
  return "{\"client_id\":" + json_quote(client_id) +
         ",\"ek_certificate\":" + json_quote(base64_encode(material.ek_certificate)) +
         ",\"ak_public\":" + json_quote(base64_encode(material.ak.public_area)) +
         ",\"binding_public\":" + json_quote(base64_encode(binding_public)) +
         ",\"public_key\":" + json_quote(base64_encode(spki_der)) + "}";
}

result<tpm_challenge> read_tpm_challenge(const std::string& body) {
  auto doc = io::json_object::parse(body, "TPM attestation challenge");
  if (!doc)
    return fail(doc.error());
  tpm_challenge out;
  auto id = doc->required_string("challenge_id");
  if (!id)
    return fail(id.error());
  out.challenge_id = std::move(*id);
  for (auto [name, field] : {std::pair{"credential_blob", &out.credential_blob},
                             std::pair{"encrypted_secret", &out.encrypted_secret},
                             std::pair{"nonce", &out.nonce}}) {
    auto text = doc->required_string(name);
    if (!text)
      return fail(text.error());
    auto bytes = platform::base64_decode(*text);
    if (!bytes)
      return fail(std::string("malformed TPM attestation challenge: member \"") + name +
                  "\" is not base64: " + bytes.error());
    *field = std::move(*bytes);
  }
  return out;
}

std::string tpm_proof_request_body(const std::string& challenge_id,
                                   const platform::tpm_attestation_answer& answer) {
  using platform::base64_encode;
  using platform::json_quote;
  return "{\"challenge_id\":" + json_quote(challenge_id) +
         ",\"secret\":" + json_quote(base64_encode(answer.secret)) +
         ",\"certify_info\":" + json_quote(base64_encode(answer.certify_info)) +
         ",\"signature\":" + json_quote(base64_encode(answer.signature)) + "}";
}

result<platform::tpm_binding> tpm_store_binding(const key_ref& key) {
  if (!key.key)
    return fail("the binding key handle is empty");
  return platform::tpm_binding_of(key.key->get());
}

// --- the provider ---

struct tpm_attestation::shared {
  platform::tpm_config tpm;
  tpm_binding_of binding_of;
  std::shared_ptr<io::transport> transport;
  std::string ca_file;
  std::shared_ptr<platform::wall_clock> wall;

  std::mutex mtx;
  std::condition_variable cv;
  std::deque<std::function<void()>> jobs;
  bool stopping = false;
};

struct tpm_attestation::attempt {
  key_ref key;
  std::string endpoint; // without a trailing '/'
  std::string client_id;
  std::string correlation_id; // x-ms-client-request-id of both steps
  std::int64_t deadline_ms = 0; // wall clock
  std::function<void(result<attestation_token>, int)> done;
  platform::tpm_binding binding;
  platform::tpm_attestation_material material;
  std::string challenge_id;
};

tpm_attestation::tpm_attestation(platform::tpm_config tpm, tpm_binding_of binding_of,
                                 std::shared_ptr<io::transport> transport, std::string ca_file,
                                 std::shared_ptr<platform::wall_clock> wall)
  : s_(std::make_shared<shared>()) {
  s_->tpm = std::move(tpm);
  s_->binding_of = std::move(binding_of);
  s_->transport = std::move(transport);
  s_->ca_file = std::move(ca_file);
  s_->wall = std::move(wall);
  worker_ = std::thread([s = s_] { run(s); });
}

tpm_attestation::~tpm_attestation() {
  {
    std::lock_guard<std::mutex> lock(s_->mtx);
    s_->stopping = true;
  }
  s_->cv.notify_all();
  // The last owner may be a callback running on the worker itself (as in tpm_key_store): the
  // worker then ends on its own, since it holds `s_` and sees `stopping`.
  if (worker_.get_id() == std::this_thread::get_id())
    worker_.detach();
  else
    worker_.join();
}

void tpm_attestation::run(std::shared_ptr<shared> s) {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(s->mtx);
      s->cv.wait(lock, [&] { return s->stopping || !s->jobs.empty(); });
      if (s->jobs.empty())
        return;
      job = std::move(s->jobs.front());
      s->jobs.pop_front();
    }
    job(); // a stopping worker still runs (and so answers) the jobs already queued
  }
}

void tpm_attestation::post(const std::shared_ptr<shared>& s, std::function<void()> job,
                           const std::function<void()>& on_stopped) {
  {
    std::lock_guard<std::mutex> lock(s->mtx);
    if (!s->stopping) {
      s->jobs.push_back(std::move(job));
      s->cv.notify_one();
      return;
    }
  }
  on_stopped();
}

void tpm_attestation::attest(const key_ref& key, const std::string& endpoint,
                             const std::string& client_id, std::chrono::milliseconds timeout,
                             std::function<void(result<attestation_token>, int)> done) {
  attest(key, endpoint, client_id, std::string(), timeout, std::move(done));
}

void tpm_attestation::attest(const key_ref& key, const std::string& endpoint,
                             const std::string& client_id, const std::string& correlation_id,
                             std::chrono::milliseconds timeout,
                             std::function<void(result<attestation_token>, int)> done) {
  auto a = std::make_shared<attempt>();
  a->correlation_id = correlation_id.empty() ? platform::uuid_v4() : correlation_id;
  a->key = key;
  a->endpoint = endpoint;
  while (!a->endpoint.empty() && a->endpoint.back() == '/')
    a->endpoint.pop_back();
  a->client_id = client_id;
  a->deadline_ms = s_->wall->now_ms() + std::max<std::int64_t>(timeout.count(), 1);
  a->done = std::move(done);
  auto s = s_;
  post(s, [s, a] { begin(s, a); },
       [a] { a->done(fail("TPM attestation: the module is shutting down"), 0); });
}

io::http_request tpm_attestation::post_json(const shared& s, const attempt& a,
                                            const std::string& path, std::string body) {
  io::http_request r;
  r.method = "POST";
  r.url = a.endpoint + path;
  r.headers.add("Content-Type", "application/json; charset=utf-8");
  r.headers.add("Accept", "application/json");
  r.headers.add("x-ms-client-request-id", a.correlation_id);
  r.body = std::move(body);
  r.ca_file = s.ca_file;
  r.timeout = std::chrono::milliseconds(std::max<std::int64_t>(a.deadline_ms - s.wall->now_ms(), 1));
  r.connect_timeout = std::min(r.connect_timeout, r.timeout);
  return r;
}

// Worker thread: the TPM's first step, then the challenge request.
void tpm_attestation::begin(const std::shared_ptr<shared>& s, std::shared_ptr<attempt> a) {
  if (!a->key.key) {
    a->done(fail("TPM attestation: the binding key handle is empty"), 0);
    return;
  }
  auto binding = s->binding_of(a->key);
  if (!binding) {
    a->done(fail("TPM attestation: " + binding.error()), 0);
    return;
  }
  a->binding = std::move(*binding);
  auto material = platform::begin_tpm_attestation(s->tpm);
  if (!material) {
    a->done(fail("TPM attestation: " + material.error()), 0);
    return;
  }
  a->material = std::move(*material);
  auto body = tpm_challenge_request_body(a->client_id, a->material, a->binding.public_area,
                                         a->key.spki_der);
  s->transport->send(post_json(*s, *a, "/attest/tpm/challenge", std::move(body)),
                     [s, a](io::http_response resp) { challenged(s, a, std::move(resp)); });
}

// I/O thread: reads the challenge and hands the TPM's second step to the worker.
void tpm_attestation::challenged(const std::shared_ptr<shared>& s, std::shared_ptr<attempt> a,
                                 io::http_response resp) {
  if (!resp.ok() || resp.status != 200) {
    a->done(fail(attestation_refusal(a->endpoint, resp, "TPM challenge")), resp.ok() ? resp.status : 0);
    return;
  }
  auto challenge = read_tpm_challenge(resp.body);
  if (!challenge) {
    a->done(challenge.fail(), resp.status);
    return;
  }
  post(s, [s, a, c = std::move(*challenge)]() mutable { answer(s, a, std::move(c)); },
       [a] { a->done(fail("TPM attestation: the module is shutting down"), 0); });
}

// Worker thread: ActivateCredential and Certify, then the proof request.
void tpm_attestation::answer(const std::shared_ptr<shared>& s, std::shared_ptr<attempt> a,
                             tpm_challenge challenge) {
  auto answer = platform::answer_tpm_challenge(s->tpm, a->material, a->binding.load,
                                               challenge.credential_blob,
                                               challenge.encrypted_secret, challenge.nonce);
  if (!answer) {
    a->done(fail("TPM attestation: " + answer.error()), 0);
    return;
  }
  auto body = tpm_proof_request_body(challenge.challenge_id, *answer);
  s->transport->send(post_json(*s, *a, "/attest/tpm/proof", std::move(body)),
                     [a](io::http_response resp) { proved(a, std::move(resp)); });
}

// I/O thread: the JWT.
void tpm_attestation::proved(std::shared_ptr<attempt> a, io::http_response resp) {
  if (!resp.ok() || resp.status != 200) {
    a->done(fail(attestation_refusal(a->endpoint, resp, "TPM proof")), resp.ok() ? resp.status : 0);
    return;
  }
  auto token = read_keyguard_answer(resp.body, a->key.key_id);
  if (!token) {
    a->done(token.fail(), resp.status);
    return;
  }
  a->done(std::move(*token), resp.status);
}

// --- per key ---

per_key_attestation::per_key_attestation(std::shared_ptr<attestation_provider> tpm,
                                         std::shared_ptr<attestation_provider> software)
  : tpm_(std::move(tpm)), software_(std::move(software)) {}

attestation_provider& per_key_attestation::pick(const key_ref& key) const {
  return key.key && platform::is_tpm_pkey(key.key->get()) ? *tpm_ : *software_;
}

void per_key_attestation::attest(const key_ref& key, const std::string& endpoint,
                                 const std::string& client_id, std::chrono::milliseconds timeout,
                                 std::function<void(result<attestation_token>, int)> done) {
  pick(key).attest(key, endpoint, client_id, timeout, std::move(done));
}

void per_key_attestation::attest(const key_ref& key, const std::string& endpoint,
                                 const std::string& client_id, const std::string& correlation_id,
                                 std::chrono::milliseconds timeout,
                                 std::function<void(result<attestation_token>, int)> done) {
  pick(key).attest(key, endpoint, client_id, correlation_id, timeout, std::move(done));
}

} // namespace msiv2
