// bf16 conversions of the mixed-precision step (precision.cuh): to_bf16 rounds to nearest even
// (__float2bfloat16_rn, the cvt.rn.bf16.f32 instruction), widen_spans copies exactly.
// Owns: the kernels and launchers of to_bf16 and widen_spans.
#include <cstdint>
#include <string>
#include <type_traits>

#include "cuda/kernels/launch.cuh"
#include "cuda/kernels/precision.cuh"
#include "cuda/runtime/cuda_check.cuh"

namespace cuvae {
namespace {

constexpr int kThreads = 256;

__global__ void to_bf16_kernel(bf16* __restrict__ dst, const float* __restrict__ src, size_t n) {
  const size_t stride = size_t(gridDim.x) * kThreads;
  for (size_t i = size_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride)
    dst[i] = __float2bfloat16_rn(src[i]);
}

// One grid-stride loop over the concatenated spans: element k of the concatenation lies in
// the first span whose running end exceeds k. ToLo: float -> bf16, else bf16 -> float; the
// side read is const.
template <bool ToLo>
using FloatSide = std::conditional_t<ToLo, const float, float>;
template <bool ToLo>
using LoSide = std::conditional_t<ToLo, bf16, const bf16>;

template <bool ToLo>
__global__ void spans_kernel(FloatSide<ToLo>* __restrict__ f, LoSide<ToLo>* __restrict__ lo,
                             SpanMap spans, size_t total) {
  const size_t stride = size_t(gridDim.x) * kThreads;
  for (size_t k = size_t(blockIdx.x) * kThreads + threadIdx.x; k < total; k += stride) {
    size_t before = 0;
    for (int j = 0; j < spans.count; ++j) {
      if (k < before + spans.size[j]) {
        const size_t i = spans.offset[j] + (k - before), i_lo = spans.lo_offset[j] + (k - before);
        if constexpr (ToLo)
          lo[i_lo] = __float2bfloat16_rn(f[i]);
        else
          f[i] = __bfloat162float(lo[i_lo]);
        break;
      }
      before += spans.size[j];
    }
  }
}

bool overlap(size_t a, size_t n, size_t b, size_t m) {
  return n > 0 && m > 0 && a < b + m && b < a + n;
}

// Checks the map and returns the total element count.
size_t check_spans(const char* fn, const SpanMap& spans) {
  if (spans.count < 0 || spans.count > SpanMap::kMax)
    throw Error(std::string(fn) + ": span count " + std::to_string(spans.count) + " outside [0, " +
                std::to_string(SpanMap::kMax) + "]");
  size_t total = 0;
  for (int j = 0; j < spans.count; ++j) {
    const size_t n = spans.size[j];
    if (n > SIZE_MAX - spans.offset[j] || n > SIZE_MAX - spans.lo_offset[j] || n > SIZE_MAX - total)
      throw Error(std::string(fn) + ": span " + std::to_string(j) + " overflows");
    for (int k = 0; k < j; ++k)
      if (overlap(spans.offset[j], n, spans.offset[k], spans.size[k]) ||
          overlap(spans.lo_offset[j], n, spans.lo_offset[k], spans.size[k]))
        throw Error(std::string(fn) + ": spans " + std::to_string(k) + " and " + std::to_string(j) +
                    " overlap");
    total += n;
  }
  return total;
}

template <bool ToLo>
void launch_spans(const char* fn, FloatSide<ToLo>* f, LoSide<ToLo>* lo, const SpanMap& spans,
                  cudaStream_t s) {
  const size_t total = check_spans(fn, spans);
  if (total == 0) return;
  if (!f || !lo) throw Error(std::string(fn) + ": null pointer");
  spans_kernel<ToLo><<<grid_stride_blocks(total, kThreads), kThreads, 0, s>>>(f, lo, spans, total);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void to_bf16(bf16* dst, const float* src, size_t n, cudaStream_t s) {
  if (n == 0) return;
  if (!dst || !src) throw Error("to_bf16: null pointer");
  to_bf16_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, s>>>(dst, src, n);
  CUDA_CHECK_LAUNCH();
}

void to_bf16(bf16* lo, const float* src, const SpanMap& spans, cudaStream_t s) {
  launch_spans<true>("to_bf16 (spans)", src, lo, spans, s);
}

void widen_spans(float* dst, const bf16* lo, const SpanMap& spans, cudaStream_t s) {
  launch_spans<false>("widen_spans", dst, lo, spans, s);
}

}  // namespace cuvae
