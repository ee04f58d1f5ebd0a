// Bias + ReLU epilogue, its fused backward, and an elementwise add (activations.cuh).
//   forward:  y = relu?(y + bias[c])                        over (batch, channels, plane)
//   backward: dy = relu ? (y > 0 ? dy : 0) : dy;  db[c] = sum_{b,p} dy[b][c][p]
// ReLU is a select (v > 0 ? v : 0), not a multiply, exactly like cpu::relu_forward/backward, so
// a NaN or Inf gradient behind a dead unit becomes 0 on both sides.
// The bias gradient is one pass and deterministic: every db[c] is reduced by one block in a
// fixed order that depends only on the shape (per-thread strided sums in double, then a fixed
// shuffle/shared-memory tree); no atomics. Two kernels cover the two shapes that matter:
//   plane > 1  (conv, e.g. (128, 32, 784)): one block per channel over its batch*plane elements,
//              read as float4 when plane % 4 == 0 and dy, y are 16-byte aligned (the per-thread
//              summation order, hence the last bits of db, depends on which path runs; a given
//              shape and buffer placement always takes the same one);
//   plane == 1 (Linear, e.g. (128, 3136, 1)): one block per 32 consecutive channels, a warp
//              reading 32 adjacent columns of a row (coalesced), 16 warps striding the batch.
// Owns: the kernels and launchers of bias_act_forward, bias_act_backward, add_inplace.
#include <climits>
#include <cstdint>
#include <string>

#include "cuda/activations.cuh"
#include "cuda/block_reduce.cuh"
#include "cuda/cuda_check.cuh"

namespace cuvae {
namespace {

constexpr int kElemThreads = 256;      // elementwise kernels
constexpr int64_t kMaxBlocks = 65535;  // grid-stride beyond this
constexpr int kChanThreads = 1024;     // bias_act_backward, one block per channel
constexpr int kChanUnroll = 4;         //   floats in flight per thread and array
constexpr int kChanUnroll4 = 2;        //   float4s in flight per thread and array
constexpr int kColX = 32;              // bias_act_backward, plane == 1: channels per block
constexpr int kColY = 16;              //   and rows of the batch handled side by side

int elementwise_blocks(int64_t n) {
  const int64_t blocks = (n + kElemThreads - 1) / kElemThreads;
  return int(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

// ---- forward ----------------------------------------------------------------------------
// Index is uint32_t when n <= INT32_MAX (cheaper division), else int64_t. With at most
// kMaxBlocks * kElemThreads threads, i + stride cannot wrap in either type.
template <typename Index>
__global__ void bias_act_forward_kernel(float* __restrict__ y, const float* __restrict__ bias,
                                        Index n, Index channels, Index plane, bool relu) {
  const Index stride = Index(gridDim.x) * kElemThreads;
  for (Index i = Index(blockIdx.x) * kElemThreads + threadIdx.x; i < n; i += stride) {
    const Index c = (i / plane) % channels;
    float v = __fadd_rn(y[i], bias[c]);
    if (relu) v = v > 0.0f ? v : 0.0f;
    y[i] = v;
  }
}

// ---- backward -----------------------------------------------------------------------------
// ReLU mask (a select) and the fixed-order double sum of one float or one float4.
__device__ float select_live(float g, float out) {
  return out > 0.0f ? g : 0.0f;
}
__device__ float4 select_live(float4 g, float4 out) {
  return make_float4(select_live(g.x, out.x), select_live(g.y, out.y), select_live(g.z, out.z),
                     select_live(g.w, out.w));
}
__device__ double add_to(double acc, float g) {
  return acc + double(g);
}
__device__ double add_to(double acc, float4 g) {
  acc += double(g.x);
  acc += double(g.y);
  acc += double(g.z);
  return acc + double(g.w);
}

// One block per channel c (gridDim.x == channels), reading the channel in units of Vec (float,
// or float4 when plane % 4 == 0 and the pointers are 16-byte aligned; a float4 never straddles
// two images then). Unit j < count (= batch * plane / width) of the channel is image
// b = j / plane_u, unit p = j % plane_u of that image. Thread t visits j = t, t + T, t + 2T, ...
// in increasing order (kUnroll of them per trip, all loads issued before the stores), adding
// each unit's floats in order to a double.
template <typename Vec, int kUnroll>
__global__ void __launch_bounds__(kChanThreads)
    bias_act_backward_channel_kernel(float* __restrict__ dy, float* __restrict__ db,
                                     const float* __restrict__ y, int channels, uint32_t plane_u,
                                     uint32_t count, bool relu) {
  constexpr int kWidth = sizeof(Vec) / sizeof(float);
  const int c = blockIdx.x;
  const int64_t image_stride = int64_t(channels) * plane_u;  // units between two images
  Vec* dyc = reinterpret_cast<Vec*>(dy + int64_t(c) * plane_u * kWidth);
  const Vec* yc = relu ? reinterpret_cast<const Vec*>(y + int64_t(c) * plane_u * kWidth) : nullptr;
  double acc = 0.0;
  // count <= INT32_MAX (checked by the launcher), so j0 + kUnroll * kChanThreads fits.
  for (uint32_t j0 = threadIdx.x; j0 < count; j0 += kUnroll * kChanThreads) {
    int64_t offset[kUnroll];
    Vec g[kUnroll], out[kUnroll];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const uint32_t j = j0 + uint32_t(k) * kChanThreads;
      const uint32_t b = j / plane_u;
      offset[k] = int64_t(b) * image_stride + (j - b * plane_u);
      g[k] = out[k] = Vec{};
      if (j < count) {
        g[k] = dyc[offset[k]];
        if (relu) out[k] = yc[offset[k]];
      }
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const uint32_t j = j0 + uint32_t(k) * kChanThreads;
      if (j < count) {
        if (relu) {
          g[k] = select_live(g[k], out[k]);
          dyc[offset[k]] = g[k];
        }
        acc = add_to(acc, g[k]);
      }
    }
  }
  acc = block_sum<kChanThreads>(acc);
  if (threadIdx.x == 0) db[c] = float(acc);
}

// plane == 1: dy (batch, channels). Block (kColX, kColY) owns channels
// blockIdx.x * kColX + threadIdx.x; thread (x, ty) sums rows ty, ty + kColY, ... in increasing
// order, then the kColY partial sums of a column are folded by a fixed shared-memory tree.
__global__ void __launch_bounds__(kColX* kColY)
    bias_act_backward_rows_kernel(float* __restrict__ dy, float* __restrict__ db,
                                  const float* __restrict__ y, int batch, int channels, bool relu) {
  __shared__ double partial[kColY][kColX];
  const int c = blockIdx.x * kColX + threadIdx.x;
  double acc = 0.0;
  if (c < channels) {
#pragma unroll 4
    for (int b = threadIdx.y; b < batch; b += kColY) {
      const int64_t i = int64_t(b) * channels + c;
      float g = dy[i];
      if (relu) {
        g = y[i] > 0.0f ? g : 0.0f;
        dy[i] = g;
      }
      acc += double(g);
    }
  }
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  // Round `half`: rows [0, half) add rows [half, 2 half), which no thread writes this round.
  for (int half = kColY / 2; half > 0; half >>= 1) {
    if (int(threadIdx.y) < half)
      partial[threadIdx.y][threadIdx.x] += partial[threadIdx.y + half][threadIdx.x];
    __syncthreads();
  }
  if (threadIdx.y == 0 && c < channels) db[c] = float(partial[0][threadIdx.x]);
}

// ---- add ----------------------------------------------------------------------------------
__global__ void add_inplace_kernel(float* a, const float* b, size_t n) {
  const size_t stride = size_t(gridDim.x) * kElemThreads;
  for (size_t i = size_t(blockIdx.x) * kElemThreads + threadIdx.x; i < n; i += stride)
    a[i] = __fadd_rn(a[i], b[i]);
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

std::string shape_str(int batch, int channels, int64_t plane) {
  return "(" + std::to_string(batch) + ", " + std::to_string(channels) + ", " +
         std::to_string(plane) + ")";
}

void check_shape(const char* fn, int batch, int channels, int64_t plane) {
  if (batch < 1 || channels < 1 || plane < 1)
    throw Error(std::string(fn) + ": bad shape " + shape_str(batch, channels, plane));
}

}  // namespace

void bias_act_forward(float* y, const float* bias, int batch, int channels, int64_t plane,
                      bool relu, cudaStream_t s) {
  check_shape("bias_act_forward", batch, channels, plane);
  if (!y || !bias) throw Error("bias_act_forward: null pointer");
  if (plane > INT64_MAX / batch / channels)
    throw Error("bias_act_forward: shape too large " + shape_str(batch, channels, plane));
  const int64_t n = int64_t(batch) * channels * plane;
  const int blocks = elementwise_blocks(n);
  if (n <= INT32_MAX)
    bias_act_forward_kernel<uint32_t><<<blocks, kElemThreads, 0, s>>>(
        y, bias, uint32_t(n), uint32_t(channels), uint32_t(plane), relu);
  else
    bias_act_forward_kernel<int64_t>
        <<<blocks, kElemThreads, 0, s>>>(y, bias, n, int64_t(channels), plane, relu);
  CUDA_CHECK_LAUNCH();
}

void bias_act_backward(float* dy, float* db, const float* y, int batch, int channels, int64_t plane,
                       bool relu, cudaStream_t s) {
  check_shape("bias_act_backward", batch, channels, plane);
  if (!dy || !db || (relu && !y)) throw Error("bias_act_backward: null pointer");
  // One block reduces batch * plane elements with 32-bit indices; the row and channel loop
  // counters of the plane == 1 kernel must not overflow either.
  if (plane > INT32_MAX / batch || batch > INT_MAX - kColY || channels > INT_MAX - kColX)
    throw Error("bias_act_backward: batch * plane too large " + shape_str(batch, channels, plane));
  if (plane == 1) {
    const dim3 block(kColX, kColY);
    const int blocks = (channels + kColX - 1) / kColX;
    bias_act_backward_rows_kernel<<<blocks, block, 0, s>>>(dy, db, y, batch, channels, relu);
  } else if (plane % 4 == 0 && aligned16(dy) && (!relu || aligned16(y))) {
    const uint32_t plane4 = uint32_t(plane / 4);
    bias_act_backward_channel_kernel<float4, kChanUnroll4><<<channels, kChanThreads, 0, s>>>(
        dy, db, y, channels, plane4, uint32_t(batch) * plane4, relu);
  } else {
    bias_act_backward_channel_kernel<float, kChanUnroll><<<channels, kChanThreads, 0, s>>>(
        dy, db, y, channels, uint32_t(plane), uint32_t(batch) * uint32_t(plane), relu);
  }
  CUDA_CHECK_LAUNCH();
}

void add_inplace(float* a, const float* b, size_t n, cudaStream_t s) {
  if (n == 0) return;  // nothing to add
  if (!a || !b) throw Error("add_inplace: null pointer");
  add_inplace_kernel<<<elementwise_blocks(int64_t(n)), kElemThreads, 0, s>>>(a, b, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace cuvae
