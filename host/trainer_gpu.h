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
// advances (host/step_scalars.h). So the full-batch step is captured once in a CUDA graph (at
// the second full batch, after one eager step has warmed up cuDNN and cuBLAS) and replayed, one
// launch per step instead of ~50, and the replay is the eager step bit for bit.
// The permutation itself is drawn on the device (cuda/shuffle.cuh), the CPU trainer's order.
// Per epoch the host uploads the step table and the loss sums' starting values and reads the
// sums back once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "host/cpu_ref.h"
#include "host/idx.h"
#include "host/model.h"
#include "host/trainer_cpu.h"

namespace cuvae {

struct GpuOptions {
  bool tf32 = false;  // allow TF32 tensor cores in cuDNN and cuBLAS
  // Mixed precision (bf16): the convolutions and the encoder's 3136 -> 16 layer run on bf16
  // tensor cores with bf16 activations and activation gradients (fp32 accumulation); the
  // parameters, Adam and its moments, the latent heads, the reparameterization, the decoder's
  // first layer and the loss stay fp32. Each step rounds the fp32 weights to a bf16 working
  // copy; the bf16 weight gradients of the convolutions are widened to fp32 before Adam.
  // Needs `fused` and excludes `tf32`. false: everything in fp32 (strict unless tf32).
  bool bf16 = false;
  bool deterministic = true;  // deterministic cuDNN algorithms (bit-reproducible runs)
  // Channels-last (NHWC) convolutions: the activations between the convolutions are
  // (batch, height, width, channels) and their filters [K, 3, 3, C] (cuDNN's NHWC/KRSC, the
  // layout tensor-core kernels read natively). The trainer keeps the parameters, gradients and
  // Adam moments in channels_last_order (host/model.h), the dense layers' weights permuted to
  // match, and converts at set_state/get_state/download_grads, so checkpoints and every
  // interface stay in PyTorch's order. false: NCHW.
  bool nhwc = false;
  // Choose the layout by measurement instead (nhwc is then ignored): the trainer builds the
  // full batch's convolutions in both layouts, times what the layout changes in a step (the
  // convolutions with their bias/ReLU kernels, forward and backward) on its own buffers and
  // keeps the faster; it says so on stdout, and nhwc() and describe() tell. Two runs may choose
  // differently, so a bit-reproducible run names its layout.
  bool layout_auto = false;
  // Replay full-batch steps from a captured CUDA graph; false: launch each kernel every step
  // (per-layer NVTX ranges then appear in an Nsight Systems timeline).
  bool cuda_graph = true;
  // Fused kernels: the output layer's bias (forward and gradient), the BCE+KL loss and its
  // gradient and the epoch's loss sums in one kernel (cuda/loss.cuh bce_kl_loss_fused); the
  // two latent heads as one strided-batched GEMM each way, their biases folded into the
  // reparameterization kernels, their input gradients summed by the second GEMM. false: the
  // separate launches these replace (same loss bits; the bias gradients may differ in their
  // last bits, summed in another order).
  bool fused = true;
  // Wrap training steps [profile_first, profile_last] (1-based, counted over the whole run)
  // in cudaProfilerStart/Stop for a focused Nsight capture; 0: no profiler calls.
  int64_t profile_first = 0, profile_last = 0;
};

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
  cpu::LossParts step_on_batch(const float* x, int count, bool apply_adam);
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

}  // namespace cuvae
