#pragma once

// msiv2-fleet's output: the table, the JSON and the gnuplot timelines.

#include <ostream>
#include <string>
#include <vector>

#include "tools/fleet/model.hpp"

namespace msiv2::fleet {

/// One row per (scenario, key mode, policy), grouped by scenario.
void print_table(std::ostream& out, const params& p, const std::vector<result>& results,
                 double wall_seconds);

/// Every result with its per-minute series.
void write_json(std::ostream& out, const params& p, const std::vector<result>& results,
                double wall_seconds);

/// For each (scenario, key mode): DIR/<scenario>-<keys>.dat, .gp and, when gnuplot is on
/// the PATH, .svg (the three policies overlaid, one panel per service). Returns an error text
/// or empty.
std::string write_plots(const std::string& dir, const params& p,
                        const std::vector<result>& results);

} // namespace msiv2::fleet
