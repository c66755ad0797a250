// Writes the seed corpora of tests/fuzz/corpus/ from real answers: the simulator's authority
// and IMDS (tools/sim) run in-process at fuzz::seed_time_s with the fixed fuzz key, and the
// client's own encoders (CSR, attestation request, persisted files). Run once by hand when a
// format changes: build-fuzz/bin/msiv2-fuzz-seeds tests/fuzz/corpus
// (tools/fuzz.sh uses the committed corpora; it does not run this).

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "actors/imds_parse.hpp"
#include "actors/keyguard_attestation.hpp"
#include "actors/persisted.hpp"
#include "io/endpoint_trust.hpp"
#include "platform/binding.hpp"
#include "platform/csr.hpp"
#include "platform/encoding.hpp"
#include "platform/keys.hpp"
#include "platform/x509.hpp"
#include "tests/fuzz/fuzz_common.hpp"
#include "tools/sim/authority.hpp"
#include "tools/sim/faults.hpp"
#include "tools/sim/imds.hpp"

namespace {

using namespace msiv2;
namespace fs = std::filesystem;

fs::path root;
int written = 0;

void seed(const std::string& target, const std::string& name, const std::string& bytes) {
  fs::create_directories(root / target);
  std::ofstream(root / target / name, std::ios::binary) << bytes;
  ++written;
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "msiv2-fuzz-seeds: %s\n", what.c_str());
  std::exit(1);
}

template <class R>
auto need(R r, const char* what) {
  if (!r)
    die(std::string(what) + ": " + r.error());
  return std::move(*r);
}

sim::request imds_request(std::string method, std::string path, std::string body = {}) {
  sim::request r;
  r.method = std::move(method);
  r.path = std::move(path);
  r.target = r.path + "?cred-api-version=2.0";
  r.query = {{"cred-api-version", "2.0"}};
  r.headers = {{"Metadata", "true"}, {"x-ms-client-request-id", platform::uuid_v4()}};
  if (!body.empty())
    r.headers.emplace_back("Content-Type", "application/json");
  r.body = std::move(body);
  return r;
}

std::string header_block(const sim::response& r) {
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + " X\r\n";
  for (const auto& [k, v] : r.headers)
    out += k + ": " + v + "\r\n";
  return out + "\r\n";
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 2)
    die("usage: msiv2-fuzz-seeds CORPUS_DIR");
  root = argv[1];
  sim::config cfg;
  cfg.attestation = sim::attestation_policy::optional;
  auto state = fs::temp_directory_path() / ("msiv2-fuzz-seeds-" + std::to_string(::getpid()));
  auto auth = need(sim::authority::create(cfg, state.string(), [] { return fuzz::seed_time_s; }),
                   "simulator authority");
  auth->set_urls({fuzz::seed_attestation_endpoint, "https://127.0.0.1:8444"});
  sim::imds_service imds(cfg, *auth, fuzz::seed_attestation_endpoint);
  const auto& key = fuzz::fixed_key();
  const auto& who = cfg.system_identity;

  // getplatformmetadata
  auto meta_answer = imds.handle("imds_metadata",
                                 imds_request("GET", "/metadata/identity/getplatformmetadata"));
  if (meta_answer.status != 200)
    die("metadata answered " + std::to_string(meta_answer.status) + ": " + meta_answer.body);
  seed("metadata", "imds-answer", cfg.imds_server_header + "\n" + meta_answer.body);
  seed("metadata", "no-server-header", "\n" + meta_answer.body);
  seed("json", "metadata", meta_answer.body);
  seed("http_header", "metadata", header_block(meta_answer));
  auto meta = need(parse_platform_metadata(meta_answer.body), "metadata answer");

  // attestation
  auto att_body = need(keyguard_request_body(key, who.client_id, "bm9uY2Utb2YtdGhlLXNlZWRz"),
                       "attestation request");
  sim::request att_req;
  att_req.method = "POST";
  att_req.path = att_req.target = "/attest/keyguard";
  att_req.headers = {{"Content-Type", "application/json"}};
  att_req.body = att_body;
  auto att_answer = auth->attest(att_req);
  if (att_answer.status != 200)
    die("attestation answered " + std::to_string(att_answer.status) + ": " + att_answer.body);
  seed("attestation", "answer", key.key_id + "\n" + att_answer.body);
  seed("attestation", "other-key", "0123\n" + att_answer.body);
  seed("json", "attestation-request", att_body);
  seed("json", "attestation-answer", att_answer.body);
  auto attestation = need(read_keyguard_answer(att_answer.body, key.key_id), "attestation answer");
  seed("jwt", "attestation", attestation.jwt);

  // the CSR and issuecredential
  auto csr = need(platform::build_csr(key.key->get(), meta.client_id, meta.tenant_id,
                                      meta.cuid_json),
                  "CSR");
  seed("der_csr", "csr", csr);
  std::string issue_body = "{\"csr\":" + platform::json_quote(platform::base64_encode(csr)) +
                           ",\"attestation_token\":" + platform::json_quote(attestation.jwt) + "}";
  seed("sim_csr", "attested", issue_body);
  seed("sim_csr", "plain", "{\"csr\":" + platform::json_quote(platform::base64_encode(csr)) + "}");
  seed("json", "issue-request", issue_body);
  auto issued = imds.handle("imds_issue",
                            imds_request("POST", "/metadata/identity/issuecredential", issue_body));
  if (issued.status != 200)
    die("issuecredential answered " + std::to_string(issued.status) + ": " + issued.body);
  seed("credential", "answer", issued.body);
  seed("json", "credential", issued.body);
  credential_expectation want{managed_identity::system(), meta, key, true, io::loopback_hosts()};
  auto cred = need(read_credential_answer(issued.body, want, fuzz::seed_time_s + 60),
                   "issuecredential answer");
  seed("x509", "binding-certificate", cred.certificate_der);
  seed("x509", "binding-certificate.pem", platform::pem_encode(cred.certificate_der, "CERTIFICATE"));
  std::ifstream ca(auth->ca_file());
  seed("x509", "ca-bundle.pem", std::string(std::istreambuf_iterator<char>(ca), {}));
  seed("encoding", "certificate-base64", platform::base64_encode(cred.certificate_der));
  seed("encoding", "jwt-part", attestation.jwt.substr(0, attestation.jwt.find('.')));

  // the token endpoint (mtls_pop and bearer) and IMDS v1
  for (const char* type : {"mtls_pop", "bearer"}) {
    sim::request t;
    t.method = "POST";
    t.path = t.target = "/" + cred.tenant_id + "/oauth2/v2.0/token";
    t.headers = {{"Content-Type", "application/x-www-form-urlencoded"}};
    t.body = "grant_type=client_credentials&client_id=" + cred.client_id +
             "&scope=" + platform::url_encode("https://management.azure.com/.default") +
             "&token_type=" + type;
    t.client_cert_der = cred.certificate_der;
    auto answer = auth->token(t);
    if (answer.status != 200)
      die(std::string("token endpoint answered ") + std::to_string(answer.status) + ": " +
          answer.body);
    const bool pop = std::string(type) == "mtls_pop";
    seed("token_answer", type, (pop ? "p" + cred.x5t_s256 : std::string("b")) + "\n" + answer.body);
    seed("json", std::string("token-") + type, answer.body);
    seed("http_header", std::string("token-") + type, header_block(answer));
    seed("encoding", std::string("form-") + type, t.body);
    auto tok = answer.body.substr(answer.body.find("\"access_token\":\"") + 16);
    seed("jwt", std::string("access-token-") + type, tok.substr(0, tok.find('"')));
    if (pop) {
      t.body = "grant_type=client_credentials&client_id=" + cfg.user_identities.front().client_id +
               "&scope=x/.default&token_type=mtls_pop";
      auto refused = auth->token(t);
      seed("token_answer", "refused-client", "p\n" + refused.body);
      seed("json", "aad-error", refused.body);
    }
  }
  auto v1 = need(auth->v1_token_response(who, "https://management.azure.com"), "v1 answer");
  seed("token_answer", "imds-v1", "v\n" + v1);
  seed("json", "imds-v1", v1);

  // injected error answers, as every faulted endpoint sends them
  for (const char* endpoint : {"imds_metadata", "imds_issue", "imds_token", "attestation", "token"})
    for (int status : {400, 410, 429, 500, 503}) {
      auto r = sim::fault_response(endpoint, status);
      r.set("Retry-After", "7");
      const std::string name = std::string(endpoint) + "-" + std::to_string(status);
      seed("json", name, r.body);
      if (std::string(endpoint) == "attestation")
        seed("attestation", name, "k\n" + r.body);
      else if (std::string(endpoint) == "token" || std::string(endpoint) == "imds_token")
        seed("token_answer", name, "p\n" + r.body);
      else
        seed("metadata", name, cfg.imds_server_header + "\n" + r.body);
      if (status == 429)
        seed("http_header", name, header_block(r));
    }
  seed("http_header", "retry-after-date",
       "HTTP/1.1 429 Too Many Requests\r\nRetry-After: Thu, 01 Jan 2026 00:01:00 GMT\r\n"
       "WWW-Authenticate: Bearer\r\n realm=\"x\"\r\n\r\n");
  seed("http_header", "continue-then-answer",
       "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Service Unavailable\r\nRetry-After: 120\r\n"
       "Server: Microsoft-IIS/10.0\r\n\r\n");

  // the persisted files another process of the user leaves
  seed("persisted", "certificate",
       persisted::encode_certificate(cred, fuzz::seed_certificate_artifact,
                                     fuzz::seed_time_s * 1000));
  seed("persisted", "attestation",
       persisted::encode_attestation(attestation, fuzz::seed_attestation_endpoint, key.key_id,
                                     fuzz::seed_time_s * 1000));
  seed("persisted", "binding-key",
       need(persisted::encode_key(key.key->get(), "6f1f4b1e-seed-boot-id", key.key_id),
            "key file"));

  // the simulator's configuration and fault specs
  seed("sim_config", "lifetimes",
       R"({"threads":2,"cert_lifetime":40,"token_lifetime":12,"attestation_lifetime":30,)"
       R"("attestation":"required","refresh_in":6,"system_identity":{"client_id":)"
       R"("8f9b0c7e-3d2a-4e1f-9a6b-1c2d3e4f5a6b","object_id":null,"resource_id":null}})");
  seed("sim_config", "faults",
       R"({"faults":{"imds_metadata":{"statuses":[503,0],"retry_after":2},)"
       R"("token":{"latency_ms":100,"reset":true,"count":3},"attestation":{"body":"truncated"}}})");
  seed("sim_config", "user-identities",
       R"({"user_identities":[{"client_id":"11111111-2222-4333-8444-555555555555",)"
       R"("object_id":"66666666-7777-4888-9999-aaaaaaaaaaaa","resource_id":"/subscriptions/x"}],)"
       R"("v1_only":false,"tenant_id":"72f988bf-86f1-41af-91ab-2d7cd011db47"})");
  seed("sim_config", "fault-spec", R"({"statuses":[429],"retry_after":5,"drop_server_header":true})");
  seed("encoding", "url", "https://127.0.0.1:8443/metadata/identity/issuecredential?"
                          "cred-api-version=2.0&client_id=11111111-2222-4333-8444-555555555555");
  seed("encoding", "escaped", "a%20b%2Fc%3D%25");

  std::error_code ec;
  fs::remove_all(state, ec);
  std::printf("msiv2-fuzz-seeds: wrote %d seeds under %s\n", written, root.c_str());
  return 0;
}
