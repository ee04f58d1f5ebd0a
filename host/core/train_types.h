// The training types every layer shares: the run's configuration (with the GPU options and
// Adam's settings), the trainer's state, the per-epoch metrics and loss parts, and the
// callbacks a trainer reports through. Plain data, no behaviour: the CPU and GPU trainers,
// checkpoints and the CLI all speak these.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "host/core/step_scalars.h"

namespace cuvae {

// Batch means of the loss parts; loss = recon + beta * kl.
struct LossParts {
  double loss = 0, recon = 0, kl = 0;
};

struct AdamConfig {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-7f;  // the Keras default (the reference configuration); PyTorch uses 1e-8
};

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
  // Adam moments in channels_last_order (host/core/model.h), the dense layers' weights permuted to
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
  // gradient and the epoch's loss sums in one kernel (cuda/kernels/loss.cuh bce_kl_loss_fused); the
  // two latent heads as one strided-batched GEMM each way, their biases folded into the
  // reparameterization kernels, their input gradients summed by the second GEMM. false: the
  // separate launches these replace (same loss bits; the bias gradients may differ in their
  // last bits, summed in another order).
  bool fused = true;
  // Wrap training steps [profile_first, profile_last] (1-based, counted over the whole run)
  // in cudaProfilerStart/Stop for a focused Nsight capture; 0: no profiler calls.
  int64_t profile_first = 0, profile_last = 0;
};

// The accepted values of the run's settings, one set for the flags of train, bench and
// parity-dump (host/app) and for the checkpoint loader (host/io), so that every run can resume
// its own checkpoint.
struct IntRange {
  int64_t lo, hi;
  bool holds(int64_t v) const { return v >= lo && v <= hi; }
};
// A real setting is stored in float (lr, Adam's settings) or becomes one in the engines (beta,
// the KL weight of every step): besides lying in [lo, hi] (or (lo, hi]), a nonzero value must
// be a normal float, not one that rounds to 0, a subnormal or infinity.
struct RealRange {
  double lo, hi;
  bool lo_inclusive;  // lo itself is accepted
  bool holds(double v) const;
  // "> 0 and <= 10 (at least 1.17549435e-38, the smallest normal float)"
  std::string text() const;
};
constexpr IntRange kBatchSizeRange{1, 65536};
constexpr IntRange kEpochsRange{1, 100000};
constexpr IntRange kBetaWarmupRange{0, 100000};
constexpr IntRange kImageLimitRange{0, INT32_MAX};  // --limit and --test-limit (0: all)
constexpr RealRange kLrRange{0.0, 10.0, false};
constexpr RealRange kBetaRange{0.0, 1e6, true};
// Adam's settings are not flags; checkpoints hold them. The betas must also be below 1.
constexpr RealRange kAdamBetaRange{0.0, 1.0, true};
constexpr RealRange kAdamEpsRange{0.0, 1.0, false};

struct TrainConfig {
  std::string data_dir = "data/mnist";
  std::string out_dir;         // the run folder
  std::string device = "gpu";  // "gpu", "cpu" (the fast engine) or "cpu-ref" (the reference)
  int epochs = 30;             // the total: training ends after this (global) epoch
  int batch_size = 128;
  int latent_dim = 2;
  double beta = 1.0;
  // KL warm-up: the KL weight rises linearly per step from 0 to beta over the first
  // beta_warmup epochs (KlSchedule, host/core/step_scalars.h); 0: beta throughout.
  int beta_warmup = 0;
  uint64_t seed = 0;
  int64_t limit = 0;  // 0: every training image
  AdamConfig adam;
};

// Means over the epoch's images of the per-image loss parts; loss = recon + kl_weight * kl
// exactly (with full batches this is the mean of the batch losses). kl_weight is beta, or
// during a KL warm-up the epoch's effective weight: its steps' weights averaged with the
// weight of each step's KL sum, sum_b w_b KL_b / sum_b KL_b.
struct EpochMetrics {
  int epoch = 0;  // 1-based
  int64_t images = 0;
  int64_t steps = 0;
  double loss = 0, recon = 0, kl = 0;
  double kl_weight = 1;
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
  // epoch_weighted_kl_sum: the sum of each image's KL term times its step's KL weight, kept
  // during a KL warm-up only (0 otherwise).
  int64_t epoch_step = 0;
  double epoch_recon_sum = 0, epoch_kl_sum = 0, epoch_weighted_kl_sum = 0;
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

// The run's KL schedule: beta, ramped over cfg.beta_warmup epochs of steps_per_epoch steps.
KlSchedule kl_schedule(const TrainConfig& cfg, int64_t steps_per_epoch);

// The epoch's kl_weight and loss from its sums over images (EpochMetrics): during a warm-up
// (warming: some step of the epoch had a weight below beta) the effective weight
// weighted_kl_sum / kl_sum (the last step's weight when kl_sum is 0), else beta.
void finish_epoch_loss(EpochMetrics& m, double recon_sum, double kl_sum, double weighted_kl_sum,
                       bool warming, double beta, double last_weight);

// Checks a resumed state's position against the run (throws Error when inconsistent) and
// returns the number of steps per epoch, ceil(images / batch_size).
int64_t check_state_position(const TrainState& state, int64_t images, int batch_size);

}  // namespace cuvae
