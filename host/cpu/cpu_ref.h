// CPU reference of every layer of the cuvae model, forward and backward, plus Adam.
//
// Plain, readable code that the CUDA kernels and PyTorch are checked against. Each function
// is a template over the storage type T (float for training, double for finite-difference
// gradient checks); every sum over more than a handful of terms accumulates in double.
// Gradients are written (not added to) and are those of a loss whose value the caller
// defines; the loss here is the batch mean of
//   BCE(x, logits) = sum_p [ max(l,0) - l*x + log1p(exp(-|l|)) ]   (stable for any logit)
//   KL(q || N(0,I)) = -1/2 sum_j (1 + logvar_j - mu_j^2 - exp(logvar_j))
//   loss = mean_b ( BCE_b + beta * KL_b ).
// Layouts: activations NCHW (batch first), Conv2d weight [out,in,3,3], ConvTranspose2d weight
// [in,out,3,3], Linear weight [out,in] (PyTorch's). Convolutions are im2col + matmul; a
// transposed conv is the adjoint of the conv with the same geometry.
#pragma once

#include <cstddef>
#include <cstdint>

#include "host/core/model.h"
#include "host/core/train_types.h"

namespace cuvae::cpu {

// C (m, n) = A (m, k) * B (k, n), all row-major, sums in double; `accumulate` adds to C.
// Each output element is summed in a fixed order whatever the thread count.
template <typename T>
void matmul(T* c, const T* a, const T* b, int64_t m, int64_t n, int64_t k, bool accumulate);

// Conv2d (layer.kind == Conv2d): y (B, out, Ho, Wo) from x (B, in, H, W).
template <typename T>
void conv2d_forward(T* y, const T* x, const T* w, const T* bias, int batch, const Layer& layer);
// dx may be null (first layer). dw [out,in,3,3], db [out].
template <typename T>
void conv2d_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, int batch,
                     const Layer& layer);

// ConvTranspose2d (layer.kind == ConvTranspose2d): y (B, out, Ho, Wo) from x (B, in, H, W).
template <typename T>
void conv_transpose2d_forward(T* y, const T* x, const T* w, const T* bias, int batch,
                              const Layer& layer);
template <typename T>
void conv_transpose2d_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, int batch,
                               const Layer& layer);

// Linear: y (B, out) = x (B, in) W^T + b. dx may be null.
template <typename T>
void linear_forward(T* y, const T* x, const T* w, const T* bias, int batch, int in, int out);
template <typename T>
void linear_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, int batch, int in,
                     int out);

// ReLU; y may alias x. Backward uses the forward output: dx = dy * (y > 0); dx may alias dy.
template <typename T>
void relu_forward(T* y, const T* x, size_t n);
template <typename T>
void relu_backward(T* dx, const T* dy, const T* y, size_t n);

// z = mu + exp(logvar / 2) * eps, elementwise over (B, D).
template <typename T>
void reparam_forward(T* z, const T* mu, const T* logvar, const T* eps, size_t n);
// From dz (gradient of the batch loss w.r.t. z) to d mu and d logvar, adding the gradient of
// the beta-weighted KL term of the batch-mean loss:
//   dmu     = dz + beta * mu / B
//   dlogvar = dz * eps * exp(logvar / 2) / 2 + beta * (exp(logvar) - 1) / (2 B)
template <typename T>
void reparam_backward(T* dmu, T* dlogvar, const T* dz, const T* mu, const T* logvar, const T* eps,
                      int batch, int latent_dim, double beta);

// Per image: recon[b] = BCE summed over the 784 pixels, kl[b] = KL; dlogits = (sigmoid(l) - x)
// / B, the gradient of the batch-mean loss. recon_per_image / kl_per_image may be null.
template <typename T>
LossParts bce_kl_loss(T* dlogits, double* recon_per_image, double* kl_per_image, const T* logits,
                      const T* x, const T* mu, const T* logvar, int batch, int pixels,
                      int latent_dim, double beta);

// One Adam step (step counts from 1) over n parameters, PyTorch's formulation:
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
void adam_step(float* params, float* m, float* v, const float* grads, size_t n,
               const AdamConfig& cfg, int64_t step);

}  // namespace cuvae::cpu
