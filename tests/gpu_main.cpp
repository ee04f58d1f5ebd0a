// Main of the GPU test executables: with no usable CUDA device (or, built with
// CUVAE_TESTS_NEED_MNIST, no MNIST folder) it prints why and returns 77, which CTest records
// as skipped (never as passed).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>

#include "cuda/device.cuh"
#include "tests/test_support.h"

int main(int argc, char** argv) {
  bool listing = false;
  for (int i = 1; i < argc; ++i) listing = listing || std::strncmp(argv[i], "--list", 6) == 0;
  if (!listing) {
    const cuvae::GpuInfo gpu = cuvae::query_gpus();
    if (gpu.count == 0) {
      std::printf("skipped: no usable CUDA device (%s)\n", gpu.reason.c_str());
      return 77;
    }
#ifdef CUVAE_TESTS_NEED_MNIST
    if (cuvae::test::mnist_dir().empty()) {
      std::printf("skipped: no MNIST folder (set CUVAE_MNIST_DIR or run tools/fetch_mnist.sh)\n");
      return 77;
    }
#endif
    std::printf("GPU: %s (sm_%d%d)\n", gpu.name.c_str(), gpu.compute_major, gpu.compute_minor);
  }
  return Catch::Session().run(argc, argv);
}
