// The fast CPU engine's building blocks on oneDNN (cpu_fast_prims.h), and the library's own
// numbers for the benchmarks (cpu_fast.h: measure_sgemm_gflops, fast_engine_library).
#include "host/cpu/cpu_fast_prims.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <vector>

#include "host/core/error.h"
#include "host/cpu/cpu_fast.h"

static_assert(DNNL_VERSION_MAJOR == 2,
              "the fast CPU engine is written for oneDNN 2.x (Debian libdnnl-dev)");

namespace cuvae::cpu {
namespace fast {

md plain(const memory::dims& dims) {
  return md(dims, f32, dims.size() == 4 ? tag::nchw : dims.size() == 2 ? tag::nc : tag::x);
}
md any(const memory::dims& dims) {
  return md(dims, f32, tag::any);
}

// Whether a layer's ReLU runs as a post-op of its forward primitive. Not for the transposed
// convolutions: with the post-op, oneDNN 2.6 runs their forward 7x slower on AVX-512 (decoder.
// deconv2 at batch 128: 37 ms against 5.6 ms), so their ReLU is a loop of its own (relu_inplace).
bool fused_relu(const Layer& l) {
  return l.kind != LayerKind::ConvTranspose2d;
}

namespace {

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

}  // namespace

// The primitives of layer l, by its kind.
Prims layer_prims(const Layer& l, const md& in, const md& dst, bool need_dx,
                  const dnnl::engine& eng) {
  switch (l.kind) {
    case LayerKind::Conv2d:
      return conv_prims<dnnl::convolution_forward, dnnl::convolution_backward_data,
                        dnnl::convolution_backward_weights>(l, algorithm::convolution_direct,
                                                            any(in.dims()), dst, need_dx, eng);
    case LayerKind::ConvTranspose2d:
      return conv_prims<dnnl::deconvolution_forward, dnnl::deconvolution_backward_data,
                        dnnl::deconvolution_backward_weights>(l, algorithm::deconvolution_direct,
                                                              any(in.dims()), dst, need_dx, eng);
    case LayerKind::Linear:
      // A dense layer reads a plain input (encoder.fc: conv2's output reordered to NCHW,
      // 0.3 ms): oneDNN 2.6 has no fast kernel for a blocked input with plain weights and
      // ran encoder.fc's forward in its reference code (54 ms a step).
      return linear_prims(l, plain(in.dims()), dst, need_dx, eng);
  }
  throw Error("FastModel: a layer of unknown kind");
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

}  // namespace fast

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
