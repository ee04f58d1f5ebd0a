// The building blocks of the fast CPU engine (cpu_fast.h) on oneDNN: format conversions, one
// layer's three primitives, and the plain loops the engine runs beside them (ReLU, ReLU masks,
// bias gradients). With cpu_fast_prims.cpp, cpu_fast.cpp and gemm.cpp, the only files that include
// oneDNN; only the first two include this header.
#pragma once

#include <dnnl.hpp>
#include <string>

#include "host/core/model.h"

namespace cuvae::cpu::fast {

using dnnl::algorithm;
using dnnl::memory;
using dnnl::prop_kind;
using md = memory::desc;
using tag = memory::format_tag;
constexpr memory::data_type f32 = memory::data_type::f32;

// The same shapes in the reference's plain layout.
md plain(const memory::dims& dims);
md any(const memory::dims& dims);

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

// Whether a layer's ReLU runs as a post-op of its forward primitive (see the .cpp).
bool fused_relu(const Layer& l);

// Layer l's primitives for an input in format `in` (`dst`: the output format to use, or `any`
// to let the primitive choose); the backward-data primitive only with `need_dx`.
Prims layer_prims(const Layer& l, const md& in, const md& dst, bool need_dx,
                  const dnnl::engine& eng);

// The PyTorch layout of a layer's weight in oneDNN's dims (see the .cpp).
md user_weights(const Layer& l, const md& src);

// y = max(y, 0) in place.
void relu_inplace(float* y, size_t n);
// dy[i] = 0 where the layer's ReLU output y[i] is 0: the gradient before the ReLU. Both in
// the same format (padding, if any, is zero in y).
void relu_mask(float* dy, const float* y, size_t n);

float* data(const memory& m);
size_t floats(const memory& m);

// sums[c] = the sum over the batch and the plane of channel c of a (B, C) or (B, C, H, W)
// tensor, in double (see the .cpp).
void channel_sums(float* sums, const memory& m);

}  // namespace cuvae::cpu::fast
