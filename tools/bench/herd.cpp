// Scenario 4: the herd. 10,000 concurrent cold requests over 100 user-assigned identities x 10
// resources (10 each), with the cold-start latencies injected. The simulator's counters must
// show the minimum: 100 certificates, 1 attestation, 1,000 tokens. Baseline: the same work one
// request at a time behind one lock (a client that serializes managed-identity calls), with a
// token and certificate cache of its own.

#include <dirent.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>

#include "platform/keys.hpp"
#include "tools/bench/bench.hpp"
#include "tools/bench/easy_client.hpp"

namespace msiv2::bench {

namespace {

std::string guid(unsigned prefix, unsigned n) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-0000-4000-8000-%012x", prefix, n);
  return buf;
}

sim::config herd_config(int identities) {
  auto c = base_config();
  c.user_identities.clear();
  for (int i = 0; i < identities; ++i) {
    sim::identity id;
    id.client_id = guid(0xc0de0000u, static_cast<unsigned>(i));
    id.object_id = guid(0x0b1e0000u, static_cast<unsigned>(i));
    id.resource_id = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/"
                     "providers/Microsoft.ManagedIdentity/userAssignedIdentities/bench-" +
                     std::to_string(i);
    c.user_identities.push_back(id);
  }
  return c;
}

// CPU time of the calling thread so far (the easy client runs libcurl and OpenSSL on it).
double thread_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

// CPU time (user + system) of this whole process so far, both ends of the herd included.
double process_cpu_ms() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto ms = [](const timeval& t) { return t.tv_sec * 1000.0 + t.tv_usec / 1000.0; };
  return ms(u.ru_utime) + ms(u.ru_stime);
}

// CPU time (user + system) so far of this process's threads named `name` (the simulator's
// I/O threads are "msiv2-sim-io"), from /proc/self/task/*/{comm,stat}; 0 where /proc is absent.
double threads_cpu_ms(const std::string& name) {
  double ticks = 0;
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr)
    return 0;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.')
      continue;
    std::string base = std::string("/proc/self/task/") + e->d_name;
    char comm[64] = {};
    if (FILE* f = std::fopen((base + "/comm").c_str(), "r")) {
      if (std::fgets(comm, sizeof comm, f) == nullptr)
        comm[0] = '\0';
      std::fclose(f);
    }
    std::string c(comm);
    while (!c.empty() && (c.back() == '\n' || c.back() == '\r'))
      c.pop_back();
    if (c != name)
      continue;
    if (FILE* f = std::fopen((base + "/stat").c_str(), "r")) {
      char buf[1024] = {};
      std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
      std::fclose(f);
      // Fields after the command (which may hold spaces, so read from its closing paren):
      // state is field 3, utime and stime are fields 14 and 15.
      std::string st(buf, n);
      auto paren = st.rfind(')');
      if (paren == std::string::npos)
        continue;
      unsigned long long utime = 0, stime = 0;
      if (std::sscanf(st.c_str() + paren + 1,
                      " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                      &stime) == 2)
        ticks += static_cast<double>(utime + stime);
    }
  }
  closedir(dir);
  return ticks * 1000.0 / static_cast<double>(sysconf(_SC_CLK_TCK));
}

/// Profiling the herd window only: with $MSIV2_BENCH_PERF_CTL naming the control FIFO of
/// `perf record --control=fifo:CTL[,ACK] -D -1` (and $MSIV2_BENCH_PERF_ACK its ack FIFO), perf
/// is enabled while the herd with the per-boot key runs and disabled after it (see
/// tools/herd_profile.sh).
void perf_window(bool on) {
  const char* ctl = std::getenv("MSIV2_BENCH_PERF_CTL");
  if (ctl == nullptr || *ctl == '\0')
    return;
  if (FILE* f = std::fopen(ctl, "w")) {
    std::fputs(on ? "enable\n" : "disable\n", f);
    std::fclose(f);
  }
  const char* ack = std::getenv("MSIV2_BENCH_PERF_ACK");
  if (ack != nullptr && *ack != '\0')
    if (FILE* f = std::fopen(ack, "r")) {
      char buf[16];
      if (std::fgets(buf, sizeof buf, f) == nullptr)
        buf[0] = '\0';
      std::fclose(f);
    }
}

std::string resource(int r) { return "https://resource-" + std::to_string(r) + ".example.com"; }

struct counts {
  std::uint64_t certs, attestations, tokens, metadata;
};

counts read_counts(sim::simulator& s) {
  return {s.count("imds_issue", 200), s.count("attestation", 200), s.count("token", 200),
          s.count("imds_metadata", 0)};
}

/// One herd through the callback API, every request at once.
struct herd_run {
  double ms = 0, cpu_ms = 0, sim_cpu_ms = 0;
  counts calls{};
  io::transport_counters transport{};
  std::uint64_t token_handshakes = 0, token_resumed = 0;
  int failed = 0;
  std::string first_error;
};

/// With `key_on_disk`, the client has a cache directory in which this boot's binding key was
/// made before the clock starts (what every process but the first since boot finds); without,
/// it is memory only and makes its key inside the clock.
herd_run run_ours(int identities, int resources, int repeats, bool key_on_disk) {
  herd_run h;
  std::mutex mtx;
  std::condition_variable cv;
  int left = identities * resources * repeats;
  sim_host host(herd_config(identities));
  inject_latencies(host.sim(), 1, 30, 20);
  std::string cache_dir;
  if (key_on_disk) {
    auto key = platform::generate_rsa_key(2048);
    if (!key)
      throw std::runtime_error("herd: RSA key: " + key.error());
    cache_dir = dir_with_key_file(host.state_dir() + "/cache", key->get());
  }
  auto ch = make_client(host.urls(), true, 2, nullptr, cache_dir);
  if (key_on_disk)
    perf_window(true);
  auto t0 = steady::now();
  double cpu0 = process_cpu_ms();
  double sim_cpu0 = threads_cpu_ms("msiv2-sim-io");
  for (int rep = 0; rep < repeats; ++rep)
    for (int i = 0; i < identities; ++i)
      for (int r = 0; r < resources; ++r)
        ch->client->get_token(
          make_request(resource(r),
                       managed_identity::by_client_id(guid(0xc0de0000u, static_cast<unsigned>(i)))),
          [&](token_outcome t) {
            std::lock_guard<std::mutex> g{mtx};
            if (!t && h.failed++ == 0)
              h.first_error = why(t);
            if (--left == 0)
              cv.notify_all();
          });
  {
    std::unique_lock<std::mutex> g{mtx};
    cv.wait(g, [&] { return left == 0; });
  }
  h.ms = ms_since(t0);
  h.cpu_ms = process_cpu_ms() - cpu0;
  h.sim_cpu_ms = threads_cpu_ms("msiv2-sim-io") - sim_cpu0;
  if (key_on_disk)
    perf_window(false);
  h.calls = read_counts(host.sim());
  if (auto* ct = dynamic_cast<io::curl_transport*>(ch->transport.get()))
    h.transport = ct->counters();
  h.token_handshakes = host.sim().tls_handshakes("token");
  h.token_resumed = host.sim().tls_handshakes("token", true);
  return h;
}

} // namespace

void run_herd(const options& o, std::vector<row>& out) {
  const std::string scen = "4 herd";
  const int identities = o.quick ? 5 : 100, resources = 10, repeats = 10;
  const int total = identities * resources * repeats;
  std::string shape = std::to_string(total) + " requests over " + std::to_string(identities) +
                      " identities x " + std::to_string(resources) + " resources";

  herd_run ours = run_ours(identities, resources, repeats, false);
  herd_run ours_keyed = run_ours(identities, resources, repeats, true);
  auto& ours_counts = ours.calls;
  int failed = ours.failed + ours_keyed.failed;
  std::string first_error = !ours.first_error.empty() ? ours.first_error : ours_keyed.first_error;
  if (failed > 0)
    out.push_back({scen, "requests that failed", static_cast<double>(failed), "calls", 0.0,
                   "none", "0", "MISS", "first: " + first_error});
  auto is_minimal = [&](const counts& c) {
    return c.certs == static_cast<std::uint64_t>(identities) && c.attestations == 1 &&
           c.tokens == static_cast<std::uint64_t>(identities * resources);
  };
  bool minimal = is_minimal(ours.calls) && is_minimal(ours_keyed.calls);
  char calls[200];
  std::snprintf(calls, sizeof calls, "%llu certificates, %llu attestation, %llu tokens",
                static_cast<unsigned long long>(ours_counts.certs),
                static_cast<unsigned long long>(ours_counts.attestations),
                static_cast<unsigned long long>(ours_counts.tokens));
  char want[200];
  std::snprintf(want, sizeof want, "%d certificates, 1 attestation, %d tokens", identities,
                identities * resources);
  char meta[200];
  std::snprintf(meta, sizeof meta, "getplatformmetadata calls: %llu (no probe on the mtls_pop path)",
                static_cast<unsigned long long>(ours_counts.metadata));
  out.push_back({scen, "upstream calls", static_cast<double>(ours_counts.certs +
                                                             ours_counts.attestations +
                                                             ours_counts.tokens),
                 "calls", static_cast<double>(identities + 1 + identities * resources),
                 "the minimum", want, minimal ? "PASS" : "MISS",
                 std::string(calls) + "; " + meta});
  if (!minimal)
    std::fprintf(stderr, "msiv2-bench: herd counters: %s\n", calls);

  // --- baseline: one request at a time behind one lock ---
  int sample = std::max(1, std::min(o.quick ? 2 : o.herd_sample, identities));
  double base_ms = 0, easy_cpu_ms = 0;
  {
    sim_host host(herd_config(identities));
    inject_latencies(host.sim(), 1, 30, 20);
    auto key = platform::generate_rsa_key(2048);
    if (!key)
      throw std::runtime_error("herd baseline: RSA key: " + key.error());
    std::mutex one_lock;
    easy_client ec(host.urls().imds, host.urls().ca_file);
    std::map<int, easy_binding> certs;
    std::map<std::pair<int, int>, std::string> tokens;
    std::string jwt;
    auto t0 = steady::now();
    auto cpu0 = thread_cpu_ms();
    // The same calls as ours: no probe in front of mtls_pop requests.
    for (int rep = 0; rep < repeats; ++rep)
      for (int i = 0; i < sample; ++i)
        for (int r = 0; r < resources; ++r) {
          std::lock_guard<std::mutex> g{one_lock};
          if (tokens.count({i, r}) > 0)
            continue;
          auto c = certs.find(i);
          if (c == certs.end()) {
            auto b = ec.mint(key->get(), "client_id=" + guid(0xc0de0000u, static_cast<unsigned>(i)),
                             true, &jwt);
            if (!b)
              throw std::runtime_error("herd baseline: " + b.error());
            c = certs.emplace(i, std::move(*b)).first;
          }
          auto t = ec.token(c->second, resource(r));
          if (!t)
            throw std::runtime_error("herd baseline: " + t.error());
          tokens[{i, r}] = std::move(*t);
        }
    base_ms = ms_since(t0) * static_cast<double>(identities) / sample;
    easy_cpu_ms = (thread_cpu_ms() - cpu0) * static_cast<double>(identities) / sample;
    auto bc = read_counts(host.sim());
    if (bc.certs != static_cast<std::uint64_t>(sample) || bc.attestations != 1 ||
        bc.tokens != static_cast<std::uint64_t>(sample * resources))
      throw std::runtime_error("herd baseline: unexpected upstream calls " +
                               host.sim().counters_json());
  }
  std::string note = shape + "; baseline ";
  note += sample == identities ? "run in full"
                               : "timed on " + std::to_string(sample) + " of " +
                                   std::to_string(identities) +
                                   " identities and extrapolated linearly";
  auto detail = [&](const herd_run& h) {
    char sp[700];
    // On 2 cores the simulator's own CPU alone takes at least half of it in wall time.
    double sim_floor = h.sim_cpu_ms / 2;
    std::snprintf(sp, sizeof sp,
                  "; %.1fx faster; CPU used meanwhile: %.0f ms, of which the simulator's I/O "
                  "threads %.0f ms (%.0f%%: a client costing nothing would still take >= %.0f ms "
                  "on 2 cores, <= %.0fx); transport: "
                  "%llu connections opened, %llu TLS sessions resumed, %llu requests waited for "
                  "their identity's pool; token endpoint: %llu TLS handshakes, %llu resumed",
                  base_ms / h.ms, h.cpu_ms, h.sim_cpu_ms,
                  h.cpu_ms > 0 ? 100.0 * h.sim_cpu_ms / h.cpu_ms : 0.0, sim_floor,
                  sim_floor > 0 ? base_ms / sim_floor : 0.0,
                  static_cast<unsigned long long>(h.transport.connections_opened),
                  static_cast<unsigned long long>(h.transport.tls_sessions_resumed),
                  static_cast<unsigned long long>(h.transport.queued_for_pool),
                  static_cast<unsigned long long>(h.token_handshakes),
                  static_cast<unsigned long long>(h.token_resumed));
    return std::string(sp);
  };
  // The herd's floor on 2 cores: the simulator's CPU (same calls) plus the CPU a minimal
  // client needs for them (the easy client above, key made beforehand), spread over 2 cores.
  const double net_tokens = static_cast<double>(identities) * resources;
  auto client_cpu = [](const herd_run& h) { return h.cpu_ms - h.sim_cpu_ms; };
  auto floor_of = [&](const herd_run& h) { return (h.sim_cpu_ms + easy_cpu_ms) / 2; };
  char fl[300];
  std::snprintf(fl, sizeof fl,
                "2-core floor = (simulator CPU %.0f ms + minimal client CPU %.0f ms) / 2; "
                "serialized client behind one lock: %.0f ms",
                ours_keyed.sim_cpu_ms, easy_cpu_ms, base_ms);
  out.push_back({scen, "all requests answered", ours.ms, "ms", floor_of(ours),
                 "2-core CPU floor (simulator + minimal client)", "-", "info",
                 note + "; no binding key yet (made inside the clock, memory only); " + fl +
                   detail(ours)});
  out.push_back({scen, "all requests answered, per-boot key on disk", ours_keyed.ms, "ms",
                 floor_of(ours_keyed), "2-core CPU floor (simulator + minimal client)", "-",
                 "info",
                 note + "; the binding key this boot's first process made is in the cache "
                        "directory (certificates and the attestation are written there too); " +
                   fl + detail(ours_keyed)});
  auto per_token = [&](double ms) { return ms * 1000.0 / net_tokens; };
  char cn[300];
  std::snprintf(cn, sizeof cn,
                "client CPU = process CPU - the simulator's I/O threads over the herd, per token "
                "fetched (%.0f); minimal client: the easy client's thread CPU for the same calls "
                "(key made beforehand, one connection per host and certificate)",
                net_tokens);
  out.push_back({scen, "client CPU per token, per-boot key on disk",
                 per_token(client_cpu(ours_keyed)), "us", per_token(easy_cpu_ms),
                 "minimal libcurl-easy client, same calls", "<= 1.3x",
                 o.quick ? "info"
                         : (client_cpu(ours_keyed) <= 1.3 * easy_cpu_ms ? "PASS" : "MISS"),
                 cn});
  out.push_back({scen, "client CPU per token, no key yet", per_token(client_cpu(ours)), "us",
                 per_token(easy_cpu_ms), "minimal libcurl-easy client, same calls", "", "info",
                 std::string(cn) + "; includes the RSA-2048 key generation"});
}

} // namespace msiv2::bench
