// Review M3: the endpoints an IMDS answer names are checked against an allow-list before our
// certificate or our key's attestation request goes there.

#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

#include "io/endpoint_trust.hpp"

using namespace msiv2::io;

namespace {

std::string refusal(std::string_view url, const std::vector<std::string>& allowed) {
  auto r = check_endpoint(url, allowed, "test endpoint");
  BOOST_REQUIRE_MESSAGE(!r.ok(), "expected a refusal for " << url << ", got " << (r ? *r : ""));
  return r.error();
}

bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

} // namespace

BOOST_AUTO_TEST_SUITE(io_endpoint_trust_test)

BOOST_AUTO_TEST_CASE(azure_token_endpoints_are_accepted_and_made_canonical) {
  const auto& hosts = default_token_endpoint_hosts();
  for (std::string_view url : {"https://westus.mtlsauth.microsoft.com",
                               "https://mtlsauth.microsoft.com/",
                               "https://WestUS2.MtlsAuth.Microsoft.com:443",
                               "https://usgovvirginia.mtlsauth.microsoftonline.us",
                               "https://mtlsauth.partner.microsoftonline.cn",
                               "https://eastus.login.microsoft.com"}) {
    auto r = check_endpoint(url, hosts, "token endpoint");
    BOOST_TEST(r.ok(), url << ": " << (r ? "" : r.error()));
  }
  BOOST_TEST(*check_endpoint("https://WestUS2.MtlsAuth.Microsoft.com:443//", hosts, "t") ==
             "https://westus2.mtlsauth.microsoft.com:443");
  BOOST_TEST(*check_endpoint("https://westus.mtlsauth.microsoft.com/", hosts, "t") ==
             "https://westus.mtlsauth.microsoft.com");
}

BOOST_AUTO_TEST_CASE(hosts_off_the_list_ip_literals_and_look_alikes_are_refused) {
  const auto& hosts = default_token_endpoint_hosts();
  BOOST_TEST(contains(refusal("https://evil.example", hosts), "not on the allow-list"));
  BOOST_TEST(contains(refusal("https://1.2.3.4", hosts), "not on the allow-list"));
  BOOST_TEST(contains(refusal("https://127.0.0.1:8443", hosts), "not on the allow-list"));
  BOOST_TEST(contains(refusal("https://[::1]:8443", hosts), "not on the allow-list"));
  BOOST_TEST(contains(refusal("https://x.mtlsauth.microsoft.com.evil.example", hosts),
                      "not on the allow-list"));
  BOOST_TEST(contains(refusal("https://evilmtlsauth.microsoft.com", hosts), "not on the allow-list"));
  BOOST_TEST(contains(refusal("https://mtlsauth.microsoft.com.", hosts), "not a DNS name"));
  // The error says how a deployment trusts another host.
  BOOST_TEST(contains(refusal("https://evil.example", hosts), "MSIV2_TRUSTED_HOSTS"));
}

BOOST_AUTO_TEST_CASE(anything_but_scheme_host_and_port_is_refused) {
  const auto& hosts = default_token_endpoint_hosts();
  BOOST_TEST(contains(refusal("http://westus.mtlsauth.microsoft.com", hosts), "https"));
  BOOST_TEST(contains(refusal("https://user:pw@westus.mtlsauth.microsoft.com", hosts),
                      "user information"));
  BOOST_TEST(contains(refusal("https://westus.mtlsauth.microsoft.com/y?", hosts), "query"));
  BOOST_TEST(contains(refusal("https://x/y?", hosts), "query"));
  BOOST_TEST(contains(refusal("https://westus.mtlsauth.microsoft.com#f", hosts), "fragment"));
  BOOST_TEST(contains(refusal("https://westus.mtlsauth.microsoft.com/tenant", hosts), "path"));
  BOOST_TEST(contains(refusal("https://westus.mtlsauth.microsoft.com:99999", hosts), "port"));
  BOOST_TEST(contains(refusal("https://west_us.mtlsauth.microsoft.com", hosts), "DNS name"));
  BOOST_TEST(contains(refusal("westus.mtlsauth.microsoft.com", hosts), "scheme"));
}

BOOST_AUTO_TEST_CASE(loopback_is_trusted_only_when_added) {
  auto hosts = default_token_endpoint_hosts();
  BOOST_TEST(!check_endpoint("https://127.0.0.1:4431", hosts, "t").ok());
  hosts.insert(hosts.end(), loopback_hosts().begin(), loopback_hosts().end());
  BOOST_TEST(*check_endpoint("https://127.0.0.1:4431", hosts, "t") == "https://127.0.0.1:4431");
  BOOST_TEST(*check_endpoint("https://[::1]:4431/", hosts, "t") == "https://[::1]:4431");
  BOOST_TEST(check_endpoint("https://localhost:4431", hosts, "t").ok());
  // An IP literal matches only itself, never as a "suffix".
  BOOST_TEST(!host_allowed("1.127.0.0.1", hosts));
}

BOOST_AUTO_TEST_CASE(attestation_endpoints_have_their_own_list) {
  const auto& hosts = default_attestation_endpoint_hosts();
  BOOST_TEST(check_endpoint("https://sharedeus.eus.attest.azure.net", hosts, "a").ok());
  BOOST_TEST(!check_endpoint("https://westus.mtlsauth.microsoft.com", hosts, "a").ok());
  BOOST_TEST(contains(refusal("http://sharedeus.eus.attest.azure.net", hosts), "https"));
}

BOOST_AUTO_TEST_CASE(upstream_urls_are_sanitized_in_the_error) {
  std::string url = "https://evil.example/\n\x1b[31m" + std::string(5000, 'a');
  auto why = refusal(url, default_token_endpoint_hosts());
  BOOST_TEST(why.find('\n') == std::string::npos);
  BOOST_TEST(why.find('\x1b') == std::string::npos);
  BOOST_TEST(why.size() < 600u, why.size());
}

BOOST_AUTO_TEST_CASE(host_lists_parse_commas_and_spaces) {
  auto hosts = parse_host_list(" 127.0.0.1,.Example.TEST  ,, localhost,127.0.0.1");
  BOOST_TEST(hosts == (std::vector<std::string>{"127.0.0.1", "example.test", "localhost"}),
             boost::test_tools::per_element());
  BOOST_TEST(parse_host_list("").empty());
}

BOOST_AUTO_TEST_SUITE_END()
