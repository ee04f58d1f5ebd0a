// Adam step kernel (adam.cuh): one grid-stride launch over the flat buffers.
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g g;  p -= step_size * m / (sqrt(v) * inv_sqrt_bc2 +
//   eps) step_size = lr / (1 - b1^t), inv_sqrt_bc2 = 1 / sqrt(1 - b2^t)
// The bias corrections are computed on the host in double and rounded to float exactly as
// cpu::adam_step does (host/core/step_scalars.h), passed as arguments or read from the trainer's
// step table; the kernel then performs the CPU's fp32 operations in the CPU's order
// with the _rn intrinsics (no FMA contraction, IEEE sqrt and division whatever the compiler
// flags), so on a host compiler that does not contract (x86-64 without -mfma) the result is
// the CPU's bit for bit. Scalar loads: the views into the parameter buffer need not be
// 16-byte aligned, and at ~134k parameters the step is launch-bound anyway.
// Owns: adam_kernel and the adam_step launcher.
#include <cmath>
#include <string>

#include "cuda/kernels/adam.cuh"
#include "cuda/kernels/launch.cuh"
#include "cuda/runtime/cuda_check.cuh"

namespace cuvae {
namespace {

constexpr int kThreads = 256;

// Step: the step's StepScalars, or the StepTable to read them from. kWatch: lower
// *first_nonfinite at a non-finite gradient (else first_nonfinite is unused).
template <bool kWatch, typename Step>
__global__ void adam_kernel(float* __restrict__ params, float* __restrict__ m,
                            float* __restrict__ v, unsigned long long* first_nonfinite,
                            const float* __restrict__ grads, size_t n, float beta1, float beta2,
                            float eps, Step step) {
  const StepScalars sc = step_scalars_at(step);
  const float step_size = sc.step_size, inv_sqrt_bc2 = sc.inv_sqrt_bc2;
  const unsigned long long step_tag = (unsigned long long)sc.step << 32;
  const float one_minus_b1 = 1.0f - beta1, one_minus_b2 = 1.0f - beta2;
  const size_t stride = size_t(gridDim.x) * kThreads;
  for (size_t i = size_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    const float g = grads[i];
    if (kWatch && !isfinite(g)) atomicMin(first_nonfinite, step_tag | i);
    const float mi = __fadd_rn(__fmul_rn(beta1, m[i]), __fmul_rn(one_minus_b1, g));
    const float vi = __fadd_rn(__fmul_rn(beta2, v[i]), __fmul_rn(__fmul_rn(one_minus_b2, g), g));
    m[i] = mi;
    v[i] = vi;
    const float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(vi), inv_sqrt_bc2), eps);
    params[i] = __fsub_rn(params[i], __fdiv_rn(__fmul_rn(step_size, mi), denom));
  }
}

void check_adam_args(size_t n, float beta1, float beta2, float eps) {
  if (n >= (size_t{1} << 32)) throw Error("adam_step: more than 2^32 parameters");
  if (!(beta1 >= 0.0f && beta1 < 1.0f) || !(beta2 >= 0.0f && beta2 < 1.0f))
    throw Error("adam_step: betas must lie in [0, 1)");
  if (!(eps >= 0.0f) || !std::isfinite(eps)) throw Error("adam_step: bad eps");
}

// One launch; the watch is compiled in only when there is a word to lower.
template <typename Step>
void launch_adam(float* params, float* m, float* v, unsigned long long* first_nonfinite,
                 const float* grads, size_t n, float beta1, float beta2, float eps, Step step,
                 cudaStream_t s) {
  const int blocks = grid_stride_blocks(n, kThreads);
  if (first_nonfinite)
    adam_kernel<true><<<blocks, kThreads, 0, s>>>(params, m, v, first_nonfinite, grads, n, beta1,
                                                  beta2, eps, step);
  else
    adam_kernel<false>
        <<<blocks, kThreads, 0, s>>>(params, m, v, nullptr, grads, n, beta1, beta2, eps, step);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void adam_step(float* params, float* m, float* v, unsigned long long* first_nonfinite,
               const float* grads, size_t n, float lr, float beta1, float beta2, float eps,
               int64_t step, cudaStream_t s) {
  if (step < 1 || step >= (int64_t{1} << 31))
    throw Error("adam_step: step must count from 1 and stay below 2^31, got " +
                std::to_string(step));
  check_adam_args(n, beta1, beta2, eps);
  if (!std::isfinite(lr)) throw Error("adam_step: bad lr");
  if (n == 0) return;  // nothing to update
  if (!params || !m || !v || !grads) throw Error("adam_step: null pointer");
  // Bias corrections exactly as cpu::adam_step computes them.
  const StepScalars fixed = step_scalars(lr, beta1, beta2, step);
  launch_adam(params, m, v, first_nonfinite, grads, n, beta1, beta2, eps, fixed, s);
}

void adam_step(float* params, float* m, float* v, unsigned long long* first_nonfinite,
               const float* grads, size_t n, float beta1, float beta2, float eps, StepTable at,
               cudaStream_t s) {
  check_adam_args(n, beta1, beta2, eps);
  if (n == 0) return;
  if (!params || !m || !v || !grads || !at.table || !at.cursor)
    throw Error("adam_step: null pointer");
  launch_adam(params, m, v, first_nonfinite, grads, n, beta1, beta2, eps, at, s);
}

}  // namespace cuvae
