// Training configuration, per-epoch metrics and the CPU trainer (the `--device cpu` path).
//
// The CPU trainer runs the reference model (cpu_model.h) step by step: gather a batch from
// the epoch permutation, draw eps for the step, forward with the fused loss, backward,
// one Adam step over the flat parameter buffer. Slow, but the same numbers as the reference
// the GPU path is tested against.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "host/cpu_ref.h"
#include "host/idx.h"
#include "host/model.h"

namespace cuvae {

struct TrainConfig {
  std::string data_dir = "data/mnist";
  std::string out_dir = "runs/latest";
  std::string device = "gpu";  // "gpu" or "cpu"
  int epochs = 30;
  int batch_size = 128;
  int latent_dim = 2;
  double beta = 1.0;
  uint64_t seed = 0;
  int64_t limit = 0;  // 0: every training image
  cpu::AdamConfig adam;
};

// Means over the epoch's images of the per-image loss parts; loss = recon + beta * kl exactly
// (with full batches this is the mean of the batch losses).
struct EpochMetrics {
  int epoch = 0;  // 1-based
  int64_t images = 0;
  int64_t steps = 0;
  double loss = 0, recon = 0, kl = 0;
  double seconds = 0;
  double images_per_s = 0;
};

// Model state owned by a trainer: the flat parameter buffer and the Adam moments.
struct TrainState {
  std::vector<float> params, adam_m, adam_v;
  int64_t step = 0;  // Adam steps taken
};

using EpochCallback = std::function<void(const EpochMetrics&)>;

// Trains `state` (already initialised) for cfg.epochs on the images; calls on_epoch after
// every epoch.
void train_cpu(const TrainConfig& cfg, const ModelDesc& desc, const ImageSet& images,
               TrainState& state, const EpochCallback& on_epoch);

}  // namespace cuvae
