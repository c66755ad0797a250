#pragma once

namespace msiv2::tools {

/// `msiv2-sim demo [...]`: the simulator and a client in one process, walking through the
/// whole Managed Identity v2 flow with a readable timeline. Returns the process exit code.
int run_demo(int argc, char** argv);

} // namespace msiv2::tools
