#pragma once

// The admin API (plain HTTP on its own loopback port), transport-neutral:
//   GET    /counters              counters JSON
//   GET    /faults                the faults in force
//   POST   /faults/<endpoint>     body = fault spec JSON (same parser as the config file)
//   DELETE /faults/<endpoint>     clears one fault;  DELETE /faults  clears all
//   POST   /revoke                {"serial":"<hex>"} or {"x5t":"<x5t#S256>"}
//   POST   /clock/advance         {"seconds":N}
//   POST   /reset                 counters, faults, clock, issued certificates
//   GET    /issued                the certificates issued so far
//   GET    /config                the configuration in force

#include <string>

#include "tools/sim/config.hpp"
#include "tools/sim/http.hpp"
#include "tools/sim/server.hpp"

namespace msiv2::sim {

/// Answers one admin request against `sim`. Errors are 4xx {"error":"<what was wrong>"}.
response handle_admin(const request& req, simulator& sim);

/// `c` as JSON in the config-file format (parse_config reads it back).
std::string config_json(const config& c);

/// One fault spec as JSON in the config-file format.
std::string fault_spec_json(const fault_spec& f);

} // namespace msiv2::sim
