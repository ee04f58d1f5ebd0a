// Training configuration, per-epoch metrics and the CPU trainer (the `--device cpu` path).
//
// The CPU trainer runs the reference model (cpu_model.h) step by step: gather a batch from
// the epoch permutation, draw eps for the step, forward with the fused loss, backward,
// one Adam step over the flat parameter buffer. Slow, but the same numbers as the reference
// the GPU path is tested against.
//
// Epochs are numbered globally (1-based) and the state counts the epochs it has completed, so
// a trainer handed a resumed state runs epochs state.epoch + 1 .. cfg.epochs. Every random
// draw is a pure function of (seed, epoch) for the permutation and (seed, step) for the noise,
// so two epochs plus a resume of two more give the same bits as four epochs straight.
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
  std::string out_dir;         // the run folder
  std::string device = "gpu";  // "gpu" or "cpu"
  int epochs = 30;             // the total: training ends after this (global) epoch
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

// Model state owned by a trainer: the flat parameter buffer and the Adam moments. With the
// seed, (step, epoch) is the whole random state (Philox is counter-based).
struct TrainState {
  std::vector<float> params, adam_m, adam_v;
  int64_t step = 0;   // Adam steps taken
  int64_t epoch = 0;  // epochs completed; training resumes at epoch + 1
};

// Progress inside an epoch, reported after every step (for a live progress line).
struct StepProgress {
  int epoch = 0;       // 1-based, global
  int64_t step = 0;    // steps of this epoch done (1-based)
  int64_t steps = 0;   // steps in the epoch
  int64_t images = 0;  // images of this epoch done
  double seconds = 0;  // since the epoch began
  double loss = 0;     // mean loss of the epoch so far; NaN where unknown (the GPU path)
};

// on_epoch runs after every epoch, with `state` (params, moments, step, epoch) already
// describing the end of that epoch, so it may checkpoint it.
using EpochCallback = std::function<void(const EpochMetrics&)>;
using StepCallback = std::function<void(const StepProgress&)>;

// Trains `state` (initialised, or resumed) from epoch state.epoch + 1 to cfg.epochs on the
// images; calls on_step (if set) after every step and on_epoch after every epoch.
void train_cpu(const TrainConfig& cfg, const ModelDesc& desc, const ImageSet& images,
               TrainState& state, const EpochCallback& on_epoch,
               const StepCallback& on_step = nullptr);

}  // namespace cuvae
