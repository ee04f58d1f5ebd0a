// GPU test of the device epoch permutation (cuda/kernels/shuffle.cuh: DeviceShuffle) against the
// CPU's epoch_permutation (host/core/batch.h), element for element.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda/kernels/shuffle.cuh"
#include "cuda/runtime/device_buffer.cuh"
#include "host/core/batch.h"
#include "tests/gpu/checks.h"
#include "tests/gpu/device_io.h"
#include "tests/test_support.h"

using namespace cuvae;
using namespace cuvae::test;

// ---- the epoch permutation ----------------------------------------------------------------------

TEST_CASE("DeviceShuffle draws epoch_permutation's order", "[gpu][kernels][shuffle]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t n = GENERATE(int64_t(1), int64_t(2), int64_t(129), int64_t(60000));
  INFO("n " << n);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  DeviceShuffle shuffle(n);
  DeviceBuffer<int32_t> perm(static_cast<size_t>(n));
  const uint64_t order_seed = rng();
  for (const int64_t epoch : {int64_t(1), int64_t(2), int64_t(1 + rng() % 1000)}) {
    INFO("epoch " << epoch);
    poison_device(perm, s);  // -1 everywhere
    shuffle.draw(perm.data(), order_seed, epoch, s);
    const std::vector<int32_t> got = to_host(perm, s);
    REQUIRE(got == epoch_permutation(order_seed, epoch, n));
  }
}
