// The VAE loss, value and gradient fused in one pass over the logits (one block per image):
//   recon[b] = sum_p [ max(l,0) - l*x + log1p(exp(-|l|)) ]   BCE with logits, stable for any l
//   kl[b]    = -1/2 sum_j (1 + logvar - mu^2 - exp(logvar))  KL(q(z|x) || N(0, I))
//   dlogits  = (sigmoid(l) - x) / B                          gradient of the batch-mean BCE
// plus a per-epoch accumulator of the batch sums, so the trainer reads the loss once per epoch.
// Owns: bce_kl_loss, loss_accumulate, kl_weighted_accumulate, bce_kl_loss_fused.
#pragma once

#include <cuda_runtime.h>

#include "cuda/kernels/precision.cuh"
#include "host/core/step_scalars.h"

namespace cuvae {

// dlogits (batch, pixels), recon (batch), kl (batch) written; logits, x (batch, pixels);
// mu, logvar (batch, latent_dim). B = batch. Bit-reproducible run to run.
void bce_kl_loss(float* dlogits, float* recon, float* kl, const float* logits, const float* x,
                 const float* mu, const float* logvar, int batch, int pixels, int latent_dim,
                 cudaStream_t s);

// sums (2): sums[0] += sum_b recon[b], sums[1] += sum_b kl[b], in double, by one block in a
// fixed order (no atomics); recon, kl (batch).
void loss_accumulate(double* sums, const float* recon, const float* kl, int batch, cudaStream_t s);

// The KL warm-up's sum (train_types.h EpochMetrics): *weighted_sum += w * sum_b kl[b], w the
// step's KL weight at.table[*at.cursor].kl_weight, the sum in double in loss_accumulate's
// order, by one block; kl (batch).
void kl_weighted_accumulate(double* weighted_sum, const float* kl, int batch, StepTable at,
                            cudaStream_t s);

// The loss of a training step fused into one launch with the output layer's bias, forward and
// backward: the kernel reads the last (single-channel) layer's output before its bias, adds
// the bias (the float add bias_act_forward does), and besides dlogits, recon and kl (as
// bce_kl_loss, bit for bit) it performs loss_accumulate's update of `sums` (bit for bit) and
// writes the bias gradient, the sum of all dlogits (in double, fixed order, rounded once).
// The last block to finish does the batch-wide part (a ticket on `blocks_done`), so this one
// launch replaces bias_act_forward + bce_kl_loss + loss_accumulate + bias_act_backward.
//
// T = bf16 (the mixed-precision step): the output layer's result and the logit gradient are
// bf16. The logit is float(pre_bias) + bias (a float add), the loss is evaluated exactly as for
// float, each gradient is the float form's value rounded to bf16 (nearest even), and the bias
// gradient sums those stored bf16 values. Targets, mu, logvar and the losses stay float.
template <typename T>
struct FusedLossArgsT {
  T* dlogits;             // (batch, pixels) written
  float* recon;           // (batch) written
  float* kl;              // (batch) written
  double* image_dsum;     // (batch) scratch: each image's sum of dlogits
  double* sums;           // (2) += the batch sums of recon and kl
  float* dbias;           // (1) written: the output bias gradient
  unsigned* blocks_done;  // (1) 0 before the first launch; the launch leaves it 0
  const T* pre_bias;      // (batch, pixels) the output layer before its bias
  const float* bias;      // (1)
  const float* x;         // (batch, pixels) targets
  const float* mu;        // (batch, latent_dim)
  const float* logvar;    // (batch, latent_dim)
};
using FusedLossArgs = FusedLossArgsT<float>;
using FusedLossArgsBf16 = FusedLossArgsT<bf16>;
void bce_kl_loss_fused(const FusedLossArgs& a, int batch, int pixels, int latent_dim,
                       cudaStream_t s);
void bce_kl_loss_fused(const FusedLossArgsBf16& a, int batch, int pixels, int latent_dim,
                       cudaStream_t s);

}  // namespace cuvae
