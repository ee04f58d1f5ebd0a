// Main of the tests that need the real MNIST files: with no MNIST folder (see
// test_support.h) it prints why and returns 77, which CTest records as skipped; any failure
// returns 1 (run_or_skip).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "tests/test_main.h"

int main(int argc, char** argv) {
  return cuvae::test::run_or_skip(
      argc, argv,
      cuvae::test::mnist_dir().empty()
          ? "no MNIST folder (set CUVAE_MNIST_DIR or run tools/fetch_mnist.sh)"
          : "");
}
