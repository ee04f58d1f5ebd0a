// CPU trainer (trainer_cpu.h).
#include "host/trainer_cpu.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "host/batch.h"
#include "host/cpu_model.h"
#include "host/error.h"

namespace cuvae {

void train_cpu(const TrainConfig& cfg, const ModelDesc& desc, const ImageSet& images,
               TrainState& state, const EpochCallback& on_epoch, const StepCallback& on_step) {
  const int64_t n = images.count;
  if (n < 1) throw Error("train_cpu: no training images");
  const int pixels = images.rows * images.cols;
  if (pixels != kImagePixels) throw Error("train_cpu: images are not 28x28");
  cpu::Activations<float> full, last;
  full.resize(desc, int(std::min<int64_t>(cfg.batch_size, n)));
  std::vector<float> grads(desc.num_params);
  if (state.epoch < 0 || state.epoch > INT32_MAX)
    throw Error("train_cpu: bad epoch count in the state");
  const int64_t steps_per_epoch = (n + cfg.batch_size - 1) / cfg.batch_size;

  for (int epoch = int(state.epoch) + 1; epoch <= cfg.epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<int32_t> perm = epoch_permutation(cfg.seed, epoch, n);
    EpochMetrics m;
    m.epoch = epoch;
    double recon_sum = 0, kl_sum = 0;  // sums over images
    for (int64_t first = 0; first < n; first += cfg.batch_size) {
      const int count = int(std::min<int64_t>(cfg.batch_size, n - first));
      cpu::Activations<float>& a = count == full.batch ? full : last;
      if (a.batch != count) a.resize(desc, count);
      gather_batch(a.x.data(), images.pixels.data(), perm.data() + first, count, pixels);
      fill_eps(a.eps.data(), cfg.seed, uint64_t(state.step), count, desc.latent_dim);
      const cpu::LossParts loss = cpu::model_forward(desc, state.params.data(), a, cfg.beta);
      if (!std::isfinite(loss.loss))
        throw Error("training diverged: the loss of step " + std::to_string(state.step + 1) +
                    " is not finite");
      cpu::model_backward(desc, state.params.data(), a, cfg.beta, grads.data());
      ++state.step;
      cpu::adam_step(state.params.data(), state.adam_m.data(), state.adam_v.data(), grads.data(),
                     desc.num_params, cfg.adam, state.step);
      recon_sum += loss.recon * count;
      kl_sum += loss.kl * count;
      m.images += count;
      ++m.steps;
      if (on_step) {
        StepProgress p;
        p.epoch = epoch;
        p.step = m.steps;
        p.steps = steps_per_epoch;
        p.images = m.images;
        p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        p.loss = (recon_sum + cfg.beta * kl_sum) / double(m.images);
        on_step(p);
      }
    }
    m.recon = recon_sum / double(m.images);
    m.kl = kl_sum / double(m.images);
    m.loss = m.recon + cfg.beta * m.kl;
    m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    m.images_per_s = double(m.images) / std::max(m.seconds, 1e-9);
    state.epoch = epoch;
    on_epoch(m);
  }
}

}  // namespace cuvae
