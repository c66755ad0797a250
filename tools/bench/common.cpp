#include "tools/bench/bench.hpp"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "actors/keyguard_attestation.hpp"
#include "actors/persisted.hpp"
#include "platform/files.hpp"
#include "platform/keys.hpp"
#include "messages/errors.hpp"

namespace msiv2::bench {

std::optional<double> row::ratio() const {
  if (!value || !baseline || *value == 0 || *baseline == 0)
    return std::nullopt;
  // Rates: bigger is better (ours / baseline). Times and sizes: ours / baseline as well, so a
  // ratio reads "how many baselines" — for the herd the baseline is the slow one.
  return speedup ? *baseline / *value : *value / *baseline;
}

double percentile_us(std::vector<std::uint32_t>& sorted_ns, double p) {
  if (sorted_ns.empty())
    return 0;
  auto idx = static_cast<std::size_t>(p / 100.0 * static_cast<double>(sorted_ns.size() - 1) + 0.5);
  return sorted_ns[std::min(idx, sorted_ns.size() - 1)] / 1000.0;
}

double ms_since(steady::time_point t0) {
  return std::chrono::duration<double, std::milli>(steady::now() - t0).count();
}

double median(std::vector<double> v) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  auto n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

sim_host::sim_host(sim::config cfg) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
                        "/msiv2-bench-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr)
    throw std::runtime_error("cannot create a temporary directory " + pattern);
  dir_ = pattern;
  cfg.state_dir = dir_ + "/sim";
  if (cfg.ready_file.empty())
    cfg.ready_file = dir_ + "/ready.json";
  auto started = sim::simulator::start(std::move(cfg));
  if (!started)
    throw std::runtime_error("the simulator did not start: " + started.error());
  sim_ = std::move(*started);
}

sim_host::~sim_host() {
  if (sim_)
    sim_->stop();
  sim_.reset();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

sim::config base_config() {
  sim::config c;
  c.threads = 2;
  return c;
}

void inject_latencies(sim::simulator& s, int imds_ms, int attest_ms, int token_ms) {
  auto set = [&](const char* endpoint, int ms) {
    if (ms <= 0)
      return;
    sim::fault_spec f;
    f.latency = std::chrono::milliseconds(ms);
    auto ok = s.set_fault(endpoint, f);
    if (!ok)
      throw std::runtime_error(std::string("set_fault ") + endpoint + ": " + ok.error());
  };
  set("imds_metadata", imds_ms);
  set("imds_issue", imds_ms);
  set("imds_token", imds_ms);
  set("attestation", attest_ms);
  set("token", token_ms);
}

client_handle::~client_handle() {
  client.reset();
  if (transport)
    transport->shutdown();
}

std::unique_ptr<client_handle> make_client(const sim::endpoints& urls, bool attest,
                                           std::size_t threads, caf::actor_system* sys,
                                           std::string cache_dir, bool eager_key) {
  auto h = std::make_unique<client_handle>();
  auto t = io::curl_transport::create();
  if (!t)
    throw std::runtime_error("curl_transport: " + t.error());
  h->transport = std::shared_ptr<io::transport>(std::move(*t));
  client_options o;
  o.config = module_config{}; // nothing from the environment; memory only unless cache_dir
  o.config.cache_dir = std::move(cache_dir);
  o.config.persist_key_on_disk = true; // the bench's state dir is on whatever disk /tmp is
  o.config.eager_key = eager_key;
  o.config.imds_base_url = urls.imds;
  o.config.ca_file = urls.ca_file;
  o.config.trust_hosts(msiv2::io::loopback_hosts());
  o.transport = h->transport;
  if (attest)
    o.attestation = std::make_shared<keyguard_attestation>(h->transport, urls.ca_file);
  o.threads = threads;
  auto c = sys != nullptr ? msiv2::client::create(*sys, std::move(o))
                          : msiv2::client::create(std::move(o));
  if (!c)
    throw std::runtime_error("msiv2::client: " + c.error());
  h->client = std::move(*c);
  return h;
}

token_request make_request(std::string resource, managed_identity who, token_type type,
                           std::chrono::milliseconds timeout) {
  token_request r;
  r.identity = std::move(who);
  r.resource = std::move(resource);
  r.type = type;
  r.timeout = timeout;
  return r;
}

std::string why(const token_outcome& t) {
  return t ? std::string("ok") : render(t.error());
}

std::string run_capture(const std::vector<std::string>& argv, const std::string& cwd) {
  if (argv.empty())
    throw std::runtime_error("run_capture: no command");
  int fds[2];
  if (::pipe(fds) != 0)
    throw std::runtime_error("pipe failed");
  pid_t pid = ::fork();
  if (pid < 0)
    throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    ::close(fds[1]);
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0)
      ::_exit(126);
    std::vector<char*> args;
    for (auto& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
    if (n > 0)
      text.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error(argv[0] + " exited with status " +
                             std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) +
                             ": " + text.substr(0, 300));
  return text;
}

long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0)
      return std::strtol(line.c_str() + 6, nullptr, 10);
  return -1;
}

std::string dir_with_key_file(const std::string& dir, EVP_PKEY* key) {
  if (auto made = platform::prepare_private_dir(dir); !made)
    throw std::runtime_error("per-boot key file: " + made.error());
  auto boot = platform::read_boot_id();
  if (!boot)
    throw std::runtime_error("per-boot key file: " + boot.error());
  auto id = platform::key_id(key);
  if (!id)
    throw std::runtime_error("per-boot key file: " + id.error());
  auto bytes = persisted::encode_key(key, *boot, *id);
  if (!bytes)
    throw std::runtime_error("per-boot key file: " + bytes.error());
  if (auto w = platform::write_file_atomically(dir, persisted::key_file_name, *bytes); !w)
    throw std::runtime_error("per-boot key file: " + w.error());
  return dir;
}


} // namespace msiv2::bench
