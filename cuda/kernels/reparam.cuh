// Reparameterization trick of the VAE and its backward, over (batch, latent_dim) row-major:
//   forward:  eps = eps_normal(seed, step, i)  (host/core/philox.h, the CPU trainer's noise)
//             z   = mu + exp(logvar / 2) * eps
//   backward: dmu     = dz + beta * mu / B
//             dlogvar = dz * eps * exp(logvar / 2) / 2 + beta * (exp(logvar) - 1) / (2 B)
//   (the second terms are the gradient of beta * KL of the batch-mean loss; see cpu_ref.h).
// beta is an argument, or the step's KL weight read on the device from the step table,
// at.table[*at.cursor].kl_weight (a KL warm-up changes it every step; host/core/step_scalars.h).
// Owns: reparam_forward, reparam_backward and their biased forms.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "host/core/step_scalars.h"

namespace cuvae {

// z, eps (batch, latent_dim) written; mu, logvar (batch, latent_dim). eps is kept for the
// backward pass.
void reparam_forward(float* z, float* eps, const float* mu, const float* logvar, uint64_t seed,
                     uint64_t step, int batch, int latent_dim, cudaStream_t s);

// The same with the noise counter read on the device: step = at.table[*at.cursor].step - 1
// (the Adam steps taken before this one; host/core/step_scalars.h), as a captured CUDA graph needs.
void reparam_forward(float* z, float* eps, const float* mu, const float* logvar, uint64_t seed,
                     StepTable at, int batch, int latent_dim, cudaStream_t s);

// The same with the latent heads' biases folded in: mu and logvar hold the heads' outputs
// before their biases and are updated in place to mu + bias_mu, logvar + bias_lv (per latent
// dimension; the float adds bias_act_forward performs), from which z is formed as above.
void reparam_forward_biased(float* z, float* eps, float* mu, float* logvar, const float* bias_mu,
                            const float* bias_lv, uint64_t seed, StepTable at, int batch,
                            int latent_dim, cudaStream_t s);

// dmu, dlogvar (batch, latent_dim) written; dz, mu, logvar, eps (batch, latent_dim).
void reparam_backward(float* dmu, float* dlogvar, const float* dz, const float* mu,
                      const float* logvar, const float* eps, int batch, int latent_dim, float beta,
                      cudaStream_t s);
void reparam_backward(float* dmu, float* dlogvar, const float* dz, const float* mu,
                      const float* logvar, const float* eps, int batch, int latent_dim,
                      StepTable at, cudaStream_t s);

// The same and the heads' bias gradients: db_mu[j] = sum_b dmu[b][j], db_lv[j] =
// sum_b dlogvar[b][j] (latent_dim each; in double, fixed order, rounded once), reduced by the
// last block to finish (blocks_done (1): 0 before the first launch, left 0 by each).
void reparam_backward_biased(float* dmu, float* dlogvar, float* db_mu, float* db_lv,
                             unsigned* blocks_done, const float* dz, const float* mu,
                             const float* logvar, const float* eps, int batch, int latent_dim,
                             float beta, cudaStream_t s);
void reparam_backward_biased(float* dmu, float* dlogvar, float* db_mu, float* db_lv,
                             unsigned* blocks_done, const float* dz, const float* mu,
                             const float* logvar, const float* eps, int batch, int latent_dim,
                             StepTable at, cudaStream_t s);

}  // namespace cuvae
