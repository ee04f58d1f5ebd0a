// Fused BCE-with-logits + KL value and gradient, and the epoch loss accumulator (loss.cuh).
//   recon[b] = sum_p [ max(l,0) - l*x + log1p(e) ],  e = exp(-|l|) in (0, 1]: never overflows
//   dlogits  = (sigmoid(l) - x) / B,  sigmoid(l) = l >= 0 ? 1/(1+e) : e/(1+e): never overflows
//   kl[b]    = -1/2 sum_j (1 + lv - mu^2 - exp(lv))
// Each element is evaluated in double, in the order cpu::bce_kl_loss uses: a float logit and
// target make l*x exact in double, so max(l,0) - l*x loses nothing to cancellation and the
// float gradient is the CPU's up to the last-bit effects of the device exp/log1p. The per-image
// sums are reduced in double by one block per image in a fixed order (strided per-thread sums,
// then a fixed shuffle tree), stored as float; no atomics anywhere, so the results are
// bit-identical run to run. The fused form (loss.cuh bce_kl_loss_fused) adds the output bias,
// sums each image's dlogits and lets the last block to finish (an atomic ticket, the only
// atomic, which decides who reduces, never the order of a sum) reduce the batch.
// The bf16 form (mixed precision) is the same kernel reading bf16 logits, widened to float, and
// storing each float gradient rounded to bf16; the bias gradient sums the stored values.
// Owns: bce_kl_loss_kernel, loss_accumulate_kernel and their launchers.
#include <climits>
#include <string>

#include "cuda/kernels/block_reduce.cuh"
#include "cuda/kernels/launch.cuh"
#include "cuda/kernels/loss.cuh"
#include "cuda/runtime/cuda_check.cuh"

namespace cuvae {
namespace {

constexpr int kThreads = 256;  // both kernels; the reduction tree depends on it

__device__ float widen(float v) {
  return v;
}
__device__ float widen(bf16 v) {
  return __bfloat162float(v);
}
// The stored gradient and its value as stored.
__device__ float store_grad(float* out, float g) {
  *out = g;
  return g;
}
__device__ float store_grad(bf16* out, float g) {
  const bf16 r = __float2bfloat16_rn(g);
  *out = r;
  return __bfloat162float(r);
}

// One block per image. kFused: the logit is pre_bias + *bias (float add), the kernel also
// writes image_dsum, and the last block to finish reduces the batch: sums += (recon, kl) and
// *dbias, in loss_accumulate_kernel's order (else bias, image_dsum, sums, dbias and blocks_done
// are unused). T: the logits' and their gradient's type.
template <typename T, bool kFused>
__global__ void __launch_bounds__(kThreads)
    bce_kl_loss_kernel(T* __restrict__ dlogits, float* __restrict__ recon, float* __restrict__ kl,
                       double* __restrict__ image_dsum, double* __restrict__ sums,
                       float* __restrict__ dbias, unsigned* __restrict__ blocks_done,
                       const T* __restrict__ logits, const float* __restrict__ bias,
                       const float* __restrict__ x, const float* __restrict__ mu,
                       const float* __restrict__ logvar, int pixels, int latent_dim, double inv_b) {
  const int64_t row = int64_t(blockIdx.x) * pixels;
  const float b0 = kFused ? *bias : 0.0f;
  double recon_sum = 0.0, dsum = 0.0;
  for (int p = threadIdx.x; p < pixels; p += kThreads) {
    const float lf = kFused ? __fadd_rn(widen(logits[row + p]), b0) : widen(logits[row + p]);
    const double l = lf, t = x[row + p];
    const double e = exp(-fabs(l));
    // (l < 0 ? 0 : l) is std::max(l, 0.0): a NaN logit stays NaN instead of being hidden.
    recon_sum += (l < 0.0 ? 0.0 : l) - l * t + log1p(e);
    const double sig = l >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
    const float g = store_grad(dlogits + row + p, float((sig - t) * inv_b));
    dsum += double(g);
  }
  const int64_t zrow = int64_t(blockIdx.x) * latent_dim;
  double kl_sum = 0.0;
  for (int j = threadIdx.x; j < latent_dim; j += kThreads) {
    const double m = mu[zrow + j], lv = logvar[zrow + j];
    kl_sum += -0.5 * (1.0 + lv - m * m - exp(lv));
  }
  block_sum2<kThreads>(recon_sum, kl_sum);
  if constexpr (kFused) dsum = block_sum<kThreads>(dsum);
  if (threadIdx.x == 0) {
    recon[blockIdx.x] = float(recon_sum);
    kl[blockIdx.x] = float(kl_sum);
    if constexpr (kFused) image_dsum[blockIdx.x] = dsum;
  }
  if constexpr (kFused) {
    if (!last_block_done(blocks_done)) return;
    // The other blocks' values, read from L2 (__ldcg), in loss_accumulate_kernel's order.
    double r = 0.0, k = 0.0, d = 0.0;
    for (int b = threadIdx.x; b < int(gridDim.x); b += kThreads) {
      r += double(__ldcg(recon + b));
      k += double(__ldcg(kl + b));
      d += __ldcg(image_dsum + b);
    }
    block_sum2<kThreads>(r, k);
    d = block_sum<kThreads>(d);
    if (threadIdx.x == 0) {
      sums[0] += r;
      sums[1] += k;
      *dbias = float(d);
    }
  }
}

// A single block: thread t sums b = t, t + kThreads, ... in increasing order, then the tree.
__global__ void __launch_bounds__(kThreads)
    loss_accumulate_kernel(double* __restrict__ sums, const float* __restrict__ recon,
                           const float* __restrict__ kl, int batch) {
  double r = 0.0, k = 0.0;
  for (int b = threadIdx.x; b < batch; b += kThreads) {
    r += double(recon[b]);
    k += double(kl[b]);
  }
  block_sum2<kThreads>(r, k);
  if (threadIdx.x == 0) {
    sums[0] += r;
    sums[1] += k;
  }
}

// A single block, the sum in loss_accumulate_kernel's order, times the step's KL weight.
__global__ void __launch_bounds__(kThreads)
    kl_weighted_accumulate_kernel(double* __restrict__ weighted_sum, const float* __restrict__ kl,
                                  int batch, StepTable at) {
  double k = 0.0;
  for (int b = threadIdx.x; b < batch; b += kThreads) k += double(kl[b]);
  k = block_sum<kThreads>(k);
  if (threadIdx.x == 0) *weighted_sum += double(step_scalars_at(at).kl_weight) * k;
}

// The upper bounds keep the strided loop counters (p += kThreads) from overflowing.
void check_loss_sizes(const char* fn, int batch, int pixels, int latent_dim) {
  if (batch < 1 || pixels < 1 || latent_dim < 1 || pixels > INT_MAX - kThreads ||
      latent_dim > INT_MAX - kThreads || batch > INT_MAX - kThreads)
    throw Error(std::string(fn) + ": bad sizes batch=" + std::to_string(batch) +
                " pixels=" + std::to_string(pixels) + " latent_dim=" + std::to_string(latent_dim));
}

}  // namespace

void bce_kl_loss(float* dlogits, float* recon, float* kl, const float* logits, const float* x,
                 const float* mu, const float* logvar, int batch, int pixels, int latent_dim,
                 cudaStream_t s) {
  check_loss_sizes("bce_kl_loss", batch, pixels, latent_dim);
  if (!dlogits || !recon || !kl || !logits || !x || !mu || !logvar)
    throw Error("bce_kl_loss: null pointer");
  const double inv_b = 1.0 / double(batch);  // as cpu::bce_kl_loss
  bce_kl_loss_kernel<float, false>
      <<<batch, kThreads, 0, s>>>(dlogits, recon, kl, nullptr, nullptr, nullptr, nullptr, logits,
                                  nullptr, x, mu, logvar, pixels, latent_dim, inv_b);
  CUDA_CHECK_LAUNCH();
}

namespace {

template <typename T>
void launch_fused(const char* fn, const FusedLossArgsT<T>& a, int batch, int pixels, int latent_dim,
                  cudaStream_t s) {
  check_loss_sizes(fn, batch, pixels, latent_dim);
  if (!a.dlogits || !a.recon || !a.kl || !a.image_dsum || !a.sums || !a.dbias || !a.blocks_done ||
      !a.pre_bias || !a.bias || !a.x || !a.mu || !a.logvar)
    throw Error(std::string(fn) + ": null pointer");
  const double inv_b = 1.0 / double(batch);
  bce_kl_loss_kernel<T, true><<<batch, kThreads, 0, s>>>(
      a.dlogits, a.recon, a.kl, a.image_dsum, a.sums, a.dbias, a.blocks_done, a.pre_bias, a.bias,
      a.x, a.mu, a.logvar, pixels, latent_dim, inv_b);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void bce_kl_loss_fused(const FusedLossArgs& a, int batch, int pixels, int latent_dim,
                       cudaStream_t s) {
  launch_fused("bce_kl_loss_fused", a, batch, pixels, latent_dim, s);
}

void bce_kl_loss_fused(const FusedLossArgsBf16& a, int batch, int pixels, int latent_dim,
                       cudaStream_t s) {
  launch_fused("bce_kl_loss_fused (bf16)", a, batch, pixels, latent_dim, s);
}

void kl_weighted_accumulate(double* weighted_sum, const float* kl, int batch, StepTable at,
                            cudaStream_t s) {
  if (batch < 1 || batch > INT_MAX - kThreads)
    throw Error("kl_weighted_accumulate: bad batch " + std::to_string(batch));
  if (!weighted_sum || !kl || !at.table || !at.cursor)
    throw Error("kl_weighted_accumulate: null pointer");
  kl_weighted_accumulate_kernel<<<1, kThreads, 0, s>>>(weighted_sum, kl, batch, at);
  CUDA_CHECK_LAUNCH();
}

void loss_accumulate(double* sums, const float* recon, const float* kl, int batch, cudaStream_t s) {
  if (batch < 1 || batch > INT_MAX - kThreads)
    throw Error("loss_accumulate: bad batch " + std::to_string(batch));
  if (!sums || !recon || !kl) throw Error("loss_accumulate: null pointer");
  loss_accumulate_kernel<<<1, kThreads, 0, s>>>(sums, recon, kl, batch);
  CUDA_CHECK_LAUNCH();
}

}  // namespace cuvae
