// CPU trainer (trainer_cpu.h).
#include "host/trainer_cpu.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>

#include "host/batch.h"
#include "host/cpu_model.h"
#include "host/error.h"

namespace cuvae {
namespace {

// The first activation of the forward pass holding a NaN or an infinity.
std::string first_nonfinite_activation(const cpu::Activations<float>& a) {
  const std::pair<const char*, const std::vector<float>*> order[] = {
      {"the output of encoder.conv1", &a.h1},   {"the output of encoder.conv2", &a.h2},
      {"the output of encoder.fc", &a.h3},      {"mu (encoder.mu)", &a.mu},
      {"logvar (encoder.logvar)", &a.logvar},   {"z", &a.z},
      {"the output of decoder.fc", &a.d0},      {"the output of decoder.deconv1", &a.d1},
      {"the output of decoder.deconv2", &a.d2}, {"the logits (decoder.out)", &a.logits}};
  for (const auto& [name, values] : order)
    for (const float v : *values)
      if (!std::isfinite(v)) return name;
  return "the loss";
}

}  // namespace

int64_t check_state_position(const TrainState& state, int64_t images, int batch_size) {
  if (images < 1 || batch_size < 1) throw Error("training: no images or a bad batch size");
  if (state.epoch < 0 || state.epoch > INT32_MAX) throw Error("training: bad epoch count");
  const int64_t steps_per_epoch = (images + batch_size - 1) / batch_size;
  if (state.epoch_step < 0 || state.epoch_step >= steps_per_epoch ||
      state.step != state.epoch * steps_per_epoch + state.epoch_step)
    throw Error("training: the state's step counters do not match the data and batch size");
  return steps_per_epoch;
}

bool train_cpu(const TrainConfig& cfg, const ModelDesc& desc, const ImageSet& images,
               TrainState& state, const EpochCallback& on_epoch, const StepCallback& on_step,
               const StopCheck& should_stop) {
  const int64_t n = images.count;
  if (n < 1) throw Error("train_cpu: no training images");
  const int pixels = images.rows * images.cols;
  if (pixels != kImagePixels) throw Error("train_cpu: images are not 28x28");
  const int64_t steps_per_epoch = check_state_position(state, n, cfg.batch_size);
  cpu::Activations<float> full, last;
  full.resize(desc, int(std::min<int64_t>(cfg.batch_size, n)));
  std::vector<float> grads(desc.num_params);

  for (int epoch = int(state.epoch) + 1; epoch <= cfg.epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<int32_t> perm = epoch_permutation(cfg.seed, epoch, n);
    EpochMetrics m;
    m.epoch = epoch;
    // A resumed epoch continues from where the interrupted one stopped.
    m.steps = std::exchange(state.epoch_step, 0);
    m.images = m.steps * cfg.batch_size;
    double recon_sum = std::exchange(state.epoch_recon_sum, 0.0);  // sums over images
    double kl_sum = std::exchange(state.epoch_kl_sum, 0.0);
    const int64_t images_before = m.images;
    for (int64_t first = m.images; first < n; first += cfg.batch_size) {
      if (should_stop && should_stop()) {
        state.epoch_step = m.steps;
        state.epoch_recon_sum = recon_sum;
        state.epoch_kl_sum = kl_sum;
        return false;
      }
      const int count = int(std::min<int64_t>(cfg.batch_size, n - first));
      cpu::Activations<float>& a = count == full.batch ? full : last;
      if (a.batch != count) a.resize(desc, count);
      gather_batch(a.x.data(), images.pixels.data(), perm.data() + first, count, pixels);
      fill_eps(a.eps.data(), cfg.seed, uint64_t(state.step), count, desc.latent_dim);
      const int64_t step = state.step + 1;
      const cpu::LossParts loss = cpu::model_forward(desc, state.params.data(), a, cfg.beta);
      if (!std::isfinite(loss.loss))
        throw TrainingDiverged("training diverged at step " + std::to_string(step) + " (epoch " +
                               std::to_string(epoch) + "): the loss is not finite; first bad " +
                               "tensor: " + first_nonfinite_activation(a));
      cpu::model_backward(desc, state.params.data(), a, cfg.beta, grads.data());
      std::string bad = first_nonfinite_param(desc, grads.data());
      if (!bad.empty())
        throw TrainingDiverged("training diverged at step " + std::to_string(step) + " (epoch " +
                               std::to_string(epoch) + "): non-finite gradient of " + bad);
      ++state.step;
      cpu::adam_step(state.params.data(), state.adam_m.data(), state.adam_v.data(), grads.data(),
                     desc.num_params, cfg.adam, state.step);
      bad = first_nonfinite_param(desc, state.params.data());
      if (!bad.empty())
        throw TrainingDiverged("training diverged at step " + std::to_string(step) + " (epoch " +
                               std::to_string(epoch) + "): the Adam update made " + bad +
                               " non-finite");
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
    m.images_per_s = double(m.images - images_before) / std::max(m.seconds, 1e-9);
    state.epoch = epoch;
    on_epoch(m);
  }
  return true;
}

}  // namespace cuvae
