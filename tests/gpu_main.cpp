// Main of the GPU test executables: with no usable CUDA device (or, built with
// CUVAE_TESTS_NEED_MNIST, no MNIST folder) it prints why and returns 77, which CTest records
// as skipped (never as passed); any failure returns 1 (run_or_skip).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdio>
#include <string>

#include "host/gpu/device_info.h"
#include "tests/test_main.h"

int main(int argc, char** argv) {
  std::string skip;
  if (!cuvae::test::is_listing(argc, argv)) {  // discovery lists the tests without a GPU
    const cuvae::GpuInfo gpu = cuvae::query_gpus();
    if (gpu.count == 0) {
      skip = "no usable CUDA device (" + gpu.reason + ")";
    } else {
#ifdef CUVAE_TESTS_NEED_MNIST
      if (cuvae::test::mnist_dir().empty())
        skip = "no MNIST folder (set CUVAE_MNIST_DIR or run tools/fetch_mnist.sh)";
#endif
      if (skip.empty())
        std::printf("GPU: %s (sm_%d%d)\n", gpu.name.c_str(), gpu.compute_major, gpu.compute_minor);
    }
  }
  return cuvae::test::run_or_skip(argc, argv, skip);
}
