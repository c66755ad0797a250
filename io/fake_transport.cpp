#include "io/fake_transport.hpp"

#include <iterator>

namespace msiv2::io {

namespace {

std::string path_of(const std::string& url) {
  auto parts = split_url(url);
  return parts ? parts->path : std::string();
}

} // namespace

fake_transport::rule& fake_transport::rule::respond(int status, std::string body, http_headers headers) {
  return respond(http_response::with_status(status, std::move(body), std::move(headers)));
}

fake_transport::rule& fake_transport::rule::respond(http_response response) {
  answers_.push_back(std::move(response));
  return *this;
}

fake_transport::rule& fake_transport::rule::fail(transport_error kind, std::string message) {
  return respond(http_response::failure(kind, std::move(message)));
}

fake_transport::rule& fake_transport::rule::repeat_last() {
  repeat_last_ = true;
  return *this;
}

std::string fake_transport::recorded::path() const {
  return path_of(request.url);
}

std::optional<std::string> fake_transport::recorded::query(std::string_view name) const {
  return query_param(request.url, name);
}

fake_transport::fake_transport(delivery mode) : mode_(mode) {}

fake_transport::rule& fake_transport::on(std::string method, std::string path_prefix) {
  std::string description = (method.empty() ? std::string("*") : method) + " " + path_prefix + "*";
  return on(
      [method = std::move(method), prefix = std::move(path_prefix)](const http_request& r) {
        return (method.empty() || r.method == method) && path_of(r.url).rfind(prefix, 0) == 0;
      },
      std::move(description));
}

fake_transport::rule& fake_transport::on(predicate match, std::string description) {
  std::lock_guard<std::mutex> guard(mutex_);
  rules_.push_back(rule(std::move(description), std::move(match)));
  return rules_.back();
}

http_response fake_transport::answer_locked(const http_request& request, std::string& rule_name) {
  for (auto& r : rules_) {
    if (r.answers_.empty() || !r.match_(request))
      continue;
    rule_name = r.description_;
    ++r.used_;
    if (r.repeat_last_ && r.answers_.size() == 1)
      return r.answers_.front();
    http_response out = std::move(r.answers_.front());
    r.answers_.pop_front();
    return out;
  }
  rule_name.clear();
  return http_response::failure(transport_error::other,
                                "fake_transport: no scripted answer for " + request.method + " "
                                    + request.url);
}

void fake_transport::send(http_request request, completion done) {
  http_response response;
  {
    std::lock_guard<std::mutex> guard(mutex_);
    recorded rec;
    if (stopped_) {
      response = http_response::failure(transport_error::cancelled, "fake_transport: shut down");
      rec.rule = "(shut down)";
    } else {
      response = answer_locked(request, rec.rule);
      rec.unexpected = rec.rule.empty();
    }
    rec.request = std::move(request);
    requests_.push_back(std::move(rec));
    if (mode_ == delivery::manual && !stopped_) {
      pending_.push_back({std::move(done), std::move(response)});
      return;
    }
  }
  if (done)
    done(std::move(response));
}

void fake_transport::shutdown() {
  std::deque<pending_completion> doomed;
  {
    std::lock_guard<std::mutex> guard(mutex_);
    stopped_ = true;
    doomed.swap(pending_);
  }
  for (auto& p : doomed)
    if (p.done)
      p.done(http_response::failure(transport_error::cancelled, "fake_transport: shut down"));
}

bool fake_transport::deliver_locked_index(std::unique_lock<std::mutex>& lock, std::size_t index) {
  if (index >= pending_.size())
    return false;
  auto it = pending_.begin() + static_cast<std::ptrdiff_t>(index);
  pending_completion p = std::move(*it);
  pending_.erase(it);
  lock.unlock();  // the completion may call send()
  if (p.done)
    p.done(std::move(p.response));
  lock.lock();
  return true;
}

bool fake_transport::deliver_one() {
  return deliver(0);
}

bool fake_transport::deliver(std::size_t index) {
  std::unique_lock<std::mutex> lock(mutex_);
  return deliver_locked_index(lock, index);
}

std::size_t fake_transport::deliver_all() {
  std::unique_lock<std::mutex> lock(mutex_);
  std::size_t n = pending_.size();
  std::size_t ran = 0;
  // Completions append to the back, so the first n entries are always the original ones.
  while (ran < n && deliver_locked_index(lock, 0))
    ++ran;
  return ran;
}

std::size_t fake_transport::pending() const {
  std::lock_guard<std::mutex> guard(mutex_);
  return pending_.size();
}

std::vector<fake_transport::recorded> fake_transport::requests() const {
  std::lock_guard<std::mutex> guard(mutex_);
  return requests_;
}

std::vector<fake_transport::recorded> fake_transport::unexpected() const {
  std::lock_guard<std::mutex> guard(mutex_);
  std::vector<recorded> out;
  for (const auto& r : requests_)
    if (r.unexpected)
      out.push_back(r);
  return out;
}

std::vector<std::string> fake_transport::unused_rules() const {
  std::lock_guard<std::mutex> guard(mutex_);
  std::vector<std::string> out;
  for (const auto& r : rules_) {
    bool used_up = r.answers_.empty() || (r.repeat_last_ && r.answers_.size() == 1 && r.used_ > 0);
    if (!used_up)
      out.push_back(r.description_ + " (" + std::to_string(r.answers_.size()) + " answers left)");
  }
  return out;
}

void fake_transport::set_delivery(delivery mode) {
  std::lock_guard<std::mutex> guard(mutex_);
  mode_ = mode;
}

} // namespace msiv2::io
