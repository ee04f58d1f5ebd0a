// Catch2 main for the CPU test executable: any failure returns 1 (catch_exit_code), never a
// failure count that could read as another outcome.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "tests/test_support.h"

int main(int argc, char** argv) {
  return cuvae::test::catch_exit_code(Catch::Session().run(argc, argv));
}
