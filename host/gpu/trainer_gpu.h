// The GPU trainer: the whole model on one device, driven by the model description.
//
// Owns one flat device buffer each for parameters, gradients and the two Adam moments (named
// views from the description), every activation and activation gradient sized once for the
// largest batch, the training images as uint8 (uploaded once), the epoch permutation, the
// cuDNN/cuBLAS handles bound to the compute stream, and one ConvOp per convolution layer per
// batch size (the full batch and, if the dataset size is not a multiple of it, the remainder).
// A step: gather + normalise the batch on the device, forward (cuDNN/cuBLAS + bias/ReLU
// kernels, fused reparameterization, the output bias fused with the BCE+KL value, gradient and
// loss sums), backward, one Adam launch. Loss sums are accumulated on the device and read back once
// per epoch.
//
// Nothing in a step's launches changes from step to step: the batch's place in the epoch
// permutation and the step's scalars (Adam's t and bias corrections, the noise counter) are
// read on the device from a per-epoch step table at a cursor that the step's last kernel
// advances (host/core/step_scalars.h). So the full-batch step is captured once in a CUDA graph (at
// the second full batch, after one eager step has warmed up cuDNN and cuBLAS) and replayed, one
// launch per step instead of ~50, and the replay is the eager step bit for bit.
// The permutation itself is drawn on the device (cuda/kernels/shuffle.cuh), the CPU trainer's
// order. Per epoch the host uploads the step table and the loss sums' starting values and reads the
// sums back once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "host/core/images.h"
#include "host/core/model.h"
#include "host/core/train_types.h"

namespace cuvae {

class GpuTrainer {
 public:
  // max_batch: the batch size; remainder: size of the epoch's last, smaller batch (0: none).
  GpuTrainer(const ModelDesc& desc, const TrainConfig& cfg, const GpuOptions& opts, int max_batch,
             int remainder);
  ~GpuTrainer();
  GpuTrainer(const GpuTrainer&) = delete;
  GpuTrainer& operator=(const GpuTrainer&) = delete;

  // Uploads parameters, moments and the step count; a state stopped inside an epoch
  // (TrainState::epoch_step > 0) makes the next run_epoch continue from there.
  void set_state(const TrainState& state);
  // Downloads them, with the position inside the epoch when the last run_epoch stopped early.
  // Leaves state.epoch alone (the trainer does not count epochs).
  void get_state(TrainState& state) const;
  void upload_images(const ImageSet& images);

  // One epoch over the uploaded images in the seeded permutation (1-based, global epoch
  // number). on_step, if set, runs after each step is queued: it reports the steps handed to
  // the stream (which may run ahead of the device by the launch queue's depth) and the time,
  // never the loss (StepProgress::loss is NaN): reading it would synchronise every step.
  // should_stop, if set, is asked after each queued step; when it says stop, the queued
  // steps finish and run_epoch returns nullopt, with the position kept for get_state.
  // Throws TrainingDiverged, naming the step and the parameter, when a gradient of any step
  // of the epoch was not finite (Adam watches them on the device; the flag is read with the
  // loss sums at the epoch's only synchronisation).
  std::optional<EpochMetrics> run_epoch(int epoch, const StepCallback& on_step = nullptr,
                                        const StopCheck& should_stop = nullptr);

  // Test hooks: one step on a host batch x (count, 784) with eps drawn for the current step.
  // Returns the batch-mean loss parts; Adam runs only if apply_adam.
  LossParts step_on_batch(const float* x, int count, bool apply_adam);
  void download_grads(float* grads) const;         // (num_params), PyTorch's order
  void download_eps(float* eps, int count) const;  // (count, D) of the last step
  std::string describe() const;                    // algorithms, how steps are launched
  bool nhwc() const;  // the layout the convolutions run in (the one chosen, with layout_auto)
  // Whether full-batch steps replay a CUDA graph: false before the second full batch, with
  // cuda_graph off, or when capture failed (a note on stderr says why; steps then run eagerly).
  bool uses_cuda_graph() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Trains `state` (initialised, or resumed, possibly mid-epoch) from epoch state.epoch + 1 to
// cfg.epochs on the GPU; calls on_step (if set) after every queued step and on_epoch after
// every epoch, with `state` downloaded and describing the end of that epoch. Returns as
// train_cpu does: false when should_stop stopped it, `state` then holding the position.
bool train_gpu(const TrainConfig& cfg, const GpuOptions& opts, const ModelDesc& desc,
               const ImageSet& images, TrainState& state, const EpochCallback& on_epoch,
               const StepCallback& on_step = nullptr, const StopCheck& should_stop = nullptr);

// What `cuvae bench` reports of a GPU run besides the epochs' metrics.
struct GpuBenchReport {
  size_t peak_memory = 0;   // device memory in use after any epoch minus before the trainer
  bool cuda_graph = false;  // full-batch steps replayed a CUDA graph
  bool nhwc = false;        // the layout the convolutions ran in
};

// Runs epochs 1 .. cfg.epochs from `state` on the GPU (no checkpoints, no stop), calling
// on_epoch after each: `cuvae bench`'s GPU run.
GpuBenchReport bench_gpu(const TrainConfig& cfg, const GpuOptions& opts, const ModelDesc& desc,
                         const ImageSet& images, const TrainState& state,
                         const EpochCallback& on_epoch);

}  // namespace cuvae
