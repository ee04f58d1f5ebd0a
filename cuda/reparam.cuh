// Reparameterization trick of the VAE and its backward, over (batch, latent_dim) row-major:
//   forward:  eps = eps_normal(seed, step, i)  (host/philox.h, the CPU trainer's noise)
//             z   = mu + exp(logvar / 2) * eps
//   backward: dmu     = dz + beta * mu / B
//             dlogvar = dz * eps * exp(logvar / 2) / 2 + beta * (exp(logvar) - 1) / (2 B)
//   (the second terms are the gradient of beta * KL of the batch-mean loss; see cpu_ref.h).
// Owns: reparam_forward, reparam_backward.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "host/step_scalars.h"

namespace cuvae {

// z, eps (batch, latent_dim) written; mu, logvar (batch, latent_dim). eps is kept for the
// backward pass.
void reparam_forward(float* z, float* eps, const float* mu, const float* logvar, uint64_t seed,
                     uint64_t step, int batch, int latent_dim, cudaStream_t s);

// The same with the noise counter read on the device: step = at.table[*at.cursor].step - 1
// (the Adam steps taken before this one; host/step_scalars.h), as a captured CUDA graph needs.
void reparam_forward(float* z, float* eps, const float* mu, const float* logvar, uint64_t seed,
                     StepTable at, int batch, int latent_dim, cudaStream_t s);

// dmu, dlogvar (batch, latent_dim) written; dz, mu, logvar, eps (batch, latent_dim).
void reparam_backward(float* dmu, float* dlogvar, const float* dz, const float* mu,
                      const float* logvar, const float* eps, int batch, int latent_dim, float beta,
                      cudaStream_t s);

}  // namespace cuvae
