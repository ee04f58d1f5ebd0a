// Anomaly statistics (host/eval/anomaly.h): the ROC AUC against a direct count over every
// (out, in) pair on random integer-valued scores (ties forced), the exact cases (separated,
// reversed, identical), the ROC curve's area against the AUC, the operating point against a
// brute-force search of its definition, the per-image scores against evaluate_elbo, and the
// picture's size and colours.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <limits>
#include <random>
#include <set>

#include "host/core/error.h"
#include "host/core/model.h"
#include "host/cpu/inference_cpu.h"
#include "host/eval/anomaly.h"
#include "host/eval/plot.h"
#include "tests/test_support.h"

using namespace cuvae;

namespace {

// Integer-valued scores in [lo, hi]: few distinct values, so many ties within and across sets.
std::vector<double> integer_scores(std::mt19937_64& rng, size_t n, int lo, int hi) {
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<double> v(n);
  for (double& x : v) x = d(rng);
  return v;
}

// (#{out > in} + 1/2 #{out == in}) / (n_in n_out), pair by pair.
double auc_by_pairs(const std::vector<double>& in, const std::vector<double>& out) {
  double u = 0;
  for (const double o : out)
    for (const double i : in) u += o > i ? 1.0 : o == i ? 0.5 : 0.0;
  return u / (double(in.size()) * double(out.size()));
}

size_t above(const std::vector<double>& v, double t) {
  size_t n = 0;
  for (const double x : v) n += x > t;
  return n;
}

// The definition, searched: the smallest candidate t (every score, and every score +- 0.5)
// with above(in, t) / n_in <= num / den, compared in integers.
double threshold_by_search(const std::vector<double>& in, const std::vector<double>& out, int num,
                           int den) {
  std::set<double> candidates;
  for (const auto* set : {&in, &out})
    for (const double x : *set) candidates.insert({x - 0.5, x, x + 0.5});
  for (const double t : candidates)  // ascending
    if (int64_t(above(in, t)) * den <= int64_t(num) * int64_t(in.size())) return t;
  return std::numeric_limits<double>::quiet_NaN();
}

}  // namespace

TEST_CASE("roc_auc equals the pair count on random scores with ties", "[anomaly]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> size(1, 300), range(0, 40);
  for (int trial = 0; trial < 200; ++trial) {
    INFO("trial " << trial);
    const int shift = range(rng) - 20, span = range(rng);
    const std::vector<double> in = integer_scores(rng, size_t(size(rng)), 0, span);
    const std::vector<double> out = integer_scores(rng, size_t(size(rng)), shift, shift + span);
    const double want = auc_by_pairs(in, out);
    double got = std::numeric_limits<double>::quiet_NaN();
    got = roc_auc(in, out);
    INFO("n_in " << in.size() << ", n_out " << out.size() << ", want " << want << ", got " << got);
    // The pair count in halves is exact; both are one division of the same integer.
    REQUIRE(got == want);
  }
}

TEST_CASE("roc_auc: separated 1, reversed 0, identical 0.5", "[anomaly]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const std::vector<double> low = test::random_vector<double>(rng, 37, 0.0, 1.0);
  const std::vector<double> high = test::random_vector<double>(rng, 53, 1.5, 9.0);
  CHECK(roc_auc(low, high) == 1.0);
  CHECK(roc_auc(high, low) == 0.0);
  CHECK(roc_auc(low, low) == 0.5);
  CHECK(roc_auc(std::vector<double>(10, 3.0), std::vector<double>(7, 3.0)) == 0.5);
  // One of each.
  CHECK(roc_auc({1.0}, {2.0}) == 1.0);
  CHECK(roc_auc({2.0}, {2.0}) == 0.5);
}

TEST_CASE("roc_auc and operating_point refuse empty sets and NaN", "[anomaly]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  REQUIRE_THROWS_AS(roc_auc({}, {1.0}), Error);
  REQUIRE_THROWS_AS(roc_auc({1.0}, {}), Error);
  REQUIRE_THROWS_AS(roc_auc({1.0, nan}, {2.0}), Error);
  REQUIRE_THROWS_AS(roc_curve({1.0}, {nan}), Error);
  REQUIRE_THROWS_AS(operating_point({1.0}, {2.0}, 1.0), Error);
  REQUIRE_THROWS_AS(operating_point({1.0}, {2.0}, -0.1), Error);
  REQUIRE_THROWS_AS(operating_point({1.0}, {2.0}, nan), Error);
}

TEST_CASE("the ROC curve runs from (0,0) to (1,1) and its area is the AUC", "[anomaly]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> size(1, 200);
  for (int trial = 0; trial < 100; ++trial) {
    INFO("trial " << trial);
    const std::vector<double> in = integer_scores(rng, size_t(size(rng)), 0, 15);
    const std::vector<double> out = integer_scores(rng, size_t(size(rng)), 3, 20);
    const RocCurve c = roc_curve(in, out);
    REQUIRE(c.fpr.size() == c.tpr.size());
    REQUIRE(c.fpr.front() == 0.0);
    REQUIRE(c.tpr.front() == 0.0);
    REQUIRE(c.fpr.back() == 1.0);
    REQUIRE(c.tpr.back() == 1.0);
    // One point per distinct score, after the origin.
    std::set<double> distinct(in.begin(), in.end());
    distinct.insert(out.begin(), out.end());
    REQUIRE(c.fpr.size() == distinct.size() + 1);
    double area = 0;
    for (size_t k = 1; k < c.fpr.size(); ++k) {
      REQUIRE(c.fpr[k] >= c.fpr[k - 1]);
      REQUIRE(c.tpr[k] >= c.tpr[k - 1]);
      area += (c.fpr[k] - c.fpr[k - 1]) * (c.tpr[k] + c.tpr[k - 1]) / 2;
    }
    REQUIRE(area == Approx(auc_by_pairs(in, out)).margin(1e-12));
  }
}

TEST_CASE("operating_point matches a brute-force search of its definition", "[anomaly]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> size(1, 250), span(0, 30);
  const std::pair<int, int> targets[] = {{1, 100}, {5, 100}, {0, 1}, {1, 10}, {1, 3}, {2, 7}};
  for (int trial = 0; trial < 150; ++trial) {
    const int s = span(rng);
    const std::vector<double> in = integer_scores(rng, size_t(size(rng)), 0, s);
    const std::vector<double> out = integer_scores(rng, size_t(size(rng)), 0, s + 10);
    for (const auto& [num, den] : targets) {
      INFO("trial " << trial << ", n_in " << in.size() << ", n_out " << out.size() << ", target "
                    << num << "/" << den);
      const OperatingPoint p = operating_point(in, out, double(num) / den);
      const double want = threshold_by_search(in, out, num, den);
      REQUIRE(p.threshold == want);
      REQUIRE(p.in_above == int64_t(above(in, want)));
      REQUIRE(p.out_above == int64_t(above(out, want)));
      REQUIRE(p.fpr == double(above(in, want)) / double(in.size()));
      REQUIRE(p.tpr == double(above(out, want)) / double(out.size()));
      REQUIRE(p.fpr <= double(num) / den);
    }
  }
}

TEST_CASE("operating_point on continuous scores flags exactly floor(alpha n) inliers",
          "[anomaly]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  // No ties: the achieved rate is floor(alpha n) / n, and the threshold an inlier score.
  for (const size_t n : {1u, 99u, 100u, 101u, 1000u, 2345u}) {
    const std::vector<double> in = test::random_vector<double>(rng, n, 0.0, 1.0);
    const std::vector<double> out = test::random_vector<double>(rng, 50, 0.5, 1.5);
    const AnomalyResult r = analyse_scores(in, out);
    INFO("n " << n);
    REQUIRE(r.at_1pct.in_above == int64_t(n / 100));
    REQUIRE(r.at_5pct.in_above == int64_t(n / 20));
    REQUIRE(std::find(in.begin(), in.end(), r.at_1pct.threshold) != in.end());
    REQUIRE(r.at_1pct.threshold >= r.at_5pct.threshold);
    REQUIRE(r.auc == auc_by_pairs(in, out));
    REQUIRE(std::is_sorted(r.in.begin(), r.in.end()));
    REQUIRE(std::is_sorted(r.out.begin(), r.out.end()));
  }
}

TEST_CASE("neg_elbo_scores are evaluate_elbo's per-image negative ELBO", "[anomaly]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const ModelDesc desc = make_vae(2);
  std::vector<float> params(desc.num_params);
  init_params(desc, seed, params.data());
  // The reference engine: its per-image results do not depend on the images beside them, so
  // the chunk of 7 below gives the same numbers as the default one.
  const auto model = make_cpu_inference(desc, params, "cpu-ref");
  ImageSet images;
  images.count = 37;
  images.rows = images.cols = kImageSide;
  images.pixels.resize(size_t(images.count) * kImagePixels);
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& p : images.pixels) p = uint8_t(byte(rng));
  const uint64_t noise_seed = rng();
  std::vector<double> want;
  evaluate_elbo_chunks(
      *model, images, noise_seed, 30,
      [&](int64_t, int count, const float*, const float*, const float*, const float*,
          const double* recon, const double* kl) {
        for (int i = 0; i < count; ++i) want.push_back(recon[i] + kl[i]);
      },
      7);
  int64_t last_done = 0;
  const std::vector<double> got =
      neg_elbo_scores(*model, images, noise_seed, 30, [&](int64_t done, int64_t total) {
        REQUIRE(total == 30);
        REQUIRE(done > last_done);
        last_done = done;
      });
  REQUIRE(last_done == 30);
  REQUIRE(got.size() == 30);
  const test::Diff d = test::compare(got.data(), want.data(), got.size());
  REQUIRE_REL_L2(d, "scores", 1e-12);
}

TEST_CASE("the anomaly picture has its documented size and draws both sets and the ROC",
          "[anomaly]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> in_d(150, 20), out_d(400, 80);
  std::vector<double> in(500), out(300);
  for (double& x : in) x = in_d(rng);
  for (double& x : out) x = out_d(rng);
  const AnomalyResult r = analyse_scores(in, out);
  const Canvas c = anomaly_picture(r, "in: digits (500)", "out: clothes (300)", "a title");
  REQUIRE(c.width() == kAnomalyWidth);
  REQUIRE(c.height() == kAnomalyHeight);
  REQUIRE(kAnomalyWidth == 1248);
  REQUIRE(kAnomalyHeight == 576);
  // The outlines of the two histograms and the ROC curve, in their colours, inside the plots:
  // the histogram left of the ROC plot's margin, the ROC right of it.
  const int split = kAxesLeft + kAnomalyHistW + kAxesLeft / 2;
  auto count_colour = [&](Rgb colour, int x0, int x1) {
    int n = 0;
    for (int y = kAnomalyTop; y < kAnomalyTop + kAnomalyPlotH; ++y)
      for (int x = x0; x < x1; ++x) n += c.at(x, y) == colour;
    return n;
  };
  CHECK(count_colour(kClassColors[0], kAxesLeft, split) > 100);
  CHECK(count_colour(kClassColors[1], kAxesLeft, split) > 100);
  CHECK(count_colour(kClassColors[4], split, c.width()) > 100);
  CHECK(count_colour(kClassColors[4], 0, split) == 0);
  // The legend swatches sit above the plots.
  int swatches = 0;
  for (int y = 0; y < kAnomalyTop; ++y)
    for (int x = 0; x < split; ++x)
      swatches += c.at(x, y) == kClassColors[0] || c.at(x, y) == kClassColors[1];
  CHECK(swatches >= 2 * 12 * 12);

  const std::string dir = test::temp_dir("cuvae_anomaly_");
  const std::string path = dir + "/a.png";
  write_anomaly_png(path, r, "in", "out", "t");
  CHECK(test::read_file(path).substr(1, 3) == "PNG");
  std::filesystem::remove_all(dir);
}
