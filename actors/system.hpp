#pragma once

#include <caf/actor_system_config.hpp>
#include <caf/policy/work_stealing.hpp>
#include <caf/resumable.hpp>

namespace msiv2 {

/// CAF 0.17's work-stealing policy, with one change: a job that a worker makes runnable (an
/// actor it sent a message to) goes to the back of that worker's queue, not to the front.
///
/// Why: with the stock policy the newest runnable job always runs next, so two actors that
/// message each other (a requester and token_service) keep the front of the queue to
/// themselves while every job behind them waits until the other worker steals it. An idle
/// worker steals only every fifth 50 us poll, or after a 10 ms wait, so on an otherwise idle
/// machine one reply in a hundred waited ~600 us behind a ping-pong (p50 3 us, p99 600 us).
/// In arrival order a job waits only for the jobs queued before it.
class fair_work_stealing : public caf::policy::work_stealing {
public:
  template <class Worker>
  void internal_enqueue(Worker* self, caf::resumable* job) {
    d(self).queue.append(job);
  }
};

/// Applies the module's scheduler defaults to an embedder's CAF config:
/// - `scheduler.max-threads` = `max_threads` (explicit: CAF 0.17 ignores container CPU limits);
/// - the scheduler becomes CAF's coordinator over `fair_work_stealing`, unless the config
///   already names a policy other than CAF's default "stealing" (so "testing" and "sharing"
///   are left alone). Set your own `scheduler.policy` before calling this. Calling it twice
///   loads the scheduler once.
void apply_defaults(caf::actor_system_config& cfg, std::size_t max_threads = 2);

} // namespace msiv2
