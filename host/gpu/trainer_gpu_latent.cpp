// The GPU trainer's latent block and loss (trainer_gpu_impl.h): both latent heads in one
// batched GEMM with their biases added inside the reparameterization, its backward, and the
// fused output bias + BCE+KL loss, value and gradient (cuda/kernels/loss.cuh).
#include "cuda/kernels/loss.cuh"
#include "cuda/kernels/reparam.cuh"
#include "cuda/runtime/nvtx.cuh"
#include "host/gpu/trainer_gpu_impl.h"

namespace cuvae {

void GpuTrainer::Impl::heads_forward(int count, const StepTable& at) {
  const int dim = desc.latent_dim;
  {
    const NvtxRange range("encoder.mu + encoder.logvar forward");
    dense_forward_pair(cublas, mu, head_stride(), h3.data(), weight(kEncMu), weight_stride(), count,
                       desc.layer(kEncMu).in_channels, dim);
  }
  const NvtxRange range("reparameterization forward");
  reparam_forward_biased(z.data(), eps.data(), mu, logvar, bias(kEncMu), bias(kEncLogvar), cfg.seed,
                         at, count, dim, s());
}

void GpuTrainer::Impl::heads_backward(int count, const StepTable& at) {
  const int dim = desc.latent_dim;
  {
    const NvtxRange range("reparameterization backward");
    if (kl_warmup())
      reparam_backward_biased(g_mu, g_lv, bias_grad(kEncMu), bias_grad(kEncLogvar),
                              reparam_done.data(), g_z.data(), mu, logvar, eps.data(), count, dim,
                              at, s());
    else
      reparam_backward_biased(g_mu, g_lv, bias_grad(kEncMu), bias_grad(kEncLogvar),
                              reparam_done.data(), g_z.data(), mu, logvar, eps.data(), count, dim,
                              float(cfg.beta), s());
  }
  const NvtxRange range("encoder.mu + encoder.logvar backward");
  const int in = desc.layer(kEncMu).in_channels;
  dense_backward_filter_pair(cublas, weight_grad(kEncMu), weight_stride(), h3.data(), g_mu,
                             head_stride(), count, in, dim);
  dense_backward_data(cublas, g_h3.data(), g_mu, weight(kEncMu), count, in, dim);
  dense_backward_data(cublas, g_h3.data(), g_lv, weight(kEncLogvar), count, in, dim, true);
}

void GpuTrainer::Impl::kl_weighted_sum(int count, const StepTable& at) {
  if (!kl_warmup()) return;
  const NvtxRange range("KL warm-up: weighted KL sum");
  kl_weighted_accumulate(sums.data() + 2, kl.data(), count, at, s());
}

template <typename T>
void GpuTrainer::Impl::fused_loss(T* dlogits_out, const T* pre_bias, int count) {
  const NvtxRange range("output bias + BCE+KL loss (fused)");
  FusedLossArgsT<T> a{};
  a.dlogits = dlogits_out;
  a.recon = recon.data();
  a.kl = kl.data();
  a.image_dsum = image_dsum.data();
  a.sums = sums.data();
  a.dbias = bias_grad(kDecOut);
  a.blocks_done = blocks_done.data();
  a.pre_bias = pre_bias;
  a.bias = bias(kDecOut);
  a.x = x.data();
  a.mu = mu;
  a.logvar = logvar;
  bce_kl_loss_fused(a, count, kImagePixels, desc.latent_dim, s());
}

// The two precisions the step computes the loss in.
template void GpuTrainer::Impl::fused_loss<float>(float*, const float*, int);
template void GpuTrainer::Impl::fused_loss<bf16>(bf16*, const bf16*, int);

}  // namespace cuvae
