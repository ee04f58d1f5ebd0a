// The fast CPU engine on oneDNN (cpu_fast.h). oneDNN's headers appear in this file only.
//
// Each layer (model.h) becomes three primitives, made once per batch size: forward (bias and
// ReLU fused), backward-data (omitted for encoder.conv1, whose input needs no gradient) and
// backward-weights (which also sums the bias gradient). Every primitive chooses its own
// memory formats; a Converter reorders a tensor into the format a primitive asked for where
// it differs from the one at hand, and is free where they agree. Weights are reordered from
// the flat PyTorch-order parameter buffer on every pass (they change with every Adam step),
// weight gradients back into the flat gradient buffer; biases and their gradients are bound
// in place.
//
// Plain arrays, in the reference's layouts: x, eps, z, mu, logvar (B, D), the decoder.fc output
// (B, 3136) seen as (B, 64, 7, 7), the logits and their gradient (B, 784).
#include "host/cpu/cpu_fast.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <dnnl.hpp>
#include <unordered_map>

#include "host/core/error.h"

static_assert(DNNL_VERSION_MAJOR == 2,
              "the fast CPU engine is written for oneDNN 2.x (Debian libdnnl-dev)");

namespace cuvae::cpu {
namespace {

using dnnl::algorithm;
using dnnl::memory;
using dnnl::prop_kind;
using md = memory::desc;
using tag = memory::format_tag;
constexpr memory::data_type f32 = memory::data_type::f32;

// The same shapes in the reference's plain layout.
md plain(const memory::dims& dims) {
  return md(dims, f32, dims.size() == 4 ? tag::nchw : dims.size() == 2 ? tag::nc : tag::x);
}
md any(const memory::dims& dims) {
  return md(dims, f32, tag::any);
}

// A tensor in `from`'s format brought into `to`'s: a reorder into a buffer of its own, made
// once, or nothing at all where the formats agree.
class Converter {
 public:
  Converter() = default;
  Converter(const md& from, const md& to, const dnnl::engine& eng) {
    if (from == to) return;
    out_ = memory(to, eng);
    reorder_ = dnnl::reorder(dnnl::reorder::primitive_desc(eng, from, eng, to));
    active_ = true;
  }
  // The tensor in the wanted format: `from` itself, or the converted copy.
  memory operator()(dnnl::stream& s, const memory& from) {
    if (!active_) return from;
    reorder_.execute(s, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, out_}});
    return out_;
  }

 private:
  bool active_ = false;
  memory out_;
  dnnl::reorder reorder_;
};

// A reorder into memory the caller names at each call (the flat gradient buffer).
class Writer {
 public:
  Writer() = default;
  Writer(const md& from, const md& to, const dnnl::engine& eng) : to_(to, eng, DNNL_MEMORY_NONE) {
    reorder_ = dnnl::reorder(dnnl::reorder::primitive_desc(eng, from, eng, to));
  }
  void operator()(dnnl::stream& s, const memory& from, float* to) {
    to_.set_data_handle(to);
    reorder_.execute(s, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to_}});
  }

 private:
  memory to_;
  dnnl::reorder reorder_;
};

// One layer's three primitives and the formats they chose.
struct Prims {
  dnnl::primitive fwd, bwd_data, bwd_weights;
  md src, weights, bias, dst;               // forward
  md bd_diff_dst, bd_weights, bd_diff_src;  // backward data
  md bw_src, bw_diff_dst, bw_diff_weights;  // backward weights
  std::string impl_fwd, impl_bd, impl_bw;
  size_t scratch = 0;  // the largest scratchpad of the three, bytes
};

// Whether a layer's ReLU runs as a post-op of its forward primitive. Not for the transposed
// convolutions: with the post-op, oneDNN 2.6 runs their forward 7x slower on AVX-512 (decoder.
// deconv2 at batch 128: 37 ms against 5.6 ms), so their ReLU is a loop of its own (relu_inplace).
bool fused_relu(const Layer& l) {
  return l.kind != LayerKind::ConvTranspose2d;
}

dnnl::primitive_attr layer_attr(bool relu) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.0f, algorithm::eltwise_relu, 0.0f, 0.0f);
    attr.set_post_ops(ops);
  }
  return attr;
}

// Reads the chosen formats off the three primitive descriptors (FwdPd, BdPd, BwPd are the
// kind's primitive_desc types).
template <typename Fwd, typename Bd, typename Bw>
Prims finish(const typename Fwd::primitive_desc& f, const typename Bd::primitive_desc* bd,
             const typename Bw::primitive_desc& bw) {
  Prims p;
  p.fwd = Fwd(f);
  p.src = f.src_desc(), p.weights = f.weights_desc(), p.bias = f.bias_desc(), p.dst = f.dst_desc();
  p.impl_fwd = f.impl_info_str();
  p.scratch = f.scratchpad_desc().get_size();
  if (bd) {
    p.bwd_data = Bd(*bd);
    p.bd_diff_dst = bd->diff_dst_desc(), p.bd_weights = bd->weights_desc();
    p.bd_diff_src = bd->diff_src_desc();
    p.impl_bd = bd->impl_info_str();
    p.scratch = std::max(p.scratch, bd->scratchpad_desc().get_size());
  }
  p.bwd_weights = Bw(bw);
  p.bw_src = bw.src_desc(), p.bw_diff_dst = bw.diff_dst_desc();
  p.bw_diff_weights = bw.diff_weights_desc();
  p.impl_bw = bw.impl_info_str();
  p.scratch = std::max(p.scratch, bw.scratchpad_desc().get_size());
  return p;
}

// The primitives of a convolution or transposed convolution layer. `src` and `dst` are the
// formats to use, or `any` to let the primitive choose.
template <typename Fwd, typename Bd, typename Bw>
Prims conv_prims(const Layer& l, algorithm alg, const md& src, const md& dst, bool need_dx,
                 const dnnl::engine& eng) {
  const memory::dims strides{l.stride, l.stride}, pad_l{l.pad, l.pad};
  // oneDNN pads the bottom/right separately: a transposed conv's output padding is the
  // difference between the two sides.
  const memory::dims pad_r{l.pad - l.out_pad, l.pad - l.out_pad};
  const md w = any({l.out_channels, l.in_channels, l.kernel, l.kernel});
  const md b = plain({l.out_channels});
  const typename Fwd::primitive_desc f(
      typename Fwd::desc(prop_kind::forward_training, alg, src, w, b, dst, strides, pad_l, pad_r),
      layer_attr(l.relu && fused_relu(l)), eng);
  const dnnl::primitive_attr attr = layer_attr(false);
  std::unique_ptr<typename Bd::primitive_desc> bd;
  if (need_dx)
    bd = std::make_unique<typename Bd::primitive_desc>(
        typename Bd::desc(alg, any(src.dims()), w, any(dst.dims()), strides, pad_l, pad_r), attr,
        eng, f);
  // No bias gradient from oneDNN: it sums B x H x W terms in one fp32 accumulator per channel
  // (decoder.deconv2's drifted 1e-5 from the double reference at batch 128, 5e-5 at 256), so
  // the engine sums the bias gradients itself, in double (channel_sums).
  const typename Bw::primitive_desc bw(
      typename Bw::desc(alg, any(src.dims()), w, any(dst.dims()), strides, pad_l, pad_r), attr, eng,
      f);
  return finish<Fwd, Bd, Bw>(f, bd.get(), bw);
}

// The primitives of an inner product with input dims `src.dims()` (a 4-D input is flattened
// (C, H, W), as PyTorch's view does) and output (B, out).
Prims linear_prims(const Layer& l, const md& src, const md& dst, bool need_dx,
                   const dnnl::engine& eng) {
  using Fwd = dnnl::inner_product_forward;
  using Bd = dnnl::inner_product_backward_data;
  using Bw = dnnl::inner_product_backward_weights;
  // The weights in PyTorch's layout: bound in place, and it keeps oneDNN 2.6 off its brgemm
  // kernels, whose backward-data crashes on decoder.fc's 2-wide input. The dense layers are
  // under 1% of the model's FLOPs.
  memory::dims wdims = src.dims();
  wdims[0] = l.out_channels;
  const md w = plain(wdims), b = plain({l.out_channels});
  const Fwd::primitive_desc f(Fwd::desc(prop_kind::forward_training, src, w, b, dst),
                              layer_attr(l.relu), eng);
  const dnnl::primitive_attr attr = layer_attr(false);
  std::unique_ptr<Bd::primitive_desc> bd;
  if (need_dx)
    bd = std::make_unique<Bd::primitive_desc>(Bd::desc(any(src.dims()), w, any(dst.dims())), attr,
                                              eng, f);
  const Bw::primitive_desc bw(Bw::desc(any(src.dims()), w, any(dst.dims())), attr, eng, f);
  return finish<Fwd, Bd, Bw>(f, bd.get(), bw);
}

// The PyTorch layout of a layer's weight in oneDNN's dims (out, in, kh, kw): Conv2d [out, in,
// kh, kw]; ConvTranspose2d [in, out, kh, kw]; Linear [out, in] with in = (C, H, W) when the
// input is 4-D.
md user_weights(const Layer& l, const md& src) {
  switch (l.kind) {
    case LayerKind::Conv2d:
      return md({l.out_channels, l.in_channels, l.kernel, l.kernel}, f32, tag::oihw);
    case LayerKind::ConvTranspose2d:
      return md({l.out_channels, l.in_channels, l.kernel, l.kernel}, f32, tag::iohw);
    case LayerKind::Linear:
      break;
  }
  memory::dims wdims = src.dims();
  wdims[0] = l.out_channels;
  return plain(wdims);
}

void relu_inplace(float* y, size_t n) {
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; ++i) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
}

// dy[i] = 0 where the layer's ReLU output y[i] is 0: the gradient before the ReLU. Both in
// the same format (padding, if any, is zero in y).
void relu_mask(float* dy, const float* y, size_t n) {
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; ++i) dy[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

float* data(const memory& m) {
  return static_cast<float*>(m.get_data_handle());
}

// sums[c] = the sum over the batch and the plane of channel c of a (B, C) or (B, C, H, W)
// tensor, in double, over the positions in order (b, y, x) whatever the thread count. Reads the
// tensor in its own format: plain, or with the channels in blocks (aBcd16b and the like, the
// only blocking oneDNN gives these activations), whose block of channels is summed side by
// side, one accumulator per channel, so the pass reads memory in order.
void channel_sums(float* sums, const memory& m) {
  const dnnl_memory_desc_t& d = m.get_desc().data;
  const dnnl_blocking_desc_t& blk = d.format_desc.blocking;
  const bool channel_blocks = blk.inner_nblks == 1 && blk.inner_idxs[0] == 1;
  if (d.format_kind != dnnl_blocked || (blk.inner_nblks != 0 && !channel_blocks) ||
      (d.ndims != 2 && d.ndims != 4))
    throw Error("FastModel: a gradient in a memory format the bias sums cannot read");
  const int64_t batch = d.dims[0], channels = d.dims[1];
  const int64_t h = d.ndims == 4 ? d.dims[2] : 1, w = d.ndims == 4 ? d.dims[3] : 1;
  const int64_t block = channel_blocks ? blk.inner_blks[0] : 1;
  const int64_t sh = d.ndims == 4 ? blk.strides[2] : 0, sw = d.ndims == 4 ? blk.strides[3] : 0;
  const int64_t blocks = (channels + block - 1) / block;
  constexpr int64_t kMaxBlock = 64;
  if (block > kMaxBlock) throw Error("FastModel: a channel block wider than the bias sums take");
  const float* v = data(m) + d.offset0;
#pragma omp parallel for schedule(static)
  for (int64_t cb = 0; cb < blocks; ++cb) {
    double acc[kMaxBlock] = {};
    const float* base = v + cb * blk.strides[1];
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          const float* p = base + b * blk.strides[0] + y * sh + x * sw;
          for (int64_t k = 0; k < block; ++k) acc[k] += double(p[k]);
        }
    for (int64_t k = 0; k < block && cb * block + k < channels; ++k)
      sums[cb * block + k] = float(acc[k]);
  }
}

size_t floats(const memory& m) {
  return m.get_desc().get_size() / sizeof(float);
}

}  // namespace

struct FastModel::Impl {
  // One layer at run time: its primitives, its output, the converters into the formats its
  // primitives asked for, and the gradient buffers of its backward pass.
  struct Node {
    LayerId id{};
    const Layer* layer = nullptr;
    Prims p;
    md user_w;
    memory w_user, b_user;          // bound to the flat parameter buffer at each call
    Converter in_fwd, w_fwd, w_bd;  // input -> p.src; user weights -> p.weights, p.bd_weights
    memory src_used;                // the input as the forward read it (for backward-weights)
    memory dst;                     // output after the ReLU, in p.dst
    md out_view;                    // p.dst as the next layer (or the caller) sees it
    Converter g_in;                 // incoming gradient (out_view's dims) -> out_view
    Converter g_bd, g_bw, src_bw;   // into p.bd_diff_dst, p.bw_diff_dst, p.bw_src
    memory diff_w;                  // p.bw_diff_weights (or bound to the flat buffer)
    bool diff_w_in_place = false;
    Writer write_dw;
    memory diff_src;  // p.bd_diff_src
  };

  const ModelDesc desc;
  const int batch;
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  memory scratch;
  Node nodes[kNumLayers];
  // Plain arrays shared with the caller.
  memory x, eps, z, mu_plain, logvar_plain, logits_plain, dlogits, g_mu, g_lv;
  std::vector<double> recon, kl;
  Converter head_g[2];  // the heads' input gradients -> encoder.fc's output format
  memory head_g_sum;

  Impl(const ModelDesc& d, int b) : desc(d), batch(b) {
    if (batch < 1) throw Error("FastModel: batch size must be positive");
    const int dim = desc.latent_dim;
    const memory::dims image{b, 1, kImageSide, kImageSide}, latent{b, dim};
    x = memory(plain(image), eng);
    eps = memory(plain(latent), eng);
    z = memory(plain(latent), eng);
    dlogits = memory(plain(image), eng);
    g_mu = memory(plain(latent), eng);
    g_lv = memory(plain(latent), eng);
    recon.resize(size_t(b));
    kl.resize(size_t(b));

    // Encoder: conv1 reads x; each layer reads the previous one's output as it is.
    build(kEncConv1, x.get_desc(), any(out_dims(kEncConv1)), false);
    build(kEncConv2, nodes[kEncConv1].p.dst, any(out_dims(kEncConv2)), true);
    build(kEncFc, nodes[kEncConv2].p.dst, any(out_dims(kEncFc)), true);
    // The heads write plain (B, D) arrays for the reparameterization and the loss.
    build(kEncMu, nodes[kEncFc].p.dst, plain(latent), true);
    build(kEncLogvar, nodes[kEncFc].p.dst, plain(latent), true);
    // Decoder: decoder.fc's plain (B, 3136) output is deconv1's (B, 64, 7, 7) input.
    build(kDecFc, z.get_desc(), plain({b, int(desc.layer(kDecFc).out_channels)}), true);
    nodes[kDecFc].out_view = nodes[kDecFc].p.dst.reshape(in_dims(kDecDeconv1));
    build(kDecDeconv1, nodes[kDecFc].out_view, any(out_dims(kDecDeconv1)), true);
    build(kDecDeconv2, nodes[kDecDeconv1].p.dst, any(out_dims(kDecDeconv2)), true);
    // The logits are plain for the loss: measured faster than a blocked output reordered.
    build(kDecOut, nodes[kDecDeconv2].p.dst, plain(out_dims(kDecOut)), true);
    mu_plain = nodes[kEncMu].dst;
    logvar_plain = nodes[kEncLogvar].dst;
    logits_plain = nodes[kDecOut].dst;
    // The reparameterization's loops read z's gradient as a plain (B, D) array too.
    if (nodes[kEncMu].p.dst != plain(latent) || nodes[kDecOut].p.dst != plain(image) ||
        nodes[kDecFc].p.bd_diff_src != plain(latent))
      throw Error(
          "FastModel: oneDNN did not keep the plain layout of mu, the logits or z's gradient");

    // Backward wiring: each layer's incoming gradient is its successor's input gradient.
    wire_gradient(kEncConv1, nodes[kEncConv2].p.bd_diff_src);
    wire_gradient(kEncConv2, nodes[kEncFc].p.bd_diff_src);
    wire_gradient(kEncMu, g_mu.get_desc());
    wire_gradient(kEncLogvar, g_lv.get_desc());
    wire_gradient(kDecFc, nodes[kDecDeconv1].p.bd_diff_src);
    wire_gradient(kDecDeconv1, nodes[kDecDeconv2].p.bd_diff_src);
    wire_gradient(kDecDeconv2, nodes[kDecOut].p.bd_diff_src);
    wire_gradient(kDecOut, dlogits.get_desc());
    // encoder.fc's gradient: the sum of the heads' input gradients, in its own output format.
    const md& h3 = nodes[kEncFc].p.dst;
    head_g[0] = Converter(nodes[kEncMu].p.bd_diff_src, h3, eng);
    head_g[1] = Converter(nodes[kEncLogvar].p.bd_diff_src, h3, eng);
    head_g_sum = memory(h3, eng);
    wire_gradient(kEncFc, h3);

    size_t scratch_bytes = 0;
    for (const Node& n : nodes) scratch_bytes = std::max(scratch_bytes, n.p.scratch);
    scratch = memory(md({memory::dim(scratch_bytes)}, memory::data_type::u8, tag::x), eng);
  }

  memory::dims out_dims(LayerId id) const {
    const Layer& l = desc.layer(id);
    if (l.kind == LayerKind::Linear) return {batch, l.out_channels};
    return {batch, l.out_channels, l.out_h, l.out_w};
  }
  memory::dims in_dims(LayerId id) const {
    const Layer& l = desc.layer(id);
    if (l.kind == LayerKind::Linear) return {batch, l.in_channels};
    return {batch, l.in_channels, l.in_h, l.in_w};
  }

  // Makes layer `id`'s primitives for an input in format `in` (`dst`: the output format or
  // `any`), its output buffer and the converters of its forward pass.
  void build(LayerId id, const md& in, const md& dst, bool need_dx) {
    Node& n = nodes[id];
    n.id = id;
    n.layer = &desc.layer(id);
    const Layer& l = *n.layer;
    switch (l.kind) {
      case LayerKind::Conv2d:
        n.p = conv_prims<dnnl::convolution_forward, dnnl::convolution_backward_data,
                         dnnl::convolution_backward_weights>(l, algorithm::convolution_direct,
                                                             any(in.dims()), dst, need_dx, eng);
        break;
      case LayerKind::ConvTranspose2d:
        n.p = conv_prims<dnnl::deconvolution_forward, dnnl::deconvolution_backward_data,
                         dnnl::deconvolution_backward_weights>(l, algorithm::deconvolution_direct,
                                                               any(in.dims()), dst, need_dx, eng);
        break;
      case LayerKind::Linear:
        // A dense layer reads a plain input (encoder.fc: conv2's output reordered to NCHW,
        // 0.3 ms): oneDNN 2.6 has no fast kernel for a blocked input with plain weights and
        // ran encoder.fc's forward in its reference code (54 ms a step).
        n.p = linear_prims(l, plain(in.dims()), dst, need_dx, eng);
        break;
    }
    n.user_w = user_weights(l, n.p.src);
    n.w_user = memory(n.user_w, eng, DNNL_MEMORY_NONE);
    n.b_user = memory(plain({l.out_channels}), eng, DNNL_MEMORY_NONE);
    if (n.p.bias != plain({l.out_channels}))
      throw Error("FastModel: oneDNN asked for a bias format other than a plain vector");
    n.in_fwd = Converter(in, n.p.src, eng);
    n.w_fwd = Converter(n.user_w, n.p.weights, eng);
    if (need_dx) n.w_bd = Converter(n.user_w, n.p.bd_weights, eng);
    n.dst = memory(n.p.dst, eng);
    n.out_view = n.p.dst;
    n.diff_w_in_place = n.p.bw_diff_weights == n.user_w;
    if (n.diff_w_in_place) {
      n.diff_w = memory(n.user_w, eng, DNNL_MEMORY_NONE);
    } else {
      n.diff_w = memory(n.p.bw_diff_weights, eng);
      n.write_dw = Writer(n.p.bw_diff_weights, n.user_w, eng);
    }
    if (need_dx) n.diff_src = memory(n.p.bd_diff_src, eng);
    n.src_bw = Converter(n.p.src, n.p.bw_src, eng);
  }

  // The converters of layer `id`'s backward pass, for an incoming gradient in format `g`.
  void wire_gradient(LayerId id, const md& g) {
    Node& n = nodes[id];
    n.g_in = Converter(g, n.out_view, eng);
    n.g_bw = Converter(n.p.dst, n.p.bw_diff_dst, eng);
    if (n.diff_src) n.g_bd = Converter(n.p.dst, n.p.bd_diff_dst, eng);
  }

  std::string impl_line(const char* what, const Node& n, const std::string& impl) const {
    return n.layer->name + " " + what + ": " + impl;
  }

  // ---- forward ----

  void forward_layer(LayerId id, const memory& in, const float* params) {
    Node& n = nodes[id];
    n.src_used = n.in_fwd(strm, in);
    n.w_user.set_data_handle(const_cast<float*>(params + desc.weight(id).offset));
    n.b_user.set_data_handle(const_cast<float*>(params + desc.bias(id).offset));
    const memory w = n.w_fwd(strm, n.w_user);
    n.p.fwd.execute(strm, {{DNNL_ARG_SRC, n.src_used},
                           {DNNL_ARG_WEIGHTS, w},
                           {DNNL_ARG_BIAS, n.b_user},
                           {DNNL_ARG_DST, n.dst},
                           {DNNL_ARG_SCRATCHPAD, scratch}});
    if (n.layer->relu && !fused_relu(*n.layer)) relu_inplace(data(n.dst), floats(n.dst));
  }

  void encode(const float* params) {
    forward_layer(kEncConv1, x, params);
    forward_layer(kEncConv2, nodes[kEncConv1].dst, params);
    forward_layer(kEncFc, nodes[kEncConv2].dst, params);
    forward_layer(kEncMu, nodes[kEncFc].dst, params);
    forward_layer(kEncLogvar, nodes[kEncFc].dst, params);
    strm.wait();
  }

  void decode(const float* params) {
    forward_layer(kDecFc, z, params);
    const memory d0_view(nodes[kDecFc].out_view, eng, nodes[kDecFc].dst.get_data_handle());
    forward_layer(kDecDeconv1, d0_view, params);
    forward_layer(kDecDeconv2, nodes[kDecDeconv1].dst, params);
    forward_layer(kDecOut, nodes[kDecDeconv2].dst, params);
    strm.wait();
  }

  LossParts forward(const float* params, double beta) {
    encode(params);
    reparam_forward(data(z), data(mu_plain), data(logvar_plain), data(eps),
                    size_t(batch) * desc.latent_dim);
    decode(params);
    return loss(beta);
  }

  // The fused BCE + KL of every image and the logits' gradient (cpu_ref.h's bce_kl_loss):
  // one exp and one log1p per pixel in float, each image's sums in double, the batch sum in
  // image order, so the result does not depend on the thread count.
  LossParts loss(double beta) {
    const float* logits = data(logits_plain);
    const float* target = data(x);
    const float* mu = data(mu_plain);
    const float* logvar = data(logvar_plain);
    float* g = data(dlogits);
    const int dim = desc.latent_dim;
    const float inv_b = float(1.0 / double(batch));
#pragma omp parallel for schedule(static)
    for (int b = 0; b < batch; ++b) {
      const float* l = logits + size_t(b) * kImagePixels;
      const float* t = target + size_t(b) * kImagePixels;
      float* gl = g + size_t(b) * kImagePixels;
      double r = 0;
      for (int p = 0; p < kImagePixels; ++p) {
        const float e = std::exp(-std::fabs(l[p]));  // no overflow for any logit
        r += double(std::max(l[p], 0.0f) - l[p] * t[p]) + double(std::log1p(e));
        const float sig = l[p] >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
        gl[p] = (sig - t[p]) * inv_b;
      }
      double k = 0;
      for (int j = 0; j < dim; ++j) {
        const double m = double(mu[size_t(b) * dim + j]), lv = double(logvar[size_t(b) * dim + j]);
        k += -0.5 * (1.0 + lv - m * m - std::exp(lv));
      }
      recon[size_t(b)] = r;
      kl[size_t(b)] = k;
    }
    LossParts sum;
    for (int b = 0; b < batch; ++b) sum.recon += recon[size_t(b)], sum.kl += kl[size_t(b)];
    sum.recon /= double(batch);
    sum.kl /= double(batch);
    sum.loss = sum.recon + beta * sum.kl;
    return sum;
  }

  // ---- backward ----

  // Backward of layer `id` from the gradient w.r.t. its output after the ReLU, `g` (in the
  // format wired for it; consumed). Writes the parameter gradients; returns the input
  // gradient (in p.bd_diff_src) unless the layer has none.
  memory backward_layer(LayerId id, const memory& g, const float* params, float* grads) {
    Node& n = nodes[id];
    memory gv = n.g_in(strm, g);  // the output's format, seen with the next layer's dims
    strm.wait();
    const memory gd(n.p.dst, eng, gv.get_data_handle());
    if (n.layer->relu) relu_mask(data(gd), data(n.dst), floats(n.dst));
    channel_sums(grads + desc.bias(id).offset, gd);
    float* dw = grads + desc.weight(id).offset;
    if (n.diff_w_in_place) n.diff_w.set_data_handle(dw);
    n.p.bwd_weights.execute(strm, {{DNNL_ARG_SRC, n.src_bw(strm, n.src_used)},
                                   {DNNL_ARG_DIFF_DST, n.g_bw(strm, gd)},
                                   {DNNL_ARG_DIFF_WEIGHTS, n.diff_w},
                                   {DNNL_ARG_SCRATCHPAD, scratch}});
    if (!n.diff_w_in_place) n.write_dw(strm, n.diff_w, dw);
    if (!n.diff_src) return memory();
    n.w_user.set_data_handle(const_cast<float*>(params + desc.weight(id).offset));
    n.p.bwd_data.execute(strm, {{DNNL_ARG_DIFF_DST, n.g_bd(strm, gd)},
                                {DNNL_ARG_WEIGHTS, n.w_bd(strm, n.w_user)},
                                {DNNL_ARG_DIFF_SRC, n.diff_src},
                                {DNNL_ARG_SCRATCHPAD, scratch}});
    return n.diff_src;
  }

  void backward(const float* params, double beta, float* grads) {
    memory g = backward_layer(kDecOut, dlogits, params, grads);
    g = backward_layer(kDecDeconv2, g, params, grads);
    g = backward_layer(kDecDeconv1, g, params, grads);
    const memory g_z = backward_layer(kDecFc, g, params, grads);
    strm.wait();
    // The reparameterization and the KL term (the reference's loop: B x D terms).
    reparam_backward(data(g_mu), data(g_lv), data(g_z), data(mu_plain), data(logvar_plain),
                     data(eps), batch, desc.latent_dim, beta);
    const memory a = head_g[0](strm, backward_layer(kEncMu, g_mu, params, grads));
    const memory c = head_g[1](strm, backward_layer(kEncLogvar, g_lv, params, grads));
    strm.wait();
    float* sum = data(head_g_sum);
    const float *pa = data(a), *pc = data(c);
    for (size_t i = 0, n = floats(head_g_sum); i < n; ++i) sum[i] = pa[i] + pc[i];
    g = backward_layer(kEncFc, head_g_sum, params, grads);
    g = backward_layer(kEncConv2, g, params, grads);
    backward_layer(kEncConv1, g, params, grads);
    strm.wait();
  }

  // ---- reading back ----

  std::vector<float> read(const memory& m, const memory::dims& dims) {
    std::vector<float> out(m.get_desc().get_size() / sizeof(float));
    memory to(plain(dims), eng, out.data());
    dnnl::reorder(m, to).execute(strm, const_cast<memory&>(m), to);
    strm.wait();
    out.resize(to.get_desc().get_size() / sizeof(float));
    return out;
  }
};

FastModel::FastModel(const ModelDesc& desc, int batch) {
  try {
    impl_ = std::make_unique<Impl>(desc, batch);
  } catch (const dnnl::error& e) {
    throw Error(std::string("oneDNN could not set up the CPU engine: ") + e.what());
  }
}
FastModel::~FastModel() = default;

int FastModel::batch() const {
  return impl_->batch;
}
float* FastModel::x() {
  return data(impl_->x);
}
float* FastModel::eps() {
  return data(impl_->eps);
}
float* FastModel::z() {
  return data(impl_->z);
}
const float* FastModel::mu() const {
  return data(impl_->mu_plain);
}
const float* FastModel::logvar() const {
  return data(impl_->logvar_plain);
}
const float* FastModel::logits() const {
  return data(impl_->logits_plain);
}
const double* FastModel::recon() const {
  return impl_->recon.data();
}
const double* FastModel::kl() const {
  return impl_->kl.data();
}

LossParts FastModel::forward(const float* params, double beta) {
  return impl_->forward(params, beta);
}
void FastModel::backward(const float* params, double beta, float* grads) {
  impl_->backward(params, beta, grads);
}
void FastModel::encode(const float* params) {
  impl_->encode(params);
}
void FastModel::decode(const float* params) {
  impl_->decode(params);
}

std::vector<float> FastModel::read(FastTensor t) const {
  Impl& m = *impl_;
  auto out = [&](LayerId id) { return m.read(m.nodes[id].dst, m.out_dims(id)); };
  switch (t) {
    case FastTensor::H1:
      return out(kEncConv1);
    case FastTensor::H2:
      return out(kEncConv2);
    case FastTensor::H3:
      return out(kEncFc);
    case FastTensor::Mu:
      return out(kEncMu);
    case FastTensor::Logvar:
      return out(kEncLogvar);
    case FastTensor::Z:
      return m.read(m.z, {m.batch, m.desc.latent_dim});
    case FastTensor::D0:
      return out(kDecFc);
    case FastTensor::D1:
      return out(kDecDeconv1);
    case FastTensor::D2:
      return out(kDecDeconv2);
    case FastTensor::Logits:
      return out(kDecOut);
    case FastTensor::DLogits:
      return m.read(m.dlogits, m.out_dims(kDecOut));
  }
  throw Error("FastModel::read: unknown tensor");
}

std::string FastModel::first_nonfinite_activation() const {
  const Impl& m = *impl_;
  const std::pair<const char*, const memory*> order[] = {
      {"the output of encoder.conv1", &m.nodes[kEncConv1].dst},
      {"the output of encoder.conv2", &m.nodes[kEncConv2].dst},
      {"the output of encoder.fc", &m.nodes[kEncFc].dst},
      {"mu (encoder.mu)", &m.nodes[kEncMu].dst},
      {"logvar (encoder.logvar)", &m.nodes[kEncLogvar].dst},
      {"z", &m.z},
      {"the output of decoder.fc", &m.nodes[kDecFc].dst},
      {"the output of decoder.deconv1", &m.nodes[kDecDeconv1].dst},
      {"the output of decoder.deconv2", &m.nodes[kDecDeconv2].dst},
      {"the logits (decoder.out)", &m.nodes[kDecOut].dst}};
  for (const auto& [name, mem] : order) {
    const float* v = data(*mem);
    for (size_t i = 0, n = floats(*mem); i < n; ++i)
      if (!std::isfinite(v[i])) return name;
  }
  return "the loss";
}

std::vector<std::string> FastModel::implementations() const {
  std::vector<std::string> lines;
  for (const Impl::Node& n : impl_->nodes) {
    lines.push_back(impl_->impl_line("forward", n, n.p.impl_fwd));
    if (n.diff_src) lines.push_back(impl_->impl_line("backward-data", n, n.p.impl_bd));
    lines.push_back(impl_->impl_line("backward-weights", n, n.p.impl_bw));
  }
  return lines;
}

double measure_sgemm_gflops(int n, int reps) {
  if (n < 1 || reps < 1) throw Error("measure_sgemm_gflops: bad size or repetitions");
  std::vector<float> a(size_t(n) * n), b(size_t(n) * n), c(size_t(n) * n);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = float(i % 7) * 0.25f - 0.75f;
    b[i] = float(i % 5) * 0.5f - 1.0f;
  }
  auto run = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    if (dnnl_sgemm('N', 'N', n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n) !=
        dnnl_success)
      throw Error("oneDNN sgemm failed");
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  run();
  std::vector<double> t(static_cast<size_t>(reps));
  for (double& s : t) s = run();
  std::nth_element(t.begin(), t.begin() + reps / 2, t.end());
  return 2.0 * double(n) * n * n / t[size_t(reps / 2)] / 1e9;
}

std::string fast_engine_library() {
  const dnnl_version_t* v = dnnl_version();
  return "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
         std::to_string(v->patch) + ", " + std::to_string(omp_get_max_threads()) +
         " OpenMP threads";
}

}  // namespace cuvae::cpu
