// Real GPU training runs on the MNIST test set, in fp32 and in bf16 mixed precision (needs a GPU
// and the MNIST files; the main skips otherwise).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "host/gpu/trainer_gpu.h"
#include "host/io/idx.h"
#include "tests/fixtures.h"
#include "tests/test_support.h"

using namespace cuvae;
using namespace cuvae::test;

TEST_CASE("GPU training on the MNIST test set lowers the loss", "[gpu][trainer][mnist]") {
  const Dataset ds = load_dataset(test::mnist_dir(), Split::Test);
  const ModelDesc d = make_vae(2);
  TrainConfig cfg = small_config(test::fresh_seed(), 128, 1.0);
  cfg.epochs = 3;
  TrainState st = fresh_state(d, cfg.seed);
  std::vector<EpochMetrics> epochs;
  train_gpu(cfg, GpuOptions{}, d, ds.images, st,
            [&](const EpochMetrics& m) { epochs.push_back(m); });
  REQUIRE(epochs.size() == 3);
  for (const EpochMetrics& m : epochs) INFO("epoch " << m.epoch << " loss " << m.loss);
  // An untrained model scores about 784 ln 2 = 543; the Keras example averaged 254 over its
  // first epoch (547 steps), so after 237 steps the epoch mean is well under half of 543.
  REQUIRE(epochs[0].loss < 543.0);
  REQUIRE(epochs[2].loss < epochs[0].loss);
  REQUIRE(epochs[2].loss < 0.5 * 543.0);
}

TEST_CASE("bf16 mixed-precision training on the MNIST test set follows the fp32 run",
          "[gpu][trainer][mnist][bf16]") {
  const Dataset ds = load_dataset(test::mnist_dir(), Split::Test);
  const ModelDesc d = make_vae(2);
  TrainConfig cfg = small_config(test::fresh_seed(), 128, 1.0);
  cfg.epochs = 3;
  INFO("seed " << cfg.seed);
  // The same seed: the same initial parameters, batch order and noise; only the precision
  // differs.
  std::vector<EpochMetrics> runs[2];
  for (int bf16 = 0; bf16 < 2; ++bf16) {
    GpuOptions opts;
    opts.bf16 = bf16 == 1;
    TrainState st = fresh_state(d, cfg.seed);
    train_gpu(cfg, opts, d, ds.images, st, [&](const EpochMetrics& m) { runs[bf16].push_back(m); });
    REQUIRE(runs[bf16].size() == 3);
  }
  const std::vector<EpochMetrics>& fp32 = runs[0];
  const std::vector<EpochMetrics>& bf16 = runs[1];
  std::string curves;
  for (size_t e = 0; e < 3; ++e)
    curves += " epoch " + std::to_string(e + 1) + ": fp32 " + std::to_string(fp32[e].loss) +
              ", bf16 " + std::to_string(bf16[e].loss) + ";";
  INFO("mean losses" << curves);
  for (const EpochMetrics& m : bf16) {
    REQUIRE(std::isfinite(m.loss));
    REQUIRE(std::isfinite(m.kl));
  }
  // It learns as the fp32 run does (the bounds of the fp32 test above).
  REQUIRE(bf16[0].loss < 543.0);
  REQUIRE(bf16[2].loss < bf16[0].loss);
  REQUIRE(bf16[2].loss < 0.5 * 543.0);
  // LOOSE: the benchmarks' rule for two final losses (BENCHMARKS.md): |a - b| <= max(2% of the
  // larger, 3 nats, half the larger drop over the last epoch). bf16 rounding perturbs every
  // step, so the two runs drift apart although they start together; the loss still falls tens
  // of nats an epoch here, and the same learning a little ahead or behind moves the last
  // epoch's mean by a few nats. The rule's 2% (~5 nats at ~250) is well below the spread
  // between seeds (236-263 nats in the benchmarks' CPU check), so a bf16 step that trains
  // noticeably worse than fp32 fails.
  const double larger = std::max(fp32[2].loss, bf16[2].loss);
  const double drop = std::max(fp32[1].loss - fp32[2].loss, bf16[1].loss - bf16[2].loss);
  const double tolerance = std::max({0.02 * larger, 3.0, 0.5 * drop});
  INFO("final loss fp32 " << fp32[2].loss << " bf16 " << bf16[2].loss << ", tolerance "
                          << tolerance);
  REQUIRE(std::abs(bf16[2].loss - fp32[2].loss) <= tolerance);
}
