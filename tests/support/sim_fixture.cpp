#include "tests/support/sim_fixture.hpp"

#include <cstdlib>
#include <filesystem>

#include <boost/test/unit_test.hpp>

#include "platform/encoding.hpp"

namespace msiv2::test {

sim_fixture::sim_fixture(const std::function<void(sim::config&)>& tweak) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
                        "/msiv2-sim-test-XXXXXX";
  BOOST_REQUIRE_MESSAGE(::mkdtemp(pattern.data()) != nullptr, "cannot create " << pattern);
  state_dir_ = pattern;

  cfg_.state_dir = state_dir_;
  cfg_.threads = 2;
  if (tweak)
    tweak(cfg_);
  auto started = sim::simulator::start(cfg_);
  BOOST_REQUIRE_MESSAGE(started.ok(), "simulator did not start: "
                                        << (started.ok() ? std::string() : started.error()));
  sim_ = std::move(*started);
}

sim_fixture::~sim_fixture() {
  if (sim_)
    sim_->stop();
  sim_.reset();
  std::error_code ignored;
  std::filesystem::remove_all(state_dir_, ignored);
}

tls_options sim_fixture::tls() const {
  tls_options t;
  t.ca_file = urls().ca_file;
  return t;
}

header_list sim_fixture::imds_headers() {
  return {{"Metadata", "true"}, {"x-ms-client-request-id", platform::uuid_v4()}};
}

http_result sim_fixture::imds_get(std::string_view path_and_query, const header_list& headers) {
  return http_get(urls().imds + std::string(path_and_query), headers);
}

http_result sim_fixture::metadata(std::string_view selector) {
  std::string target = "/metadata/identity/getplatformmetadata?cred-api-version=2.0";
  if (!selector.empty())
    target += "&" + std::string(selector);
  return imds_get(target);
}

http_result sim_fixture::v1_token(std::string_view resource, std::string_view selector) {
  std::string target = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" +
                       platform::url_encode(resource);
  if (!selector.empty())
    target += "&" + std::string(selector);
  return imds_get(target, {{"Metadata", "true"}});
}

http_result sim_fixture::admin(std::string_view method, std::string_view path,
                               const std::string& body) {
  header_list headers{{"Authorization", "Bearer " + urls().admin_token}};
  if (!body.empty())
    headers.emplace_back("Content-Type", "application/json");
  return http_request(method, urls().admin + std::string(path), headers, body);
}

} // namespace msiv2::test
