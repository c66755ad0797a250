#include "io/retry.hpp"

#include <algorithm>
#include <cctype>
#include <string>

#include "io/http_parse.hpp"

namespace msiv2::io {

namespace {

using std::chrono::milliseconds;

bool timed_out_or_unreachable(const http_response& r) {
  switch (r.error) {
    case transport_error::timeout:
    case transport_error::connect_timeout:
    case transport_error::connect_failed:
    case transport_error::reset:
      return true;
    default:
      return false;
  }
}

/// +-20 % jitter.
milliseconds jittered(milliseconds base, const platform::jitter_source& draw) {
  auto spread = base.count() / 5;
  return milliseconds(base.count() + (spread > 0 ? draw(-spread, spread) : 0));
}

bool imds_retryable(int status, bool probe) {
  if (status == 404)
    return !probe;
  return status == 408 || status == 410 || status == 429 || (status >= 500 && status <= 599);
}

std::optional<milliseconds> imds_delay(retry_state& s, const http_response& r, bool probe,
                                       const platform::jitter_source& draw) {
  // A refused connection on the probe means "no IMDS here" (protocol.md §1): answer at once,
  // so a process that is not on Azure learns it fast. Later calls retry it (IMDS restarting).
  bool retry = r.ok() ? imds_retryable(r.status, probe)
                      : timed_out_or_unreachable(r)
                          && !(probe && r.error == transport_error::connect_failed);
  if (!retry)
    return std::nullopt;
  int retries_done = s.attempts - 1;
  if (s.first_status == 410) {
    if (retries_done >= 7)
      return std::nullopt;
    return jittered(milliseconds(10'000), draw);
  }
  if (retries_done >= 3)
    return std::nullopt;
  return jittered(milliseconds(1000 << retries_done), draw);
}

} // namespace

std::optional<milliseconds> retry_after(const http_response& r, std::int64_t now_unix_s) {
  auto v = r.headers.get("Retry-After");
  if (!v)
    return std::nullopt;
  return parse_retry_after(*v, now_unix_s);
}

std::optional<milliseconds> next_retry_delay(retry_leg leg, retry_state& state,
                                             const http_response& last,
                                             const platform::jitter_source& draw,
                                             std::int64_t now_unix_s) {
  ++state.attempts;
  if (state.first_status == 0 && last.ok())
    state.first_status = last.status;
  if (last.ok() && last.status >= 200 && last.status < 300)
    return std::nullopt;
  switch (leg) {
    case retry_leg::imds_probe:
      return imds_delay(state, last, true, draw);
    case retry_leg::imds:
      return imds_delay(state, last, false, draw);
    case retry_leg::attestation: {
      bool retry = last.ok() ? (last.status == 429 || (last.status >= 500 && last.status <= 599))
                             : last.timed_out() || last.error == transport_error::reset;
      int retries_done = state.attempts - 1;
      if (!retry || retries_done >= 6)
        return std::nullopt;
      auto cap = std::min<std::int64_t>(30'000, std::int64_t{1000} << retries_done);
      return milliseconds(draw(0, cap));
    }
    case retry_leg::token_endpoint: {
      if (state.attempts > 1)
        return std::nullopt;
      // The connection closed before a complete answer (reset, truncated body): a network
      // failure on a request that is safe to repeat, retried like a 5xx.
      if (!last.ok())
        return last.error == transport_error::reset
                 ? std::optional<milliseconds>(jittered(milliseconds(1000), draw))
                 : std::nullopt;
      if (auto after = retry_after(last, now_unix_s))
        return std::min(*after, state.max_retry_after);
      if (last.status == 429)
        return std::nullopt; // throttled without saying for how long: the caller backs off
      if (last.status >= 500 && last.status <= 599)
        return jittered(milliseconds(1000), draw);
      return std::nullopt;
    }
  }
  return std::nullopt;
}

milliseconds renewal_retry_delay(int failures, milliseconds base, milliseconds cap,
                                 const platform::jitter_source& draw) {
  std::int64_t ceiling = std::max<std::int64_t>(1, base.count());
  for (int n = 1; n < failures && ceiling < cap.count(); ++n)
    ceiling *= 2;
  ceiling = std::min<std::int64_t>(ceiling, std::max<std::int64_t>(1, cap.count()));
  return milliseconds(std::max<std::int64_t>(1, draw(0, ceiling)));
}

retry_governor::retry_governor(retry_governor_settings settings, platform::jitter_source draw)
    : settings_(settings), draw_(std::move(draw)), tokens_(settings.budget) {}

void retry_governor::refill_locked(time_point now) {
  if (!started_) {
    started_ = true;
    refilled_at_ = now;
    return;
  }
  if (now <= refilled_at_)
    return;
  auto minutes = std::chrono::duration<double, std::ratio<60>>(now - refilled_at_).count();
  tokens_ = std::min(settings_.budget, tokens_ + minutes * settings_.refill_per_minute);
  refilled_at_ = now;
}

bool retry_governor::take_retry(time_point now) {
  std::lock_guard<std::mutex> guard(mutex_);
  refill_locked(now);
  if (tokens_ < 1.0) {
    ++retries_refused_;
    return false;
  }
  tokens_ -= 1.0;
  return true;
}

bool retry_governor::admit(const std::string& upstream, time_point now) {
  std::lock_guard<std::mutex> guard(mutex_);
  auto i = circuits_.find(upstream);
  if (i == circuits_.end() || !i->second.open)
    return true;
  auto& c = i->second;
  if (now < c.reopen_at)
    return false;
  // Half-open: one probe at a time (a probe whose outcome never came back is replaced after
  // another open period).
  if (c.probing && now < c.probe_sent + settings_.circuit_open)
    return false;
  c.probing = true;
  c.probe_sent = now;
  return true;
}

void retry_governor::record(const std::string& upstream, bool failed, time_point now) {
  std::lock_guard<std::mutex> guard(mutex_);
  auto i = circuits_.find(upstream);
  if (!failed) {
    refill_locked(now);
    if (i != circuits_.end() && i->second.open) {
      // The upstream recovered (its probe succeeded): the retries that waited out the outage
      // may go again, so the budget starts full.
      tokens_ = settings_.budget;
    } else {
      tokens_ = std::min(settings_.budget, tokens_ + 1.0);
    }
    if (i != circuits_.end())
      circuits_.erase(i);
    return;
  }
  if (i == circuits_.end()) {
    if (circuits_.size() >= settings_.max_upstreams)
      return;
    i = circuits_.emplace(upstream, circuit{}).first;
  }
  auto& c = i->second;
  ++c.failures;
  if (c.open || c.failures >= std::max(1, settings_.circuit_failures)) {
    if (!c.open)
      ++circuits_opened_;
    c.open = true;
    c.probing = false;
    auto full = std::max<std::int64_t>(2, settings_.circuit_open.count());
    c.reopen_at = now + milliseconds(draw_(full / 2, full));
  }
}

std::optional<retry_governor::time_point>
retry_governor::open_until(const std::string& upstream, time_point now) const {
  std::lock_guard<std::mutex> guard(mutex_);
  auto i = circuits_.find(upstream);
  if (i == circuits_.end() || !i->second.open)
    return std::nullopt;
  return std::max(now, i->second.reopen_at);
}

std::uint64_t retry_governor::retries_refused() const {
  std::lock_guard<std::mutex> guard(mutex_);
  return retries_refused_;
}

std::uint64_t retry_governor::circuits_opened() const {
  std::lock_guard<std::mutex> guard(mutex_);
  return circuits_opened_;
}

bool upstream_failed(const http_response& r) noexcept {
  if (!r.ok())
    return timed_out_or_unreachable(r);
  return r.status >= 500 && r.status <= 599;
}

} // namespace msiv2::io
