// GPU tests of the batch gather (cuda/kernels/data.cuh: gather_normalize, fp32) against the CPU's
// gather_batch (host/core/batch.h), bit for bit, at awkward batch sizes. Its step-table form and
// advance_cursor: test_launchers.cpp.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda/kernels/data.cuh"
#include "cuda/runtime/device_buffer.cuh"
#include "host/core/batch.h"
#include "tests/gpu/checks.h"
#include "tests/gpu/device_io.h"
#include "tests/test_support.h"

using namespace cuvae;
using namespace cuvae::test;

// ---- data -------------------------------------------------------------------------------------

TEST_CASE("gather_normalize equals gather_batch bit for bit", "[gpu][kernels][data]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int count = GENERATE(1, 3, 127, 129);
  const int pixels = GENERATE(784, 31, 256);
  INFO("count " << count << " pixels " << pixels);
  CudaStream stream;
  const cudaStream_t s = stream.get();

  const int n_images = 300;
  std::vector<uint8_t> images(size_t(n_images) * pixels);
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& v : images) v = uint8_t(byte(rng));
  for (int p = 0; p < pixels; ++p) images[size_t(p)] = uint8_t(p % 256);  // 0..255 in image 0
  std::vector<int32_t> index(static_cast<size_t>(count));
  std::uniform_int_distribution<int32_t> pick(0, n_images - 1);
  for (int32_t& i : index) i = pick(rng);
  index.back() = n_images - 1;  // the last image of the set (bounds)
  index.front() = 0;            // every byte value goes through the division

  std::vector<float> want(size_t(count) * pixels);
  gather_batch(want.data(), images.data(), index.data(), count, pixels);

  const auto d_images = to_device(images, s);
  const auto d_index = to_device(index, s);
  DeviceBuffer<float> d_x(want.size());
  auto run = [&] {
    poison_device(d_x, s);
    gather_normalize(d_x.data(), d_images.data(), d_index.data(), count, pixels, s);
    return to_host(d_x, s);
  };
  const auto got = run();
  // Exact: one IEEE division of the same two floats on both sides.
  require_bitwise_equal(got, want, "x");
  require_same_run(run(), got, "x");
}

TEST_CASE("gather_normalize turns a negative index into a NaN row", "[gpu][kernels][data]") {
  CudaStream stream;
  const cudaStream_t s = stream.get();
  const int pixels = 31;
  const std::vector<uint8_t> images(size_t(2) * pixels, 255);
  const std::vector<int32_t> index{1, -1};
  const auto d_images = to_device(images, s);
  const auto d_index = to_device(index, s);
  DeviceBuffer<float> d_x(size_t(2) * pixels);
  gather_normalize(d_x.data(), d_images.data(), d_index.data(), 2, pixels, s);
  const auto got = to_host(d_x, s);
  for (int p = 0; p < pixels; ++p) {
    INFO("pixel " << p);
    REQUIRE(got[size_t(p)] == 1.0f);
    REQUIRE(std::isnan(got[size_t(pixels + p)]));
  }
}
