// The GPU trainer's step (trainer_gpu_impl.h): the batch gathered from the epoch permutation,
// forward, loss, backward in fp32 or mixed precision, and Adam, all read from the step table at
// the cursor, so the same launches serve every step and replay from a CUDA graph.
#include <string>

#include "cuda/kernels/adam.cuh"
#include "cuda/kernels/data.cuh"
#include "cuda/kernels/loss.cuh"
#include "cuda/kernels/reparam.cuh"
#include "cuda/runtime/nvtx.cuh"
#include "host/core/error.h"
#include "host/gpu/trainer_gpu_impl.h"

namespace cuvae {

void GpuTrainer::Impl::forward_backward(const ConvSet& c, int count, const StepTable& at) {
  const int dim = desc.latent_dim;
  // Forward.
  layer_forward(c, kEncConv1, h1.data(), x.data(), count);
  layer_forward(c, kEncConv2, h2.data(), h1.data(), count);
  layer_forward(c, kEncFc, h3.data(), h2.data(), count);
  const bool fused = opts.fused;
  if (fused) {
    heads_forward(count, at);
  } else {
    layer_forward(c, kEncMu, mu, h3.data(), count);
    layer_forward(c, kEncLogvar, logvar, h3.data(), count);
    const NvtxRange range("reparameterization forward");
    reparam_forward(z.data(), eps.data(), mu, logvar, cfg.seed, at, count, dim, s());
  }
  layer_forward(c, kDecFc, d0.data(), z.data(), count);
  layer_forward(c, kDecDeconv1, d1.data(), d0.data(), count);
  layer_forward(c, kDecDeconv2, d2.data(), d1.data(), count);
  layer_forward(c, kDecOut, logits.data(), d2.data(), count, !fused);
  if (fused) {
    fused_loss(dlogits.data(), static_cast<const float*>(logits.data()), count);
  } else {
    const NvtxRange range("BCE+KL loss");
    bce_kl_loss(dlogits.data(), recon.data(), kl.data(), logits.data(), x.data(), mu, logvar, count,
                kImagePixels, dim, s());
    loss_accumulate(sums.data(), recon.data(), kl.data(), count, s());
  }
  kl_weighted_sum(count, at);
  // Backward.
  layer_backward(c, kDecOut, g_d2.data(), dlogits.data(), logits.data(), d2.data(), count, !fused);
  layer_backward(c, kDecDeconv2, g_d1.data(), g_d2.data(), d2.data(), d1.data(), count);
  layer_backward(c, kDecDeconv1, g_d0.data(), g_d1.data(), d1.data(), d0.data(), count);
  layer_backward(c, kDecFc, g_z.data(), g_d0.data(), d0.data(), z.data(), count);
  if (fused) {
    heads_backward(count, at);
  } else {
    {
      const NvtxRange range("reparameterization backward");
      if (kl_warmup())
        reparam_backward(g_mu, g_lv, g_z.data(), mu, logvar, eps.data(), count, dim, at, s());
      else
        reparam_backward(g_mu, g_lv, g_z.data(), mu, logvar, eps.data(), count, dim,
                         float(cfg.beta), s());
    }
    layer_backward(c, kEncMu, g_h3.data(), g_mu, mu, h3.data(), count);
    layer_backward(c, kEncLogvar, g_h3_lv.data(), g_lv, logvar, h3.data(), count);
    add_inplace(g_h3.data(), g_h3_lv.data(), size_t(count) * size_t(desc.layer(kEncFc).out_size()),
                s());
  }
  layer_backward(c, kEncFc, g_h2.data(), g_h3.data(), h3.data(), h2.data(), count);
  layer_backward(c, kEncConv2, g_h1.data(), g_h2.data(), h2.data(), h1.data(), count);
  layer_backward(c, kEncConv1, nullptr, g_h1.data(), h1.data(), x.data(), count);
}

void GpuTrainer::Impl::forward_backward_mixed(const ConvSet& c, int count, const StepTable& at,
                                              bool x_lo_ready) {
  {
    const NvtxRange range("bf16 copy of the weights");
    to_bf16(params_lo.data(), params.data(), lo_weights, s());
    if (!x_lo_ready) to_bf16(x_lo.data(), x.data(), size_t(count) * kImagePixels, s());
  }
  const Layer& enc_fc = desc.layer(kEncFc);
  const Layer& dec_fc = desc.layer(kDecFc);
  // Forward.
  conv_forward_lo(c, kEncConv1, h1_lo.data(), x_lo.data(), count);
  conv_forward_lo(c, kEncConv2, h2_lo.data(), h1_lo.data(), count);
  {
    const NvtxRange range(forward_names[kEncFc].c_str());
    dense_forward(cublas, h3.data(), h2_lo.data(), weight_lo(kEncFc), count, enc_fc.in_channels,
                  enc_fc.out_channels);
    bias_act_forward(h3.data(), bias(kEncFc), count, enc_fc.out_channels, 1, enc_fc.relu, s());
  }
  heads_forward(count, at);
  {
    const NvtxRange range(forward_names[kDecFc].c_str());
    dense_forward(cublas, d0.data(), z.data(), weight(kDecFc), count, dec_fc.in_channels,
                  dec_fc.out_channels);
    bias_act_forward(d0_lo.data(), static_cast<const float*>(d0.data()), bias(kDecFc), count,
                     dec_fc.out_channels, 1, dec_fc.relu, s());
  }
  conv_forward_lo(c, kDecDeconv1, d1_lo.data(), d0_lo.data(), count);
  conv_forward_lo(c, kDecDeconv2, d2_lo.data(), d1_lo.data(), count);
  conv_forward_lo(c, kDecOut, logits_lo.data(), d2_lo.data(), count, false);
  fused_loss(dlogits_lo.data(), static_cast<const bf16*>(logits_lo.data()), count);
  kl_weighted_sum(count, at);
  // Backward.
  conv_backward_lo(c, kDecOut, g_d2_lo.data(), dlogits_lo.data(), nullptr, d2_lo.data(), count,
                   false);
  conv_backward_lo(c, kDecDeconv2, g_d1_lo.data(), g_d2_lo.data(), d2_lo.data(), d1_lo.data(),
                   count);
  conv_backward_lo(c, kDecDeconv1, g_d0_lo.data(), g_d1_lo.data(), d1_lo.data(), d0_lo.data(),
                   count);
  {
    const NvtxRange range(backward_names[kDecFc].c_str());
    bias_act_backward(g_d0.data(), bias_grad(kDecFc), static_cast<const bf16*>(g_d0_lo.data()),
                      static_cast<const bf16*>(d0_lo.data()), count, dec_fc.out_channels, 1,
                      dec_fc.relu, s(), &bias_scratch);
    dense_backward_filter(cublas, weight_grad(kDecFc), z.data(), g_d0.data(), count,
                          dec_fc.in_channels, dec_fc.out_channels);
    dense_backward_data(cublas, g_z.data(), g_d0.data(), weight(kDecFc), count, dec_fc.in_channels,
                        dec_fc.out_channels);
  }
  heads_backward(count, at);
  {
    const NvtxRange range(backward_names[kEncFc].c_str());
    bias_act_backward(g_h3_lo.data(), bias_grad(kEncFc), static_cast<const float*>(g_h3.data()),
                      static_cast<const float*>(h3.data()), count, enc_fc.out_channels, 1,
                      enc_fc.relu, s(), &bias_scratch);
    dense_backward_filter(cublas, weight_grad(kEncFc), h2_lo.data(), g_h3_lo.data(), count,
                          enc_fc.in_channels, enc_fc.out_channels);
    dense_backward_data(cublas, g_h2_lo.data(), g_h3_lo.data(), weight_lo(kEncFc), count,
                        enc_fc.in_channels, enc_fc.out_channels);
  }
  conv_backward_lo(c, kEncConv2, g_h1_lo.data(), g_h2_lo.data(), h2_lo.data(), h1_lo.data(), count);
  conv_backward_lo(c, kEncConv1, nullptr, g_h1_lo.data(), h1_lo.data(), x_lo.data(), count);
  const NvtxRange range("widen the bf16 weight gradients");
  widen_spans(grads.data(), grads_lo.data(), lo_conv_grads, s());
}

void GpuTrainer::Impl::enqueue_step(int count, bool gather, bool apply_adam) {
  if (count != max_batch && count != remainder)
    throw Error("GpuTrainer: no convolution plan for a batch of " + std::to_string(count));
  const ConvSet& c = count == max_batch ? full_convs : rem_convs;
  const StepTable at{schedule.data(), cursor.data()};
  if (gather) {
    const NvtxRange range("gather batch");
    if (opts.bf16)
      gather_normalize(x.data(), x_lo.data(), images.data(), perm.data(), cursor.data(), max_batch,
                       count, kImagePixels, s());
    else
      gather_normalize(x.data(), images.data(), perm.data(), cursor.data(), max_batch, count,
                       kImagePixels, s());
  }
  if (opts.bf16)
    forward_backward_mixed(c, count, at, gather);
  else
    forward_backward(c, count, at);
  if (apply_adam) {
    const NvtxRange range("Adam");
    adam_step(params.data(), adam_m.data(), adam_v.data(), nonfinite.data(), grads.data(), dev.size,
              cfg.adam.beta1, cfg.adam.beta2, cfg.adam.eps, at, s());
  }
  advance_cursor(cursor.data(), s());
}

}  // namespace cuvae
