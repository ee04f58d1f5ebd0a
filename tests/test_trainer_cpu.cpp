// The CPU trainer's epoch metrics (trainer_cpu.h), against an epoch replayed step by step in the
// test from the public pieces (permutation, gather, noise, the reference model, Adam).
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "host/core/batch.h"
#include "host/cpu/cpu_model.h"
#include "host/cpu/trainer_cpu.h"
#include "tests/fixtures.h"
#include "tests/test_support.h"

using namespace cuvae;

TEST_CASE("the epoch loss is reconstruction + beta * KL, the image-weighted mean of the steps'",
          "[trainer][slow]") {
  const uint64_t seed = test::fresh_seed();
  // 0: no KL at all; 0.5 and 4: a weight that a dropped or misplaced beta would change.
  const double beta = GENERATE(0.0, 0.5, 4.0);
  INFO("seed " << seed << " beta " << beta);
  const ModelDesc d = make_vae(2);
  const ImageSet images = test::synthetic_images(seed, 21);  // batch 8: 8 + 8 + a remainder of 5
  TrainConfig cfg = test::small_config(seed, 8, beta);
  cfg.epochs = 2;
  const TrainState fresh = test::fresh_state(d, seed);

  TrainState state = fresh;
  std::vector<EpochMetrics> got;
  train_cpu(cfg, d, images, state, [&](const EpochMetrics& m) { got.push_back(m); });
  REQUIRE(got.size() == 2);

  // The same two epochs replayed here.
  TrainState r = fresh;
  std::vector<float> grads(d.num_params);
  for (int epoch = 1; epoch <= 2; ++epoch) {
    const std::vector<int32_t> perm = epoch_permutation(cfg.seed, epoch, images.count);
    double recon_sum = 0, kl_sum = 0;
    for (int64_t first = 0; first < images.count; first += cfg.batch_size) {
      const int count = int(std::min<int64_t>(cfg.batch_size, images.count - first));
      cpu::Activations<float> a;
      a.resize(d, count);
      gather_batch(a.x.data(), images.pixels.data(), perm.data() + first, count, kImagePixels);
      fill_eps(a.eps.data(), cfg.seed, uint64_t(r.step), count, d.latent_dim);
      const LossParts parts = cpu::model_forward(d, r.params.data(), a, beta);
      // The batch's own loss obeys the formula too.
      REQUIRE(parts.loss == Approx(parts.recon + beta * parts.kl).epsilon(1e-12));
      cpu::model_backward(d, r.params.data(), a, beta, grads.data());
      ++r.step;
      cpu::adam_step(r.params.data(), r.adam_m.data(), r.adam_v.data(), grads.data(), d.num_params,
                     cfg.adam, r.step);
      recon_sum += parts.recon * count;
      kl_sum += parts.kl * count;
    }
    const EpochMetrics& m = got[size_t(epoch - 1)];
    INFO("epoch " << epoch << ": loss " << m.loss << " recon " << m.recon << " kl " << m.kl);
    const double n = double(images.count);
    CHECK(m.images == images.count);
    CHECK(m.recon == Approx(recon_sum / n).epsilon(1e-12));
    CHECK(m.kl == Approx(kl_sum / n).epsilon(1e-12));
    CHECK(m.kl > 0);  // so that the weight shows
    CHECK(m.loss == Approx((recon_sum + beta * kl_sum) / n).epsilon(1e-12));
  }
  CHECK(state.params == r.params);  // the replay is the trainer's run
}

TEST_CASE("the fast engine's epochs follow the reference's, remainder batches included",
          "[trainer][slow]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  const ModelDesc d = make_vae(2);
  const ImageSet images = test::synthetic_images(seed, 21);  // batch 8: 8 + 8 + a remainder of 5
  const TrainState fresh = test::fresh_state(d, seed);
  std::vector<EpochMetrics> fast_m, ref_m;
  TrainState fast = fresh, ref = fresh;
  TrainConfig cfg = test::small_config(seed, 8, 1.0, "cpu");
  cfg.epochs = 2;
  train_cpu(cfg, d, images, fast, [&](const EpochMetrics& m) { fast_m.push_back(m); });
  cfg.device = "cpu-ref";
  train_cpu(cfg, d, images, ref, [&](const EpochMetrics& m) { ref_m.push_back(m); });
  REQUIRE(fast_m.size() == 2);
  REQUIRE(ref_m.size() == 2);
  // The same six steps in fp32 with other summation orders: the losses within 1e-5 of each
  // other (the first step's differ by ~1e-7; six Adam steps amplify the gradients' 1e-6
  // differences only where a gradient element is near 0, where Adam's step is +-lr either way).
  for (size_t e = 0; e < 2; ++e) {
    INFO("epoch " << e + 1 << ": fast " << fast_m[e].loss << ", reference " << ref_m[e].loss);
    CHECK(fast_m[e].images == 21);
    CHECK(fast_m[e].steps == 3);
    CHECK(std::abs(fast_m[e].loss - ref_m[e].loss) <= 1e-5 * ref_m[e].loss);
    CHECK(std::abs(fast_m[e].kl - ref_m[e].kl) <= 1e-3 * ref_m[e].kl + 1e-6);
  }
  REQUIRE(fast.step == 6);
  // Parameters after six Adam steps of lr 1e-3: each moved by up to 6e-3; an element whose
  // gradient is near 0 may move the other way (2 lr per step at most), which the L2 norm over
  // all 134,165 parameters (~20) dilutes far below 1e-3.
  REQUIRE_REL_L2(test::compare(fast.params.data(), ref.params.data(), d.num_params), "params",
                 1e-3);
}

TEST_CASE("KL warm-up: each step's KL weight is beta (t - 1) / W over the ramp, then beta",
          "[trainer][slow]") {
  const uint64_t seed = test::fresh_seed();
  const double beta = GENERATE(0.5, 3.0);
  INFO("seed " << seed << " beta " << beta);
  const ModelDesc d = make_vae(2);
  const ImageSet images = test::synthetic_images(seed, 21);  // batch 8: 3 steps an epoch
  TrainConfig cfg = test::small_config(seed, 8, beta);
  cfg.epochs = 3;
  cfg.beta_warmup = 2;  // W = 6 steps
  const TrainState fresh = test::fresh_state(d, seed);

  TrainState state = fresh;
  std::vector<EpochMetrics> got;
  train_cpu(cfg, d, images, state, [&](const EpochMetrics& m) { got.push_back(m); });
  REQUIRE(got.size() == 3);

  // The same epochs replayed with the weight written out: 0, beta/6, ..., 5 beta/6 (rounded
  // to float, as the GPU's step table holds it), then beta.
  TrainState r = fresh;
  std::vector<float> grads(d.num_params);
  for (int epoch = 1; epoch <= 3; ++epoch) {
    const std::vector<int32_t> perm = epoch_permutation(cfg.seed, epoch, images.count);
    double recon_sum = 0, kl_sum = 0, weighted = 0;
    for (int64_t first = 0; first < images.count; first += cfg.batch_size) {
      const int count = int(std::min<int64_t>(cfg.batch_size, images.count - first));
      const int64_t t = r.step + 1;
      const double w = t <= 6 ? double(float(beta * double(t - 1) / 6.0)) : beta;
      cpu::Activations<float> a;
      a.resize(d, count);
      gather_batch(a.x.data(), images.pixels.data(), perm.data() + first, count, kImagePixels);
      fill_eps(a.eps.data(), cfg.seed, uint64_t(r.step), count, d.latent_dim);
      const LossParts parts = cpu::model_forward(d, r.params.data(), a, w);
      cpu::model_backward(d, r.params.data(), a, w, grads.data());
      ++r.step;
      cpu::adam_step(r.params.data(), r.adam_m.data(), r.adam_v.data(), grads.data(), d.num_params,
                     cfg.adam, r.step);
      recon_sum += parts.recon * count;
      kl_sum += parts.kl * count;
      weighted += w * parts.kl * count;
    }
    const EpochMetrics& m = got[size_t(epoch - 1)];
    INFO("epoch " << epoch << ": loss " << m.loss << " kl " << m.kl << " weight " << m.kl_weight);
    const double n = double(images.count);
    CHECK(m.recon == Approx(recon_sum / n).epsilon(1e-12));
    CHECK(m.kl == Approx(kl_sum / n).epsilon(1e-12));
    CHECK(m.loss == Approx((recon_sum + weighted) / n).epsilon(1e-12));  // what was trained
    CHECK(m.loss == m.recon + m.kl_weight * m.kl);  // the logged identity, exactly
    if (epoch <= 2) {
      CHECK(m.kl_weight == Approx(weighted / kl_sum).epsilon(1e-12));
      CHECK(m.kl_weight < beta);
    } else {
      CHECK(m.kl_weight == beta);
    }
  }
  CHECK(got[0].kl_weight < got[1].kl_weight);
  CHECK(state.params == r.params);  // the replay is the trainer's run

  // Without a warm-up the same run differs from the first step on (its KL weight is beta).
  TrainConfig plain = cfg;
  plain.beta_warmup = 0;
  plain.epochs = 1;
  TrainState p = fresh;
  train_cpu(plain, d, images, p, [&](const EpochMetrics& m) { CHECK(m.kl_weight == beta); });
  CHECK(p.params != r.params);
}
