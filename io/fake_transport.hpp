#pragma once

// A scripted io::transport for unit tests of actors under a deterministic scheduler: the
// test says which responses (or transport failures) each kind of request gets, the fake
// records every request, and completions are delivered either inside send() or when the
// test says so, so a test controls interleavings without threads, sockets or sleeps.
//
//   fake_transport net(fake_transport::delivery::manual);
//   net.on("GET", "/metadata/identity/getplatformmetadata").respond(400).respond(200, body);
//   ... actor sends ...
//   net.deliver_all();
//   BOOST_TEST(net.requests().at(0).request.headers.contains("Metadata") == false);

#include <cstddef>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/http.hpp"

namespace msiv2::io {

class fake_transport final : public transport {
public:
  /// When completions run.
  enum class delivery {
    immediate,  ///< inside send(), on the caller's thread
    manual,     ///< when the test calls deliver_one() / deliver_all() / deliver(i)
  };

  /// Which requests a rule answers.
  using predicate = std::function<bool(const http_request&)>;

  /// The queue of answers for one kind of request. Answers are used in order, one per
  /// request; an exhausted rule no longer matches (unless repeat_last()).
  class rule {
  public:
    /// Queues an HTTP response.
    rule& respond(int status, std::string body = {}, http_headers headers = {});
    /// Queues a complete response (status, headers, body, or a failure).
    rule& respond(http_response response);
    /// Queues a transport failure.
    rule& fail(transport_error kind, std::string message = "scripted failure");
    /// Keeps answering with the last queued answer once the others are used up.
    rule& repeat_last();

    /// What the rule matches, for messages ("GET /path*").
    const std::string& description() const { return description_; }
    /// Answers not yet used (a repeating rule counts its last answer once).
    std::size_t remaining() const { return answers_.size(); }

  private:
    friend class fake_transport;
    rule(std::string description, predicate match)
        : description_(std::move(description)), match_(std::move(match)) {}

    std::string description_;
    predicate match_;
    std::deque<http_response> answers_;
    bool repeat_last_ = false;
    std::size_t used_ = 0;
  };

  /// One request the fake received.
  struct recorded {
    http_request request;
    std::string rule;        ///< description of the rule that answered; empty if unexpected
    bool unexpected = false; ///< no rule had an answer for it

    /// Path of the request URL ("/metadata/identity/issuecredential").
    std::string path() const;
    /// Decoded query parameter (nullopt when absent).
    std::optional<std::string> query(std::string_view name) const;
  };

  explicit fake_transport(delivery mode = delivery::manual);

  /// Answers `method` requests whose URL path starts with `path_prefix` ("" = any method).
  /// Scripting (on(), respond(), ...) is meant for the test thread and is not synchronized
  /// with send() running concurrently on other threads.
  /// Rules are tried in the order they were added; the first with an answer left wins.
  rule& on(std::string method, std::string path_prefix);
  /// Answers requests that satisfy `match`; `description` names it in messages.
  rule& on(predicate match, std::string description);

  /// Records the request and answers it from the first matching rule; an unscripted request
  /// gets transport_error::other naming the request and is marked unexpected.
  void send(http_request request, completion done) override;
  /// Answers every undelivered completion with `cancelled`; later sends get `cancelled` too.
  void shutdown() override;

  /// Runs the oldest undelivered completion; false when none is pending.
  bool deliver_one();
  /// Runs the completion at position `index` of the pending list (0 = oldest); false when
  /// there is no such completion. Lets a test answer requests out of order.
  bool deliver(std::size_t index);
  /// Runs the completions pending at the time of the call, oldest first (ones that those
  /// completions cause stay pending); returns how many ran.
  std::size_t deliver_all();
  /// Completions not yet delivered.
  std::size_t pending() const;

  /// Every request received so far, in order.
  std::vector<recorded> requests() const;
  /// The requests that no rule answered.
  std::vector<recorded> unexpected() const;
  /// Descriptions of rules that still hold answers they were scripted to give (a repeating
  /// rule that answered at least once counts as used up). Empty when the script ran out.
  std::vector<std::string> unused_rules() const;
  /// Changes the delivery mode (pending completions stay pending).
  void set_delivery(delivery mode);

private:
  struct pending_completion {
    completion done;
    http_response response;
  };

  // Finds the answer for `request`; fills `rule_name`, empty when unscripted. Under mutex_.
  http_response answer_locked(const http_request& request, std::string& rule_name);
  bool deliver_locked_index(std::unique_lock<std::mutex>& lock, std::size_t index);

  mutable std::mutex mutex_;
  delivery mode_;
  bool stopped_ = false;
  std::list<rule> rules_;  // list: references returned by on() stay valid
  std::vector<recorded> requests_;
  std::deque<pending_completion> pending_;
};

} // namespace msiv2::io
