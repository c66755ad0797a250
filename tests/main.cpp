#define BOOST_TEST_MODULE msiv2
#include <boost/test/unit_test.hpp>

#include <cstdlib>

namespace {

// No test touches the user's real cache directory (~/.cache/msiv2 or $XDG_RUNTIME_DIR/msiv2):
// clients made from the environment, and the processes tests start (which inherit it), keep
// their caches in memory unless a test gives them a temporary cache directory of its own.
struct memory_only_unless_told {
  memory_only_unless_told() { ::setenv("MSIV2_CACHE_DIR", "none", 1); }
};

} // namespace

BOOST_TEST_GLOBAL_FIXTURE(memory_only_unless_told);
