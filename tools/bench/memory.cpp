// Scenario 6: memory. A child process (this binary, --child-memory) embeds a module against
// the simulator run here and reports its own VmRSS: before the module, with the module idle
// after its first token, and with 1,000 cached tokens; the per-token overhead beyond the token
// bytes. A child, so that the simulator's own memory is not counted.

#include <malloc.h>

#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "io/json.hpp"
#include "tools/bench/bench.hpp"

namespace msiv2::bench {

int memory_child(const std::string& imds, const std::string& ca_file, int tokens, int settle_ms) {
  long rss_start = rss_kib();
  sim::endpoints urls;
  urls.imds = imds;
  urls.ca_file = ca_file;
  auto ch = make_client(urls, false);
  auto first = ch->client->get_token_blocking(make_request("https://management.azure.com"));
  if (!first) {
    std::fprintf(stderr, "memory child: first token: %s\n", why(first).c_str());
    return 1;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  long rss_idle = rss_kib();
  auto heap_idle = mallinfo2().uordblks;

  // Requests for distinct resources [from, from + count), `window` at a time. Their timeout
  // is short so that the per-request deadline timers (CAF 0.17 cannot cancel a delayed
  // message) have fired and been freed before the steady state is measured.
  const auto timeout = std::chrono::milliseconds(settle_ms > 0 ? settle_ms - 1000 : 60000);
  std::size_t token_bytes = 0;
  auto batch = [&](int from, int count) -> bool {
    std::mutex mtx;
    std::condition_variable cv;
    int left = count, failed = 0, next = from;
    const int window = 20;
    std::function<void()> issue;
    issue = [&] {
      int i = next++;
      auto req = make_request("https://r" + std::to_string(i) + ".example.com",
                              managed_identity::system(), token_type::mtls_pop, timeout);
      ch->client->get_token(std::move(req), [&, i](token_outcome t) {
        std::lock_guard<std::mutex> g{mtx};
        if (!t)
          ++failed;
        else if (i >= 0)
          token_bytes += t->access_token.size();
        if (--left == 0)
          cv.notify_all();
        else if (next < from + count)
          issue();
      });
    };
    {
      std::lock_guard<std::mutex> g{mtx};
      for (int w = 0; w < window && next < from + count; ++w)
        issue();
    }
    std::unique_lock<std::mutex> g{mtx};
    cv.wait(g, [&] { return left == 0; });
    if (failed > 0)
      std::fprintf(stderr, "memory child: %d of %d tokens failed\n", failed, count);
    return failed == 0;
  };
  auto settle = [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::max(settle_ms, 300)));
  };
  // Warm-up at the same concurrency (the transport's pooled connections, CAF's buffers), not
  // counted as cached tokens of the measurement.
  if (!batch(-20, 20))
    return 1;
  token_bytes = 0;
  settle();
  long rss_warm = rss_kib();
  auto heap_warm = mallinfo2().uordblks;
  if (!batch(0, tokens))
    return 1;
  settle();
  long rss_full = rss_kib();
  auto heap_full = mallinfo2().uordblks;
  std::printf("{\"rss_start_kib\":%ld,\"rss_idle_kib\":%ld,\"rss_tokens_kib\":%ld,"
              "\"rss_warm_kib\":%ld,\"heap_idle\":%zu,\"heap_warm\":%zu,\"heap_tokens\":%zu,"
              "\"token_bytes\":%zu,\"tokens\":%d}\n",
              rss_start, rss_idle, rss_full, rss_warm, heap_idle, heap_warm, heap_full, token_bytes,
              tokens);
  std::fflush(stdout);
  return 0;
}

void run_memory(const options& o, std::vector<row>& out) {
  const std::string scen = "6 memory";
  const int tokens = o.quick ? 100 : 1000;
  sim_host host(base_config());
  const int settle_ms = o.quick ? 0 : 6000;
  auto text = run_capture({o.self_exe, "--child-memory", host.urls().imds, host.urls().ca_file,
                           std::to_string(tokens), std::to_string(settle_ms)});
  auto doc = io::json_object::parse(text, "memory child output");
  if (!doc)
    throw std::runtime_error(doc.error());
  auto get = [&](const char* name) {
    auto v = doc->required_integer(name);
    if (!v)
      throw std::runtime_error(v.error());
    return static_cast<double>(*v);
  };
  double start = get("rss_start_kib"), idle = get("rss_idle_kib"), full = get("rss_tokens_kib");
  double warm = get("rss_warm_kib"), heap_warm = get("heap_warm"), heap_full = get("heap_tokens");
  double avg_token = get("token_bytes") / tokens;
  if (host.sim().count("token", 200) != static_cast<std::uint64_t>(tokens + 21))
    throw std::runtime_error("memory: expected " + std::to_string(tokens + 21) +
                             " token calls, counters: " + host.sim().counters_json());
  double per_token_rss = (full - warm) * 1024.0 / tokens - avg_token;
  double per_token_heap = (heap_full - heap_warm) / tokens - avg_token;
  char note[300];
  std::snprintf(note, sizeof note,
                "VmRSS of the child process: %.1f MiB before the module (the bench binary and "
                "its libraries), %.1f MiB with the module idle after its first token",
                start / 1024, idle / 1024);
  out.push_back({scen, "RSS added by the embedded module, idle", (idle - start) / 1024, "MiB",
                 std::nullopt, "", "<= 15 MiB",
                 o.quick ? "info" : ((idle - start) / 1024 <= 15 ? "PASS" : "MISS"), note});
  out.push_back({scen, "process RSS with the idle module", idle / 1024, "MiB", start / 1024,
                 "same process before the module", "", "info", ""});
  std::snprintf(note, sizeof note,
                "%d tokens of %.0f bytes on average after a warm-up of 20 at the same "
                "concurrency; RSS %.2f -> %.2f MiB; heap in use grew %.0f bytes per token beyond "
                "its bytes; measured %.0f s after the last request (deadline timers fired)",
                tokens, avg_token, warm / 1024, full / 1024, per_token_heap, settle_ms / 1000.0);
  out.push_back({scen, "RSS per cached token beyond the token bytes", per_token_rss / 1024, "KiB",
                 avg_token / 1024, "the token's own bytes", "<= 4 KiB",
                 o.quick ? "info" : (per_token_rss <= 4096 ? "PASS" : "MISS"), note});
}

} // namespace msiv2::bench
