#include "tools/demo.hpp"

#include <cstdio>

namespace msiv2::tools {

int run_demo(int, char**) {
  std::fprintf(stderr, "msiv2-sim demo: not built yet\n");
  return 1;
}

} // namespace msiv2::tools
