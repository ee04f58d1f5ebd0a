// Training configuration, per-epoch metrics and the CPU trainer (`--device cpu` and
// `--device cpu-ref`).
//
// The CPU trainer runs the model step by step: gather a batch from the epoch permutation, draw
// eps for the step, forward with the fused loss, backward, one Adam step over the flat
// parameter buffer. Two engines compute the step: the fast one (cpu_fast.h, oneDNN), which
// `--device cpu` selects, and the reference (cpu_model.h), slow but the oracle every engine is
// tested against, which `--device cpu-ref` selects. Both share everything else here, Adam
// included, so they differ only in the rounding of the model's sums.
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
  std::string device = "gpu";  // "gpu", "cpu" (the fast engine) or "cpu-ref" (the reference)
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
  // GPU: device time of the epoch in ms, between CUDA events recorded on the compute stream
  // when the epoch starts (before its permutation is drawn) and after its last step; 0 on
  // the CPU.
  double device_ms = 0;
};

// Model state owned by a trainer: the flat parameter buffer and the Adam moments. With the
// seed, (step, epoch) is the whole random state (Philox is counter-based).
struct TrainState {
  std::vector<float> params, adam_m, adam_v;
  int64_t step = 0;   // Adam steps taken
  int64_t epoch = 0;  // epochs completed; training resumes at epoch + 1
  // Position inside epoch + 1 when training stopped in the middle of it (an interrupt): the
  // steps of that epoch done and the sums over their images of the per-image reconstruction
  // and KL terms, so the resumed epoch's metrics are those of an uninterrupted one. All 0 at
  // an epoch boundary. step == epoch * steps_per_epoch + epoch_step.
  int64_t epoch_step = 0;
  double epoch_recon_sum = 0, epoch_kl_sum = 0;
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
// Asked after every step: true stops training there (e.g. a signal arrived).
using StopCheck = std::function<bool()>;

// Trains `state` (initialised, or resumed, possibly mid-epoch) from epoch state.epoch + 1 to
// cfg.epochs on the images; calls on_step (if set) after every step and on_epoch after every
// epoch. Returns true when every epoch is done, false when should_stop asked to stop first:
// `state` then describes the position reached (TrainState::epoch_step) and can be saved and
// resumed with the same result as an uninterrupted run.
// A NaN or infinity in the loss, a gradient or a parameter throws TrainingDiverged naming
// the step and the first bad tensor (the activations in forward order, then the gradients,
// then the parameters after the update); `state` is then not to be saved.
bool train_cpu(const TrainConfig& cfg, const ModelDesc& desc, const ImageSet& images,
               TrainState& state, const EpochCallback& on_epoch,
               const StepCallback& on_step = nullptr, const StopCheck& should_stop = nullptr);

// Checks a resumed state's position against the run (throws Error when inconsistent) and
// returns the number of steps per epoch, ceil(images / batch_size).
int64_t check_state_position(const TrainState& state, int64_t images, int batch_size);

}  // namespace cuvae
