// Main of the tests that need the real MNIST files: with no MNIST folder (see
// test_support.h) it prints why and returns 77, which CTest records as skipped.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>

#include "tests/test_support.h"

int main(int argc, char** argv) {
  bool listing = false;
  for (int i = 1; i < argc; ++i) listing = listing || std::strncmp(argv[i], "--list", 6) == 0;
  if (!listing && cuvae::test::mnist_dir().empty()) {
    std::printf("skipped: no MNIST folder (set CUVAE_MNIST_DIR or run tools/fetch_mnist.sh)\n");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
