// The GPU trainer's buffer plan (trainer_gpu_impl.h): the constructor's steps, which check the
// options and size every device buffer once from the model description for the largest batch,
// the ConvOps of each batch size, and the cuDNN workspace and bias-gradient scratch that grow
// to what those ConvOps need.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "cuda/kernels/adam.cuh"
#include "cuda/runtime/nvtx.cuh"
#include "host/core/error.h"
#include "host/gpu/trainer_gpu_impl.h"

namespace cuvae {

namespace {

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

}  // namespace

GpuTrainer::Impl::Impl(const ModelDesc& d, const TrainConfig& c, const GpuOptions& o, int mb,
                       int rem)
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
  check_channels_last_batch();
  name_ranges();
  allocate_parameters();
  allocate_activations();
  if (o.bf16) allocate_mixed_precision();
  allocate_step_buffers();
  build_convs(math, policy);
  stream.synchronize();
}

void GpuTrainer::Impl::check_channels_last_batch() const {
  if (opts.nhwc || opts.layout_auto)
    for (const Layer& l : desc.layers)  // epilogue() counts rows in int
      if (is_conv(l) && int64_t(max_batch) * l.out_h * l.out_w > int64_t(INT_MAX))
        throw InputError(std::string("--layout ") + (opts.layout_auto ? "auto" : "nhwc") +
                         ": a batch of " + std::to_string(max_batch) +
                         " images is too large for the channels-last bias kernels");
}

void GpuTrainer::Impl::name_ranges() {
  for (int i = 0; i < kNumLayers; ++i) {
    forward_names[size_t(i)] = desc.layers[size_t(i)].name + " forward";
    backward_names[size_t(i)] = desc.layers[size_t(i)].name + " backward";
  }
}

void GpuTrainer::Impl::allocate_parameters() {
  // The tensors' offsets do not depend on the layout (chosen by build_convs with layout_auto), only
  // the order inside them does: `dev` is made again once the layout is known.
  dev = device_param_layout(desc, false);
  const size_t n = dev.size;
  params = DeviceBuffer<float>(n, "the parameters");
  grads = DeviceBuffer<float>(n, "the gradients");
  adam_m = DeviceBuffer<float>(n, "the Adam moments");
  adam_v = DeviceBuffer<float>(n, "the Adam moments");
  // The padding is read (by Adam) but never written: zero, so it stays zero.
  for (DeviceBuffer<float>* buf : {&params, &grads, &adam_m, &adam_v}) zero(*buf);
}

template <typename T>
DeviceBuffer<T> GpuTrainer::Impl::layer_sized(LayerId id, const char* what, bool used) const {
  return DeviceBuffer<T>(used ? size_t(max_batch) * size_t(desc.layer(id).out_size()) : 0, what);
}

void GpuTrainer::Impl::allocate_activations() {
  const size_t b = size_t(max_batch), dim = size_t(desc.latent_dim);
  const bool lo = opts.bf16;
  auto act = [&](LayerId id, const char* what, bool used = true) {
    return layer_sized<float>(id, what, used);
  };
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
  g_h3_lv = act(kEncFc, "activation gradients", !opts.fused);
  g_heads = DeviceBuffer<float>(2 * b * dim, "activation gradients");
  g_mu = g_heads.data();
  g_lv = g_heads.data() + b * dim;
  g_z = DeviceBuffer<float>(b * dim, "activation gradients");
  g_d0 = act(kDecFc, "activation gradients");
  g_d1 = act(kDecDeconv1, "activation gradients", !lo);
  g_d2 = act(kDecDeconv2, "activation gradients", !lo);
}

void GpuTrainer::Impl::allocate_mixed_precision() {
  const size_t b = size_t(max_batch);
  auto act_lo = [&](LayerId id, const char* what) { return layer_sized<bf16>(id, what, true); };
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

void GpuTrainer::Impl::allocate_step_buffers() {
  const size_t b = size_t(max_batch);
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
  sums = DeviceBuffer<double>(3, "loss sums");
  nonfinite = DeviceBuffer<unsigned long long>(1, "the non-finite flag");
  nonfinite.upload(&kNoNonfinite, 1, s());
  schedule = DeviceBuffer<StepScalars>(1, "the step table");
  cursor = DeviceBuffer<int32_t>(1, "the step cursor");
}

void GpuTrainer::Impl::build_convs(ConvMath math, ConvAlgoPolicy policy) {
  // The convolutions, in the layout asked for or, with layout_auto, the faster one here.
  if (opts.layout_auto)
    choose_layout(math, policy);
  else
    full_convs = make_convs(max_batch, math, policy);
  if (remainder > 0) rem_convs = make_convs(remainder, math, policy);
  size_layout_buffers();
  dev = device_param_layout(desc, opts.nhwc);
}

GpuTrainer::Impl::ConvSet GpuTrainer::Impl::make_convs(int batch, ConvMath math,
                                                       ConvAlgoPolicy policy) {
  ConvSet set;
  const ConvLayout layout = opts.nhwc ? ConvLayout::Nhwc : ConvLayout::Nchw;
  for (int i = 0; i < kNumLayers; ++i)
    if (is_conv(desc.layers[size_t(i)]))
      set[size_t(i)] =
          std::make_unique<ConvOp>(cudnn, desc.layers[size_t(i)], batch, math, policy, layout);
  return set;
}

void GpuTrainer::Impl::size_layout_buffers() {
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

}  // namespace cuvae
