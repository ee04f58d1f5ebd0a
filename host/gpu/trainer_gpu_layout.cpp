// The GPU trainer's --layout auto (trainer_gpu_impl.h): the convolution layers' share of a step
// timed with the ConvOps built in NCHW and in NHWC; the faster layout is kept.
#include <cstdio>
#include <utility>

#include "cuda/runtime/nvtx.cuh"
#include "host/core/error.h"
#include "host/gpu/trainer_gpu_impl.h"

namespace cuvae {

void GpuTrainer::Impl::choose_layout(ConvMath math, ConvAlgoPolicy policy) {
  const NvtxRange range("choose the convolution layout");
  for (DeviceBuffer<float>* buf :
       {&params, &x, &h1, &h2, &d0, &d1, &d2, &logits, &dlogits, &g_h1, &g_h2, &g_d0, &g_d1, &g_d2})
    zero(*buf);
  for (DeviceBuffer<bf16>* buf :
       {&params_lo, &x_lo, &h1_lo, &h2_lo, &d0_lo, &d1_lo, &d2_lo, &logits_lo, &dlogits_lo,
        &g_h1_lo, &g_h2_lo, &g_d0_lo, &g_d1_lo, &g_d2_lo})
    zero(*buf);
  ConvSet sets[2];
  CudaEvent start, end;
  for (int layout = 0; layout < 2; ++layout) {
    opts.nhwc = layout == 1;
    try {
      sets[layout] = make_convs(max_batch, math, policy);
    } catch (const Error& e) {
      if (layout == 0) throw;  // NCHW is the fallback: its failure is the run's
      opts.nhwc = false;
      full_convs = std::move(sets[0]);
      std::printf("cuvae: --layout auto: NHWC is not available here (%s); training in NCHW\n",
                  e.what());
      std::fflush(stdout);
      return;
    }
    full_convs = std::move(sets[layout]);
    size_layout_buffers();
    double best = 0;
    for (int rep = 0; rep < 4; ++rep) {
      start.record(s());
      conv_passes(full_convs, max_batch);
      end.record(s());
      stream.synchronize();
      const double ms = end.ms_since(start);
      if (rep == 1 || (rep > 1 && ms < best)) best = ms;  // rep 0 warms up
    }
    layout_ms[size_t(layout)] = best;
    sets[layout] = std::move(full_convs);
  }
  opts.nhwc = layout_ms[1] < layout_ms[0];
  full_convs = std::move(sets[opts.nhwc ? 1 : 0]);
  layout_measured = true;
  std::printf(
      "cuvae: --layout auto: the convolution passes of a step take %.3f ms in NCHW and %.3f ms "
      "in NHWC here; training in %s\n",
      layout_ms[0], layout_ms[1], opts.nhwc ? "NHWC" : "NCHW");
  std::fflush(stdout);
}

void GpuTrainer::Impl::conv_passes(const ConvSet& c, int n) {
  const bool epi = !opts.fused;  // decoder.out's bias: the fused loss's, or its own kernel
  if (opts.bf16) {
    conv_forward_lo(c, kEncConv1, h1_lo.data(), x_lo.data(), n);
    conv_forward_lo(c, kEncConv2, h2_lo.data(), h1_lo.data(), n);
    conv_forward_lo(c, kDecDeconv1, d1_lo.data(), d0_lo.data(), n);
    conv_forward_lo(c, kDecDeconv2, d2_lo.data(), d1_lo.data(), n);
    conv_forward_lo(c, kDecOut, logits_lo.data(), d2_lo.data(), n, false);
    conv_backward_lo(c, kDecOut, g_d2_lo.data(), dlogits_lo.data(), nullptr, d2_lo.data(), n,
                     false);
    conv_backward_lo(c, kDecDeconv2, g_d1_lo.data(), g_d2_lo.data(), d2_lo.data(), d1_lo.data(), n);
    conv_backward_lo(c, kDecDeconv1, g_d0_lo.data(), g_d1_lo.data(), d1_lo.data(), d0_lo.data(), n);
    conv_backward_lo(c, kEncConv2, g_h1_lo.data(), g_h2_lo.data(), h2_lo.data(), h1_lo.data(), n);
    conv_backward_lo(c, kEncConv1, nullptr, g_h1_lo.data(), h1_lo.data(), x_lo.data(), n);
    return;
  }
  layer_forward(c, kEncConv1, h1.data(), x.data(), n);
  layer_forward(c, kEncConv2, h2.data(), h1.data(), n);
  layer_forward(c, kDecDeconv1, d1.data(), d0.data(), n);
  layer_forward(c, kDecDeconv2, d2.data(), d1.data(), n);
  layer_forward(c, kDecOut, logits.data(), d2.data(), n, epi);
  layer_backward(c, kDecOut, g_d2.data(), dlogits.data(), logits.data(), d2.data(), n, epi);
  layer_backward(c, kDecDeconv2, g_d1.data(), g_d2.data(), d2.data(), d1.data(), n);
  layer_backward(c, kDecDeconv1, g_d0.data(), g_d1.data(), d1.data(), d0.data(), n);
  layer_backward(c, kEncConv2, g_h1.data(), g_h2.data(), h2.data(), h1.data(), n);
  layer_backward(c, kEncConv1, nullptr, g_h1.data(), h1.data(), x.data(), n);
}

}  // namespace cuvae
