#include "tests/support/sim_runtime_rig.hpp"

#include <boost/test/unit_test.hpp>

#include "actors/keyguard_attestation.hpp"
#include "platform/binding.hpp"

namespace msiv2::test {

void capture_sink::write(platform::log_level level, std::string_view component,
                         std::string_view message) {
  std::string line = platform::to_string(level);
  line += ' ';
  line += component;
  line += ": ";
  line += message;
  std::lock_guard<std::mutex> guard{mtx_};
  lines_.push_back(std::move(line));
}

std::vector<std::string> capture_sink::lines() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return lines_;
}

std::string capture_sink::text() const {
  std::string out;
  for (auto& l : lines())
    out += l + '\n';
  return out;
}

void recording_transport::send(io::http_request request, io::completion done) {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    sent_.push_back(request.method + " " + request.url);
  }
  inner_->send(std::move(request), std::move(done));
}

std::vector<std::string> recording_transport::sent() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return sent_;
}

runtime_rig::runtime_rig(const std::function<void(sim::config&)>& sim_tweak, rig_options options)
    : fixture_(sim_tweak) {
  auto t = io::curl_transport::create();
  BOOST_REQUIRE_MESSAGE(t.ok(), "curl_transport: " << (t.ok() ? "" : t.error()));
  transport_ = std::make_shared<recording_transport>(std::shared_ptr<io::transport>(std::move(*t)));
  client_options o;
  o.config = module_config{};
  o.config.imds_base_url = fixture_.urls().imds;
  o.config.ca_file = fixture_.urls().ca_file;
  o.config.trust_hosts(io::loopback_hosts());
  if (options.module)
    options.module(o.config);
  o.log = log_;
  o.transport = transport_;
  if (options.attestation)
    o.attestation = std::make_shared<keyguard_attestation>(transport_, fixture_.urls().ca_file);
  o.threads = 2;
  auto c = msiv2::client::create(std::move(o));
  BOOST_REQUIRE_MESSAGE(c.ok(), "client: " << (c.ok() ? "" : c.error()));
  client_ = std::move(*c);
}

runtime_rig::~runtime_rig() {
  client_.reset();
  if (transport_)
    transport_->shutdown();
}

token_outcome runtime_rig::get(token_request req) {
  return client_->get_token_blocking(std::move(req));
}

http_result runtime_rig::call_resource(const token_result& t) {
  auto tls = fixture_.tls();
  header_list headers;
  if (t.binding) {
    tls.client_cert_der = t.binding->certificate_chain.front();
    tls.client_key = t.binding->key->get();
    headers.emplace_back("Authorization", "mtls_pop " + t.access_token);
  } else {
    headers.emplace_back("Authorization", "Bearer " + t.access_token);
  }
  return http_get(fixture_.urls().resource + "/subscriptions", headers, tls);
}

token_request pop_request(std::string resource, managed_identity who,
                          std::chrono::milliseconds timeout) {
  token_request r;
  r.identity = std::move(who);
  r.resource = std::move(resource);
  r.type = token_type::mtls_pop;
  r.timeout = timeout;
  return r;
}

error_code code_of(const token_outcome& t) {
  return t ? error_code::none : describe(t.error()).code;
}

std::string why(const token_outcome& t) {
  return t ? std::string("ok") : render(t.error());
}

sim::fault_spec statuses(std::vector<int> s) {
  sim::fault_spec f;
  f.statuses = std::move(s);
  return f;
}

void set_fault(runtime_rig& r, const std::string& endpoint, sim::fault_spec f) {
  auto ok = r.sim().set_fault(endpoint, std::move(f));
  BOOST_REQUIRE_MESSAGE(ok.ok(), "set_fault " << endpoint << ": " << (ok ? "" : ok.error()));
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

token_result warm_up(runtime_rig& r, const std::string& resource) {
  auto t = r.get(pop_request(resource));
  BOOST_REQUIRE_MESSAGE(t, why(t));
  return *t;
}

} // namespace msiv2::test
