// Reparameterization forward/backward kernels (reparam.cuh).
//   forward:  eps[i] = eps_normal(seed, step, i) (step an argument or from the step table);  z = mu
//   + expf(logvar * 0.5f) * eps   (fp32) backward: dmu = dz + s mu;  dlogvar = dz eps exp(lv/2) / 2
//   + s (exp(lv) - 1) / 2,  s = beta/B
// The forward is fp32 like cpu::reparam_forward<float>; its adds and multiplies are the _rn
// intrinsics so nvcc cannot fuse them into an FMA the CPU does not do (the only differences
// left are the few-ulp ones of the device expf/logf/cosf). The backward, like the CPU
// reference, evaluates in double in the CPU's order and rounds to float once.
// The biased forms fold the latent heads' bias (forward) and bias gradient (backward) into
// these kernels (reparam.cuh).
// Owns: reparam_forward_kernel, reparam_backward_kernel and their launchers.
#include <climits>
#include <string>
#include <type_traits>

#include "cuda/kernels/launch.cuh"
#include "cuda/kernels/reparam.cuh"
#include "cuda/runtime/cuda_check.cuh"
#include "host/core/philox.h"

namespace cuvae {
namespace {

constexpr int kThreads = 256;

// The step's noise counter: given, or the step table's t - 1.
__device__ uint64_t noise_counter(uint64_t fixed) {
  return fixed;
}
__device__ uint64_t noise_counter(const StepTable& at) {
  return uint64_t(step_scalars_at(at).step) - 1;
}

// mu and logvar: read only, or (kBiased) read before the heads' biases, the float adds of
// bias_act_forward applied and the results written back in place (so not __restrict__: the
// same buffers are read and written, each element by one thread).
template <bool kBiased>
using HeadPtr = std::conditional_t<kBiased, float*, const float*>;

// Step: uint64_t (the noise counter) or StepTable.
template <bool kBiased, typename Step>
__global__ void reparam_forward_kernel(float* __restrict__ z, float* __restrict__ eps,
                                       HeadPtr<kBiased> mu, HeadPtr<kBiased> logvar,
                                       const float* __restrict__ bias_mu,
                                       const float* __restrict__ bias_lv, int dim, uint64_t seed,
                                       Step at, int n) {
  const uint64_t step = noise_counter(at);
  for (int i = blockIdx.x * kThreads + threadIdx.x; i < n; i += gridDim.x * kThreads) {
    float m = mu[i], lv = logvar[i];
    if constexpr (kBiased) {
      m = __fadd_rn(m, bias_mu[i % dim]);
      lv = __fadd_rn(lv, bias_lv[i % dim]);
      mu[i] = m;
      logvar[i] = lv;
    }
    const float e = eps_normal(seed, step, uint32_t(i));
    eps[i] = e;
    const float sigma = expf(__fmul_rn(lv, 0.5f));
    z[i] = __fadd_rn(m, __fmul_rn(sigma, e));
  }
}

// The KL term's gradient scale beta / B: given (computed on the host in double), or the step
// table's KL weight over the batch, the same double division on the device.
__device__ double kl_scale(double given, int) {
  return given;
}
__device__ double kl_scale(const StepTable& at, int batch) {
  return double(step_scalars_at(at).kl_weight) / double(batch);
}

// Scale: double (beta / B) or StepTable. With kBiasGrad, the last block to finish also writes the
// heads' bias gradients: column j of dmu (and of dlogvar) summed over the batch in double by one
// warp, lanes striding the rows in order, then a shuffle tree: a fixed order, no atomics in the
// sums.
template <bool kBiasGrad, typename Scale>
__global__ void reparam_backward_kernel(float* __restrict__ dmu, float* __restrict__ dlogvar,
                                        float* __restrict__ db_mu, float* __restrict__ db_lv,
                                        unsigned* __restrict__ blocks_done,
                                        const float* __restrict__ dz, const float* __restrict__ mu,
                                        const float* __restrict__ logvar,
                                        const float* __restrict__ eps, Scale scale_from, int dim,
                                        int n) {
  const double scale = kl_scale(scale_from, n / dim);
  for (int i = blockIdx.x * kThreads + threadIdx.x; i < n; i += gridDim.x * kThreads) {
    const double g = dz[i], lv = logvar[i];
    dmu[i] = float(__dadd_rn(g, __dmul_rn(scale, double(mu[i]))));
    const double path = __dmul_rn(__dmul_rn(__dmul_rn(g, double(eps[i])), 0.5), exp(0.5 * lv));
    const double kl = __dmul_rn(__dmul_rn(scale, 0.5), __dadd_rn(exp(lv), -1.0));
    dlogvar[i] = float(__dadd_rn(path, kl));
  }
  if constexpr (kBiasGrad) {
    if (!last_block_done(blocks_done)) return;
    const int rows = n / dim, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int c = warp; c < 2 * dim; c += kThreads / 32) {
      const float* g = c < dim ? dmu : dlogvar;
      const int j = c < dim ? c : c - dim;
      double acc = 0.0;
      for (int b = lane; b < rows; b += 32) acc += double(__ldcg(g + int64_t(b) * dim + j));
      for (int offset = 16; offset > 0; offset >>= 1)
        acc += __shfl_down_sync(0xffffffffu, acc, offset);
      if (lane == 0) (c < dim ? db_mu : db_lv)[j] = float(acc);
    }
  }
}

// n = batch * latent_dim as an int (the Philox index is 32-bit; the grid stride must not wrap).
int checked_count(const char* fn, int batch, int latent_dim) {
  if (batch < 1 || latent_dim < 1)
    throw Error(std::string(fn) + ": bad sizes batch=" + std::to_string(batch) +
                " latent_dim=" + std::to_string(latent_dim));
  if (latent_dim > (INT_MAX - kMaxGridBlocks * kThreads) / batch)
    throw Error(std::string(fn) + ": batch * latent_dim too large");
  return batch * latent_dim;
}

}  // namespace

void reparam_forward(float* z, float* eps, const float* mu, const float* logvar, uint64_t seed,
                     uint64_t step, int batch, int latent_dim, cudaStream_t s) {
  const int n = checked_count("reparam_forward", batch, latent_dim);
  if (!z || !eps || !mu || !logvar) throw Error("reparam_forward: null pointer");
  reparam_forward_kernel<false><<<grid_stride_blocks(n, kThreads), kThreads, 0, s>>>(
      z, eps, mu, logvar, nullptr, nullptr, latent_dim, seed, step, n);
  CUDA_CHECK_LAUNCH();
}

void reparam_forward(float* z, float* eps, const float* mu, const float* logvar, uint64_t seed,
                     StepTable at, int batch, int latent_dim, cudaStream_t s) {
  const int n = checked_count("reparam_forward", batch, latent_dim);
  if (!z || !eps || !mu || !logvar || !at.table || !at.cursor)
    throw Error("reparam_forward: null pointer");
  reparam_forward_kernel<false><<<grid_stride_blocks(n, kThreads), kThreads, 0, s>>>(
      z, eps, mu, logvar, nullptr, nullptr, latent_dim, seed, at, n);
  CUDA_CHECK_LAUNCH();
}

void reparam_forward_biased(float* z, float* eps, float* mu, float* logvar, const float* bias_mu,
                            const float* bias_lv, uint64_t seed, StepTable at, int batch,
                            int latent_dim, cudaStream_t s) {
  const int n = checked_count("reparam_forward_biased", batch, latent_dim);
  if (!z || !eps || !mu || !logvar || !bias_mu || !bias_lv || !at.table || !at.cursor)
    throw Error("reparam_forward_biased: null pointer");
  reparam_forward_kernel<true><<<grid_stride_blocks(n, kThreads), kThreads, 0, s>>>(
      z, eps, mu, logvar, bias_mu, bias_lv, latent_dim, seed, at, n);
  CUDA_CHECK_LAUNCH();
}

namespace {

// Scale: double (beta / B) or StepTable.
template <typename Scale>
void launch_backward(const char* fn, float* dmu, float* dlogvar, const float* dz, const float* mu,
                     const float* logvar, const float* eps, int batch, int latent_dim, Scale scale,
                     cudaStream_t s) {
  const int n = checked_count(fn, batch, latent_dim);
  if (!dmu || !dlogvar || !dz || !mu || !logvar || !eps)
    throw Error(std::string(fn) + ": null pointer");
  reparam_backward_kernel<false><<<grid_stride_blocks(n, kThreads), kThreads, 0, s>>>(
      dmu, dlogvar, nullptr, nullptr, nullptr, dz, mu, logvar, eps, scale, latent_dim, n);
  CUDA_CHECK_LAUNCH();
}

template <typename Scale>
void launch_backward_biased(const char* fn, float* dmu, float* dlogvar, float* db_mu, float* db_lv,
                            unsigned* blocks_done, const float* dz, const float* mu,
                            const float* logvar, const float* eps, int batch, int latent_dim,
                            Scale scale, cudaStream_t s) {
  const int n = checked_count(fn, batch, latent_dim);
  if (!dmu || !dlogvar || !db_mu || !db_lv || !blocks_done || !dz || !mu || !logvar || !eps)
    throw Error(std::string(fn) + ": null pointer");
  reparam_backward_kernel<true><<<grid_stride_blocks(n, kThreads), kThreads, 0, s>>>(
      dmu, dlogvar, db_mu, db_lv, blocks_done, dz, mu, logvar, eps, scale, latent_dim, n);
  CUDA_CHECK_LAUNCH();
}

void check_table(const char* fn, const StepTable& at) {
  if (!at.table || !at.cursor) throw Error(std::string(fn) + ": null pointer");
}

}  // namespace

void reparam_backward(float* dmu, float* dlogvar, const float* dz, const float* mu,
                      const float* logvar, const float* eps, int batch, int latent_dim, float beta,
                      cudaStream_t s) {
  const double scale = double(beta) / double(batch);  // as cpu::reparam_backward
  launch_backward("reparam_backward", dmu, dlogvar, dz, mu, logvar, eps, batch, latent_dim, scale,
                  s);
}

void reparam_backward(float* dmu, float* dlogvar, const float* dz, const float* mu,
                      const float* logvar, const float* eps, int batch, int latent_dim,
                      StepTable at, cudaStream_t s) {
  check_table("reparam_backward", at);
  launch_backward("reparam_backward", dmu, dlogvar, dz, mu, logvar, eps, batch, latent_dim, at, s);
}

void reparam_backward_biased(float* dmu, float* dlogvar, float* db_mu, float* db_lv,
                             unsigned* blocks_done, const float* dz, const float* mu,
                             const float* logvar, const float* eps, int batch, int latent_dim,
                             float beta, cudaStream_t s) {
  const double scale = double(beta) / double(batch);
  launch_backward_biased("reparam_backward_biased", dmu, dlogvar, db_mu, db_lv, blocks_done, dz, mu,
                         logvar, eps, batch, latent_dim, scale, s);
}

void reparam_backward_biased(float* dmu, float* dlogvar, float* db_mu, float* db_lv,
                             unsigned* blocks_done, const float* dz, const float* mu,
                             const float* logvar, const float* eps, int batch, int latent_dim,
                             StepTable at, cudaStream_t s) {
  check_table("reparam_backward_biased", at);
  launch_backward_biased("reparam_backward_biased", dmu, dlogvar, db_mu, db_lv, blocks_done, dz, mu,
                         logvar, eps, batch, latent_dim, at, s);
}

}  // namespace cuvae
