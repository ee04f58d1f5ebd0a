// A test executable whose outcome is known, for tests/test_exit_codes.sh: it runs through
// run_or_skip (the main of the GPU and data test executables), so its exit codes are theirs.
//   "77 failing assertions"  fails 77 CHECKs: must exit 1, not 77 (which CTest reads as skipped)
//   "one passing assertion"  passes: must exit 0
// CUVAE_PROBE_SKIP=<reason> takes the skip path instead: "skipped: <reason>", exit 77.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdlib>

#include "tests/test_main.h"

TEST_CASE("77 failing assertions", "[probe]") {
  for (int i = 0; i < 77; ++i) CHECK(i < 0);
}

TEST_CASE("one passing assertion", "[probe]") {
  CHECK(1 + 1 == 2);
}

int main(int argc, char** argv) {
  const char* skip = std::getenv("CUVAE_PROBE_SKIP");
  return cuvae::test::run_or_skip(argc, argv, skip ? skip : "");
}
