#pragma once

#include <caf/actor_system_config.hpp>

namespace msiv2 {

/// Applies the module's scheduler defaults to an embedder's CAF config (explicit thread count:
/// CAF 0.17 ignores container CPU limits).
void apply_defaults(caf::actor_system_config& cfg, std::size_t max_threads = 2);

} // namespace msiv2
