// The simulator over real HTTP on loopback: IMDS answers and strictness (protocol.md §1, §2,
// §6, §8, §10), the full CSR → certificate → mTLS token → resource path, ready file,
// counters, admin API, 1,000 concurrent connections and stop().

#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <simdjson.h>

#include "io/curl_transport.hpp"
#include "platform/csr.hpp"
#include "platform/jwt.hpp"
#include "platform/encoding.hpp"
#include "platform/keys.hpp"
#include "platform/x509.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/sim_fixture.hpp"
#include "tests/support/temp_dir.hpp"

namespace {

using msiv2::test::header_list;
using msiv2::test::http_result;
using msiv2::test::sim_fixture;
namespace platform = msiv2::platform;
namespace sim = msiv2::sim;

const std::string metadata_path = "/metadata/identity/getplatformmetadata";
const std::string issue_path = "/metadata/identity/issuecredential";

/// A string member of a JSON object body; nullopt when absent or not a string.
std::optional<std::string> json_string(const std::string& body, std::string_view key) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(body).get(doc) != simdjson::SUCCESS)
    return std::nullopt;
  std::string_view s;
  if (doc[key].get(s) != simdjson::SUCCESS)
    return std::nullopt;
  return std::string(s);
}

/// An integer member of a JSON object body.
std::optional<std::int64_t> json_int(const std::string& body, std::string_view key) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::int64_t n = 0;
  if (parser.parse(body).get(doc) != simdjson::SUCCESS || doc[key].get(n) != simdjson::SUCCESS)
    return std::nullopt;
  return n;
}

/// A nested integer: doc[a][b].
std::optional<std::int64_t> json_int2(const std::string& body, std::string_view a, std::string_view b) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::int64_t n = 0;
  if (parser.parse(body).get(doc) != simdjson::SUCCESS || doc[a][b].get(n) != simdjson::SUCCESS)
    return std::nullopt;
  return n;
}

std::string read_whole(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// Every IMDS answer carries the configured Server header.
void check_server_header(const http_result& r) {
  BOOST_TEST(r.header("Server").value_or("<missing>") == "IMDS/150.870.65.1854");
}

/// An IMDS error: status, Server header, OAuth-like JSON whose description contains `text`.
void check_imds_error(const http_result& r, long status, std::string_view text) {
  BOOST_TEST_REQUIRE(r.completed(), r.error);
  BOOST_TEST(r.status == status, "status " << r.status << ", body " << r.body);
  check_server_header(r);
  BOOST_TEST(json_string(r.body, "error").has_value(), r.body);
  auto description = json_string(r.body, "error_description").value_or("");
  BOOST_TEST(description.find(text) != std::string::npos,
             "'" << description << "' should contain '" << text << "'");
}

std::uint16_t port_of(const std::string& url) {
  return static_cast<std::uint16_t>(std::stoi(url.substr(url.rfind(':') + 1)));
}

// --- a raw HTTP/1.1 client on POSIX sockets, bounded by poll deadlines ---

class raw_connection {
public:
  explicit raw_connection(std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~raw_connection() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  raw_connection(raw_connection&& o) noexcept : fd_(o.fd_), connected_(o.connected_) { o.fd_ = -1; }
  raw_connection(const raw_connection&) = delete;

  bool connected() const { return connected_; }

  bool send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0)
        return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  /// Reads one response (status line, headers, Content-Length body); status 0 on EOF,
  /// error or timeout.
  std::pair<int, std::string> read_response(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::size_t head_end;
    while ((head_end = buf_.find("\r\n\r\n")) == std::string::npos)
      if (!fill(deadline))
        return {0, {}};
    std::string head = buf_.substr(0, head_end);
    int status = 0;
    if (head.rfind("HTTP/1.1 ", 0) == 0)
      status = std::atoi(head.c_str() + 9);
    std::size_t length = 0;
    std::string lower = head;
    for (auto& c : lower)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (auto p = lower.find("content-length:"); p != std::string::npos)
      length = std::strtoul(head.c_str() + p + 15, nullptr, 10);
    while (buf_.size() < head_end + 4 + length)
      if (!fill(deadline))
        return {0, {}};
    std::string body = buf_.substr(head_end + 4, length);
    buf_.erase(0, head_end + 4 + length);
    return {status, body};
  }

  /// True when the server closed the connection (EOF) before `timeout`.
  bool closed_by_peer(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      int r = wait_readable(deadline);
      if (r <= 0)
        return false;
      char tmp[512];
      ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
      if (n <= 0)
        return true;
    }
  }

private:
  int wait_readable(std::chrono::steady_clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                      std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return 0;
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(left.count()));
  }
  bool fill(std::chrono::steady_clock::time_point deadline) {
    if (wait_readable(deadline) <= 0)
      return false;
    char tmp[4096];
    ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (n <= 0)
      return false;
    buf_.append(tmp, static_cast<std::size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

std::string metadata_request() {
  return "GET " + metadata_path +
         "?cred-api-version=2.0 HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\n"
         "x-ms-client-request-id: 9b0a5f5e-1111-4222-8333-444455556666\r\n\r\n";
}

// --- the v2 issuance path ---

struct issued {
  platform::pkey_ptr key;
  std::string cert_der;
  std::string client_id;
  std::string mtls_endpoint;
};

/// getplatformmetadata → CSR → issuecredential; BOOST_REQUIREs every step.
issued issue_certificate(sim_fixture& f, std::string_view selector = {}) {
  auto md = f.metadata(selector);
  BOOST_TEST_REQUIRE(md.status == 200, md.body);
  issued out;
  out.client_id = json_string(md.body, "clientId").value_or("");
  auto tenant = json_string(md.body, "tenantId").value_or("");
  auto key = platform::generate_rsa_key();
  BOOST_TEST_REQUIRE(key.ok());
  out.key = std::move(*key);
  auto csr = platform::build_csr(out.key.get(), out.client_id, tenant,
                                 platform::cu_id_json({f.cfg().vm_id, f.cfg().vmss_id}));
  BOOST_TEST_REQUIRE(csr.ok(), (csr.ok() ? "" : csr.error()));
  std::string target = issue_path + "?cred-api-version=2.0";
  if (!selector.empty())
    target += "&" + std::string(selector);
  header_list headers = sim_fixture::imds_headers();
  headers.emplace_back("Content-Type", "application/json; charset=utf-8");
  auto r = msiv2::test::http_post(f.urls().imds + target, headers,
                                  "{\"csr\":" + platform::json_quote(platform::base64_encode(*csr)) + "}");
  BOOST_TEST_REQUIRE(r.status == 200, r.body);
  check_server_header(r);
  auto cert = platform::base64_decode(json_string(r.body, "certificate").value_or(""));
  BOOST_TEST_REQUIRE(cert.ok());
  out.cert_der = *cert;
  out.mtls_endpoint = json_string(r.body, "mtls_authentication_endpoint").value_or("");
  BOOST_TEST(json_string(r.body, "client_id").value_or("") == out.client_id);
  return out;
}

http_result request_token(sim_fixture& f, const issued& cert) {
  msiv2::test::tls_options tls = f.tls();
  tls.client_cert_der = cert.cert_der;
  tls.client_key = cert.key.get();
  std::string form = "grant_type=client_credentials&client_id=" + cert.client_id +
                     "&scope=" + platform::url_encode("https://management.azure.com/.default") +
                     "&token_type=mtls_pop";
  return msiv2::test::http_post(cert.mtls_endpoint + "/" + f.cfg().tenant_id + "/oauth2/v2.0/token",
                                {{"Content-Type", "application/x-www-form-urlencoded"},
                                 {"Accept", "application/json"}},
                                form, tls);
}

} // namespace

BOOST_AUTO_TEST_SUITE(sim_server_test)

// --- getplatformmetadata ---

BOOST_AUTO_TEST_CASE(metadata_answers_the_system_identity_with_cuid_and_attestation_endpoint) {
  sim_fixture f;
  auto r = f.metadata();
  BOOST_TEST_REQUIRE(r.status == 200, r.body);
  check_server_header(r);
  BOOST_TEST(r.header("Content-Type").value_or("").find("application/json") == 0);
  BOOST_TEST(json_string(r.body, "clientId").value_or("") == f.cfg().system_identity.client_id);
  BOOST_TEST(json_string(r.body, "tenantId").value_or("") == f.cfg().tenant_id);
  BOOST_TEST(json_string(r.body, "attestationEndpoint").value_or("") == f.urls().attestation);
  BOOST_TEST(r.body.find("\"cuId\":{\"vmId\":\"" + f.cfg().vm_id + "\"}") != std::string::npos, r.body);
}

BOOST_AUTO_TEST_CASE(metadata_cuid_carries_vmss_id_on_scale_set_instances) {
  sim_fixture f([](sim::config& c) { c.vmss_id = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"; });
  auto r = f.metadata();
  BOOST_TEST_REQUIRE(r.status == 200, r.body);
  BOOST_TEST(r.body.find("\"cuId\":{\"vmId\":\"" + f.cfg().vm_id +
                         "\",\"vmssId\":\"0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\"}") != std::string::npos,
             r.body);
}

BOOST_AUTO_TEST_CASE(probe_without_metadata_header_gets_400_required_metadata_header) {
  sim_fixture f;
  auto r = f.imds_get(metadata_path + "?cred-api-version=2.0",
                      {{"x-ms-client-request-id", platform::uuid_v4()}});
  check_imds_error(r, 400, "Required metadata header not specified");
  BOOST_TEST(r.body ==
             "{\"error\":\"invalid_request\",\"error_description\":\"Required metadata header not specified\"}");
  // Metadata: false is no better than no header.
  auto r2 = f.imds_get(metadata_path + "?cred-api-version=2.0",
                       {{"Metadata", "false"}, {"x-ms-client-request-id", platform::uuid_v4()}});
  check_imds_error(r2, 400, "Required metadata header not specified");
}

BOOST_AUTO_TEST_CASE(metadata_without_request_id_is_refused) {
  sim_fixture f;
  auto r = f.imds_get(metadata_path + "?cred-api-version=2.0", {{"Metadata", "true"}});
  check_imds_error(r, 400, "x-ms-client-request-id");
}

BOOST_AUTO_TEST_CASE(metadata_requires_cred_api_version_2_0) {
  sim_fixture f;
  check_imds_error(f.imds_get(metadata_path), 400, "cred-api-version");
  check_imds_error(f.imds_get(metadata_path + "?cred-api-version=1.0"), 400, "cred-api-version");
  check_imds_error(f.imds_get(metadata_path + "?cred-api-version="), 400, "cred-api-version");
}

BOOST_AUTO_TEST_CASE(v2_refuses_msi_res_id_and_unknown_query_variables) {
  sim_fixture f;
  const auto& res_id = f.cfg().user_identities[0].resource_id;
  check_imds_error(f.metadata("msi_res_id=" + platform::url_encode(res_id)), 400,
                   "Unsupported query variables");
  check_imds_error(f.metadata("api-version=2018-02-01"), 400, "Unsupported query variables");
  check_imds_error(f.metadata("foo=bar"), 400, "Unsupported query variables");
  // bypass_cache belongs to issuecredential only.
  check_imds_error(f.metadata("bypass_cache=true"), 400, "Unsupported query variables");
}

BOOST_AUTO_TEST_CASE(v2_selects_user_assigned_identities_by_each_selector_kind) {
  sim_fixture f;
  for (const auto& id : f.cfg().user_identities) {
    for (std::string selector : {"client_id=" + id.client_id, "object_id=" + id.object_id,
                                 "mi_res_id=" + platform::url_encode(id.resource_id)}) {
      auto r = f.metadata(selector);
      BOOST_TEST_REQUIRE(r.status == 200, selector << ": " << r.body);
      BOOST_TEST(json_string(r.body, "clientId").value_or("") == id.client_id, selector);
    }
  }
  // GUIDs and ARM ids compare case-insensitively.
  auto upper = f.cfg().user_identities[1].client_id;
  for (auto& c : upper)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  auto r = f.metadata("client_id=" + upper);
  BOOST_TEST(r.status == 200, r.body);
}

BOOST_AUTO_TEST_CASE(v2_unknown_identity_is_400_identity_not_found) {
  sim_fixture f;
  check_imds_error(f.metadata("client_id=99999999-9999-4999-8999-999999999999"), 400,
                   "Identity not found");
  check_imds_error(f.metadata("object_id=99999999-9999-4999-8999-999999999999"), 400,
                   "Identity not found");
  check_imds_error(f.metadata("mi_res_id=%2Fsubscriptions%2Fx%2FuserAssignedIdentities%2Fnope"), 400,
                   "Identity not found");
}

BOOST_AUTO_TEST_CASE(v2_refuses_two_selectors_and_repeated_parameters) {
  sim_fixture f;
  const auto& id = f.cfg().user_identities[0];
  check_imds_error(f.metadata("client_id=" + id.client_id + "&object_id=" + id.object_id), 400,
                   "Only one of");
  check_imds_error(f.metadata("client_id=" + id.client_id + "&client_id=" + id.client_id), 400,
                   "more than once");
}

BOOST_AUTO_TEST_CASE(no_selector_without_system_identity_is_400) {
  sim_fixture f([](sim::config& c) { c.system_assigned_enabled = false; });
  check_imds_error(f.metadata(), 400, "Identity not found");
  check_imds_error(f.v1_token("https://management.azure.com/"), 400, "Identity not found");
  // The system identity's client id no longer selects anything either.
  check_imds_error(f.metadata("client_id=" + f.cfg().system_identity.client_id), 400,
                   "Identity not found");
  BOOST_TEST(f.metadata("client_id=" + f.cfg().user_identities[0].client_id).status == 200);
}

BOOST_AUTO_TEST_CASE(v1_only_host_answers_404_on_v2_paths_with_server_header) {
  sim_fixture f([](sim::config& c) { c.v1_only = true; });
  auto md = f.metadata();
  BOOST_TEST(md.status == 404);
  check_server_header(md);
  // The probe (no Metadata header) also sees 404: that is how a client learns "v1 only".
  auto probe = f.imds_get(metadata_path + "?cred-api-version=2.0",
                          {{"x-ms-client-request-id", platform::uuid_v4()}});
  BOOST_TEST(probe.status == 404);
  check_server_header(probe);
  auto issue = msiv2::test::http_post(f.urls().imds + issue_path + "?cred-api-version=2.0",
                                      sim_fixture::imds_headers(), "{}");
  BOOST_TEST(issue.status == 404);
  check_server_header(issue);
  // v1 still works.
  BOOST_TEST(f.v1_token("https://management.azure.com/").status == 200);
  BOOST_TEST(f.sim().count("imds_metadata", 404) == 2);
  BOOST_TEST(f.sim().count("imds_issue", 404) == 1);
}

BOOST_AUTO_TEST_CASE(unknown_imds_path_is_404_with_server_header) {
  sim_fixture f;
  auto r = f.imds_get("/metadata/identity/nothing-here");
  BOOST_TEST(r.status == 404);
  check_server_header(r);
}

BOOST_AUTO_TEST_CASE(imds_paths_match_case_insensitively_and_tolerate_a_trailing_slash) {
  sim_fixture f;
  // MSAL.NET spells getPlatformMetadata; msal-node appends '/' to the v1 token path.
  auto camel = f.imds_get("/metadata/identity/getPlatformMetadata?cred-api-version=2.0");
  BOOST_TEST(camel.status == 200, camel.body);
  auto slash = f.imds_get("/metadata/identity/oauth2/token/?api-version=2018-02-01&resource=x",
                          {{"Metadata", "true"}});
  BOOST_TEST(slash.status == 200, slash.body);
  BOOST_TEST(f.sim().count("imds_metadata", 200) == 1);
  BOOST_TEST(f.sim().count("imds_token", 200) == 1);
  BOOST_TEST(f.imds_get("/metadata/identity/oauth2/token//?api-version=2018-02-01&resource=x",
                        {{"Metadata", "true"}}).status == 404);
}

BOOST_AUTO_TEST_CASE(metadata_takes_get_only) {
  sim_fixture f;
  auto r = msiv2::test::http_post(f.urls().imds + metadata_path + "?cred-api-version=2.0",
                                  sim_fixture::imds_headers(), "{}");
  BOOST_TEST(r.status == 405);
  check_server_header(r);
}

// --- issuecredential (IMDS-side checks; the CSR rules are the authority's, tested there) ---

BOOST_AUTO_TEST_CASE(issuecredential_applies_the_v2_header_and_query_rules) {
  sim_fixture f;
  const std::string url = f.urls().imds + issue_path;
  auto no_metadata = msiv2::test::http_post(url + "?cred-api-version=2.0",
                                            {{"x-ms-client-request-id", platform::uuid_v4()}}, "{}");
  check_imds_error(no_metadata, 400, "Required metadata header not specified");
  auto no_id = msiv2::test::http_post(url + "?cred-api-version=2.0", {{"Metadata", "true"}}, "{}");
  check_imds_error(no_id, 400, "x-ms-client-request-id");
  auto bad_version =
    msiv2::test::http_post(url + "?cred-api-version=2.1", sim_fixture::imds_headers(), "{}");
  check_imds_error(bad_version, 400, "cred-api-version");
  auto msi_res = msiv2::test::http_post(
    url + "?cred-api-version=2.0&msi_res_id=" + platform::url_encode(f.cfg().user_identities[0].resource_id),
    sim_fixture::imds_headers(), "{}");
  check_imds_error(msi_res, 400, "Unsupported query variables");
  auto unknown = msiv2::test::http_post(
    url + "?cred-api-version=2.0&client_id=99999999-9999-4999-8999-999999999999",
    sim_fixture::imds_headers(), "{}");
  check_imds_error(unknown, 400, "Identity not found");
  auto get = f.imds_get(issue_path + "?cred-api-version=2.0");
  BOOST_TEST(get.status == 405);
  // bypass_cache passes the IMDS checks (the authority then judges the empty body).
  auto bypass = msiv2::test::http_post(url + "?cred-api-version=2.0&bypass_cache=true",
                                       sim_fixture::imds_headers(), "{}");
  BOOST_TEST(bypass.status == 400);
  BOOST_TEST(bypass.body.find("Unsupported query variables") == std::string::npos, bypass.body);
  check_server_header(bypass);
}

BOOST_AUTO_TEST_CASE(csr_to_certificate_to_mtls_token_to_resource_over_real_tls) {
  sim_fixture f;
  auto cert = issue_certificate(f, "client_id=" + f.cfg().user_identities[0].client_id);
  BOOST_TEST(cert.client_id == f.cfg().user_identities[0].client_id);
  BOOST_TEST(cert.mtls_endpoint == f.urls().token);
  auto info = platform::inspect_certificate(cert.cert_der);
  BOOST_TEST_REQUIRE(info.ok());
  BOOST_TEST(info->subject_cn == cert.client_id);

  auto token = request_token(f, cert);
  BOOST_TEST_REQUIRE(token.status == 200, token.error << " " << token.body);
  auto access_token = json_string(token.body, "access_token").value_or("");
  BOOST_TEST(!access_token.empty());
  BOOST_TEST(json_string(token.body, "token_type").value_or("") == "mtls_pop");

  msiv2::test::tls_options tls = f.tls();
  tls.client_cert_der = cert.cert_der;
  tls.client_key = cert.key.get();
  auto resource = msiv2::test::http_get(f.urls().resource + "/subscriptions",
                                        {{"Authorization", "mtls_pop " + access_token}}, tls);
  BOOST_TEST(resource.status == 200, resource.body);
  // Without the certificate the bound token is refused.
  auto unbound = msiv2::test::http_get(f.urls().resource + "/subscriptions",
                                       {{"Authorization", "mtls_pop " + access_token}}, f.tls());
  BOOST_TEST(unbound.status == 401, unbound.body);

  BOOST_TEST(f.sim().count("imds_issue", 200) == 1);
  BOOST_TEST(f.sim().count("token", 200) == 1);
  BOOST_TEST(f.sim().count("resource", 200) == 1);
  BOOST_TEST(f.sim().count("resource", 401) == 1);
}

BOOST_AUTO_TEST_CASE(resumed_tls_sessions_present_the_certificate_their_tokens_are_bound_to) {
  // Two identities, each with a burst of token calls through curl_transport: the first
  // connection of each does a full handshake, the next ones resume its session from a ticket.
  // Every token (resumed connection or not) is bound to its own identity's certificate, and
  // the resource, which compares the token's cnf with the certificate of the connection,
  // accepts each token on its own identity's connections and refuses it on the other's.
  sim_fixture f;
  std::vector<issued> certs;
  certs.push_back(issue_certificate(f, "client_id=" + f.cfg().user_identities[0].client_id));
  certs.push_back(issue_certificate(f, "client_id=" + f.cfg().user_identities[1].client_id));
  std::vector<std::shared_ptr<const msiv2::io::client_identity>> ids;
  for (const auto& c : certs) {
    auto id = msiv2::io::client_identity::create({c.cert_der}, platform::share_key(c.key.get()));
    BOOST_TEST_REQUIRE(id.ok(), (id.ok() ? "" : id.error()));
    ids.push_back(*id);
  }
  // Every request asks the server to close its connection, so each one opens a connection,
  // one at a time per identity (bound 1): the first does a full handshake and every later
  // one resumes the session of the ticket the previous connection brought. (Whether a
  // burst needs new connections at all depends on timing; so does the ticket two
  // connections opened at the same moment both present: one of them sometimes did a full
  // handshake, 5 runs in 40 with 3 per identity.)
  msiv2::io::curl_transport_options options;
  options.max_connections_per_identity = 1;
  auto made = msiv2::io::curl_transport::create(options);
  BOOST_TEST_REQUIRE(made.ok(), (made.ok() ? "" : made.error()));
  auto& transport = **made;

  std::mutex m;
  std::condition_variable cv;
  std::vector<std::pair<std::size_t, msiv2::io::http_response>> got;
  auto send_all = [&](auto make, std::size_t per_identity) {
    {
      std::lock_guard<std::mutex> g{m};
      got.clear();
    }
    for (std::size_t i = 0; i < per_identity * ids.size(); ++i) {
      std::size_t who = i % ids.size();
      transport.send(make(who, i), [&, who](msiv2::io::http_response r) {
        std::lock_guard<std::mutex> g{m};
        got.emplace_back(who, std::move(r));
        cv.notify_all();
      });
    }
    std::unique_lock<std::mutex> g{m};
    BOOST_TEST_REQUIRE(cv.wait_for(g, std::chrono::seconds(30),
                                   [&] { return got.size() == per_identity * ids.size(); }));
    return got;
  };

  constexpr std::size_t burst = 8;
  auto tokens = send_all(
    [&](std::size_t who, std::size_t i) {
      msiv2::io::http_request r;
      r.method = "POST";
      r.url = f.urls().token + "/" + f.cfg().tenant_id + "/oauth2/v2.0/token";
      r.headers.add("Content-Type", "application/x-www-form-urlencoded");
      r.headers.add("Connection", "close");
      r.body = "grant_type=client_credentials&client_id=" + certs[who].client_id + "&scope=" +
               platform::url_encode("https://r" + std::to_string(i) + ".example.com/.default") +
               "&token_type=mtls_pop";
      r.ca_file = f.urls().ca_file;
      r.identity = ids[who];
      r.timeout = std::chrono::seconds(20);
      return r;
    },
    burst);
  std::vector<std::string> token_of(ids.size());
  for (const auto& [who, r] : tokens) {
    BOOST_TEST_REQUIRE(r.status == 200, r.error_message << " " << r.body);
    auto access = json_string(r.body, "access_token").value_or("");
    auto claims = platform::read_jwt_claims(access);
    BOOST_TEST_REQUIRE(claims.ok());
    BOOST_TEST(claims->cnf_x5t_s256 == platform::x5t_s256(certs[who].cert_der));
    token_of[who] = access;
  }
  BOOST_TEST(f.sim().count("token", 200) == burst * ids.size());
  BOOST_TEST(f.sim().tls_handshakes("token") == burst * ids.size());
  BOOST_TEST(f.sim().tls_handshakes("token", true) ==
             (burst - 1) * ids.size());  // all but each first one
  BOOST_TEST(transport.counters().tls_sessions_resumed == f.sim().tls_handshakes("token", true));

  // Own token on own connections: accepted; the other identity's token: refused (the
  // resource saw this identity's certificate, resumed session or not).
  auto resource = [&](bool own) {
    return send_all(
      [&, own](std::size_t who, std::size_t) {
        msiv2::io::http_request r;
        r.url = f.urls().resource + "/subscriptions";
        r.headers.add("Authorization", "mtls_pop " + token_of[own ? who : 1 - who]);
        r.headers.add("Connection", "close");
        r.ca_file = f.urls().ca_file;
        r.identity = ids[who];
        return r;
      },
      burst);
  };
  for (const auto& [who, r] : resource(true))
    BOOST_TEST(r.status == 200, "identity " << who << ": " << r.error_message << " " << r.body);
  for (const auto& [who, r] : resource(false))
    BOOST_TEST(r.status == 401, "identity " << who << ": " << r.error_message << " " << r.body);
  // 2 bursts: the first connection of each identity is a full handshake.
  BOOST_TEST(f.sim().tls_handshakes("resource") == 2 * burst * ids.size());
  BOOST_TEST(f.sim().tls_handshakes("resource", true) == (2 * burst - 1) * ids.size());
  BOOST_TEST(f.sim().tls_handshakes("attestation") == 0u);
  BOOST_TEST(f.sim().tls_handshakes("imds") == 0u);
}

BOOST_AUTO_TEST_CASE(token_listener_refuses_a_tls_client_without_certificate) {
  sim_fixture f;
  auto r = msiv2::test::http_post(f.urls().token + "/" + f.cfg().tenant_id + "/oauth2/v2.0/token",
                                  {{"Content-Type", "application/x-www-form-urlencoded"}},
                                  "grant_type=client_credentials", f.tls());
  BOOST_TEST(!r.completed());
  BOOST_TEST(r.status == 0);
  BOOST_TEST(f.sim().count("token") == 0);
}

BOOST_AUTO_TEST_CASE(token_listener_hands_a_foreign_certificate_to_the_authority) {
  sim_fixture f;
  auto key = platform::generate_rsa_key();
  BOOST_TEST_REQUIRE(key.ok());
  platform::issue_params p;
  p.subject_key = key->get();
  p.subject_cn = f.cfg().system_identity.client_id;
  p.not_before = unix_now() - 60;
  p.not_after = unix_now() + 3600;
  p.client_auth = true;
  auto der = platform::issue_certificate(p, nullptr, key->get());
  BOOST_TEST_REQUIRE(der.ok());
  issued foreign{std::move(*key), *der, f.cfg().system_identity.client_id, f.urls().token};
  auto r = request_token(f, foreign);
  // The TLS layer accepts it; the authority answers invalid_client.
  BOOST_TEST_REQUIRE(r.completed(), r.error);
  BOOST_TEST(r.status >= 400);
  BOOST_TEST(json_string(r.body, "error").value_or("") == "invalid_client", r.body);
}

// --- v1 token and compute ---

BOOST_AUTO_TEST_CASE(v1_token_answer_has_every_member_as_a_string) {
  sim_fixture f;
  auto before = unix_now();
  auto r = f.v1_token("https://management.azure.com/");
  BOOST_TEST_REQUIRE(r.status == 200, r.body);
  check_server_header(r);
  for (auto key : {"access_token", "client_id", "expires_in", "expires_on", "ext_expires_in",
                   "not_before", "resource", "token_type"})
    BOOST_TEST(json_string(r.body, key).has_value(), key << " missing or not a string: " << r.body);
  BOOST_TEST(json_string(r.body, "token_type").value_or("") == "Bearer");
  BOOST_TEST(json_string(r.body, "resource").value_or("") == "https://management.azure.com/");
  BOOST_TEST(json_string(r.body, "client_id").value_or("") == f.cfg().system_identity.client_id);
  auto expires_on = std::stoll(json_string(r.body, "expires_on").value_or("0"));
  BOOST_TEST(expires_on >= before + f.cfg().v1_token_lifetime.count() - 5);
  BOOST_TEST(expires_on <= unix_now() + f.cfg().v1_token_lifetime.count() + 5);
}

BOOST_AUTO_TEST_CASE(v1_token_accepts_the_selectors_real_clients_send) {
  sim_fixture f;
  const auto& id = f.cfg().user_identities[1];
  for (std::string selector : {"client_id=" + id.client_id, "object_id=" + id.object_id,
                               "msi_res_id=" + platform::url_encode(id.resource_id),
                               "mi_res_id=" + platform::url_encode(id.resource_id)}) {
    auto r = f.v1_token("https://vault.azure.net", selector);
    BOOST_TEST_REQUIRE(r.status == 200, selector << ": " << r.body);
    BOOST_TEST(json_string(r.body, "client_id").value_or("") == id.client_id);
  }
  // What MSAL and azure-identity send, extra headers included.
  auto r = f.imds_get("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" +
                        platform::url_encode("https://storage.azure.com") + "&client_id=" + id.client_id,
                      {{"Metadata", "true"},
                       {"x-ms-client-request-id", platform::uuid_v4()},
                       {"User-Agent", "azsdk-python-identity/1.15.0 Python/3.11"},
                       {"Accept", "application/json"}});
  BOOST_TEST(r.status == 200, r.body);
}

BOOST_AUTO_TEST_CASE(v1_token_strictness) {
  sim_fixture f;
  const std::string path = "/metadata/identity/oauth2/token";
  // The v1 probe: no Metadata header.
  check_imds_error(f.imds_get(path + "?api-version=2018-02-01&resource=x",
                              {{"x-ms-client-request-id", platform::uuid_v4()}}),
                   400, "Required metadata header not specified");
  check_imds_error(f.imds_get(path + "?resource=x", {{"Metadata", "true"}}), 400, "api-version");
  check_imds_error(f.imds_get(path + "?api-version=yesterday&resource=x", {{"Metadata", "true"}}),
                   400, "api-version");
  check_imds_error(f.imds_get(path + "?api-version=2018-02-01", {{"Metadata", "true"}}), 400,
                   "audience");
  check_imds_error(f.v1_token("x", "client_id=99999999-9999-4999-8999-999999999999"), 400,
                   "Identity not found");
  const auto& id = f.cfg().user_identities[0];
  check_imds_error(f.v1_token("x", "client_id=" + id.client_id + "&object_id=" + id.object_id), 400,
                   "Only one of");
}

BOOST_AUTO_TEST_CASE(compute_metadata_describes_the_vm) {
  sim_fixture f([](sim::config& c) { c.region = "westeurope"; });
  auto r = f.imds_get("/metadata/instance/compute?api-version=2021-02-01", {{"Metadata", "true"}});
  BOOST_TEST_REQUIRE(r.status == 200, r.body);
  check_server_header(r);
  BOOST_TEST(json_string(r.body, "vmId").value_or("") == f.cfg().vm_id);
  BOOST_TEST(json_string(r.body, "location").value_or("") == "westeurope");
  BOOST_TEST(json_string(r.body, "resourceGroupName").value_or("") == "rg");
  BOOST_TEST(json_string(r.body, "subscriptionId").value_or("") == "00000000-0000-0000-0000-000000000000");
  BOOST_TEST(json_string(r.body, "name").has_value());
  BOOST_TEST(json_string(r.body, "vmScaleSetName").has_value());
  check_imds_error(f.imds_get("/metadata/instance/compute?api-version=2021-02-01", {}), 400,
                   "Required metadata header not specified");
  check_imds_error(f.imds_get("/metadata/instance/compute", {{"Metadata", "true"}}), 400, "api-version");
}

// --- ready file, counters ---

BOOST_AUTO_TEST_CASE(ready_file_lists_endpoints_ca_tenant_identities_and_pid) {
  sim_fixture f([](sim::config& c) { c.ready_file = c.state_dir + "/ready.json"; });
  std::ifstream in(f.state_dir() + "/ready.json");
  BOOST_TEST_REQUIRE(in.good());
  std::stringstream s;
  s << in.rdbuf();
  const std::string ready = s.str();
  BOOST_TEST(json_string(ready, "imds").value_or("") == f.urls().imds);
  BOOST_TEST(json_string(ready, "attestation").value_or("") == f.urls().attestation);
  BOOST_TEST(json_string(ready, "token").value_or("") == f.urls().token);
  BOOST_TEST(json_string(ready, "resource").value_or("") == f.urls().resource);
  BOOST_TEST(json_string(ready, "admin").value_or("") == f.urls().admin);
  BOOST_TEST(json_string(ready, "admin_token").value_or("") == f.urls().admin_token);
  BOOST_TEST(f.urls().admin_token.size() == 32u);
  struct stat st {};
  BOOST_TEST_REQUIRE(::stat((f.state_dir() + "/ready.json").c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == 0600u); // it holds the admin token
  BOOST_TEST(json_string(ready, "ca_file").value_or("") == f.urls().ca_file);
  BOOST_TEST(json_string(ready, "tenant_id").value_or("") == f.cfg().tenant_id);
  BOOST_TEST(json_int(ready, "pid").value_or(0) == ::getpid());
  BOOST_TEST(f.urls().imds.rfind("http://127.0.0.1:", 0) == 0);
  BOOST_TEST(f.urls().token.rfind("https://127.0.0.1:", 0) == 0);

  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  BOOST_TEST_REQUIRE(parser.parse(ready).get(doc) == simdjson::SUCCESS);
  simdjson::dom::array ids;
  BOOST_TEST_REQUIRE(doc["identities"].get(ids) == simdjson::SUCCESS);
  BOOST_TEST_REQUIRE(ids.size() == 3u);
  std::string_view type, client;
  BOOST_TEST(ids.at(0)["type"].get(type) == simdjson::SUCCESS);
  BOOST_TEST(type == "SystemAssigned");
  BOOST_TEST(ids.at(1)["type"].get(type) == simdjson::SUCCESS);
  BOOST_TEST(type == "UserAssigned");
  BOOST_TEST(ids.at(2)["client_id"].get(client) == simdjson::SUCCESS);
  BOOST_TEST(client == f.cfg().user_identities[1].client_id);
  // The CA file it names is a PEM the HTTPS listeners chain to.
  std::ifstream ca(f.urls().ca_file);
  std::stringstream pem;
  pem << ca.rdbuf();
  BOOST_TEST(pem.str().find("-----BEGIN CERTIFICATE-----") == 0);
}

// Review L11: only who can read the ready file, addressing the admin listener by its own
// name, can reset, revoke or move the clock.
BOOST_AUTO_TEST_CASE(the_admin_api_needs_the_bearer_token_and_its_own_host) {
  sim_fixture f;
  auto url = f.urls().admin + "/reset";
  auto no_token = msiv2::test::http_post(url, {}, "");
  BOOST_TEST(no_token.status == 401);
  auto wrong = msiv2::test::http_post(url, {{"Authorization", "Bearer 00"}}, "");
  BOOST_TEST(wrong.status == 401);
  const std::string bearer = "Bearer " + f.urls().admin_token;
  auto rebound = msiv2::test::http_post(url, {{"Authorization", bearer}, {"Host", "evil.example"}}, "");
  BOOST_TEST(rebound.status == 403);
  BOOST_TEST(msiv2::test::http_post(url, {{"Authorization", bearer}}, "").status == 200);
  BOOST_TEST(f.admin("GET", "/counters").status == 200);
}

BOOST_AUTO_TEST_CASE(files_are_written_without_following_planted_names) {
  msiv2::test::temp_dir dir{"sim-files"};
  const std::string victim = dir.path() + "/victim";
  { std::ofstream(victim) << "keep me"; }
  // Whatever temp names the simulator picks, a planted symlink at the old predictable one
  // (<ready>.tmp.<pid>) is left alone and the victim untouched.
  const std::string ready = dir.path() + "/ready.json";
  BOOST_TEST_REQUIRE(::symlink(victim.c_str(), (ready + ".tmp." + std::to_string(::getpid())).c_str()) == 0);
  {
    sim_fixture f([&](sim::config& c) { c.ready_file = ready; });
    BOOST_TEST(json_string(read_whole(ready), "admin").value_or("") == f.urls().admin);
  }
  BOOST_TEST(read_whole(victim) == "keep me");
  // A state dir others can write to is refused (a planted ca.pem would become the CA).
  const std::string open_dir = dir.path() + "/open";
  BOOST_TEST_REQUIRE(::mkdir(open_dir.c_str(), 0700) == 0);
  BOOST_TEST_REQUIRE(::chmod(open_dir.c_str(), 0777) == 0);
  sim::config c = sim::config{};
  c.state_dir = open_dir;
  auto started = sim::simulator::start(c);
  BOOST_TEST_REQUIRE(!started.ok());
  BOOST_TEST(started.error().find("writable by group or others") != std::string::npos, started.error());
}

BOOST_AUTO_TEST_CASE(counters_count_per_endpoint_and_status) {
  sim_fixture f;
  for (int i = 0; i < 3; ++i)
    BOOST_TEST(f.metadata().status == 200);
  BOOST_TEST(f.imds_get(metadata_path).status == 400);
  BOOST_TEST(f.v1_token("https://management.azure.com/").status == 200);
  BOOST_TEST(f.sim().count("imds_metadata", 200) == 3);
  BOOST_TEST(f.sim().count("imds_metadata", 400) == 1);
  BOOST_TEST(f.sim().count("imds_metadata") == 4);
  BOOST_TEST(f.sim().count("imds_token") == 1);
  BOOST_TEST(f.sim().count("imds_issue") == 0);
  BOOST_TEST(f.sim().count("no_such_endpoint") == 0);

  auto counters = f.admin("GET", "/counters");
  BOOST_TEST_REQUIRE(counters.status == 200);
  BOOST_TEST(json_int2(counters.body, "imds_metadata", "200").value_or(-1) == 3);
  BOOST_TEST(json_int2(counters.body, "imds_metadata", "400").value_or(-1) == 1);
  BOOST_TEST(json_int2(counters.body, "imds_token", "200").value_or(-1) == 1);
  BOOST_TEST(counters.body == f.sim().counters_json());
  // Admin calls are not counted.
  BOOST_TEST(f.sim().count("imds_metadata") == 4);
}

// --- admin API ---

BOOST_AUTO_TEST_CASE(admin_sets_lists_and_clears_faults) {
  sim_fixture f;
  auto set = f.admin("POST", "/faults/imds_metadata", "{\"statuses\":[503,503]}");
  BOOST_TEST_REQUIRE(set.status == 200, set.body);
  auto listed = f.admin("GET", "/faults");
  BOOST_TEST(listed.body.find("\"imds_metadata\":{\"statuses\":[503,503]") != std::string::npos,
             listed.body);
  BOOST_TEST(f.metadata().status == 503);
  BOOST_TEST(f.admin("DELETE", "/faults").status == 200);
  BOOST_TEST(f.metadata().status == 200);
  BOOST_TEST(f.admin("GET", "/faults").body == "{}");

  BOOST_TEST(f.admin("POST", "/faults/imds_token", "{\"statuses\":[500]}").status == 200);
  BOOST_TEST(f.admin("DELETE", "/faults/imds_token").status == 200);
  BOOST_TEST(f.v1_token("x").status == 200);
  BOOST_TEST(f.sim().current_config().faults.empty());
}

BOOST_AUTO_TEST_CASE(admin_refuses_bad_fault_specs_naming_the_problem) {
  sim_fixture f;
  auto unknown_endpoint = f.admin("POST", "/faults/imds_nope", "{\"statuses\":[503]}");
  BOOST_TEST(unknown_endpoint.status == 400);
  BOOST_TEST(json_string(unknown_endpoint.body, "error").value_or("").find("imds_nope") !=
             std::string::npos, unknown_endpoint.body);
  auto bad_status = f.admin("POST", "/faults/imds_metadata", "{\"statuses\":[200]}");
  BOOST_TEST(bad_status.status == 400);
  BOOST_TEST(bad_status.body.find("statuses[0]") != std::string::npos, bad_status.body);
  auto unknown_member = f.admin("POST", "/faults/imds_metadata", "{\"latency\":5}");
  BOOST_TEST(unknown_member.status == 400);
  BOOST_TEST(unknown_member.body.find("latency: unknown member") != std::string::npos,
             unknown_member.body);
  auto not_json = f.admin("POST", "/faults/imds_metadata", "{oops");
  BOOST_TEST(not_json.status == 400);
  BOOST_TEST(f.admin("GET", "/nothing").status == 404);
  BOOST_TEST(f.admin("PUT", "/counters").status == 405);
  BOOST_TEST(f.sim().current_config().faults.empty());
}

BOOST_AUTO_TEST_CASE(admin_revokes_an_issued_certificate_and_the_token_endpoint_refuses_it) {
  sim_fixture f;
  auto cert = issue_certificate(f);
  auto info = platform::inspect_certificate(cert.cert_der);
  BOOST_TEST_REQUIRE(info.ok());
  auto issued_list = f.admin("GET", "/issued");
  BOOST_TEST_REQUIRE(issued_list.status == 200);
  BOOST_TEST(issued_list.body.find(info->serial_hex) != std::string::npos, issued_list.body);
  BOOST_TEST(issued_list.body.find("\"revoked\":false") != std::string::npos);

  BOOST_TEST(f.admin("POST", "/revoke", "{\"serial\":\"" + info->serial_hex + "\"}").status == 200);
  BOOST_TEST(f.admin("GET", "/issued").body.find("\"revoked\":true") != std::string::npos);
  auto token = request_token(f, cert);
  BOOST_TEST(json_string(token.body, "error").value_or("") == "invalid_client", token.body);

  auto unknown = f.admin("POST", "/revoke", "{\"x5t\":\"AAAA\"}");
  BOOST_TEST(unknown.status == 404, unknown.body);
  auto both = f.admin("POST", "/revoke", "{\"serial\":\"01\",\"x5t\":\"AAAA\"}");
  BOOST_TEST(both.status == 400, both.body);
  auto neither = f.admin("POST", "/revoke", "{}");
  BOOST_TEST(neither.status == 400, neither.body);
}

BOOST_AUTO_TEST_CASE(admin_clock_advance_moves_issued_times_and_reset_restores_everything) {
  sim_fixture f;
  const auto lifetime = f.cfg().v1_token_lifetime.count();
  auto expires_on = [&] {
    auto r = f.v1_token("https://management.azure.com/");
    BOOST_TEST_REQUIRE(r.status == 200, r.body);
    return std::stoll(json_string(r.body, "expires_on").value_or("0"));
  };
  auto now = unix_now();
  BOOST_TEST(std::llabs(expires_on() - (now + lifetime)) <= 5);

  auto adv = f.admin("POST", "/clock/advance", "{\"seconds\":7200}");
  BOOST_TEST_REQUIRE(adv.status == 200, adv.body);
  now = unix_now();
  BOOST_TEST(std::llabs(expires_on() - (now + 7200 + lifetime)) <= 5);
  BOOST_TEST(f.admin("POST", "/clock/advance", "{\"seconds\":-5}").status == 400);
  BOOST_TEST(f.admin("POST", "/clock/advance", "{\"seconds\":\"10\"}").status == 400);

  BOOST_TEST(f.admin("POST", "/faults/imds_compute", "{\"statuses\":[500]}").status == 200);
  issue_certificate(f);
  BOOST_TEST(f.admin("POST", "/reset").status == 200);
  BOOST_TEST(f.sim().count("imds_token") == 0);
  BOOST_TEST(f.sim().count("imds_issue") == 0);
  BOOST_TEST(f.sim().current_config().faults.empty());
  BOOST_TEST(f.admin("GET", "/issued").body == "[]");
  now = unix_now();
  BOOST_TEST(std::llabs(expires_on() - (now + lifetime)) <= 5);
}

BOOST_AUTO_TEST_CASE(admin_config_round_trips_through_the_config_parser) {
  sim_fixture f([](sim::config& c) { c.region = "northeurope"; c.refresh_in = std::chrono::seconds(600); });
  auto r = f.admin("GET", "/config");
  BOOST_TEST_REQUIRE(r.status == 200);
  auto parsed = sim::parse_config(r.body);
  BOOST_TEST_REQUIRE(parsed.ok(), (parsed.ok() ? "" : parsed.error()));
  BOOST_TEST(parsed->region == "northeurope");
  BOOST_TEST(parsed->refresh_in.value_or(std::chrono::seconds(0)).count() == 600);
  BOOST_TEST(parsed->user_identities.size() == 2u);
  BOOST_TEST(parsed->tenant_id == f.cfg().tenant_id);
}

// --- transport ---

BOOST_AUTO_TEST_CASE(keep_alive_serves_several_requests_on_one_connection) {
  sim_fixture f;
  raw_connection c(port_of(f.urls().imds));
  BOOST_TEST_REQUIRE(c.connected());
  for (int i = 0; i < 5; ++i) {
    BOOST_TEST_REQUIRE(c.send(metadata_request()));
    auto [status, body] = c.read_response();
    BOOST_TEST(status == 200, body);
  }
  BOOST_TEST(f.sim().count("imds_metadata", 200) == 5);
}

BOOST_AUTO_TEST_CASE(oversized_body_is_413_and_garbage_is_400_then_closed) {
  sim_fixture f;
  {
    raw_connection c(port_of(f.urls().imds));
    BOOST_TEST_REQUIRE(c.connected());
    BOOST_TEST_REQUIRE(c.send("POST " + issue_path +
                              "?cred-api-version=2.0 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" +
                              std::string(100000, 'a')));
    auto [status, body] = c.read_response();
    BOOST_TEST(status == 413, body);
    BOOST_TEST(c.closed_by_peer(std::chrono::seconds(10)));
  }
  {
    raw_connection c(port_of(f.urls().imds));
    BOOST_TEST_REQUIRE(c.connected());
    BOOST_TEST_REQUIRE(c.send("THIS IS NOT HTTP\r\n\r\n"));
    auto [status, body] = c.read_response();
    BOOST_TEST(status == 400, body);
    BOOST_TEST(c.closed_by_peer(std::chrono::seconds(10)));
  }
}

BOOST_AUTO_TEST_CASE(large_post_with_expect_100_continue_is_answered_without_delay) {
  sim_fixture f;
  // curl sends Expect: 100-continue for this size; the server must say go ahead.
  auto start = std::chrono::steady_clock::now();
  auto r = msiv2::test::http_request("POST", f.urls().imds + issue_path + "?cred-api-version=2.0",
                                     {{"Metadata", "true"},
                                      {"x-ms-client-request-id", platform::uuid_v4()},
                                      {"Expect", "100-continue"}},
                                     "{\"csr\":\"" + std::string(20000, 'A') + "\"}");
  auto elapsed = std::chrono::steady_clock::now() - start;
  BOOST_TEST(r.status == 400, r.body);  // the authority refuses the fake CSR
  BOOST_TEST(std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count() < 900);
}

BOOST_AUTO_TEST_CASE(one_thousand_concurrent_connections_are_each_answered) {
  sim_fixture f;
  const std::uint16_t port = port_of(f.urls().imds);
  std::vector<raw_connection> conns;
  conns.reserve(1000);
  for (int i = 0; i < 1000; ++i) {
    conns.emplace_back(port);
    BOOST_TEST_REQUIRE(conns.back().connected(), "connection " << i);
  }
  const std::string req = metadata_request();
  for (auto& c : conns)
    BOOST_TEST_REQUIRE(c.send(req));
  int answered = 0;
  for (auto& c : conns)
    if (c.read_response(std::chrono::seconds(30)).first == 200)
      ++answered;
  BOOST_TEST(answered == 1000);
  // Every connection is still open and serves a second request.
  for (auto& c : conns)
    BOOST_TEST_REQUIRE(c.send(req));
  answered = 0;
  for (auto& c : conns)
    if (c.read_response(std::chrono::seconds(30)).first == 200)
      ++answered;
  BOOST_TEST(answered == 1000);
  BOOST_TEST(f.sim().count("imds_metadata", 200) == 2000u);
}

BOOST_AUTO_TEST_CASE(stop_closes_open_connections_and_is_idempotent) {
  const std::string dir = [] {
    std::string p = "/tmp/msiv2-sim-stop-XXXXXX";
    BOOST_TEST_REQUIRE(::mkdtemp(p.data()) != nullptr);
    return p;
  }();
  sim::config cfg;
  cfg.state_dir = dir;
  auto started = sim::simulator::start(cfg);
  BOOST_TEST_REQUIRE(started.ok(), (started.ok() ? "" : started.error()));
  auto& s = **started;
  const auto port = port_of(s.urls().imds);
  raw_connection idle(port);
  BOOST_TEST_REQUIRE(idle.connected());
  raw_connection used(port);
  BOOST_TEST_REQUIRE(used.send(metadata_request()));
  BOOST_TEST(used.read_response().first == 200);

  auto t0 = std::chrono::steady_clock::now();
  s.stop();
  BOOST_TEST(std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
               .count() < 5000);
  BOOST_TEST(idle.closed_by_peer(std::chrono::seconds(5)));
  BOOST_TEST(used.closed_by_peer(std::chrono::seconds(5)));
  s.stop();
  raw_connection after(port);
  BOOST_TEST(!after.connected());
  started->reset();
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
}

BOOST_AUTO_TEST_CASE(start_refuses_a_non_loopback_address_and_a_busy_port) {
  sim::config cfg;
  cfg.bind_address = "0.0.0.0";
  auto r = sim::simulator::start(cfg);
  BOOST_TEST_REQUIRE(!r.ok());
  BOOST_TEST(r.error().find("bind_address") != std::string::npos, r.error());

  sim_fixture f;
  auto busy = port_of(f.urls().imds);
  auto r2 = sim::simulator::start([&] {
    sim::config c;
    c.state_dir = f.state_dir() + "/second";
    c.imds_port = busy;
    return c;
  }());
  BOOST_TEST_REQUIRE(!r2.ok());
  BOOST_TEST(r2.error().find("imds listener") != std::string::npos, r2.error());
}

BOOST_AUTO_TEST_SUITE_END()
