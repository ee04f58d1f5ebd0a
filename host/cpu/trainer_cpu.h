// The CPU trainer (`--device cpu` and `--device cpu-ref`); the training types it speaks are in
// host/core/train_types.h.
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

#include "host/core/images.h"
#include "host/core/model.h"
#include "host/core/train_types.h"

namespace cuvae {

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

}  // namespace cuvae
