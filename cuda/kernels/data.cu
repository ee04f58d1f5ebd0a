// Batch gather + normalisation (data.cuh): x[i][p] = images[index[i] * pixels + p] / 255.
// The division is __fdiv_rn (IEEE round-to-nearest whatever the -prec-div / fast-math flags),
// so the result equals the CPU's float(v) / 255.0f bit for bit. The mixed-precision form also
// stores that value rounded to bf16 (nearest even).
// Owns: gather_normalize_kernel, advance_cursor_kernel and their launchers.
#include <climits>
#include <cmath>
#include <string>

#include "cuda/kernels/data.cuh"
#include "cuda/kernels/launch.cuh"
#include "cuda/runtime/cuda_check.cuh"

namespace cuvae {
namespace {

constexpr int kThreads = 256;

// Where the batch's image indices are: a given index array, or row *cursor of the epoch's
// permutation (stride indices per row; the form a captured CUDA graph replays).
struct GivenRows {
  const int32_t* index;
};
struct CursorRows {
  const int32_t* perm;
  const int32_t* cursor;
  int64_t stride;
};
__device__ const int32_t* batch_index(const GivenRows& r) {
  return r.index;
}
__device__ const int32_t* batch_index(const CursorRows& r) {
  return r.perm + int64_t(*r.cursor) * r.stride;
}

// Block (blockIdx.x, blockIdx.y) covers pixel tile blockIdx.x of rows blockIdx.y,
// blockIdx.y + gridDim.y, ... Rows: GivenRows or CursorRows. kLo: also store x rounded to bf16
// in x_lo (else x_lo is unused).
template <bool kLo, typename Rows>
__global__ void gather_normalize_kernel(float* __restrict__ x, bf16* __restrict__ x_lo,
                                        const uint8_t* __restrict__ images, Rows rows, int count,
                                        int pixels) {
  const int p = blockIdx.x * kThreads + threadIdx.x;
  if (p >= pixels) return;  // no block-wide sync below, so an early exit is safe
  const int32_t* index = batch_index(rows);
  for (int64_t row = blockIdx.y; row < count; row += gridDim.y) {
    const int32_t image = index[row];
    const float v = image < 0 ? NAN : __fdiv_rn(float(images[int64_t(image) * pixels + p]), 255.0f);
    x[row * pixels + p] = v;
    if constexpr (kLo) x_lo[row * pixels + p] = __float2bfloat16_rn(v);
  }
}

__global__ void advance_cursor_kernel(int32_t* cursor) {
  *cursor += 1;
}

void check_gather(const float* x, const uint8_t* images, const int32_t* index, int count,
                  int pixels) {
  if (count < 1 || pixels < 1 || pixels > INT_MAX - kThreads)
    throw Error("gather_normalize: bad sizes count=" + std::to_string(count) +
                " pixels=" + std::to_string(pixels));
  if (!x || !images || !index) throw Error("gather_normalize: null pointer");
}

dim3 gather_grid(int count, int pixels) {
  return dim3(unsigned((pixels + kThreads - 1) / kThreads),
              unsigned(count < kMaxGridBlocks ? count : kMaxGridBlocks));
}

}  // namespace

void gather_normalize(float* x, const uint8_t* images, const int32_t* index, int count, int pixels,
                      cudaStream_t s) {
  check_gather(x, images, index, count, pixels);
  gather_normalize_kernel<false><<<gather_grid(count, pixels), kThreads, 0, s>>>(
      x, nullptr, images, GivenRows{index}, count, pixels);
  CUDA_CHECK_LAUNCH();
}

void gather_normalize(float* x, const uint8_t* images, const int32_t* perm, const int32_t* cursor,
                      int64_t stride, int count, int pixels, cudaStream_t s) {
  check_gather(x, images, perm, count, pixels);
  if (!cursor || stride < 0) throw Error("gather_normalize: bad cursor or stride");
  gather_normalize_kernel<false><<<gather_grid(count, pixels), kThreads, 0, s>>>(
      x, nullptr, images, CursorRows{perm, cursor, stride}, count, pixels);
  CUDA_CHECK_LAUNCH();
}

void gather_normalize(float* x, bf16* x_lo, const uint8_t* images, const int32_t* perm,
                      const int32_t* cursor, int64_t stride, int count, int pixels,
                      cudaStream_t s) {
  check_gather(x, images, perm, count, pixels);
  if (!x_lo) throw Error("gather_normalize: null pointer");
  if (!cursor || stride < 0) throw Error("gather_normalize: bad cursor or stride");
  gather_normalize_kernel<true><<<gather_grid(count, pixels), kThreads, 0, s>>>(
      x, x_lo, images, CursorRows{perm, cursor, stride}, count, pixels);
  CUDA_CHECK_LAUNCH();
}

void advance_cursor(int32_t* cursor, cudaStream_t s) {
  if (!cursor) throw Error("advance_cursor: null pointer");
  advance_cursor_kernel<<<1, 1, 0, s>>>(cursor);
  CUDA_CHECK_LAUNCH();
}

}  // namespace cuvae
