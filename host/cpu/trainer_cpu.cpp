// CPU trainer (trainer_cpu.h).
#include "host/cpu/trainer_cpu.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <utility>

#include "host/core/batch.h"
#include "host/core/error.h"
#include "host/cpu/cpu_fast.h"
#include "host/cpu/cpu_model.h"

namespace cuvae {
namespace {

// One engine's model at one batch size, as the training loop drives it.
class StepModel {
 public:
  virtual ~StepModel() = default;
  virtual int batch() const = 0;
  virtual float* x() = 0;
  virtual float* eps() = 0;
  virtual LossParts forward(const float* params, double beta) = 0;
  virtual void backward(const float* params, double beta, float* grads) = 0;
  // The first activation of the forward pass holding a NaN or an infinity.
  virtual std::string first_nonfinite_activation() const = 0;
};

class ReferenceStep final : public StepModel {
 public:
  ReferenceStep(const ModelDesc& desc, int batch) : desc_(desc) { a_.resize(desc, batch); }
  int batch() const override { return a_.batch; }
  float* x() override { return a_.x.data(); }
  float* eps() override { return a_.eps.data(); }
  LossParts forward(const float* params, double beta) override {
    return cpu::model_forward(desc_, params, a_, beta);
  }
  void backward(const float* params, double beta, float* grads) override {
    cpu::model_backward(desc_, params, a_, beta, grads);
  }
  std::string first_nonfinite_activation() const override {
    for (const int slot : desc_.forward_slots())
      for (const float v : a_.slot(slot))
        if (!std::isfinite(v)) return desc_.slot_name(slot);
    return "the loss";
  }

 private:
  const ModelDesc& desc_;
  cpu::Activations<float> a_;
};

class FastStep final : public StepModel {
 public:
  FastStep(const ModelDesc& desc, int batch) : m_(desc, batch) {}
  int batch() const override { return m_.batch(); }
  float* x() override { return m_.x(); }
  float* eps() override { return m_.eps(); }
  LossParts forward(const float* params, double beta) override { return m_.forward(params, beta); }
  void backward(const float* params, double beta, float* grads) override {
    m_.backward(params, beta, grads);
  }
  std::string first_nonfinite_activation() const override {
    return m_.first_nonfinite_activation();
  }

 private:
  cpu::FastModel m_;
};

std::unique_ptr<StepModel> make_step_model(const std::string& device, const ModelDesc& desc,
                                           int batch) {
  if (device == "cpu-ref") return std::make_unique<ReferenceStep>(desc, batch);
  if (device == "cpu") return std::make_unique<FastStep>(desc, batch);
  throw Error("train_cpu: no CPU engine called '" + device + "'");
}

}  // namespace

bool train_cpu(const TrainConfig& cfg, const ModelDesc& desc, const ImageSet& images,
               TrainState& state, const EpochCallback& on_epoch, const StepCallback& on_step,
               const StopCheck& should_stop) {
  const int64_t n = images.count;
  if (n < 1) throw Error("train_cpu: no training images");
  const int pixels = images.rows * images.cols;
  if (pixels != kImagePixels) throw Error("train_cpu: images are not 28x28");
  const int64_t steps_per_epoch = check_state_position(state, n, cfg.batch_size);
  // The full batch's model, and the remainder's, made when the epoch's last batch needs it.
  const std::unique_ptr<StepModel> full =
      make_step_model(cfg.device, desc, int(std::min<int64_t>(cfg.batch_size, n)));
  std::unique_ptr<StepModel> last;
  std::vector<float> grads(desc.num_params);
  const KlSchedule kl = kl_schedule(cfg, steps_per_epoch);

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
    double weighted_kl_sum = std::exchange(state.epoch_weighted_kl_sum, 0.0);
    const bool warming = kl.warming(int64_t(epoch - 1) * steps_per_epoch + 1);
    const int64_t images_before = m.images;
    for (int64_t first = m.images; first < n; first += cfg.batch_size) {
      if (should_stop && should_stop()) {
        state.epoch_step = m.steps;
        state.epoch_recon_sum = recon_sum;
        state.epoch_kl_sum = kl_sum;
        state.epoch_weighted_kl_sum = weighted_kl_sum;
        return false;
      }
      const int count = int(std::min<int64_t>(cfg.batch_size, n - first));
      if (count != full->batch() && !last) last = make_step_model(cfg.device, desc, count);
      StepModel& a = count == full->batch() ? *full : *last;
      gather_batch(a.x(), images.pixels.data(), perm.data() + first, count, pixels);
      fill_eps(a.eps(), cfg.seed, uint64_t(state.step), count, desc.latent_dim);
      const int64_t step = state.step + 1;
      const double weight = kl.weight(step);
      const LossParts loss = a.forward(state.params.data(), weight);
      if (!std::isfinite(loss.loss))
        throw TrainingDiverged("training diverged at step " + std::to_string(step) + " (epoch " +
                               std::to_string(epoch) + "): the loss is not finite; first bad " +
                               "tensor: " + a.first_nonfinite_activation());
      a.backward(state.params.data(), weight, grads.data());
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
      if (warming) weighted_kl_sum += weight * loss.kl * count;
      m.images += count;
      ++m.steps;
      if (on_step) {
        StepProgress p;
        p.epoch = epoch;
        p.step = m.steps;
        p.steps = steps_per_epoch;
        p.images = m.images;
        p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        p.loss = (recon_sum + (warming ? weighted_kl_sum : cfg.beta * kl_sum)) / double(m.images);
        on_step(p);
      }
    }
    finish_epoch_loss(m, recon_sum, kl_sum, weighted_kl_sum, warming, cfg.beta,
                      kl.weight(state.step));
    m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    m.images_per_s = double(m.images - images_before) / std::max(m.seconds, 1e-9);
    state.epoch = epoch;
    on_epoch(m);
  }
  return true;
}

}  // namespace cuvae
