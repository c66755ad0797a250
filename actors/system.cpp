#include "actors/system.hpp"

namespace msiv2 {

void apply_defaults(caf::actor_system_config& cfg, std::size_t max_threads) {
  cfg.set("scheduler.max-threads", max_threads);
}

} // namespace msiv2
