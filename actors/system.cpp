#include "actors/system.hpp"

#include <caf/atom.hpp>
#include <caf/defaults.hpp>
#include <caf/scheduler/coordinator.hpp>
#include <caf/settings.hpp>

namespace msiv2 {

void apply_defaults(caf::actor_system_config& cfg, std::size_t max_threads) {
  cfg.set("scheduler.max-threads", max_threads);
  auto policy = caf::get_or(cfg, "scheduler.policy", caf::defaults::scheduler::policy);
  if (policy != caf::atom("stealing") || caf::get_or(cfg, "msiv2.fair-scheduler", false))
    return;
  // The actor_system keeps a scheduler module loaded through its config and builds its own
  // only when none was loaded.
  cfg.load<caf::scheduler::coordinator<fair_work_stealing>>();
  caf::put(cfg.content, "msiv2.fair-scheduler", true); // not a CAF option: set() refuses it
}

} // namespace msiv2
