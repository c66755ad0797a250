#include <boost/test/unit_test.hpp>

#include <ctime>

#include "io/http.hpp"
#include "io/http_parse.hpp"
#include "platform/keys.hpp"
#include "platform/x509.hpp"

using namespace msiv2;
using io::http_headers;

namespace {

std::string self_signed(EVP_PKEY* key, const std::string& cn) {
  platform::issue_params p;
  p.subject_key = key;
  p.subject_cn = cn;
  p.not_before = std::time(nullptr) - 60;
  p.not_after = std::time(nullptr) + 3600;
  p.client_auth = true;
  auto der = platform::issue_certificate(p, nullptr, key);
  BOOST_REQUIRE_MESSAGE(der.ok(), (der.ok() ? std::string() : der.error()));
  return *der;
}

} // namespace

BOOST_AUTO_TEST_SUITE(io_http_test)

BOOST_AUTO_TEST_CASE(header_lookup_ignores_case_and_set_replaces_every_spelling) {
  http_headers h;
  h.add("Content-Type", "text/plain");
  h.add("X-Multi", "1");
  h.add("x-multi", "2");
  BOOST_TEST(h.get("content-type").value_or("-") == "text/plain");
  BOOST_TEST(h.get("X-MULTI").value_or("-") == "1");
  BOOST_TEST(!h.contains("Server"));
  h.set("X-MULTI", "3");
  BOOST_TEST(h.fields.size() == 2u);
  BOOST_TEST(h.get("x-multi").value_or("-") == "3");
}

BOOST_AUTO_TEST_CASE(split_url_separates_scheme_host_port_path_and_query) {
  auto u = io::split_url("HTTPS://127.0.0.1:8443/a/b?x=1&y=2#frag");
  BOOST_REQUIRE(u.ok());
  BOOST_TEST(u->scheme == "https");
  BOOST_TEST(u->host == "127.0.0.1");
  BOOST_TEST(u->port == "8443");
  BOOST_TEST(u->path == "/a/b");
  BOOST_TEST(u->query == "x=1&y=2");

  auto bare = io::split_url("http://169.254.169.254");
  BOOST_REQUIRE(bare.ok());
  BOOST_TEST(bare->path == "/");
  BOOST_TEST(bare->port.empty());

  auto v6 = io::split_url("http://[::1]:80/p");
  BOOST_REQUIRE(v6.ok());
  BOOST_TEST(v6->host == "::1");
  BOOST_TEST(v6->port == "80");

  BOOST_TEST(io::split_url("/relative").error() == "URL has no scheme: expected scheme://host/...");
  BOOST_TEST(io::split_url("https://user@host/").error() == "URL has user information before the host");
  BOOST_TEST(io::split_url("https://host:x/").error() == "URL port is not a number");
  BOOST_TEST(io::split_url("https:///path").error() == "URL has no host");
}

BOOST_AUTO_TEST_CASE(query_param_decodes_the_first_occurrence) {
  const std::string url = "http://h/p?a=1&b=x%20y&a=2&flag&c=%41+B";
  BOOST_TEST(io::query_param(url, "a").value_or("-") == "1");
  BOOST_TEST(io::query_param(url, "b").value_or("-") == "x y");
  BOOST_TEST(io::query_param(url, "flag").value_or("-") == "");
  BOOST_TEST(io::query_param(url, "c").value_or("-") == "A B");
  BOOST_TEST(!io::query_param(url, "missing").has_value());
  BOOST_TEST(!io::query_param("not a url", "a").has_value());
}

BOOST_AUTO_TEST_CASE(client_identity_requires_a_chain_and_the_matching_key) {
  auto key = platform::generate_rsa_key();
  auto other = platform::generate_rsa_key();
  BOOST_REQUIRE(key.ok() && other.ok());
  std::string cert = self_signed(key->get(), "client");

  auto id = io::client_identity::create({cert}, platform::share_key(key->get()));
  BOOST_REQUIRE_MESSAGE(id.ok(), (id.ok() ? std::string() : id.error()));
  BOOST_TEST((*id)->chain_der().size() == 1u);
  BOOST_TEST((*id)->key() == key->get());

  auto mismatch = io::client_identity::create({cert}, platform::share_key(other->get()));
  BOOST_REQUIRE(!mismatch.ok());
  BOOST_TEST(mismatch.error().rfind("client identity: the private key does not match the leaf certificate", 0) == 0);
  BOOST_TEST(io::client_identity::create({}, platform::share_key(key->get())).error()
             == "client identity: empty certificate chain");
  BOOST_TEST(io::client_identity::create({cert}, nullptr).error() == "client identity: no private key");
  BOOST_TEST(io::client_identity::create({cert, "junk"}, platform::share_key(key->get()))
                 .error().rfind("client identity: chain[1]: certificate does not parse", 0) == 0);
}

BOOST_AUTO_TEST_CASE(client_identity_installs_certificate_and_key_into_an_ssl_ctx) {
  auto key = platform::generate_rsa_key();
  BOOST_REQUIRE(key.ok());
  std::string cert = self_signed(key->get(), "client");
  auto id = io::client_identity::create({cert, cert}, platform::share_key(key->get()));
  BOOST_REQUIRE(id.ok());
  platform::ssl_ctx_ptr ctx{SSL_CTX_new(TLS_client_method())};
  BOOST_REQUIRE(ctx);
  auto applied = (*id)->apply_to(ctx.get());
  BOOST_REQUIRE_MESSAGE(applied.ok(), (applied.ok() ? std::string() : applied.error()));
  BOOST_TEST(X509_cmp(SSL_CTX_get0_certificate(ctx.get()), (*id)->leaf()) == 0);
  STACK_OF(X509)* chain = nullptr;
  BOOST_REQUIRE(SSL_CTX_get0_chain_certs(ctx.get(), &chain) == 1);
  BOOST_TEST(sk_X509_num(chain) == 1);
}

BOOST_AUTO_TEST_CASE(failure_and_status_responses_say_what_they_are) {
  auto f = io::http_response::failure(io::transport_error::tls_client_cert_rejected, "refused");
  BOOST_TEST(!f.ok());
  BOOST_TEST(f.status == 0);
  BOOST_TEST(std::string(io::to_string(f.error)) == "tls_client_cert_rejected");
  BOOST_TEST(io::http_response::failure(io::transport_error::connect_timeout, "").timed_out());
  auto s = io::http_response::with_status(404, "nope");
  BOOST_TEST(s.ok());
  BOOST_TEST(s.status == 404);
  BOOST_TEST(s.body == "nope");
  BOOST_TEST(std::string(io::to_string(io::transport_error::other)) == "other");
}

BOOST_AUTO_TEST_CASE(header_lines_restart_on_a_status_line_fold_and_trim) {
  io::http_headers h;
  BOOST_TEST(static_cast<int>(io::read_header_line("HTTP/1.1 100 Continue\r\n", h)) ==
             static_cast<int>(io::header_line::status_line));
  BOOST_TEST(static_cast<int>(io::read_header_line("X-Early: 1\r\n", h)) ==
             static_cast<int>(io::header_line::field));
  BOOST_TEST(static_cast<int>(io::read_header_line("HTTP/1.1 200 OK\r\n", h)) ==
             static_cast<int>(io::header_line::status_line));
  BOOST_TEST(h.fields.empty());
  io::read_header_line("Server : \t Microsoft-IIS/10.0 \r\n", h);
  io::read_header_line("WWW-Authenticate: Bearer\r\n", h);
  BOOST_TEST(static_cast<int>(io::read_header_line("\t realm=\"x\"\r\n", h)) ==
             static_cast<int>(io::header_line::continuation));
  BOOST_TEST(static_cast<int>(io::read_header_line("no colon here\r\n", h)) ==
             static_cast<int>(io::header_line::ignored));
  BOOST_TEST(static_cast<int>(io::read_header_line("\r\n", h)) ==
             static_cast<int>(io::header_line::ignored));
  BOOST_TEST(h.fields.size() == 2u);
  BOOST_TEST(std::string(h.get("server").value_or("")) == "Microsoft-IIS/10.0");
  BOOST_TEST(std::string(h.get("www-authenticate").value_or("")) == "Bearer realm=\"x\"");
  io::http_headers empty;
  BOOST_TEST(static_cast<int>(io::read_header_line(" folded first\r\n", empty)) ==
             static_cast<int>(io::header_line::ignored));
  BOOST_TEST(empty.fields.empty());
}

BOOST_AUTO_TEST_CASE(http_dates_past_year_9999_are_refused) {
  // Found by tests/fuzz (fuzz_http_header): strptime takes any number of year digits, and a
  // Retry-After date far in the future overflowed the delay arithmetic.
  BOOST_TEST(io::parse_http_date("Fri, 31 Dec 9999 23:59:59 GMT").has_value());
  BOOST_TEST(!io::parse_http_date("Sat, 01 Jan 10000 00:00:00 GMT"));
  BOOST_TEST(!io::parse_http_date("Mon, 01 Jan 99999999999 00:00:00 GMT"));
  BOOST_TEST(!io::parse_retry_after("Mon, 01 Jan 99999999999 00:00:00 GMT", 0));
}

BOOST_AUTO_TEST_SUITE_END()
