// GPU trainer (trainer_gpu.h).
#include "host/gpu/trainer_gpu.h"

#include <cuda_profiler_api.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <utility>

#include "cuda/kernels/activations.cuh"
#include "cuda/kernels/adam.cuh"
#include "cuda/kernels/data.cuh"
#include "cuda/kernels/loss.cuh"
#include "cuda/kernels/precision.cuh"
#include "cuda/kernels/reparam.cuh"
#include "cuda/kernels/shuffle.cuh"
#include "cuda/libs/conv.cuh"
#include "cuda/libs/dense.cuh"
#include "cuda/runtime/device_buffer.cuh"
#include "cuda/runtime/nvtx.cuh"
#include "host/core/error.h"
#include "host/core/step_scalars.h"
#include "host/gpu/device_info.h"
#include "host/gpu/gpu_plan.h"

namespace cuvae {

namespace {

bool is_conv(const Layer& l) {
  return l.kind != LayerKind::Linear;
}

// Mixed precision needs the fused kernels, excludes TF32 and needs bf16 tensor cores.
void check_mixed_precision(const GpuOptions& o) {
  if (!o.fused) throw Error("GpuTrainer: mixed precision (bf16) needs the fused kernels");
  if (o.tf32) throw Error("GpuTrainer: mixed precision (bf16) and TF32 exclude each other");
  int device = 0, major = 0, minor = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  if (major < 8)
    throw InputError(
        "mixed precision (--bf16) needs a GPU with bf16 tensor cores (compute "
        "capability 8.0 or newer); this one is " +
        std::to_string(major) + "." + std::to_string(minor));
}

// One ConvOp per convolution layer for one batch size (null for dense layers).
using ConvSet = std::array<std::unique_ptr<ConvOp>, kNumLayers>;

}  // namespace

struct GpuTrainer::Impl {
  ModelDesc desc;
  TrainConfig cfg;
  GpuOptions opts;
  int max_batch;
  int remainder;
  CudaStream stream;
  CudnnHandle cudnn;
  CublasHandle cublas;
  ConvSet full_convs, rem_convs;
  DeviceBuffer<unsigned char> workspace;
  // Where each parameter tensor lies in params, grads, adam_m and adam_v: 256-byte aligned
  // starts, channels_last_order inside the tensors when opts.nhwc (host/gpu/gpu_plan.h).
  DeviceParamLayout dev;
  // The bias gradients' sliced reductions (activations.cuh): per-slice sums and the ticket.
  DeviceBuffer<double> bias_partial;
  DeviceBuffer<unsigned> bias_ticket;
  BiasGradScratch bias_scratch;

  DeviceBuffer<float> params, grads, adam_m, adam_v;  // (dev.size) each, padding zero
  // Mixed precision (opts.bf16) only: the step's bf16 copies of the weights of the layers
  // that run in bf16 (the convolutions and encoder.fc), and the bf16 weight gradients the
  // convolutions write (widened into `grads` before Adam). Each tensor starts on a 256-byte
  // boundary of its own layout (lo_offset), which the tensor-core kernels want.
  DeviceBuffer<bf16> params_lo, grads_lo;
  std::array<size_t, kNumLayers> lo_offset{};  // per bf16 layer: its weight in params_lo
  SpanMap lo_weights;                          // params <-> params_lo
  SpanMap lo_conv_grads;                       // grads <-> grads_lo, the convolutions only
  // Activations, sized for max_batch; see cpu_model.h for the shapes.
  DeviceBuffer<float> x, h1, h2, h3, eps, z, d0, d1, d2, logits, dlogits;
  // The two latent heads in one buffer (2, max_batch, D), mu then logvar, so that one
  // strided-batched GEMM computes both; and their gradients alike.
  DeviceBuffer<float> heads, g_heads;
  float *mu, *logvar, *g_mu, *g_lv;  // views into heads, g_heads
  // Activation gradients.
  DeviceBuffer<float> g_h1, g_h2, g_h3, g_h3_lv, g_z, g_d0, g_d1, g_d2;
  // Mixed precision: the bf16 activations and activation gradients. The float buffers the
  // mixed step also uses are x (the loss's targets), h3, heads, eps, z, g_h3, g_heads, g_z,
  // d0 (decoder.fc before its bias: the layer runs in fp32) and g_d0 (its masked gradient);
  // the other float activations stay unallocated, and in fp32 these stay unallocated.
  DeviceBuffer<bf16> x_lo, h1_lo, h2_lo, d0_lo, d1_lo, d2_lo, logits_lo, dlogits_lo;
  DeviceBuffer<bf16> g_h1_lo, g_h2_lo, g_h3_lo, g_d0_lo, g_d1_lo, g_d2_lo;
  DeviceBuffer<float> recon, kl;               // (max_batch) per image
  DeviceBuffer<double> image_dsum;             // (max_batch) the fused loss's scratch
  DeviceBuffer<unsigned> blocks_done;          // (1) the fused loss's ticket, 0 between launches
  DeviceBuffer<unsigned> reparam_done;         // (1) the biased reparam backward's ticket
  DeviceBuffer<double> sums;                   // (2) epoch sums of recon and kl over images
  DeviceBuffer<unsigned long long> nonfinite;  // (1) Adam's earliest bad gradient (adam.cuh)
  DeviceBuffer<uint8_t> images;                // (N, 784)
  DeviceBuffer<int32_t> perm;                  // (N) this epoch's order
  std::unique_ptr<DeviceShuffle> shuffle;      // draws perm
  DeviceBuffer<StepScalars> schedule;          // (steps per epoch, at least 1) the step table
  DeviceBuffer<int32_t> cursor;                // (1) the step in progress: its index in the epoch
  CudaGraphExec step_graph;                    // the captured full-batch step
  bool graph_failed = false;                   // capture failed once: stay eager
  int64_t eager_full_steps = 0;                // full-batch steps launched without the graph
  size_t graph_nodes = 0;
  CudaEvent epoch_start, epoch_end;
  int64_t num_images = 0;
  int64_t step = 0;  // Adam steps taken
  // Position inside an epoch that stopped early (or that set_state resumes): steps done and
  // the loss sums over their images. 0 at an epoch boundary.
  int64_t epoch_step = 0;
  double epoch_sums[2] = {0, 0};
  std::array<std::string, kNumLayers> forward_names, backward_names;  // NVTX range names
  // --layout auto: what choose_layout measured (ms, NCHW then NHWC).
  bool layout_measured = false;
  std::array<double, 2> layout_ms{};

  Impl(const ModelDesc& d, const TrainConfig& c, const GpuOptions& o, int mb, int rem)
      : desc(d),
        cfg(c),
        opts(o),
        max_batch(mb),
        remainder(rem),
        cudnn(stream.get()),
        cublas(stream.get(), o.tf32) {
    name_stream(stream.get(), "cuvae compute");
    if (o.bf16) check_mixed_precision(o);
    const ConvMath math = o.bf16 ? ConvMath::Bf16 : o.tf32 ? ConvMath::Tf32 : ConvMath::Fp32Strict;
    const ConvAlgoPolicy policy =
        o.deterministic ? ConvAlgoPolicy::Deterministic : ConvAlgoPolicy::Fastest;
    if (o.nhwc || o.layout_auto)
      for (const Layer& l : desc.layers)  // epilogue() counts rows in int
        if (is_conv(l) && int64_t(max_batch) * l.out_h * l.out_w > int64_t(INT_MAX))
          throw InputError(std::string("--layout ") + (o.layout_auto ? "auto" : "nhwc") +
                           ": a batch of " + std::to_string(max_batch) +
                           " images is too large for the channels-last bias kernels");
    for (int i = 0; i < kNumLayers; ++i) {
      forward_names[size_t(i)] = desc.layers[size_t(i)].name + " forward";
      backward_names[size_t(i)] = desc.layers[size_t(i)].name + " backward";
    }

    // The tensors' offsets do not depend on the layout (chosen below with layout_auto), only
    // the order inside them does: `dev` is made again once the layout is known.
    dev = device_param_layout(desc, false);
    const size_t n = dev.size;
    params = DeviceBuffer<float>(n, "the parameters");
    grads = DeviceBuffer<float>(n, "the gradients");
    adam_m = DeviceBuffer<float>(n, "the Adam moments");
    adam_v = DeviceBuffer<float>(n, "the Adam moments");
    // The padding is read (by Adam) but never written: zero, so it stays zero.
    for (DeviceBuffer<float>* buf : {&params, &grads, &adam_m, &adam_v}) zero(*buf);
    const size_t b = size_t(max_batch), dim = size_t(desc.latent_dim);
    const bool lo = o.bf16;
    // A layer's output-sized activation buffer of type T, allocated only when `used`.
    auto sized = [&](auto type, LayerId id, const char* what, bool used) {
      using T = decltype(type);
      return DeviceBuffer<T>(used ? b * size_t(desc.layer(id).out_size()) : 0, what);
    };
    auto act = [&](LayerId id, const char* what, bool used = true) {
      return sized(float{}, id, what, used);
    };
    auto act_lo = [&](LayerId id, const char* what) { return sized(bf16{}, id, what, lo); };
    x = DeviceBuffer<float>(b * kImagePixels, "the input batch");
    h1 = act(kEncConv1, "activations", !lo);
    h2 = act(kEncConv2, "activations", !lo);
    h3 = act(kEncFc, "activations");
    heads = DeviceBuffer<float>(2 * b * dim, "activations");
    mu = heads.data();
    logvar = heads.data() + b * dim;
    eps = DeviceBuffer<float>(b * dim, "activations");
    z = DeviceBuffer<float>(b * dim, "activations");
    d0 = act(kDecFc, "activations");
    d1 = act(kDecDeconv1, "activations", !lo);
    d2 = act(kDecDeconv2, "activations", !lo);
    logits = act(kDecOut, "activations", !lo);
    dlogits = act(kDecOut, "activation gradients", !lo);
    g_h1 = act(kEncConv1, "activation gradients", !lo);
    g_h2 = act(kEncConv2, "activation gradients", !lo);
    g_h3 = act(kEncFc, "activation gradients");
    g_h3_lv = act(kEncFc, "activation gradients", !o.fused);
    g_heads = DeviceBuffer<float>(2 * b * dim, "activation gradients");
    g_mu = g_heads.data();
    g_lv = g_heads.data() + b * dim;
    g_z = DeviceBuffer<float>(b * dim, "activation gradients");
    g_d0 = act(kDecFc, "activation gradients");
    g_d1 = act(kDecDeconv1, "activation gradients", !lo);
    g_d2 = act(kDecDeconv2, "activation gradients", !lo);
    if (lo) {
      constexpr size_t kAlign = 128;  // bf16 elements: 256 bytes
      size_t lo_size = 0;
      for (int i = 0; i < kNumLayers; ++i) {
        const LayerId id = LayerId(i);
        if (!is_conv(desc.layer(id)) && id != kEncFc) continue;
        const ParamTensor& w = desc.weight(id);
        lo_offset[size_t(i)] = lo_size;
        for (SpanMap* m : {&lo_weights, &lo_conv_grads}) {
          if (m == &lo_conv_grads && id == kEncFc) continue;  // its gradient is fp32
          if (m->count == SpanMap::kMax) throw Error("GpuTrainer: too many bf16 layers");
          m->offset[m->count] = dev.offset[size_t(desc.layer(id).weight)];
          m->lo_offset[m->count] = lo_size;
          m->size[m->count] = w.numel;
          ++m->count;
        }
        lo_size += (w.numel + kAlign - 1) / kAlign * kAlign;
      }
      params_lo = DeviceBuffer<bf16>(lo_size, "the bf16 weights");
      grads_lo = DeviceBuffer<bf16>(lo_size, "the bf16 weight gradients");
      x_lo = DeviceBuffer<bf16>(b * kImagePixels, "the input batch");
      h1_lo = act_lo(kEncConv1, "activations");
      h2_lo = act_lo(kEncConv2, "activations");
      d0_lo = act_lo(kDecFc, "activations");
      d1_lo = act_lo(kDecDeconv1, "activations");
      d2_lo = act_lo(kDecDeconv2, "activations");
      logits_lo = act_lo(kDecOut, "activations");
      dlogits_lo = act_lo(kDecOut, "activation gradients");
      g_h1_lo = act_lo(kEncConv1, "activation gradients");
      g_h2_lo = act_lo(kEncConv2, "activation gradients");
      g_h3_lo = act_lo(kEncFc, "activation gradients");
      g_d0_lo = act_lo(kDecFc, "activation gradients");
      g_d1_lo = act_lo(kDecDeconv1, "activation gradients");
      g_d2_lo = act_lo(kDecDeconv2, "activation gradients");
    }
    bias_ticket = DeviceBuffer<unsigned>(1, "the bias gradients' ticket");
    CUDA_CHECK(cudaMemsetAsync(bias_ticket.data(), 0, sizeof(unsigned), s()));
    recon = DeviceBuffer<float>(b, "per-image losses");
    kl = DeviceBuffer<float>(b, "per-image losses");
    image_dsum = DeviceBuffer<double>(b, "per-image losses");
    blocks_done = DeviceBuffer<unsigned>(1, "the loss kernel's ticket");
    if (weight_stride() < (long long)desc.weight(kEncMu).numel)
      throw Error("GpuTrainer: encoder.logvar's weight must follow encoder.mu's in the parameters");
    reparam_done = DeviceBuffer<unsigned>(1, "the reparameterization kernel's ticket");
    CUDA_CHECK(cudaMemsetAsync(blocks_done.data(), 0, sizeof(unsigned), s()));
    CUDA_CHECK(cudaMemsetAsync(reparam_done.data(), 0, sizeof(unsigned), s()));
    sums = DeviceBuffer<double>(2, "loss sums");
    nonfinite = DeviceBuffer<unsigned long long>(1, "the non-finite flag");
    nonfinite.upload(&kNoNonfinite, 1, s());
    schedule = DeviceBuffer<StepScalars>(1, "the step table");
    cursor = DeviceBuffer<int32_t>(1, "the step cursor");

    // The convolutions, in the layout asked for or, with layout_auto, the faster one here.
    if (o.layout_auto)
      choose_layout(math, policy);
    else
      full_convs = make_convs(max_batch, math, policy);
    if (remainder > 0) rem_convs = make_convs(remainder, math, policy);
    size_layout_buffers();
    dev = device_param_layout(desc, opts.nhwc);
    stream.synchronize();
  }

  // One ConvOp per convolution layer at `batch`, in the layout opts.nhwc says.
  ConvSet make_convs(int batch, ConvMath math, ConvAlgoPolicy policy) {
    ConvSet set;
    const ConvLayout layout = opts.nhwc ? ConvLayout::Nhwc : ConvLayout::Nchw;
    for (int i = 0; i < kNumLayers; ++i)
      if (is_conv(desc.layers[size_t(i)]))
        set[size_t(i)] =
            std::make_unique<ConvOp>(cudnn, desc.layers[size_t(i)], batch, math, policy, layout);
    return set;
  }

  // Grows the cuDNN workspace to what the ConvOps built so far need and the bias gradients'
  // scratch to the largest sliced reduction of a step (full batch or remainder) in the layout
  // opts.nhwc says. Neither shrinks: after --layout auto they fit both layouts' needs.
  void size_layout_buffers() {
    size_t ws = 0;
    for (const ConvSet* set : {&full_convs, &rem_convs})
      for (const std::unique_ptr<ConvOp>& op : *set)
        if (op) ws = std::max(ws, op->workspace_bytes());
    if (ws > workspace.size()) workspace = DeviceBuffer<unsigned char>(ws, "the cuDNN workspace");
    // Every batch size a step launches: the remainder may need more slices than the full
    // batch (bias_grad_slices is not monotonic in the row count).
    const size_t partial = bias_grad_scratch_for_run(desc, opts.nhwc, max_batch, remainder);
    if (partial > bias_partial.size())
      bias_partial = DeviceBuffer<double>(partial, "the bias gradients' partial sums");
    bias_scratch = BiasGradScratch{bias_partial.data(), bias_ticket.data(), bias_partial.size()};
  }

  // --layout auto: builds the full batch's convolutions in NCHW and in NHWC and times, in each,
  // what the layout changes in a step (every convolution's forward, bias/ReLU, their backward
  // and both gradients; not the dense layers, whose GEMMs are the same) on this trainer's own
  // buffers, zeroed: one warm-up pass, then the best of three. Keeps the faster layout's
  // ConvOps; sets opts.nhwc and layout_ms. When cuDNN has no algorithm for NHWC here (a
  // ConvOp refuses), keeps NCHW and says so.
  void choose_layout(ConvMath math, ConvAlgoPolicy policy) {
    const NvtxRange range("choose the convolution layout");
    for (DeviceBuffer<float>* buf : {&params, &x, &h1, &h2, &d0, &d1, &d2, &logits, &dlogits, &g_h1,
                                     &g_h2, &g_d0, &g_d1, &g_d2})
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

  template <typename T>
  void zero(DeviceBuffer<T>& buf) {
    if (buf.size() > 0) CUDA_CHECK(cudaMemsetAsync(buf.data(), 0, buf.size() * sizeof(T), s()));
  }

  // The convolution layers' share of a step (choose_layout): their forward passes with the
  // bias/ReLU epilogues, then their backward passes, in the step's precision.
  void conv_passes(const ConvSet& c, int n) {
    const bool epi = !opts.fused;  // decoder.out's bias: the fused loss's, or its own kernel
    if (opts.bf16) {
      conv_forward_lo(c, kEncConv1, h1_lo.data(), x_lo.data(), n);
      conv_forward_lo(c, kEncConv2, h2_lo.data(), h1_lo.data(), n);
      conv_forward_lo(c, kDecDeconv1, d1_lo.data(), d0_lo.data(), n);
      conv_forward_lo(c, kDecDeconv2, d2_lo.data(), d1_lo.data(), n);
      conv_forward_lo(c, kDecOut, logits_lo.data(), d2_lo.data(), n, false);
      conv_backward_lo(c, kDecOut, g_d2_lo.data(), dlogits_lo.data(), nullptr, d2_lo.data(), n,
                       false);
      conv_backward_lo(c, kDecDeconv2, g_d1_lo.data(), g_d2_lo.data(), d2_lo.data(), d1_lo.data(),
                       n);
      conv_backward_lo(c, kDecDeconv1, g_d0_lo.data(), g_d1_lo.data(), d1_lo.data(), d0_lo.data(),
                       n);
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

  cudaStream_t s() const { return stream.get(); }

  // The (rows, channels, plane) a layer's bias/ReLU kernels see (host/gpu/gpu_plan.h).
  BiasActShape epilogue(LayerId id, int batch) const {
    return bias_act_shape(desc.layer(id), batch, opts.nhwc);
  }

  // The flat parameter-sized buffers between the host's (PyTorch) order and the device's.
  void upload_ordered(DeviceBuffer<float>& dst, const float* host) {
    std::vector<float> staged(dev.size);
    to_device_order(dev, host, staged.data());
    dst.upload(staged.data(), dev.size, s());  // pageable: staged before the call returns
  }
  void download_ordered(const DeviceBuffer<float>& src, float* host) const {
    std::vector<float> staged(dev.size);
    src.download(staged.data(), dev.size, s());
    stream.synchronize();
    to_host_order(dev, staged.data(), host);
  }
  // Offsets, in floats, from mu to logvar (activations) and from encoder.mu's weight (and
  // bias) to encoder.logvar's (parameters): the strides of the heads' batched GEMMs.
  long long head_stride() const { return (long long)max_batch * desc.latent_dim; }
  long long weight_stride() const {
    return (long long)dev.weight(desc, kEncLogvar) - (long long)dev.weight(desc, kEncMu);
  }
  const float* weight(LayerId id) const { return params.data() + dev.weight(desc, id); }
  const float* bias(LayerId id) const { return params.data() + dev.bias(desc, id); }
  float* weight_grad(LayerId id) { return grads.data() + dev.weight(desc, id); }
  float* bias_grad(LayerId id) { return grads.data() + dev.bias(desc, id); }

  // y = act(layer(x) + bias); without the epilogue (the fused loss adds the output bias),
  // y = layer(x).
  void layer_forward(const ConvSet& convs, LayerId id, float* y, const float* in, int batch,
                     bool with_epilogue = true) {
    const Layer& l = desc.layer(id);
    const NvtxRange range(forward_names[size_t(id)].c_str());
    if (is_conv(l))
      convs[size_t(id)]->forward(y, in, weight(id), workspace.data(), workspace.size());
    else
      dense_forward(cublas, y, in, weight(id), batch, l.in_channels, l.out_channels);
    if (with_epilogue) {
      const BiasActShape e = epilogue(id, batch);
      bias_act_forward(y, bias(id), e.rows, e.channels, e.plane, l.relu, s());
    }
  }

  // dy: gradient w.r.t. the layer's (post-ReLU) output y, masked in place; writes the
  // layer's weight and bias gradients and, unless dx is null, the input gradient. Without
  // the epilogue, dy is used as it is and the bias gradient is left alone (the fused loss
  // wrote it).
  void layer_backward(const ConvSet& convs, LayerId id, float* dx, float* dy, const float* y,
                      const float* in, int batch, bool with_epilogue = true) {
    const Layer& l = desc.layer(id);
    const NvtxRange range(backward_names[size_t(id)].c_str());
    float* dw = weight_grad(id);
    float* db = bias_grad(id);
    if (with_epilogue) {
      const BiasActShape e = epilogue(id, batch);
      bias_act_backward(dy, db, y, e.rows, e.channels, e.plane, l.relu, s(), &bias_scratch);
    }
    if (is_conv(l)) {
      const ConvOp& op = *convs[size_t(id)];
      op.backward_filter(dw, in, dy, workspace.data(), workspace.size());
      if (dx) op.backward_data(dx, dy, weight(id), workspace.data(), workspace.size());
    } else {
      dense_backward_filter(cublas, dw, in, dy, batch, l.in_channels, l.out_channels);
      if (dx) dense_backward_data(cublas, dx, dy, weight(id), batch, l.in_channels, l.out_channels);
    }
  }

  // The fused latent block, the same in both precisions. Forward: mu and logvar (one batched
  // GEMM from h3), their biases added inside the reparameterization, z and eps.
  void heads_forward(int count, const StepTable& at) {
    const int dim = desc.latent_dim;
    {
      const NvtxRange range("encoder.mu + encoder.logvar forward");
      dense_forward_pair(cublas, mu, head_stride(), h3.data(), weight(kEncMu), weight_stride(),
                         count, desc.layer(kEncMu).in_channels, dim);
    }
    const NvtxRange range("reparameterization forward");
    reparam_forward_biased(z.data(), eps.data(), mu, logvar, bias(kEncMu), bias(kEncLogvar),
                           cfg.seed, at, count, dim, s());
  }

  // Backward from g_z: the heads' gradients (their bias gradients summed inside the
  // reparameterization kernel), their weight gradients, and g_h3 = the sum of both heads'
  // input gradients (the second GEMM accumulates).
  void heads_backward(int count) {
    const int dim = desc.latent_dim;
    {
      const NvtxRange range("reparameterization backward");
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

  // The output layer's bias, the loss, its gradient dlogits and the loss sums in one launch
  // (cuda/kernels/loss.cuh), for float or bf16 logits.
  template <typename T>
  void fused_loss(T* dlogits_out, const T* pre_bias, int count) {
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

  // Forward, loss (added to `sums`) and backward in fp32 (strict, or TF32 if opts.tf32), the
  // batch in `x`; leaves every gradient in `grads`.
  void forward_backward(const ConvSet& c, int count, const StepTable& at) {
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
      bce_kl_loss(dlogits.data(), recon.data(), kl.data(), logits.data(), x.data(), mu, logvar,
                  count, kImagePixels, dim, s());
      loss_accumulate(sums.data(), recon.data(), kl.data(), count, s());
    }
    // Backward.
    layer_backward(c, kDecOut, g_d2.data(), dlogits.data(), logits.data(), d2.data(), count,
                   !fused);
    layer_backward(c, kDecDeconv2, g_d1.data(), g_d2.data(), d2.data(), d1.data(), count);
    layer_backward(c, kDecDeconv1, g_d0.data(), g_d1.data(), d1.data(), d0.data(), count);
    layer_backward(c, kDecFc, g_z.data(), g_d0.data(), d0.data(), z.data(), count);
    if (fused) {
      heads_backward(count);
    } else {
      {
        const NvtxRange range("reparameterization backward");
        reparam_backward(g_mu, g_lv, g_z.data(), mu, logvar, eps.data(), count, dim,
                         float(cfg.beta), s());
      }
      layer_backward(c, kEncMu, g_h3.data(), g_mu, mu, h3.data(), count);
      layer_backward(c, kEncLogvar, g_h3_lv.data(), g_lv, logvar, h3.data(), count);
      add_inplace(g_h3.data(), g_h3_lv.data(),
                  size_t(count) * size_t(desc.layer(kEncFc).out_size()), s());
    }
    layer_backward(c, kEncFc, g_h2.data(), g_h3.data(), h3.data(), h2.data(), count);
    layer_backward(c, kEncConv2, g_h1.data(), g_h2.data(), h2.data(), h1.data(), count);
    layer_backward(c, kEncConv1, nullptr, g_h1.data(), h1.data(), x.data(), count);
  }

  // ---- mixed precision (opts.bf16) ----
  const bf16* weight_lo(LayerId id) const { return params_lo.data() + lo_offset[size_t(id)]; }

  // A bf16 convolution with its bias (+ ReLU) epilogue, or without it (the fused loss adds the
  // output bias).
  void conv_forward_lo(const ConvSet& convs, LayerId id, bf16* y, const bf16* in, int batch,
                       bool with_epilogue = true) {
    const NvtxRange range(forward_names[size_t(id)].c_str());
    convs[size_t(id)]->forward(y, in, weight_lo(id), workspace.data(), workspace.size());
    if (with_epilogue) {
      const BiasActShape e = epilogue(id, batch);
      bias_act_forward(y, bias(id), e.rows, e.channels, e.plane, desc.layer(id).relu, s());
    }
  }

  // Its backward: dy masked in place (unless !epilogue), the bias gradient (float), the
  // bf16 weight gradient into grads_lo (widened later) and, unless dx is null, dx.
  void conv_backward_lo(const ConvSet& convs, LayerId id, bf16* dx, bf16* dy, const bf16* y,
                        const bf16* in, int batch, bool with_epilogue = true) {
    const NvtxRange range(backward_names[size_t(id)].c_str());
    if (with_epilogue) {
      const BiasActShape e = epilogue(id, batch);
      bias_act_backward(dy, bias_grad(id), y, e.rows, e.channels, e.plane, desc.layer(id).relu, s(),
                        &bias_scratch);
    }
    const ConvOp& op = *convs[size_t(id)];
    op.backward_filter(grads_lo.data() + lo_offset[size_t(id)], in, dy, workspace.data(),
                       workspace.size());
    if (dx) op.backward_data(dx, dy, weight_lo(id), workspace.data(), workspace.size());
  }

  // The mixed-precision forward, loss and backward (GpuOptions::bf16 says what runs in bf16);
  // the batch in `x` and, if x_lo_ready, its bf16 copy in `x_lo`; leaves every gradient,
  // widened to float, in `grads`.
  void forward_backward_mixed(const ConvSet& c, int count, const StepTable& at, bool x_lo_ready) {
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
      dense_backward_data(cublas, g_z.data(), g_d0.data(), weight(kDecFc), count,
                          dec_fc.in_channels, dec_fc.out_channels);
    }
    heads_backward(count);
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
    conv_backward_lo(c, kEncConv2, g_h1_lo.data(), g_h2_lo.data(), h2_lo.data(), h1_lo.data(),
                     count);
    conv_backward_lo(c, kEncConv1, nullptr, g_h1_lo.data(), h1_lo.data(), x_lo.data(), count);
    const NvtxRange range("widen the bf16 weight gradients");
    widen_spans(grads.data(), grads_lo.data(), lo_conv_grads, s());
  }

  // Enqueues one step for the step table's entry at the cursor: with `gather`, the batch at
  // the cursor's place in `perm` into `x` (else `x` holds it already); forward, loss (added to
  // `sums`), backward, Adam if apply_adam, and the cursor's advance. Changes no host state, so
  // the same launches can be captured once and replayed.
  void enqueue_step(int count, bool gather, bool apply_adam) {
    if (count != max_batch && count != remainder)
      throw Error("GpuTrainer: no convolution plan for a batch of " + std::to_string(count));
    const ConvSet& c = count == max_batch ? full_convs : rem_convs;
    const StepTable at{schedule.data(), cursor.data()};
    if (gather) {
      const NvtxRange range("gather batch");
      if (opts.bf16)
        gather_normalize(x.data(), x_lo.data(), images.data(), perm.data(), cursor.data(),
                         max_batch, count, kImagePixels, s());
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
      adam_step(params.data(), adam_m.data(), adam_v.data(), nonfinite.data(), grads.data(),
                dev.size, cfg.adam.beta1, cfg.adam.beta2, cfg.adam.eps, at, s());
    }
    advance_cursor(cursor.data(), s());
  }

  // Captures the full-batch step (gather included) in a CUDA graph. On failure, says why on
  // stderr once and leaves the trainer launching steps eagerly: slower, same results.
  void capture_step_graph() {
    cudaGraph_t graph = nullptr;
    std::string failure;
    CUDA_CHECK(cudaStreamBeginCapture(s(), cudaStreamCaptureModeGlobal));
    try {
      enqueue_step(max_batch, true, true);
    } catch (const Error& e) {
      failure = e.what();
    } catch (...) {  // not a CUDA/cuDNN/cuBLAS refusal: end the capture and pass it on
      if (cudaStreamEndCapture(s(), &graph) == cudaSuccess && graph) cudaGraphDestroy(graph);
      throw;
    }
    const cudaError_t ended = cudaStreamEndCapture(s(), &graph);
    if (failure.empty() && ended != cudaSuccess)
      failure = std::string("cudaStreamEndCapture: ") + cudaGetErrorString(ended);
    if (failure.empty()) {
      cudaGraphExec_t exec = nullptr;
      const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
      if (made == cudaSuccess) {
        step_graph = CudaGraphExec(exec);
        if (cudaGraphGetNodes(graph, nullptr, &graph_nodes) != cudaSuccess) graph_nodes = 0;
      } else {
        failure = std::string("cudaGraphInstantiate: ") + cudaGetErrorString(made);
      }
    }
    if (graph) cudaGraphDestroy(graph);
    if (failure.empty()) return;
    (void)cudaGetLastError();  // clear a non-sticky error left by the failed capture
    graph_failed = true;
    std::fprintf(stderr,
                 "cuvae: note: the training step could not be captured in a CUDA graph (%s); "
                 "launching its kernels one by one instead\n",
                 failure.c_str());
  }

  // One step of the epoch at the cursor: the graph for a full batch when there is one. The
  // first full batch runs eagerly, so that cuDNN's and cuBLAS's lazy set-up (module loading,
  // per-algorithm state) happens before, not during, the capture at the second.
  void run_step(int count) {
    if (count == max_batch && opts.cuda_graph && !graph_failed && eager_full_steps > 0) {
      if (!step_graph) capture_step_graph();
      if (step_graph) {
        step_graph.launch(s());
        return;
      }
    }
    enqueue_step(count, true, true);
    if (count == max_batch) ++eager_full_steps;
  }

  // Uploads the step table of an epoch whose steps [first_step, steps) remain, the first of
  // them Adam step `step` + 1, and sets the cursor to first_step.
  void upload_schedule(int64_t first_step, int64_t steps) {
    if (step + (steps - first_step) >= (int64_t{1} << 31))
      throw Error("GpuTrainer: more than 2^31 - 1 Adam steps");
    const std::vector<StepScalars> table =
        epoch_step_table(cfg.adam.lr, cfg.adam.beta1, cfg.adam.beta2, first_step, steps, step + 1);
    // Pageable sources: staged before cudaMemcpyAsync returns, so the locals may go.
    schedule.upload(table.data(), table.size(), s());
    const int32_t at = int32_t(first_step);
    cursor.upload(&at, 1, s());
  }

  // The host (PyTorch-order) index of device parameter element i (past the parameters for
  // padding, which Adam never flags: its gradient is zero). Adam flags the lowest device index
  // of a non-finite gradient: in channels-last order that names a non-finite element, though
  // not always the one an NCHW run would name first.
  size_t host_index(size_t i) const {
    const uint32_t h = i < dev.size ? dev.host_index[i] : DeviceParamLayout::kPadding;
    return h == DeviceParamLayout::kPadding ? desc.num_params + i : size_t(h);
  }

  // Reads the loss sums and Adam's non-finite word in one synchronisation; throws
  // TrainingDiverged, naming the step and the parameter, when a gradient was not finite.
  void read_sums(double out[2], int epoch) {
    unsigned long long bad = kNoNonfinite;
    sums.download(out, 2, s());
    nonfinite.download(&bad, 1, s());
    stream.synchronize();
    if (bad == kNoNonfinite) return;
    throw TrainingDiverged("training diverged at step " + std::to_string(bad >> 32) +
                           (epoch > 0 ? " (epoch " + std::to_string(epoch) + ")" : "") +
                           ": non-finite gradient of " +
                           param_element_name(desc, host_index(size_t(bad & 0xffffffffull))));
  }
};

GpuTrainer::GpuTrainer(const ModelDesc& desc, const TrainConfig& cfg, const GpuOptions& opts,
                       int max_batch, int remainder) {
  if (max_batch < 1 || remainder < 0 || remainder >= max_batch)
    throw Error("GpuTrainer: bad batch sizes");
  impl_ = std::make_unique<Impl>(desc, cfg, opts, max_batch, remainder);
}

GpuTrainer::~GpuTrainer() = default;

void GpuTrainer::set_state(const TrainState& st) {
  Impl& m = *impl_;
  const size_t n = m.desc.num_params;
  if (st.params.size() != n || st.adam_m.size() != n || st.adam_v.size() != n)
    throw Error("GpuTrainer::set_state: state sized for another model");
  m.upload_ordered(m.params, st.params.data());
  m.upload_ordered(m.adam_m, st.adam_m.data());
  m.upload_ordered(m.adam_v, st.adam_v.data());
  m.step = st.step;
  m.epoch_step = st.epoch_step;
  m.epoch_sums[0] = st.epoch_recon_sum;
  m.epoch_sums[1] = st.epoch_kl_sum;
  m.stream.synchronize();
}

void GpuTrainer::get_state(TrainState& st) const {
  const Impl& m = *impl_;
  const size_t n = m.desc.num_params;
  st.params.resize(n);
  st.adam_m.resize(n);
  st.adam_v.resize(n);
  m.download_ordered(m.params, st.params.data());
  m.download_ordered(m.adam_m, st.adam_m.data());
  m.download_ordered(m.adam_v, st.adam_v.data());
  st.step = m.step;
  st.epoch_step = m.epoch_step;
  st.epoch_recon_sum = m.epoch_sums[0];
  st.epoch_kl_sum = m.epoch_sums[1];
}

void GpuTrainer::upload_images(const ImageSet& img) {
  Impl& m = *impl_;
  if (img.rows * img.cols != kImagePixels) throw Error("GpuTrainer: images are not 28x28");
  if (img.count < 1 || img.count > INT32_MAX) throw Error("GpuTrainer: bad image count");
  const size_t bytes = size_t(img.count) * kImagePixels;
  m.step_graph = CudaGraphExec();  // it names the buffers replaced here
  m.images = DeviceBuffer<uint8_t>(bytes, "the training images");
  m.perm = DeviceBuffer<int32_t>(size_t(img.count), "the epoch permutation");
  m.shuffle = std::make_unique<DeviceShuffle>(img.count);
  m.schedule = DeviceBuffer<StepScalars>(size_t((img.count + m.max_batch - 1) / m.max_batch),
                                         "the step table");
  m.images.upload(img.pixels.data(), bytes, m.s());
  m.num_images = img.count;
  m.stream.synchronize();
}

std::optional<EpochMetrics> GpuTrainer::run_epoch(int epoch, const StepCallback& on_step,
                                                  const StopCheck& should_stop) {
  Impl& m = *impl_;
  if (m.num_images == 0) throw Error("GpuTrainer::run_epoch: no images uploaded");
  const int64_t n = m.num_images;
  if (n % m.max_batch != m.remainder)
    throw Error("GpuTrainer::run_epoch: dataset size does not match the planned batches");
  const NvtxRange range("epoch");
  const auto t0 = std::chrono::steady_clock::now();
  // Recorded before the epoch's uploads, so the device time covers everything the epoch
  // costs the device, the permutation and the host's gaps included.
  m.epoch_start.record(m.s());
  // A resumed epoch continues from the position set_state gave (full batches so far).
  EpochMetrics out;
  out.epoch = epoch;
  out.steps = std::exchange(m.epoch_step, 0);
  out.images = out.steps * m.max_batch;
  const int64_t images_before = out.images;
  const int64_t steps_per_epoch = (n + m.max_batch - 1) / m.max_batch;
  m.upload_schedule(out.steps, steps_per_epoch);
  m.sums.upload(m.epoch_sums, 2, m.s());
  {
    const NvtxRange shuffle_range("draw permutation");
    m.shuffle->draw(m.perm.data(), m.cfg.seed, epoch, m.s());
  }
  for (int64_t first = out.images; first < n; first += m.max_batch) {
    const int count = int(std::min<int64_t>(m.max_batch, n - first));
    const int64_t global_step = m.step + 1;  // 1-based over the whole run
    if (global_step == m.opts.profile_first) CUDA_CHECK(cudaProfilerStart());
    {
      const NvtxRange step_range("train step");
      m.run_step(count);
    }
    ++m.step;
    if (global_step == m.opts.profile_last) CUDA_CHECK(cudaProfilerStop());
    out.images += count;
    ++out.steps;
    if (on_step) {  // host-side counts only: no synchronisation here
      StepProgress p;
      p.epoch = epoch;
      p.step = out.steps;
      p.steps = steps_per_epoch;
      p.images = out.images;
      p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      p.loss = std::nan("");
      on_step(p);
    }
    if (out.images < n && should_stop && should_stop()) {
      m.read_sums(m.epoch_sums, epoch);  // waits for the queued steps
      m.epoch_step = out.steps;
      return std::nullopt;
    }
  }
  m.epoch_end.record(m.s());
  double sums[2];
  m.read_sums(sums, epoch);  // the only host synchronisation of the epoch
  m.epoch_sums[0] = m.epoch_sums[1] = 0;
  out.device_ms = m.epoch_end.ms_since(m.epoch_start);
  out.recon = sums[0] / double(out.images);
  out.kl = sums[1] / double(out.images);
  out.loss = out.recon + m.cfg.beta * out.kl;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  out.images_per_s = double(out.images - images_before) / std::max(out.seconds, 1e-9);
  if (!std::isfinite(out.loss))
    throw TrainingDiverged("training diverged: the mean loss of epoch " + std::to_string(epoch) +
                           " is not finite");
  return out;
}

LossParts GpuTrainer::step_on_batch(const float* host_x, int count, bool apply_adam) {
  Impl& m = *impl_;
  m.x.upload(host_x, size_t(count) * kImagePixels, m.s());
  CUDA_CHECK(cudaMemsetAsync(m.sums.data(), 0, 2 * sizeof(double), m.s()));
  m.upload_schedule(0, 1);  // entry 0: Adam step m.step + 1, the noise of counter m.step
  m.enqueue_step(count, false, apply_adam);
  if (apply_adam) ++m.step;
  double sums[2];
  m.read_sums(sums, 0);
  LossParts p;
  p.recon = sums[0] / count;
  p.kl = sums[1] / count;
  p.loss = p.recon + m.cfg.beta * p.kl;
  return p;
}

void GpuTrainer::download_grads(float* g) const {
  impl_->download_ordered(impl_->grads, g);
}

void GpuTrainer::download_eps(float* e, int count) const {
  impl_->eps.download(e, size_t(count) * size_t(impl_->desc.latent_dim), impl_->s());
  impl_->stream.synchronize();
}

std::string GpuTrainer::describe() const {
  const Impl& m = *impl_;
  std::ostringstream os;
  for (int i = 0; i < kNumLayers; ++i)
    if (m.full_convs[size_t(i)])
      os << m.desc.layers[size_t(i)].name << ": " << m.full_convs[size_t(i)]->describe() << "\n";
  os << "precision: "
     << (m.opts.bf16   ? "bf16 mixed (bf16 convolutions and encoder.fc, fp32 weights, Adam, loss "
                         "and latent layers)"
         : m.opts.tf32 ? "TF32"
                       : "strict fp32")
     << "\n";
  os << "layout: "
     << (m.opts.nhwc ? "NHWC (channels last; parameters kept in channels_last_order)" : "NCHW");
  if (m.layout_measured)
    os << ", chosen by --layout auto: convolution passes " << m.layout_ms[0] << " ms NCHW, "
       << m.layout_ms[1] << " ms NHWC";
  os << "\n";
  os << "training step: ";
  if (m.step_graph)
    os << "CUDA graph of " << m.graph_nodes << " nodes\n";
  else if (!m.opts.cuda_graph)
    os << "eager launches (CUDA graph off)\n";
  else if (m.graph_failed)
    os << "eager launches (CUDA graph capture failed)\n";
  else
    os << "CUDA graph, captured at the second full batch\n";
  return os.str();
}

bool GpuTrainer::nhwc() const {
  return impl_->opts.nhwc;
}

bool GpuTrainer::uses_cuda_graph() const {
  return bool(impl_->step_graph);
}

bool train_gpu(const TrainConfig& cfg, const GpuOptions& opts, const ModelDesc& desc,
               const ImageSet& images, TrainState& state, const EpochCallback& on_epoch,
               const StepCallback& on_step, const StopCheck& should_stop) {
  check_state_position(state, images.count, cfg.batch_size);
  const int batch = int(std::min<int64_t>(cfg.batch_size, images.count));
  const int remainder = int(images.count % batch);
  GpuTrainer trainer(desc, cfg, opts, batch, remainder);
  trainer.set_state(state);
  trainer.upload_images(images);
  for (int epoch = int(state.epoch) + 1; epoch <= cfg.epochs; ++epoch) {
    if (should_stop && should_stop()) return false;  // at an epoch boundary
    const std::optional<EpochMetrics> m = trainer.run_epoch(epoch, on_step, should_stop);
    trainer.get_state(state);  // params, moments, step, position
    if (!m) return false;
    state.epoch = epoch;
    on_epoch(*m);
  }
  return true;
}

}  // namespace cuvae
