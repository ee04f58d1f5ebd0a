// The VAE loss, value and gradient fused in one pass over the logits (one block per image):
//   recon[b] = sum_p [ max(l,0) - l*x + log1p(exp(-|l|)) ]   BCE with logits, stable for any l
//   kl[b]    = -1/2 sum_j (1 + logvar - mu^2 - exp(logvar))  KL(q(z|x) || N(0, I))
//   dlogits  = (sigmoid(l) - x) / B                          gradient of the batch-mean BCE
// plus a per-epoch accumulator of the batch sums, so the trainer reads the loss once per epoch.
// Owns: bce_kl_loss, loss_accumulate.
#pragma once

#include <cuda_runtime.h>

namespace cuvae {

// dlogits (batch, pixels), recon (batch), kl (batch) written; logits, x (batch, pixels);
// mu, logvar (batch, latent_dim). B = batch. Bit-reproducible run to run.
void bce_kl_loss(float* dlogits, float* recon, float* kl, const float* logits, const float* x,
                 const float* mu, const float* logvar, int batch, int pixels, int latent_dim,
                 cudaStream_t s);

// sums (2): sums[0] += sum_b recon[b], sums[1] += sum_b kl[b], in double, by one block in a
// fixed order (no atomics); recon, kl (batch).
void loss_accumulate(double* sums, const float* recon, const float* kl, int batch, cudaStream_t s);

}  // namespace cuvae
