// The GPU trainer against the CPU reference: one full step (loss, every parameter gradient,
// parameters after Adam), a short run with a remainder batch, bit-reproducibility, CUDA-graph
// replay against eager launches, and stopping between any two steps and resuming. Runs
// only with a usable GPU (gpu_main.cpp skips otherwise).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

#include "host/batch.h"
#include "host/cpu_model.h"
#include "host/idx.h"
#include "host/trainer_gpu.h"
#include "tests/fixtures.h"
#include "tests/test_support.h"

using namespace cuvae;
using cuvae::test::compare;
using namespace cuvae::test;

TEST_CASE("one GPU training step equals the CPU reference", "[gpu][trainer]") {
  const uint64_t seed = test::fresh_seed();
  const int batch = GENERATE(1, 3, 127, 129);
  const int dim = GENERATE(1, 2, 17);
  const double beta = dim == 17 ? 0.5 : 1.0;
  GpuOptions opts;
  opts.fused = GENERATE(true, false);  // the fused kernels and the separate ones they replace
  INFO("seed " << seed << " batch " << batch << " D " << dim << " beta " << beta << " fused "
               << opts.fused);
  const ModelDesc d = make_vae(dim);
  const TrainConfig cfg = small_config(seed, batch, beta);
  TrainState st = fresh_state(d, seed);
  GpuTrainer gpu(d, cfg, opts, batch, 0);
  gpu.set_state(st);

  const ImageSet img = synthetic_images(seed, batch);
  std::vector<int32_t> index(static_cast<size_t>(batch));
  for (int i = 0; i < batch; ++i) index[size_t(i)] = i;
  cpu::Activations<float> a;
  a.resize(d, batch);
  gather_batch(a.x.data(), img.pixels.data(), index.data(), batch, kImagePixels);

  const cpu::LossParts lg = gpu.step_on_batch(a.x.data(), batch, false);
  std::vector<float> g_gpu(d.num_params);
  test::poison(g_gpu);
  gpu.download_grads(g_gpu.data());
  gpu.download_eps(a.eps.data(), batch);  // the CPU runs on the GPU's noise
  std::vector<float> eps_cpu(a.eps.size());
  fill_eps(eps_cpu.data(), seed, 0, batch, dim);
  // The GPU draws eps with its own logf/cosf: a few ulp from the host's.
  REQUIRE_REL_L2(compare(a.eps.data(), eps_cpu.data(), eps_cpu.size()), "eps", 1e-6);

  const cpu::LossParts lc = cpu::model_forward(d, st.params.data(), a, beta);
  std::vector<float> g_cpu(d.num_params);
  cpu::model_backward(d, st.params.data(), a, beta, g_cpu.data());
  INFO("loss gpu " << lg.loss << " cpu " << lc.loss);
  // fp32 on both sides, different summation orders: 1e-5 is ample for a loss near 540.
  REQUIRE(std::abs(lg.loss - lc.loss) <= 1e-5 * std::abs(lc.loss));
  REQUIRE(std::abs(lg.recon - lc.recon) <= 1e-5 * std::abs(lc.recon));
  REQUIRE(std::abs(lg.kl - lc.kl) <= 1e-4 * std::abs(lc.kl) + 1e-6);
  for (const ParamTensor& p : d.params)  // the bound for every gradient
    REQUIRE_REL_L2(compare(g_gpu.data() + p.offset, g_cpu.data() + p.offset, p.numel), p.name,
                   1e-4);

  // Now with Adam: the GPU's parameters after one step against the CPU's.
  GpuTrainer gpu2(d, cfg, opts, batch, 0);
  gpu2.set_state(st);
  gpu2.step_on_batch(a.x.data(), batch, true);
  TrainState after;
  gpu2.get_state(after);
  REQUIRE(after.step == 1);
  TrainState cpu_after = st;
  cpu::adam_step(cpu_after.params.data(), cpu_after.adam_m.data(), cpu_after.adam_v.data(),
                 g_cpu.data(), d.num_params, cfg.adam, 1);
  REQUIRE_REL_L2(compare(after.params.data(), cpu_after.params.data(), d.num_params),
                 "params after Adam", 1e-4);
  REQUIRE_REL_L2(compare(after.adam_m.data(), cpu_after.adam_m.data(), d.num_params), "adam m",
                 1e-4);
  REQUIRE_REL_L2(compare(after.adam_v.data(), cpu_after.adam_v.data(), d.num_params), "adam v",
                 1e-4);
}

TEST_CASE("a GPU epoch with a remainder batch follows the CPU trainer", "[gpu][trainer]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  const ModelDesc d = make_vae(2);
  TrainConfig cfg = small_config(seed, 128, 1.0);
  const ImageSet img = synthetic_images(seed, 300);  // batches of 128, 128, 44
  TrainState cpu_state = fresh_state(d, seed), gpu_state = cpu_state;
  EpochMetrics cpu_m, gpu_m;
  train_cpu(cfg, d, img, cpu_state, [&](const EpochMetrics& m) { cpu_m = m; });
  train_gpu(cfg, GpuOptions{}, d, img, gpu_state, [&](const EpochMetrics& m) { gpu_m = m; });
  REQUIRE(gpu_m.images == 300);
  REQUIRE(gpu_m.steps == 3);
  REQUIRE(gpu_state.step == 3);
  INFO("loss gpu " << gpu_m.loss << " cpu " << cpu_m.loss);
  REQUIRE(std::abs(gpu_m.loss - cpu_m.loss) <= 1e-4 * cpu_m.loss);
  REQUIRE(gpu_m.loss == gpu_m.recon + cfg.beta * gpu_m.kl);
  // Three Adam steps amplify tiny gradient differences where |g| ~ eps; over the whole
  // parameter vector the difference stays far below the update size (~3e-3 per element).
  REQUIRE_REL_L2(compare(gpu_state.params.data(), cpu_state.params.data(), d.num_params),
                 "params after 3 steps", 1e-3);
}

TEST_CASE("GPU training is bit-reproducible with deterministic algorithms", "[gpu][trainer]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  const ModelDesc d = make_vae(2);
  TrainConfig cfg = small_config(seed, 64, 1.0);
  cfg.epochs = 3;
  const ImageSet img = synthetic_images(seed, 1000);  // remainder 40
  std::vector<double> curve[2];
  TrainState states[2];
  for (int run = 0; run < 2; ++run) {
    states[run] = fresh_state(d, seed);
    train_gpu(cfg, GpuOptions{}, d, img, states[run],
              [&](const EpochMetrics& m) { curve[run].push_back(m.loss); });
  }
  REQUIRE(curve[0].size() == 3);
  REQUIRE(curve[0] == curve[1]);  // exact, not approximate
  REQUIRE(std::memcmp(states[0].params.data(), states[1].params.data(),
                      d.num_params * sizeof(float)) == 0);
}

TEST_CASE("replaying the step from a CUDA graph equals launching it eagerly, bit for bit",
          "[gpu][trainer]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  const ModelDesc d = make_vae(2);
  TrainConfig cfg = small_config(seed, 64, 1.0);
  const ImageSet img = synthetic_images(seed, 1000);  // 15 full batches and one of 40
  std::vector<double> curve[2];
  TrainState states[2];
  for (int graph = 0; graph < 2; ++graph) {
    INFO("CUDA graph " << graph);
    GpuOptions opts;
    opts.cuda_graph = graph == 1;
    GpuTrainer trainer(d, cfg, opts, 64, 40);
    trainer.set_state(fresh_state(d, seed));
    trainer.upload_images(img);
    for (int epoch = 1; epoch <= 2; ++epoch) {
      const std::optional<EpochMetrics> m = trainer.run_epoch(epoch);
      REQUIRE(m);
      REQUIRE(m->steps == 16);
      curve[graph].push_back(m->loss);
    }
    REQUIRE(trainer.uses_cuda_graph() == opts.cuda_graph);
    REQUIRE_THAT(trainer.describe(), Catch::Contains(graph ? "CUDA graph of" : "eager launches"));
    trainer.get_state(states[graph]);
  }
  REQUIRE(states[1].step == 32);
  REQUIRE(curve[0] == curve[1]);  // exact
  REQUIRE(std::memcmp(states[0].params.data(), states[1].params.data(),
                      d.num_params * sizeof(float)) == 0);
  REQUIRE(std::memcmp(states[0].adam_v.data(), states[1].adam_v.data(),
                      d.num_params * sizeof(float)) == 0);
}

TEST_CASE("a GPU run stopped between any two steps and resumed equals the straight run",
          "[gpu][trainer]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  const ModelDesc d = make_vae(2);
  TrainConfig cfg = small_config(seed, 64, 0.5);
  cfg.epochs = 2;
  const ImageSet img = synthetic_images(seed, 300);  // 64 x 4 + 44: 5 steps an epoch
  const TrainState fresh = fresh_state(d, seed);
  TrainState straight = fresh;
  std::vector<EpochMetrics> straight_m;
  REQUIRE(train_gpu(cfg, GpuOptions{}, d, img, straight,
                    [&](const EpochMetrics& m) { straight_m.push_back(m); }));
  REQUIRE(straight.step == 10);
  for (int64_t k = 0; k < straight.step; ++k) {
    INFO("stop after step " << k);
    TrainState st = fresh;
    std::vector<EpochMetrics> metrics;
    int64_t asked = 0;
    REQUIRE_FALSE(train_gpu(
        cfg, GpuOptions{}, d, img, st, [&](const EpochMetrics& m) { metrics.push_back(m); },
        nullptr, [&] { return asked++ == k; }));
    REQUIRE(st.step == k);
    REQUIRE(st.epoch == k / 5);
    REQUIRE(st.epoch_step == k % 5);
    REQUIRE(train_gpu(cfg, GpuOptions{}, d, img, st,
                      [&](const EpochMetrics& m) { metrics.push_back(m); }));
    REQUIRE(std::memcmp(st.params.data(), straight.params.data(), d.num_params * sizeof(float)) ==
            0);
    REQUIRE(metrics.size() == 2);
    for (size_t e = 0; e < 2; ++e) {
      INFO("epoch " << e + 1);
      CHECK(metrics[e].images == 300);
      CHECK(metrics[e].loss == straight_m[e].loss);
      CHECK(metrics[e].kl == straight_m[e].kl);
    }
  }
}
