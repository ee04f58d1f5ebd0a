// bf16 mixed precision: the storage type of the mixed-precision training step and the
// conversions between the fp32 master copies and the bf16 working copies.
//   to_bf16:      lo[i] = bf16(src[i])     round to nearest, ties to even (__float2bfloat16_rn);
//                                          NaN stays NaN, out-of-range values become +-Inf
//   widen_spans:  dst[i] = float(lo[i])    exact
// The span forms map tensors of a flat float buffer (the parameters, the gradients) to their
// places in a bf16 buffer laid out on its own, so that each bf16 tensor can start on an aligned
// boundary (cuDNN's and cuBLAS's tensor-core kernels want 16-byte aligned operands).
// bf16 keeps fp32's 8-bit exponent (so gradients need no loss scaling) and 8 of its 24
// significand bits: a stored value is within 2^-8 (relative) of the float it came from.
// Owns: to_bf16, widen_spans.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace cuvae {

using bf16 = __nv_bfloat16;

// dst (n) = bf16(src (n)); dst and src must not overlap.
void to_bf16(bf16* dst, const float* src, size_t n, cudaStream_t s);

// Up to kMax tensors: float elements [offset, offset + size) of a flat float buffer and their
// bf16 copies at [lo_offset, lo_offset + size) of a bf16 buffer. Spans must not overlap on
// either side.
struct SpanMap {
  static constexpr int kMax = 8;
  int count = 0;
  size_t offset[kMax] = {};
  size_t lo_offset[kMax] = {};
  size_t size[kMax] = {};
};

// lo[lo_offset + k] = bf16(src[offset + k]) for every span; the rest of lo is left alone.
void to_bf16(bf16* lo, const float* src, const SpanMap& spans, cudaStream_t s);
// dst[offset + k] = float(lo[lo_offset + k]) for every span; the rest of dst is left alone.
void widen_spans(float* dst, const bf16* lo, const SpanMap& spans, cudaStream_t s);
// Both throw cuvae::Error for a count outside [0, kMax] or overlapping spans.

}  // namespace cuvae
