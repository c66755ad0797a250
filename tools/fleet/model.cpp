#include "tools/fleet/model.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>

#include "tools/fleet/module_rules.hpp"

namespace msiv2::fleet {

namespace {

constexpr std::int64_t second = 1000;
constexpr std::int64_t minute = 60 * second;
constexpr std::int64_t hour = 60 * minute;
constexpr std::int64_t day = 24 * hour;
constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max() / 4;
constexpr std::uint32_t no_epoch = std::numeric_limits<std::uint32_t>::max();

/// xoshiro256** seeded by splitmix64: fast, reproducible draws for a run.
class rng {
public:
  explicit rng(std::uint64_t seed) {
    for (auto& s : s_) {
      seed += 0x9e3779b97f4a7c15ULL;
      auto z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      s = z ^ (z >> 31);
    }
  }
  std::uint64_t next() {
    auto result = rotl(s_[1] * 5, 7) * 9;
    auto t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  /// Uniform in [lo, hi].
  std::int64_t between(std::int64_t lo, std::int64_t hi) {
    if (hi <= lo)
      return lo;
    auto range = static_cast<unsigned __int128>(hi - lo) + 1;
    return lo + static_cast<std::int64_t>((static_cast<unsigned __int128>(next()) * range) >> 64);
  }
  double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t s_[4];
};

enum kind : std::uint8_t {
  proc_start,   ///< id = process; gen = VM boot generation
  token_renew,  ///< id = token; gen = token generation (background renewal or on-demand refresh)
  token_retry,  ///< id = token; gen = token generation (after a failed acquisition)
  cert_renew,   ///< id = VM (msiv2); gen = certificate version
  attest_renew, ///< id = VM (msiv2); gen = attestation version
  reboot,       ///< id = VM
};

struct event {
  std::uint32_t t_rel; ///< ms since the simulation's start (fits 49 days)
  std::uint32_t id;
  std::uint32_t gen;
  kind k;
};

/// A histogram of waits in whole seconds, [0, max). A run of request time whose waits fall
/// uniformly between two values is added in O(1) (a difference array of densities).
class wait_histogram {
public:
  explicit wait_histogram(std::int64_t max_s)
      : diff_(static_cast<std::size_t>(max_s) + 2, 0.0), point_(diff_.size(), 0.0) {}
  /// Request time (in ms) whose waits run uniformly from lo_ms to hi_ms.
  void add_range(std::int64_t lo_ms, std::int64_t hi_ms) {
    lo_ms = std::max<std::int64_t>(lo_ms, 0);
    if (hi_ms - lo_ms < second) { // within about one bin: a point mass
      point_[bin(lo_ms)] += static_cast<double>(hi_ms - lo_ms) / second;
      return;
    }
    // Density: one second of request time per second of wait.
    diff_[bin(lo_ms)] += 1;
    diff_[bin(hi_ms)] -= 1;
  }
  /// Request time (in seconds) that waited nothing.
  void add_zero(double seconds) { zero_ += seconds; }
  spread summarize() const {
    spread out;
    std::vector<double> bins(diff_.size());
    double run = 0, total = zero_;
    for (std::size_t i = 0; i < diff_.size(); ++i) {
      run += diff_[i];
      bins[i] = run + point_[i];
      total += bins[i];
    }
    if (total <= 0)
      return out;
    out.count = static_cast<std::uint64_t>(total);
    auto quantile = [&](double q) {
      double want = q * total;
      if (want <= zero_)
        return 0.0;
      double acc = zero_;
      for (std::size_t i = 0; i < bins.size(); ++i) {
        acc += bins[i];
        if (acc >= want)
          return static_cast<double>(i + 1);
      }
      return static_cast<double>(bins.size());
    };
    out.min_s = zero_ > 0 ? 0 : quantile(0);
    out.p50_s = quantile(0.5);
    out.p99_s = quantile(0.99);
    out.p999_s = quantile(0.999);
    std::size_t last = 0;
    for (std::size_t i = 0; i < bins.size(); ++i)
      if (bins[i] > 1e-9)
        last = i + 1;
    out.max_s = static_cast<double>(last);
    return out;
  }

private:
  std::size_t bin(std::int64_t ms) const {
    return static_cast<std::size_t>(
      std::min<std::int64_t>(ms / second, static_cast<std::int64_t>(diff_.size()) - 2));
  }
  std::vector<double> diff_, point_;
  double zero_ = 0;
};

/// Offsets (ms, may be negative) summarized exactly enough: a sorted sample of up to 2^20.
class offset_sample {
public:
  explicit offset_sample(std::uint64_t seed) : rng_(seed) {}
  void add(std::int64_t ms) {
    ++seen_;
    min_ = std::min(min_, ms);
    max_ = std::max(max_, ms);
    if (keep_.size() < cap) {
      keep_.push_back(ms);
    } else {
      auto j = static_cast<std::uint64_t>(rng_.between(0, static_cast<std::int64_t>(seen_) - 1));
      if (j < cap)
        keep_[j] = ms; // reservoir sampling
    }
  }
  spread summarize() {
    spread out;
    out.count = seen_;
    if (keep_.empty())
      return out;
    std::sort(keep_.begin(), keep_.end());
    auto at = [&](double q) {
      auto i = static_cast<std::size_t>(q * static_cast<double>(keep_.size() - 1));
      return static_cast<double>(keep_[i]) / 1000.0;
    };
    out.min_s = static_cast<double>(min_) / 1000.0;
    out.p50_s = at(0.5);
    out.p99_s = at(0.99);
    out.p999_s = at(0.999);
    out.max_s = static_cast<double>(max_) / 1000.0;
    return out;
  }

private:
  static constexpr std::size_t cap = std::size_t{1} << 20;
  rng rng_;
  std::vector<std::int64_t> keep_;
  std::uint64_t seen_ = 0;
  std::int64_t min_ = never, max_ = -never;
};

/// One run: the fleet's state, the event calendar and the measurements.
class run {
public:
  run(const params& p, policy pol, scenario scen, key_mode keys)
      : p_(p), pol_(pol), scen_(scen), keys_(keys),
        rng_(p.seed * 0x9e3779b97f4a7c15ULL + static_cast<std::uint64_t>(pol) * 7919
             + static_cast<std::uint64_t>(scen) * 104729 + static_cast<std::uint64_t>(keys)),
        draw_([this](std::int64_t lo, std::int64_t hi) { return rng_.between(lo, hi); }),
        waits_(2 * day / second), cert_offsets_(p.seed + 1), token_offsets_(p.seed + 2) {
    start_ = -7 * day - 2 * minute;
    end_ = static_cast<std::int64_t>(p.days) * day;
    window_s_ = static_cast<std::size_t>(end_ / second);
    buckets_.resize(static_cast<std::size_t>((end_ - start_) / second) + 1);
    switch (scen) {
      case scenario::steady: fault_from_ = 0; fault_to_ = end_; break;
      case scenario::sync_reboot: fault_from_ = 0; fault_to_ = 10 * minute; break;
      case scenario::token_outage:
        fault_from_ = p.fault_start_ms; fault_to_ = p.fault_start_ms + p.outage_ms; break;
      case scenario::issue_brownout:
        fault_from_ = p.fault_start_ms; fault_to_ = p.fault_start_ms + p.brownout_ms; break;
    }
    out_.pol = pol;
    out_.scen = scen;
    out_.keys = keys;
    for (auto& s : out_.per_second)
      s.assign(window_s_, 0);
  }

  result go() {
    auto began = std::chrono::steady_clock::now();
    setup();
    for (std::size_t b = 0; b < buckets_.size(); ++b) {
      auto& bucket = buckets_[b];
      for (std::size_t i = 0; i < bucket.size(); ++i) { // handlers may append to this bucket
        auto e = bucket[i];
        handle(e);
      }
      out_.events += bucket.size();
      std::vector<event>().swap(bucket);
    }
    finish();
    out_.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
    return std::move(out_);
  }

private:
  // ---- entities ----------------------------------------------------------------------------
  struct vm_state {
    std::uint32_t boot_gen = 0;
    std::uint32_t key_epoch = 0;
    // msiv2: the VM's certificate file (one writer per VM)
    std::uint32_t cert_epoch = no_epoch;
    std::uint32_t cert_version = 0;  ///< bumped by every (re)plan: stale renewal events are ignored
    std::uint32_t cert_serial = 0;   ///< bumped by every new certificate
    std::int64_t cert_t0 = 0, cert_t1 = 0, cert_usable = 0, cert_renew = 0;
    std::int64_t mint_until = -never; ///< an in-flight mint completes then
    std::uint32_t mint_epoch = no_epoch;
    bool mint_ok = false;
    std::uint8_t cert_failures = 0;
    // msiv2: the attestation JWT file
    std::uint32_t att_epoch = no_epoch;
    std::uint32_t att_version = 0;
    std::int64_t att_usable = 0;
    // IMDS calls in the current second (per VM)
    std::int64_t imds_sec = -1;
    std::uint32_t imds_count = 0;
  };
  struct proc_state {
    std::int64_t started = 0;
    std::uint32_t cert_seen = 0; ///< msiv2: the VM certificate serial this process last used
    // reference / naive: the process's own certificate (persisted when keys are durable)
    std::uint32_t cert_epoch = no_epoch;
    std::int64_t cert_t1 = 0;
    std::int64_t mint_until = -never;
    bool mint_ok = false;
    // msiv2: the process's retry budget, made when it first retries (a new one is full, so
    // making it late changes nothing)
    std::shared_ptr<rules::governor> retries;
  };
  struct token_state {
    std::uint32_t gen = 0;
    std::uint8_t failures = 0;
    bool alive = false;         ///< the process holds (or is getting) this token
    std::int64_t usable = 0;    ///< usable until (or, without a token, since when it is missing)
    std::int64_t nominal = 0;   ///< the policy's nominal renewal point of the current token
    bool has_token = false;
    bool fault_seen = false;    ///< called the token endpoint in the fault window
    std::uint32_t fault_index = 0; ///< then: its row of result::fault_token_calls
  };

  // ---- calendar ----------------------------------------------------------------------------
  void at(std::int64_t t, kind k, std::uint32_t id, std::uint32_t gen) {
    if (t >= end_)
      return;
    if (t < now_)
      t = now_;
    auto rel = t - start_;
    auto& b = buckets_[static_cast<std::size_t>(rel / second)];
    b.push_back(event{static_cast<std::uint32_t>(rel), id, gen, k});
  }

  // ---- measurements ------------------------------------------------------------------------
  void count(service s, std::int64_t t) {
    if (t < 0 || t >= end_)
      return;
    auto& slot = out_.per_second[static_cast<std::size_t>(s)][static_cast<std::size_t>(t / second)];
    ++slot;
    ++out_.totals[static_cast<std::size_t>(s)];
  }
  void imds(std::uint32_t vm, std::int64_t t) {
    if (t < 0 || t >= end_)
      return;
    auto& v = vms_[vm];
    ++out_.imds_total;
    if (in_fault(t))
      ++out_.imds_in_fault;
    auto sec = t / second;
    if (v.imds_sec == sec) {
      ++v.imds_count;
    } else {
      v.imds_sec = sec;
      v.imds_count = 1;
    }
    out_.imds_peak_per_vm = std::max(out_.imds_peak_per_vm, v.imds_count);
  }
  /// A token was missing from `from` to `to`: requests in that time waited.
  void gap(std::int64_t from, std::int64_t to) {
    from = std::max<std::int64_t>(from, 0);
    to = std::min(to, end_);
    if (to <= from)
      return;
    missing_ms_ += to - from;
    auto a = std::max(from, fault_from_), b = std::min(to, fault_to_);
    if (b > a) {
      // A request at s in [a, b] waits `to - s`.
      waits_.add_range(to - b, to - a);
      fault_missing_ms_ += b - a;
    }
  }
  /// A token was alive (its process running) from `from` to `to`.
  void alive(std::int64_t from, std::int64_t to) {
    from = std::max<std::int64_t>(from, 0);
    to = std::min(to, end_);
    if (to > from)
      alive_ms_ += to - from;
    auto a = std::max(from, fault_from_), b = std::min(to, fault_to_);
    if (b > a)
      fault_alive_ms_ += b - a;
  }

  bool in_fault(std::int64_t t) const {
    return scen_ != scenario::steady && scen_ != scenario::sync_reboot && t >= fault_from_
           && t < fault_to_;
  }

  // ---- faults ------------------------------------------------------------------------------
  bool token_call_fails(std::int64_t t) const {
    return scen_ == scenario::token_outage && t >= fault_from_ && t < fault_to_;
  }
  bool issue_call_fails(std::int64_t t) {
    return scen_ == scenario::issue_brownout && t >= fault_from_ && t < fault_to_
           && rng_.unit() < p_.brownout_failure;
  }

  // ---- upstream chains ---------------------------------------------------------------------
  /// Calls one leg with the policy's retries from `t`; returns (ok, time the answer came).
  template <class Fails>
  std::pair<bool, std::int64_t> call_leg(service s, io::retry_leg leg, std::uint32_t vm,
                                         std::int64_t t, std::int64_t latency, bool on_imds,
                                         Fails fails) {
    io::retry_state state;
    static constexpr std::int64_t fixed[] = {1000, 2000, 4000};
    for (int attempt = 0;; ++attempt) {
      count(s, t);
      if (s == service::token && in_fault(t)) {
        auto& tok = tokens_[current_token_];
        if (!tok.fault_seen) {
          tok.fault_seen = true;
          ++out_.fault_tokens;
          tok.fault_index = static_cast<std::uint32_t>(out_.fault_token_calls.size());
          out_.fault_token_calls.push_back({t, 0});
        }
        ++out_.fault_token_calls[tok.fault_index].calls;
      }
      if (on_imds)
        imds(vm, t);
      if (!fails(t))
        return {true, t + latency};
      std::optional<std::int64_t> delay;
      switch (pol_) {
        case policy::msiv2: delay = rules::retry_delay_ms(leg, state, 503, draw_); break;
        case policy::reference:
          if (attempt < 3)
            delay = fixed[attempt];
          break;
        case policy::naive: break;
      }
      if (!delay)
        return {false, t + latency};
      t += latency + *delay;
    }
  }

  /// Mints a certificate from `t`: metadata, attestation when needed, issuecredential.
  std::pair<bool, std::int64_t> mint_chain(std::uint32_t vm, std::int64_t t) {
    auto& v = vms_[vm];
    imds(vm, t); // getplatformmetadata
    t += p_.imds_latency_ms;
    if (p_.attested) {
      bool have = pol_ == policy::msiv2 && v.att_epoch == v.key_epoch && t < v.att_usable;
      if (!have) {
        count(service::attestation, t);
        t += p_.attestation_latency_ms;
        if (pol_ == policy::msiv2)
          plan_attestation(vm, t);
      }
    }
    auto r = call_leg(service::issuecredential, io::retry_leg::imds, vm, t, p_.issue_latency_ms,
                      true, [this](std::int64_t at) { return issue_call_fails(at); });
    if (r.first && r.second >= 0 && r.second < end_)
      ++out_.issuances;
    return r;
  }

  /// The earliest of the VM's processes' renewal draws: each process plans the artifact with
  /// its own jitter, and the first one due takes the writer lock.
  platform::lifecycle plan_shared(std::int64_t t0, std::int64_t t1,
                                  std::optional<std::int64_t> refresh_in) {
    auto best = rules::plan(t0, t1, refresh_in, draw_);
    for (std::uint32_t i = 1; i < p_.processes; ++i) {
      auto other = rules::plan(t0, t1, refresh_in, draw_);
      if (other.renew_at_ms < best.renew_at_ms)
        best = other;
    }
    return best;
  }

  void plan_attestation(std::uint32_t vm, std::int64_t t) {
    auto& v = vms_[vm];
    auto plan = plan_shared(t, t + p_.attestation_life_ms, std::nullopt);
    v.att_epoch = v.key_epoch;
    v.att_usable = plan.usable_until_ms;
    at(plan.renew_at_ms, attest_renew, vm, ++v.att_version);
  }

  /// msiv2: the VM's certificate adopted or minted at `t` (its version and renewal planned).
  void set_vm_cert(std::uint32_t vm, std::int64_t t0) {
    auto& v = vms_[vm];
    if (v.cert_epoch == v.key_epoch && v.cert_t1 > 0)
      cert_offsets_.add(t0 - (v.cert_t0 + (v.cert_t1 - v.cert_t0) / 2));
    v.cert_epoch = v.key_epoch;
    ++v.cert_serial;
    v.cert_t0 = t0;
    v.cert_t1 = t0 + p_.cert_life_ms;
    v.cert_failures = 0;
    replan_vm_cert(vm);
  }
  void replan_vm_cert(std::uint32_t vm) {
    auto& v = vms_[vm];
    auto plan = plan_shared(v.cert_t0, v.cert_t1, std::nullopt);
    v.cert_usable = plan.usable_until_ms;
    v.cert_renew = plan.renew_at_ms;
    at(plan.renew_at_ms, cert_renew, vm, ++v.cert_version);
  }

  /// When a usable certificate is there for `proc` from `t`: (ok, time).
  std::pair<bool, std::int64_t> ensure_cert(std::uint32_t vm, std::uint32_t proc, std::int64_t t) {
    auto& v = vms_[vm];
    if (pol_ == policy::msiv2) {
      if (v.cert_epoch == v.key_epoch && t < v.cert_usable)
        return {true, t};
      if (v.mint_epoch == v.key_epoch && v.mint_until >= t)
        return {v.mint_ok, v.mint_until}; // the writer's lock: wait, then adopt its file
      auto r = mint_chain(vm, t);
      v.mint_epoch = v.key_epoch;
      v.mint_until = r.second;
      v.mint_ok = r.first;
      if (r.first)
        set_vm_cert(vm, r.second);
      return r;
    }
    auto& pr = procs_[proc];
    std::int64_t stale_at = pol_ == policy::reference ? pr.cert_t1 - day : pr.cert_t1;
    if (pr.cert_epoch == v.key_epoch && t < stale_at)
      return {true, t};
    if (pr.mint_until >= t)
      return {pr.mint_ok, pr.mint_until};
    auto r = mint_chain(vm, t);
    pr.mint_until = r.second;
    pr.mint_ok = r.first;
    if (r.first) {
      if (pr.cert_epoch == v.key_epoch && pr.cert_t1 > 0)
        cert_offsets_.add(r.second - stale_at);
      pr.cert_epoch = v.key_epoch;
      pr.cert_t1 = r.second + p_.cert_life_ms;
    }
    return r;
  }

  /// Gets token `k` at `t` (first acquisition, renewal or retry).
  void acquire(std::uint32_t k, std::int64_t t) {
    auto proc = k / p_.resources;
    auto vm = proc / p_.processes;
    auto& tok = tokens_[k];
    current_token_ = k;
    if (pol_ == policy::msiv2 && tok.has_token && t < tok.usable && tok.failures > 0) {
      // msiv2: a retry of a failed background renewal takes from the process's retry budget,
      // or waits for its next backoff step without a call (token_service, renew).
      auto& pr = procs_[proc];
      if (!pr.retries)
        pr.retries = std::make_shared<rules::governor>(draw_);
      if (!pr.retries->take_retry(t - start_))
        return token_failed(k, t);
    }
    auto cert = ensure_cert(vm, proc, t);
    if (!cert.first)
      return token_failed(k, cert.second);
    auto tc = cert.second;
    if (pol_ == policy::msiv2)
      note_certificate(vm, proc, k, tc);
    if (pol_ == policy::msiv2) {
      imds(vm, tc); // cert_issuer asks getplatformmetadata on every credential request
      tc += p_.imds_latency_ms;
    }
    auto r = call_leg(service::token, io::retry_leg::token_endpoint, vm, tc, p_.token_latency_ms,
                      false, [this](std::int64_t at) { return token_call_fails(at); });
    if (!r.first)
      return token_failed(k, r.second);
    auto ts = r.second;
    if (ts >= 0 && ts < end_)
      ++out_.token_acquisitions;
    if (ts > tok.usable)
      gap(tok.usable, ts);
    if (tok.has_token)
      token_offsets_.add(ts - tok.nominal);
    tok.has_token = true;
    tok.failures = 0;
    auto t1 = ts + p_.token_life_ms;
    switch (pol_) {
      case policy::msiv2: {
        auto plan = rules::plan(ts, t1, p_.token_refresh_in_ms, draw_);
        tok.usable = plan.usable_until_ms;
        tok.nominal = ts + p_.token_refresh_in_ms;
        at(plan.renew_at_ms, token_renew, k, ++tok.gen);
        break;
      }
      case policy::reference: {
        // MSAL: proactive refresh on the first request after refresh_on; a 5-minute margin.
        tok.usable = t1 - 5 * minute;
        tok.nominal = ts + p_.token_refresh_in_ms;
        at(tok.nominal + rng_.between(1, p_.request_interval_ms), token_renew, k, ++tok.gen);
        break;
      }
      case policy::naive:
        tok.usable = t1;
        tok.nominal = t1;
        at(t1 + rng_.between(1, p_.request_interval_ms), token_renew, k, ++tok.gen);
        break;
    }
  }

  /// msiv2's token_service keys tokens by the certificate's thumbprint: the first token flight
  /// of a process that returns a new certificate drops the process's tokens bound to the old
  /// one (actors/token_service.cpp, note_x5t), and the next request for each gets a new token.
  void note_certificate(std::uint32_t vm, std::uint32_t proc, std::uint32_t k, std::int64_t t) {
    auto& pr = procs_[proc];
    auto serial = vms_[vm].cert_serial;
    if (pr.cert_seen == serial)
      return;
    bool had = pr.cert_seen != 0;
    pr.cert_seen = serial;
    if (!had)
      return;
    for (std::uint32_t r = 0; r < p_.resources; ++r) {
      auto other = proc * p_.resources + r;
      auto& tok = tokens_[other];
      if (other == k || !tok.alive || !tok.has_token || tok.usable <= t)
        continue;
      tok.usable = t; // missing from now until the next request gets a new one
      at(t + rng_.between(1, p_.request_interval_ms), token_retry, other, ++tok.gen);
    }
  }

  void token_failed(std::uint32_t k, std::int64_t t) {
    auto& tok = tokens_[k];
    ++tok.failures;
    if (pol_ == policy::msiv2 && t < tok.usable) {
      auto next = t + rules::token_renewal_backoff_ms(tok.failures, draw_);
      if (next < tok.usable) {
        at(next, token_retry, k, ++tok.gen);
        return;
      }
    }
    // An on-demand policy, or no usable token left: the next request tries again (msiv2
    // drops an unusable token from its cache and the next request starts a new flight).
    auto from = pol_ == policy::msiv2 ? std::max(t, tok.usable) : t;
    at(from + rng_.between(1, p_.request_interval_ms), token_retry, k, ++tok.gen);
  }

  void cert_renewal(std::uint32_t vm, std::int64_t t) {
    auto& v = vms_[vm];
    if (v.cert_epoch != v.key_epoch)
      return;
    if (v.mint_epoch == v.key_epoch && v.mint_until >= t)
      return;
    auto r = mint_chain(vm, t);
    v.mint_epoch = v.key_epoch;
    v.mint_until = r.second;
    v.mint_ok = r.first;
    if (r.first) {
      set_vm_cert(vm, r.second);
      return;
    }
    auto next = r.second + rules::cert_renewal_backoff_ms(++v.cert_failures, draw_);
    if (next < v.cert_usable)
      at(next, cert_renew, vm, ++v.cert_version);
  }

  // ---- lifecycle of VMs and processes ------------------------------------------------------
  void boot(std::uint32_t vm, std::int64_t t) {
    auto& v = vms_[vm];
    ++v.boot_gen;
    if (keys_ == key_mode::per_boot || v.boot_gen == 1)
      ++v.key_epoch;
    v.mint_until = -never;
    v.mint_epoch = no_epoch;
    if (pol_ == policy::msiv2 && v.cert_epoch == v.key_epoch) {
      // The certificate file survived: the new processes plan its renewal again.
      replan_vm_cert(vm);
    }
    for (std::uint32_t i = 0; i < p_.processes; ++i) {
      auto proc = vm * p_.processes + i;
      auto& pr = procs_[proc];
      for (std::uint32_t r = 0; r < p_.resources; ++r) {
        auto& tok = tokens_[proc * p_.resources + r];
        if (tok.alive) {
          alive(pr.started, t);
          if (t > tok.usable) // missing until the reboot
            gap(tok.usable, t);
        }
        tok.alive = false;
        tok.has_token = false;
        ++tok.gen;
      }
      pr.mint_until = -never;
      pr.cert_seen = 0;
      at(t + rng_.between(0, p_.start_spread_ms), proc_start, proc, v.boot_gen);
    }
  }

  void start_process(std::uint32_t proc, std::int64_t t) {
    auto& pr = procs_[proc];
    pr.started = t;
    pr.retries.reset(); // a new process: a full budget
    for (std::uint32_t r = 0; r < p_.resources; ++r) {
      auto k = proc * p_.resources + r;
      auto& tok = tokens_[k];
      tok.alive = true;
      tok.has_token = false;
      tok.usable = t; // missing from the start until the first token
      tok.failures = 0;
      acquire(k, t);
    }
  }

  void handle(const event& e) {
    now_ = start_ + static_cast<std::int64_t>(e.t_rel);
    switch (e.k) {
      case proc_start:
        if (vms_[e.id / p_.processes].boot_gen == e.gen)
          start_process(e.id, now_);
        break;
      case token_renew:
      case token_retry:
        if (tokens_[e.id].gen == e.gen && tokens_[e.id].alive)
          acquire(e.id, now_);
        break;
      case cert_renew:
        if (vms_[e.id].cert_version == e.gen)
          cert_renewal(e.id, now_);
        break;
      case attest_renew: {
        auto& v = vms_[e.id];
        if (v.att_version != e.gen || v.att_epoch != v.key_epoch || !p_.attested)
          break;
        count(service::attestation, now_);
        plan_attestation(e.id, now_ + p_.attestation_latency_ms);
        break;
      }
      case reboot: boot(e.id, now_); break;
    }
  }

  void setup() {
    vms_.assign(p_.vms, vm_state{});
    procs_.assign(static_cast<std::size_t>(p_.vms) * p_.processes, proc_state{});
    tokens_.assign(procs_.size() * p_.resources, token_state{});
    for (std::uint32_t vm = 0; vm < p_.vms; ++vm) {
      // Booted uniformly over the past week.
      auto b = p_.boot_times_ms.size() == p_.vms ? p_.boot_times_ms[vm]
                                                 : rng_.between(-7 * day, -1);
      now_ = start_;
      at(b, reboot, vm, 0);
      if (scen_ == scenario::sync_reboot)
        at(0, reboot, vm, 0);
    }
    now_ = start_;
  }

  void finish() {
    for (std::size_t k = 0; k < tokens_.size(); ++k) {
      auto& tok = tokens_[k];
      if (!tok.alive)
        continue;
      alive(procs_[k / p_.resources].started, end_);
      if (tok.usable < end_)
        gap(tok.usable, end_);
    }
    for (int s = 0; s < service_count; ++s) {
      auto& v = out_.per_second[static_cast<std::size_t>(s)];
      out_.peak_per_second[static_cast<std::size_t>(s)] =
        v.empty() ? 0 : *std::max_element(v.begin(), v.end());
    }
    out_.served_from_cache =
      alive_ms_ > 0 ? 1.0 - static_cast<double>(missing_ms_) / static_cast<double>(alive_ms_) : 1.0;
    waits_.add_zero(static_cast<double>(fault_alive_ms_ - fault_missing_ms_) / second);
    out_.wait_in_fault = waits_.summarize();
    out_.cert_renewal_offset = cert_offsets_.summarize();
    out_.token_renewal_offset = token_offsets_.summarize();
  }

  params p_;
  policy pol_;
  scenario scen_;
  key_mode keys_;
  rng rng_;
  platform::jitter_source draw_;
  std::int64_t start_ = 0, end_ = 0, now_ = 0;
  std::int64_t fault_from_ = 0, fault_to_ = 0;
  std::size_t window_s_ = 0;
  std::uint32_t current_token_ = 0; ///< the token whose acquisition is running
  std::vector<std::vector<event>> buckets_;
  std::vector<vm_state> vms_;
  std::vector<proc_state> procs_;
  std::vector<token_state> tokens_;
  std::int64_t alive_ms_ = 0, missing_ms_ = 0, fault_alive_ms_ = 0, fault_missing_ms_ = 0;
  wait_histogram waits_;
  offset_sample cert_offsets_, token_offsets_;
  result out_;
};

} // namespace

const char* to_string(policy p) {
  switch (p) {
    case policy::msiv2: return "msiv2";
    case policy::reference: return "reference";
    case policy::naive: return "naive";
  }
  return "?";
}

const char* to_string(scenario s) {
  switch (s) {
    case scenario::steady: return "steady";
    case scenario::sync_reboot: return "sync-reboot";
    case scenario::token_outage: return "token-outage";
    case scenario::issue_brownout: return "issue-brownout";
  }
  return "?";
}

const char* to_string(key_mode k) {
  return k == key_mode::per_boot ? "per-boot" : "durable";
}

const char* to_string(service s) {
  switch (s) {
    case service::issuecredential: return "issuecredential";
    case service::token: return "token";
    case service::attestation: return "attestation";
  }
  return "?";
}

double result::mean_per_second(service s) const {
  auto& v = per_second[static_cast<std::size_t>(s)];
  return v.empty() ? 0.0
                   : static_cast<double>(totals[static_cast<std::size_t>(s)])
                       / static_cast<double>(v.size());
}

result simulate(const params& p, policy pol, scenario scen, key_mode keys) {
  return run(p, pol, scen, keys).go();
}

} // namespace msiv2::fleet
