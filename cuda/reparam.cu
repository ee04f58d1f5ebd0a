// Reparameterization forward/backward kernels (reparam.cuh).
//   forward:  eps[i] = eps_normal(seed, step, i) (step an argument or from the step table);  z = mu
//   + expf(logvar * 0.5f) * eps   (fp32) backward: dmu = dz + s mu;  dlogvar = dz eps exp(lv/2) / 2
//   + s (exp(lv) - 1) / 2,  s = beta/B
// The forward is fp32 like cpu::reparam_forward<float>; its adds and multiplies are the _rn
// intrinsics so nvcc cannot fuse them into an FMA the CPU does not do (the only differences
// left are the few-ulp ones of the device expf/logf/cosf). The backward, like the CPU
// reference, evaluates in double in the CPU's order and rounds to float once.
// Owns: reparam_forward_kernel, reparam_backward_kernel and their launchers.
#include <climits>
#include <string>

#include "cuda/cuda_check.cuh"
#include "cuda/reparam.cuh"
#include "host/philox.h"

namespace cuvae {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 65535;

__global__ void reparam_forward_kernel(float* __restrict__ z, float* __restrict__ eps,
                                       const float* __restrict__ mu,
                                       const float* __restrict__ logvar, uint64_t seed,
                                       uint64_t fixed_step, const StepScalars* __restrict__ table,
                                       const int32_t* __restrict__ cursor, int n) {
  const uint64_t step = table ? uint64_t(table[*cursor].step) - 1 : fixed_step;
  for (int i = blockIdx.x * kThreads + threadIdx.x; i < n; i += gridDim.x * kThreads) {
    const float e = eps_normal(seed, step, uint32_t(i));
    eps[i] = e;
    const float sigma = expf(__fmul_rn(logvar[i], 0.5f));
    z[i] = __fadd_rn(mu[i], __fmul_rn(sigma, e));
  }
}

__global__ void reparam_backward_kernel(float* __restrict__ dmu, float* __restrict__ dlogvar,
                                        const float* __restrict__ dz, const float* __restrict__ mu,
                                        const float* __restrict__ logvar,
                                        const float* __restrict__ eps, double scale, int n) {
  for (int i = blockIdx.x * kThreads + threadIdx.x; i < n; i += gridDim.x * kThreads) {
    const double g = dz[i], lv = logvar[i];
    dmu[i] = float(__dadd_rn(g, __dmul_rn(scale, double(mu[i]))));
    const double path = __dmul_rn(__dmul_rn(__dmul_rn(g, double(eps[i])), 0.5), exp(0.5 * lv));
    const double kl = __dmul_rn(__dmul_rn(scale, 0.5), __dadd_rn(exp(lv), -1.0));
    dlogvar[i] = float(__dadd_rn(path, kl));
  }
}

// n = batch * latent_dim as an int (the Philox index is 32-bit; the grid stride must not wrap).
int checked_count(const char* fn, int batch, int latent_dim) {
  if (batch < 1 || latent_dim < 1)
    throw Error(std::string(fn) + ": bad sizes batch=" + std::to_string(batch) +
                " latent_dim=" + std::to_string(latent_dim));
  if (latent_dim > (INT_MAX - kMaxBlocks * kThreads) / batch)
    throw Error(std::string(fn) + ": batch * latent_dim too large");
  return batch * latent_dim;
}

int blocks_for(int n) {
  const int blocks = (n + kThreads - 1) / kThreads;
  return blocks < kMaxBlocks ? blocks : kMaxBlocks;
}

}  // namespace

void reparam_forward(float* z, float* eps, const float* mu, const float* logvar, uint64_t seed,
                     uint64_t step, int batch, int latent_dim, cudaStream_t s) {
  const int n = checked_count("reparam_forward", batch, latent_dim);
  if (!z || !eps || !mu || !logvar) throw Error("reparam_forward: null pointer");
  reparam_forward_kernel<<<blocks_for(n), kThreads, 0, s>>>(z, eps, mu, logvar, seed, step, nullptr,
                                                            nullptr, n);
  CUDA_CHECK_LAUNCH();
}

void reparam_forward(float* z, float* eps, const float* mu, const float* logvar, uint64_t seed,
                     StepTable at, int batch, int latent_dim, cudaStream_t s) {
  const int n = checked_count("reparam_forward", batch, latent_dim);
  if (!z || !eps || !mu || !logvar || !at.table || !at.cursor)
    throw Error("reparam_forward: null pointer");
  reparam_forward_kernel<<<blocks_for(n), kThreads, 0, s>>>(z, eps, mu, logvar, seed, 0, at.table,
                                                            at.cursor, n);
  CUDA_CHECK_LAUNCH();
}

void reparam_backward(float* dmu, float* dlogvar, const float* dz, const float* mu,
                      const float* logvar, const float* eps, int batch, int latent_dim, float beta,
                      cudaStream_t s) {
  const int n = checked_count("reparam_backward", batch, latent_dim);
  if (!dmu || !dlogvar || !dz || !mu || !logvar || !eps)
    throw Error("reparam_backward: null pointer");
  const double scale = double(beta) / double(batch);  // as cpu::reparam_backward
  reparam_backward_kernel<<<blocks_for(n), kThreads, 0, s>>>(dmu, dlogvar, dz, mu, logvar, eps,
                                                             scale, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace cuvae
