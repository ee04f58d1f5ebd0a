// Fused BCE-with-logits + KL value and gradient, and the epoch loss accumulator (loss.cuh).
//   recon[b] = sum_p [ max(l,0) - l*x + log1p(e) ],  e = exp(-|l|) in (0, 1]: never overflows
//   dlogits  = (sigmoid(l) - x) / B,  sigmoid(l) = l >= 0 ? 1/(1+e) : e/(1+e): never overflows
//   kl[b]    = -1/2 sum_j (1 + lv - mu^2 - exp(lv))
// Each element is evaluated in double, in the order cpu::bce_kl_loss uses: a float logit and
// target make l*x exact in double, so max(l,0) - l*x loses nothing to cancellation and the
// float gradient is the CPU's up to the last-bit effects of the device exp/log1p. The per-image
// sums are reduced in double by one block per image in a fixed order (strided per-thread sums,
// then a fixed shuffle tree), stored as float; no atomics anywhere, so the results are
// bit-identical run to run.
// Owns: bce_kl_loss_kernel, loss_accumulate_kernel and their launchers.
#include <climits>
#include <string>

#include "cuda/block_reduce.cuh"
#include "cuda/cuda_check.cuh"
#include "cuda/loss.cuh"

namespace cuvae {
namespace {

constexpr int kThreads = 256;  // both kernels; the reduction tree depends on it

__global__ void __launch_bounds__(kThreads)
    bce_kl_loss_kernel(float* __restrict__ dlogits, float* __restrict__ recon,
                       float* __restrict__ kl, const float* __restrict__ logits,
                       const float* __restrict__ x, const float* __restrict__ mu,
                       const float* __restrict__ logvar, int pixels, int latent_dim, double inv_b) {
  const int64_t row = int64_t(blockIdx.x) * pixels;
  double recon_sum = 0.0;
  for (int p = threadIdx.x; p < pixels; p += kThreads) {
    const double l = logits[row + p], t = x[row + p];
    const double e = exp(-fabs(l));
    // (l < 0 ? 0 : l) is std::max(l, 0.0): a NaN logit stays NaN instead of being hidden.
    recon_sum += (l < 0.0 ? 0.0 : l) - l * t + log1p(e);
    const double sig = l >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
    dlogits[row + p] = float((sig - t) * inv_b);
  }
  const int64_t zrow = int64_t(blockIdx.x) * latent_dim;
  double kl_sum = 0.0;
  for (int j = threadIdx.x; j < latent_dim; j += kThreads) {
    const double m = mu[zrow + j], lv = logvar[zrow + j];
    kl_sum += -0.5 * (1.0 + lv - m * m - exp(lv));
  }
  block_sum2<kThreads>(recon_sum, kl_sum);
  if (threadIdx.x == 0) {
    recon[blockIdx.x] = float(recon_sum);
    kl[blockIdx.x] = float(kl_sum);
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

}  // namespace

void bce_kl_loss(float* dlogits, float* recon, float* kl, const float* logits, const float* x,
                 const float* mu, const float* logvar, int batch, int pixels, int latent_dim,
                 cudaStream_t s) {
  // The upper bounds keep the strided loop counters (p += kThreads) from overflowing.
  if (batch < 1 || pixels < 1 || latent_dim < 1 || pixels > INT_MAX - kThreads ||
      latent_dim > INT_MAX - kThreads)
    throw Error("bce_kl_loss: bad sizes batch=" + std::to_string(batch) +
                " pixels=" + std::to_string(pixels) + " latent_dim=" + std::to_string(latent_dim));
  if (!dlogits || !recon || !kl || !logits || !x || !mu || !logvar)
    throw Error("bce_kl_loss: null pointer");
  const double inv_b = 1.0 / double(batch);  // as cpu::bce_kl_loss
  bce_kl_loss_kernel<<<batch, kThreads, 0, s>>>(dlogits, recon, kl, logits, x, mu, logvar, pixels,
                                                latent_dim, inv_b);
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
