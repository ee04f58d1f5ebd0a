// Host helpers for the GPU tests of ConvOp (test_conv.cpp, fp32 and bf16):
// the model's convolution layers and a label for a case, and the permutations between the
// convolution layouts for the tests in channels-last order (ConvLayout::Nhwc).
// An NHWC op reads and writes tensors (batch, H, W, C) and filters [K, 3, 3, C] (cuDNN's KRSC).
// The tests keep the CPU reference in PyTorch's layouts (tensors (batch, C, H, W), filters
// [K, C, 3, 3]) and permute on the host: a case's inputs into channels-last order before the
// upload, an op's outputs back after the download. Every permutation here is a pure reordering
// (no arithmetic), so the NHWC tests keep the NCHW tests' tolerances.
#pragma once

#include <catch2/catch.hpp>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "cuda/libs/conv.cuh"
#include "host/core/model.h"

namespace cuvae::test {

// ---- the layers ---------------------------------------------------------------------------------

// The model's five convolution layers.
inline std::vector<Layer> model_conv_layers() {
  const ModelDesc m = make_vae(2);
  std::vector<Layer> v;
  for (LayerId id : {kEncConv1, kEncConv2, kDecDeconv1, kDecDeconv2, kDecOut})
    v.push_back(m.layer(id));
  return v;
}

// A case for INFO: the layer's name, kind and geometry, and the batch.
inline std::string conv_label(const Layer& l, int batch) {
  return l.name + (l.kind == LayerKind::Conv2d ? " Conv2d " : " ConvTranspose2d ") +
         std::to_string(l.in_channels) + "x" + std::to_string(l.in_h) + "x" +
         std::to_string(l.in_w) + " -> " + std::to_string(l.out_channels) + "x" +
         std::to_string(l.out_h) + "x" + std::to_string(l.out_w) + " stride " +
         std::to_string(l.stride) + " out_pad " + std::to_string(l.out_pad) + ", batch " +
         std::to_string(batch);
}

// ---- the layouts --------------------------------------------------------------------------------

inline const char* layout_name(ConvLayout layout) {
  return layout == ConvLayout::Nhwc ? "NHWC" : "NCHW";
}

// A tensor of n x c x h x w elements moved between row-major (n, c, h, w) and (n, h, w, c):
// to_nhwc, src is the first and the result the second; else the other way round.
template <typename T>
std::vector<T> move_channels(const std::vector<T>& src, size_t n, size_t c, size_t h, size_t w,
                             bool to_nhwc) {
  REQUIRE(src.size() == n * c * h * w);
  std::vector<T> dst(src.size());
  for (size_t b = 0; b < n; ++b)
    for (size_t k = 0; k < c; ++k)
      for (size_t y = 0; y < h; ++y)
        for (size_t x = 0; x < w; ++x) {
          const size_t nchw = ((b * c + k) * h + y) * w + x, nhwc = ((b * h + y) * w + x) * c + k;
          if (to_nhwc)
            dst[nhwc] = src[nchw];
          else
            dst[nchw] = src[nhwc];
        }
  return dst;
}

// src (n, c, h, w) row-major -> (n, h, w, c) row-major.
template <typename T>
std::vector<T> nchw_to_nhwc(const std::vector<T>& src, size_t n, size_t c, size_t h, size_t w) {
  return move_channels(src, n, c, h, w, true);
}

// src (n, h, w, c) row-major -> (n, c, h, w) row-major.
template <typename T>
std::vector<T> nhwc_to_nchw(const std::vector<T>& src, size_t n, size_t c, size_t h, size_t w) {
  return move_channels(src, n, c, h, w, false);
}

// A filter [K, C, R, S] (PyTorch's weight order) -> [K, R, S, C] (cuDNN's KRSC): the same
// permutation as an image batch, with K in the batch's place.
template <typename T>
std::vector<T> kcrs_to_krsc(const std::vector<T>& src, size_t k, size_t c, size_t r, size_t s) {
  return nchw_to_nhwc(src, k, c, r, s);
}
template <typename T>
std::vector<T> krsc_to_kcrs(const std::vector<T>& src, size_t k, size_t c, size_t r, size_t s) {
  return nhwc_to_nchw(src, k, c, r, s);
}

// The filter's K and C: Conv2d [out, in, 3, 3], ConvTranspose2d [in, out, 3, 3].
inline std::pair<int, int> filter_kc(const Layer& l) {
  return l.kind == LayerKind::Conv2d ? std::make_pair(l.out_channels, l.in_channels)
                                     : std::make_pair(l.in_channels, l.out_channels);
}

// A case's inputs in channels-last order: x (B, in_h, in_w, in), w [K, 3, 3, C], dy (B, out_h,
// out_w, out). Case is a test's conv case (members x, w, dy in PyTorch's layouts, beside its
// reference outputs); the copy gets the permuted inputs only, its other members value-initialized:
// the reference outputs stay with the NCHW case.
template <typename Case>
Case channels_last(const Case& c, const Layer& l, int batch) {
  const std::pair<int, int> kc = filter_kc(l);
  Case out{};
  out.x = nchw_to_nhwc(c.x, batch, l.in_channels, l.in_h, l.in_w);
  out.w = kcrs_to_krsc(c.w, kc.first, kc.second, l.kernel, l.kernel);
  out.dy = nchw_to_nhwc(c.dy, batch, l.out_channels, l.out_h, l.out_w);
  return out;
}

// An NHWC op's outputs (members y, dx, dw) back in the reference's layouts: NCHW tensors,
// PyTorch's weight order.
template <typename Outputs>
Outputs channels_first(const Outputs& got, const Layer& l, int batch) {
  const std::pair<int, int> kc = filter_kc(l);
  return {nhwc_to_nchw(got.y, batch, l.out_channels, l.out_h, l.out_w),
          nhwc_to_nchw(got.dx, batch, l.in_channels, l.in_h, l.in_w),
          krsc_to_kcrs(got.dw, kc.first, kc.second, l.kernel, l.kernel)};
}

// An op's outputs in the reference's layouts, whatever the op's layout.
template <typename Outputs>
Outputs in_reference_layout(Outputs got, const Layer& l, int batch, ConvLayout layout) {
  if (layout == ConvLayout::Nhwc) return channels_first(got, l, batch);
  return got;
}

}  // namespace cuvae::test
