// Deterministic block-wide sums for the kernels (device code only, included by .cu files; the
// one .cuh here that is not a launcher header, because the reduction tree must be the same
// code wherever a bit-reproducible sum is taken).
//   block_sum<T>(v):        the sum of v over the block, valid in thread 0
//   block_sum2<T>(a, b):    two such sums at once
// Fixed pattern, no atomics: a shuffle tree inside each warp, then warp 0 folds the per-warp
// sums with the same tree. 1-D blocks of kThreads (a multiple of 32, at most 1024); every
// thread of the block must call.
#pragma once

namespace cuvae {

template <int kThreads>
__device__ __forceinline__ void block_sum2(double& a, double& b) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, at most 32");
  constexpr int kWarps = kThreads / 32;
  __shared__ double warp_sums[2][kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int offset = 16; offset > 0; offset >>= 1) {
    a += __shfl_down_sync(0xffffffffu, a, offset);
    b += __shfl_down_sync(0xffffffffu, b, offset);
  }
  if (lane == 0) warp_sums[0][warp] = a, warp_sums[1][warp] = b;
  __syncthreads();
  a = b = 0.0;
  if (warp == 0) {
    a = lane < kWarps ? warp_sums[0][lane] : 0.0;
    b = lane < kWarps ? warp_sums[1][lane] : 0.0;
    for (int offset = 16; offset > 0; offset >>= 1) {
      a += __shfl_down_sync(0xffffffffu, a, offset);
      b += __shfl_down_sync(0xffffffffu, b, offset);
    }
  }
}

template <int kThreads>
__device__ __forceinline__ double block_sum(double v) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, at most 32");
  constexpr int kWarps = kThreads / 32;
  __shared__ double warp_sums[kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = 0.0;
  if (warp == 0) {
    v = lane < kWarps ? warp_sums[lane] : 0.0;
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

}  // namespace cuvae
