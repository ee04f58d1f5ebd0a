// Batch assembly on the GPU: gathers the images of one mini-batch from the uint8 training set
// held on the device and normalises them to [0, 1]:
//   x[i][p] = images[index[i] * pixels + p] / 255   (a true fp32 division, the CPU's
//   float(v) / 255.0f bit for bit; see host/core/batch.h gather_batch).
// Owns: the gather_normalize launchers and advance_cursor.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernels/precision.cuh"

namespace cuvae {

// x (count, pixels) from images (N, pixels) uint8 and index (count) int32, all device memory.
// The caller guarantees 0 <= index[i] < N (the launcher cannot see N); a negative index
// yields a row of NaN rather than a read outside the buffer.
void gather_normalize(float* x, const uint8_t* images, const int32_t* index, int count, int pixels,
                      cudaStream_t s);

// The batch at the trainer's cursor: index = perm + *cursor * stride (device values), so that
// one captured CUDA graph gathers each step's batch. perm (N); cursor (1).
void gather_normalize(float* x, const uint8_t* images, const int32_t* perm, const int32_t* cursor,
                      int64_t stride, int count, int pixels, cudaStream_t s);

// The same, also storing x rounded to bf16 in x_lo (count, pixels): the mixed-precision step's
// input, from the same pass.
void gather_normalize(float* x, bf16* x_lo, const uint8_t* images, const int32_t* perm,
                      const int32_t* cursor, int64_t stride, int count, int pixels, cudaStream_t s);

// *cursor += 1 on the device: the last launch of a training step.
void advance_cursor(int32_t* cursor, cudaStream_t s);

}  // namespace cuvae
