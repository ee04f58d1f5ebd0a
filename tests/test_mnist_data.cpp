// Tests of the IDX loader against the real MNIST files.
//
// Owns the checks that load_dataset reads the published MNIST exactly: image counts and
// shape, per-digit label counts, the first labels, and the training pixel mean and std.
// Runs in the data test executable, which skips (exit 77) when no MNIST folder is found.
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "host/io/idx.h"
#include "tests/test_support.h"

namespace {

std::array<int64_t, 10> digit_counts(const cuvae::LabelSet& labels) {
  std::array<int64_t, 10> counts{};
  for (uint8_t l : labels.labels) ++counts[l];  // the loader guarantees 0..9
  return counts;
}

}  // namespace

TEST_CASE("MNIST training set matches the published statistics", "[mnist]") {
  INFO("MNIST folder " << cuvae::test::mnist_dir());
  const cuvae::Dataset train = cuvae::load_dataset(cuvae::test::mnist_dir(), cuvae::Split::Train);
  REQUIRE(train.size() == 60000);
  CHECK(train.images.rows == 28);
  CHECK(train.images.cols == 28);
  REQUIRE(train.images.pixels.size() == size_t{60000} * 28 * 28);
  REQUIRE(train.labels.labels.size() == 60000);

  const std::array<int64_t, 10> expected = {5923, 6742, 5958, 6131, 5842,
                                            5421, 5918, 6265, 5851, 5949};
  CHECK(digit_counts(train.labels) == expected);
  const std::vector<uint8_t> first(train.labels.labels.begin(), train.labels.labels.begin() + 5);
  CHECK(first == std::vector<uint8_t>{5, 0, 4, 1, 9});

  double sum = 0.0, sum_sq = 0.0;
  uint8_t max_pixel = 0;
  for (uint8_t p : train.images.pixels) {
    const double v = p / 255.0;
    sum += v;
    sum_sq += v * v;
    if (p > max_pixel) max_pixel = p;
  }
  const double n = static_cast<double>(train.images.pixels.size());
  const double mean = sum / n;
  const double stddev = std::sqrt(sum_sq / n - mean * mean);
  INFO("mean " << mean << ", std " << stddev << " (of pixel/255)");
  CHECK(std::round(mean * 1e4) / 1e4 == Approx(0.1307).margin(1e-9));
  CHECK(std::round(stddev * 1e4) / 1e4 == Approx(0.3081).margin(1e-9));
  CHECK(max_pixel == 255);
  // The top-left pixel of every image is background.
  int64_t inked_corners = 0;
  for (int64_t i = 0; i < train.size(); ++i) inked_corners += train.images.pixels[i * 784] != 0;
  CHECK(inked_corners == 0);
}

TEST_CASE("MNIST test set matches the published statistics", "[mnist]") {
  INFO("MNIST folder " << cuvae::test::mnist_dir());
  const cuvae::Dataset test = cuvae::load_dataset(cuvae::test::mnist_dir(), cuvae::Split::Test);
  REQUIRE(test.size() == 10000);
  CHECK(test.images.rows == 28);
  CHECK(test.images.cols == 28);
  REQUIRE(test.images.pixels.size() == size_t{10000} * 28 * 28);
  REQUIRE(test.labels.labels.size() == 10000);

  const std::array<int64_t, 10> expected = {980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009};
  CHECK(digit_counts(test.labels) == expected);
  const std::vector<uint8_t> first(test.labels.labels.begin(), test.labels.labels.begin() + 5);
  CHECK(first == std::vector<uint8_t>{7, 2, 1, 0, 4});
}
