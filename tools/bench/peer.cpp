// Scenario 7: the peer. @azure/msal-node (pinned, installed by tools/bench.sh) against the
// simulator's IMDS v1 endpoint, side by side with msiv2's bearer path against the same
// simulator in the same run: time to the first token, and cached-token latency (one call at a
// time: msal-node awaits each acquireToken, msiv2 chains get_token callbacks).

#include <sys/stat.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <stdexcept>

#include "io/json.hpp"
#include "tools/bench/bench.hpp"

namespace msiv2::bench {

void run_peer(const options& o, std::vector<row>& out) {
  const std::string scen = "7 peer msal-node";
  auto skip = [&](const std::string& why) {
    for (auto* what : {"first bearer token", "cached token p50", "cached token p99"})
      out.push_back({scen, what, std::nullopt, "", std::nullopt, "@azure/msal-node 7.2.3", "",
                     "not run: " + why, ""});
  };
  if (!o.peer_skip.empty())
    return skip(o.peer_skip);
  struct stat st{};
  if (o.peer_dir.empty() ||
      ::stat((o.peer_dir + "/node_modules/@azure/msal-node").c_str(), &st) != 0)
    return skip("@azure/msal-node not installed (tools/bench.sh installs it; --peer-dir DIR)");
  const int n = o.quick ? 100 : 1000;

  auto cfg = base_config();
  cfg.v1_only = true; // both clients on IMDS v1, as msal-node
  sim_host host(cfg);
  // Node resolves "@azure/msal-node" from the script's folder: run a copy inside peer_dir.
  std::string script = o.peer_dir + "/peer_bench.mjs";
  std::error_code ec;
  std::filesystem::copy_file(MSIV2_BENCH_PEER_SCRIPT, script,
                             std::filesystem::copy_options::overwrite_existing, ec);
  if (ec)
    return skip("cannot copy peer_bench.mjs to " + o.peer_dir + ": " + ec.message());
  std::string text;
  try {
    text = run_capture({"node", script, host.state_dir() + "/ready.json",
                        std::to_string(n)},
                       o.peer_dir);
  } catch (const std::exception& e) {
    return skip(std::string("node failed: ") + e.what());
  }
  auto doc = io::json_object::parse(text.substr(0, text.find('\n')), "peer output");
  if (!doc)
    throw std::runtime_error(doc.error());
  auto num = [&](const char* name) {
    auto raw = doc->raw(name);
    if (!raw)
      throw std::runtime_error("peer output: " + raw.error());
    return std::strtod(raw->c_str(), nullptr);
  };
  double peer_first = num("first_ms"), peer_p50 = num("cached_p50_us"),
         peer_p99 = num("cached_p99_us");

  // msiv2's bearer path against the other (identical) simulator.
  auto req = make_request("https://management.azure.com", managed_identity::system(),
                          token_type::bearer);
  auto v1_before = host.sim().count("imds_token", 200);
  auto t0 = steady::now();
  auto ch = make_client(host.urls(), false);
  auto first = ch->client->get_token_blocking(req);
  if (!first)
    throw std::runtime_error("peer: msiv2 bearer token: " + why(first));
  double ours_first = ms_since(t0);
  std::vector<std::uint32_t> ns;
  ns.reserve(static_cast<std::size_t>(n));
  std::mutex mtx;
  std::condition_variable cv;
  bool done = false;
  std::string err;
  // A cached token's callback runs on the calling thread, inside get_token: the next call is
  // made after the lock is released.
  std::function<void()> next = [&] {
    auto s0 = steady::now();
    ch->client->get_token(req, [&, s0](token_outcome t) {
      auto d = std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - s0).count();
      bool more = false;
      {
        std::lock_guard<std::mutex> g{mtx};
        if (!t)
          err = why(t);
        ns.push_back(static_cast<std::uint32_t>(d));
        if (!t || static_cast<int>(ns.size()) == n) {
          done = true;
          cv.notify_all();
        } else {
          more = true;
        }
      }
      if (more)
        next();
    });
  };
  next();
  {
    std::unique_lock<std::mutex> g{mtx};
    cv.wait(g, [&] { return done; });
  }
  if (!err.empty())
    throw std::runtime_error("peer: msiv2 cached bearer token: " + err);
  if (host.sim().count("imds_token", 200) != v1_before + 1)
    throw std::runtime_error("peer: msiv2 made " +
                             std::to_string(host.sim().count("imds_token", 200) - v1_before) +
                             " IMDS v1 token calls, expected 1");
  std::sort(ns.begin(), ns.end());
  auto note = std::to_string(n) + " sequential cached calls each; baseline = @azure/msal-node "
                                  "7.2.3 against the same simulator (IMDS v1 only)";
  out.push_back({scen, "first bearer token (IMDS v1)", ours_first, "ms", peer_first,
                 "@azure/msal-node", "", "info", "client/app creation inside the clock", true});
  out.push_back({scen, "cached token p50", percentile_us(ns, 50), "us", peer_p50,
                 "@azure/msal-node", "", "info", note, true});
  out.push_back({scen, "cached token p99", percentile_us(ns, 99), "us", peer_p99,
                 "@azure/msal-node", "", "info", note, true});
}

} // namespace msiv2::bench
