// Launch helpers shared by the kernels (included by .cu files only):
//   grid_stride_blocks(n, threads)  blocks for a grid-stride loop over n elements: one thread
//                                   per element, at most kMaxGridBlocks blocks (the loop strides
//                                   past that)
//   last_block_done(ticket)         device: true in the block that finishes last
//   step_scalars_at(step)           device: a step's scalars, given or read from the step table
// A kernel whose variants differ in what they read or write takes them as template arguments
// (the step given or a StepTable to read it from, a bool for an optional output), never as
// null pointers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "host/core/step_scalars.h"

namespace cuvae {

constexpr int kMaxGridBlocks =
    65535;  // gridDim.y and .z limit; grid_stride_blocks keeps x within it

inline int grid_stride_blocks(uint64_t n, int threads) {
  const uint64_t blocks = (n + uint64_t(threads) - 1) / uint64_t(threads);
  return blocks < uint64_t(kMaxGridBlocks) ? int(blocks) : kMaxGridBlocks;
}

// Every thread of every block calls it once, after the stores the last block is to read.
// Returns, in every thread of its block, whether this block is the last of the grid (1-, 2- or
// 3-D) to get here: an atomic ticket decides which block reduces, never the order of a sum. The
// last block then sees every block's stores (read them with __ldcg: other SMs wrote them), and
// has already rearmed the ticket (0) for the next launch.
__device__ __forceinline__ bool last_block_done(unsigned* ticket) {
  __shared__ bool last;
  __threadfence();  // this thread's stores are visible device-wide before the ticket
  __syncthreads();
  if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
    last = atomicAdd(ticket, 1u) == gridDim.x * gridDim.y * gridDim.z - 1;
    if (last) *ticket = 0;  // every other block has taken its ticket
  }
  __syncthreads();
  if (last) __threadfence();
  return last;
}

// The scalars of the step in progress: given as an argument, or table[*cursor] (the form a
// captured CUDA graph replays, host/core/step_scalars.h).
__device__ __forceinline__ StepScalars step_scalars_at(const StepScalars& fixed) {
  return fixed;
}
__device__ __forceinline__ StepScalars step_scalars_at(const StepTable& at) {
  return at.table[*at.cursor];
}

}  // namespace cuvae
