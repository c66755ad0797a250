#define BOOST_TEST_MODULE msiv2
#include <boost/test/unit_test.hpp>
