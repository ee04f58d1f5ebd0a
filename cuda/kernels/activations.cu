// Bias + ReLU epilogue, its fused backward, and an elementwise add (activations.cuh).
//   forward:  y = relu?(y + bias[c])                        over (batch, channels, plane)
//   backward: dy = relu ? (y > 0 ? dy : 0) : dy;  db[c] = sum_{b,p} dy[b][c][p]
// ReLU is a select (v > 0 ? v : 0), not a multiply, exactly like cpu::relu_forward/backward, so
// a NaN or Inf gradient behind a dead unit becomes 0 on both sides.
// The bias gradient is one pass and deterministic: every db[c] is reduced in a fixed order that
// depends only on the shape (per-thread strided sums in double, then a fixed shuffle/shared-
// memory tree); no atomic ever orders a sum. Two kernels cover the two shapes that matter:
//   plane > 1  (conv, e.g. (128, 32, 784)): one block per channel over its batch*plane elements,
//              read as float4 when plane % 4 == 0 and dy, y are 16-byte aligned (the per-thread
//              summation order, hence the last bits of db, depends on which path runs; a given
//              shape and buffer placement always takes the same one);
//   plane == 1 (Linear, e.g. (128, 3136, 1), or a channels-last conv output (B*H*W, C, 1)): one
//              block per 32 consecutive channels, a warp reading 32 adjacent columns of a row
//              (coalesced), 16 warps striding the rows; with scratch and 1024+ rows, the rows
//              are cut into slices reduced by blocks side by side, and the last block to finish
//              (an atomic ticket decides which) reduces the slices' sums in a fixed order.
// The bf16 forms (activations.cuh) are the same kernels instantiated for bf16 loads/stores:
// a bf16 value is widened on load, the arithmetic is float, a bf16 store rounds to nearest
// even; they take the scalar channel path (no float4).
// Owns: the kernels and launchers of bias_act_forward, bias_act_backward, add_inplace.
#include <climits>
#include <cstdint>
#include <string>
#include <type_traits>

#include "cuda/kernels/activations.cuh"
#include "cuda/kernels/block_reduce.cuh"
#include "cuda/kernels/launch.cuh"
#include "cuda/runtime/cuda_check.cuh"

namespace cuvae {
namespace {

constexpr int kElemThreads = 256;   // elementwise kernels
constexpr int kChanThreads = 1024;  // bias_act_backward, one block per channel
constexpr int kChanUnroll = 4;      //   floats in flight per thread and array
constexpr int kChanUnroll4 = 2;     //   float4s in flight per thread and array
constexpr int kColX = 32;           // bias_act_backward, plane == 1: channels per block
constexpr int kColY = 16;           //   and rows of the batch handled side by side
constexpr int kSliceRows = 512;     //   rows per slice when sliced (more past kMaxSlices)
constexpr int kMaxSlices = 1024;    //   slices, at most

// ---- loads and stores ---------------------------------------------------------------------
// Values are float (or float4 on the vector path); bf16 is widened on load and rounded to
// nearest even on store.
__device__ float load(float v) {
  return v;
}
__device__ float4 load(float4 v) {
  return v;
}
__device__ float load(bf16 v) {
  return __bfloat162float(v);
}
__device__ void store(float& out, float v) {
  out = v;
}
__device__ void store(float4& out, float4 v) {
  out = v;
}
__device__ void store(bf16& out, float v) {
  out = __float2bfloat16_rn(v);
}

// ---- forward ----------------------------------------------------------------------------
// y = relu?(x + bias[c]); x and y may be the same buffer (then of one type).
// Index is uint32_t when n <= INT32_MAX (cheaper division), else int64_t. With at most
// kMaxGridBlocks * kElemThreads threads, i + stride cannot wrap in either type.
template <typename TY, typename TX, typename Index>
__global__ void bias_act_forward_kernel(TY* y, const TX* x, const float* __restrict__ bias, Index n,
                                        Index channels, Index plane, bool relu) {
  const Index stride = Index(gridDim.x) * kElemThreads;
  for (Index i = Index(blockIdx.x) * kElemThreads + threadIdx.x; i < n; i += stride) {
    const Index c = (i / plane) % channels;
    float v = __fadd_rn(load(x[i]), bias[c]);
    if (relu) v = v > 0.0f ? v : 0.0f;
    store(y[i], v);
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

// One block per channel c (gridDim.x == channels), reading the channel in units: a float4 when
// all three arrays are float, plane % 4 == 0 and the pointers are 16-byte aligned (a float4
// never straddles two images then), else one element. The gradient g = mask(dy) goes to `g`
// (TG units), which may be dy itself (in place, then written only when relu changes it).
// Unit j < count (= batch * plane / width) of the channel is image b = j / plane_u, unit
// p = j % plane_u of that image. Thread t visits j = t, t + T, t + 2T, ... in increasing order
// (kUnroll of them per trip, all loads issued before the stores), adding each unit's floats in
// order to a double.
template <typename TG, typename TD, typename TY, int kUnroll>
__global__ void __launch_bounds__(kChanThreads)
    bias_act_backward_channel_kernel(TG* g, float* __restrict__ db, const TD* dy, const TY* y,
                                     int channels, uint32_t plane_u, uint32_t count, bool relu,
                                     bool write_g) {
  using Vec = decltype(load(TD{}));
  const int c = blockIdx.x;
  const int64_t image_stride = int64_t(channels) * plane_u;  // units between two images
  const int64_t first = int64_t(c) * plane_u;
  double acc = 0.0;
  // count <= INT32_MAX (checked by the launcher), so j0 + kUnroll * kChanThreads fits.
  for (uint32_t j0 = threadIdx.x; j0 < count; j0 += kUnroll * kChanThreads) {
    int64_t offset[kUnroll];
    Vec v[kUnroll], out[kUnroll];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const uint32_t j = j0 + uint32_t(k) * kChanThreads;
      const uint32_t b = j / plane_u;
      offset[k] = first + int64_t(b) * image_stride + (j - b * plane_u);
      v[k] = out[k] = Vec{};
      if (j < count) {
        v[k] = load(dy[offset[k]]);
        if (relu) out[k] = load(y[offset[k]]);
      }
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const uint32_t j = j0 + uint32_t(k) * kChanThreads;
      if (j < count) {
        if (relu) v[k] = select_live(v[k], out[k]);
        if (write_g) store(g[offset[k]], v[k]);
        acc = add_to(acc, v[k]);
      }
    }
  }
  acc = block_sum<kChanThreads>(acc);
  if (threadIdx.x == 0) db[c] = float(acc);
}

// Thread (x, ty) of a (kColX, kColY) block puts `v` in sums[ty][x]; the kColY values of each
// column are then folded by a fixed tree, the column's total left in sums[0][x]. Every thread
// of the block must call it (it holds barriers).
__device__ void fold_columns(double (&sums)[kColY][kColX], double v) {
  sums[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  // Round `half`: rows [0, half) add rows [half, 2 half), which no thread writes this round.
  for (int half = kColY / 2; half > 0; half >>= 1) {
    if (int(threadIdx.y) < half)
      sums[threadIdx.y][threadIdx.x] += sums[threadIdx.y + half][threadIdx.x];
    __syncthreads();
  }
}

// plane == 1: dy (rows, channels) with rows = `batch` (a Linear layer's batch, or the
// batch * height * width positions of a channels-last convolution output). Block
// (kColX, kColY) at (blockIdx.x, blockIdx.y) owns channels blockIdx.x * kColX + threadIdx.x
// over slice blockIdx.y of the rows, [s * slice_rows, min((s + 1) * slice_rows, rows)) (every
// slice holds slice_rows rows but the last, which holds at least one);
// thread (x, ty) sums the slice's rows ty, ty + kColY, ... in increasing order, then the kColY
// partial sums of a column are folded by a fixed shared-memory tree. One slice (gridDim.y == 1):
// that is db[c]. Several: slice s's sum goes to partial[s * channels + c], and the last block to
// finish (an atomic ticket, which decides who reduces, never the order of a sum) reduces the
// slices of each channel the same way (thread (x, ty) sums slices ty, ty + kColY, ... of channel
// c0 + x in increasing order, then the same tree), 32 channels at a time, into db, and rearms
// the ticket. The slicing depends on the shape alone (bias_grad_slice_rows), so the bits do too.
template <typename TG, typename TD, typename TY>
__global__ void __launch_bounds__(kColX* kColY)
    bias_act_backward_rows_kernel(TG* g, float* __restrict__ db, const TD* dy, const TY* y,
                                  int batch, int channels, int slice_rows, bool relu, bool write_g,
                                  double* __restrict__ partial, unsigned* __restrict__ ticket) {
  __shared__ double sums[kColY][kColX];
  const int c = blockIdx.x * kColX + threadIdx.x;
  const int first = int(blockIdx.y) * slice_rows;  // < batch: gridDim.y = ceil(batch / slice_rows)
  const int end = batch - first < slice_rows ? batch : first + slice_rows;
  double acc = 0.0;
  if (c < channels) {
#pragma unroll 4
    for (int b = first + int(threadIdx.y); b < end; b += kColY) {
      const int64_t i = int64_t(b) * channels + c;
      float v = load(dy[i]);
      if (relu) v = load(y[i]) > 0.0f ? v : 0.0f;
      if (write_g) store(g[i], v);
      acc += double(v);
    }
  }
  fold_columns(sums, acc);
  if (gridDim.y == 1) {
    if (threadIdx.y == 0 && c < channels) db[c] = float(sums[0][threadIdx.x]);
    return;
  }
  if (threadIdx.y == 0 && c < channels)
    partial[int64_t(blockIdx.y) * channels + c] = sums[0][threadIdx.x];
  if (!last_block_done(ticket)) return;
  // Every block's partial sums, read from L2 (__ldcg: another SM wrote them), 32 channels at a
  // time; c0 is the same in every thread, so the barriers are reached by all.
  const int slices = int(gridDim.y);
  for (int c0 = 0; c0 < channels; c0 += kColX) {
    const int ch = c0 + int(threadIdx.x);
    double total = 0.0;
    if (ch < channels)
      for (int s = int(threadIdx.y); s < slices; s += kColY)
        total += __ldcg(partial + int64_t(s) * channels + ch);
    fold_columns(sums, total);
    if (threadIdx.y == 0 && ch < channels) db[ch] = float(sums[0][threadIdx.x]);
    __syncthreads();  // sums is refilled by the next group
  }
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

namespace {

template <typename TY, typename TX>
void launch_bias_act_forward(const char* fn, TY* y, const TX* x, const float* bias, int batch,
                             int channels, int64_t plane, bool relu, cudaStream_t s) {
  check_shape(fn, batch, channels, plane);
  if (!y || !x || !bias) throw Error(std::string(fn) + ": null pointer");
  if (plane > INT64_MAX / batch / channels)
    throw Error(std::string(fn) + ": shape too large " + shape_str(batch, channels, plane));
  const int64_t n = int64_t(batch) * channels * plane;
  const int blocks = grid_stride_blocks(uint64_t(n), kElemThreads);
  if (n <= INT32_MAX)
    bias_act_forward_kernel<TY, TX, uint32_t><<<blocks, kElemThreads, 0, s>>>(
        y, x, bias, uint32_t(n), uint32_t(channels), uint32_t(plane), relu);
  else
    bias_act_forward_kernel<TY, TX, int64_t>
        <<<blocks, kElemThreads, 0, s>>>(y, x, bias, n, int64_t(channels), plane, relu);
  CUDA_CHECK_LAUNCH();
}

// g = mask(dy) (g may be dy: in place), db = its per-channel sums; with scratch, a long
// plane == 1 reduction is split into slices (bias_grad_slices).
template <typename TG, typename TD, typename TY>
void launch_bias_act_backward(const char* fn, TG* g, float* db, const TD* dy, const TY* y,
                              int batch, int channels, int64_t plane, bool relu, cudaStream_t s,
                              const BiasGradScratch* scratch) {
  check_shape(fn, batch, channels, plane);
  if (!g || !db || !dy || (relu && !y)) throw Error(std::string(fn) + ": null pointer");
  // One block reduces batch * plane elements with 32-bit indices; the row and channel loop
  // counters of the plane == 1 kernel must not overflow either.
  if (plane > INT32_MAX / batch || batch > INT_MAX - kColY || channels > INT_MAX - kColX)
    throw Error(std::string(fn) + ": batch * plane too large " + shape_str(batch, channels, plane));
  const bool in_place = static_cast<const void*>(g) == static_cast<const void*>(dy);
  const bool write_g = relu || !in_place;
  if (plane == 1) {
    const int slices = scratch ? bias_grad_slices(batch) : 1;
    const int slice_rows = slices > 1 ? bias_grad_slice_rows(batch) : batch;
    if (slices > 1) {
      if (!scratch->partial || !scratch->ticket)
        throw Error(std::string(fn) + ": null scratch pointer");
      if (scratch->capacity < size_t(slices) * size_t(channels))
        throw Error(std::string(fn) + ": scratch of " + std::to_string(scratch->capacity) +
                    " doubles, the shape " + shape_str(batch, channels, plane) + " needs " +
                    std::to_string(size_t(slices) * size_t(channels)));
    }
    const dim3 block(kColX, kColY);
    const dim3 grid(unsigned((channels + kColX - 1) / kColX), unsigned(slices));
    bias_act_backward_rows_kernel<TG, TD, TY><<<grid, block, 0, s>>>(
        g, db, dy, y, batch, channels, slice_rows, relu, write_g,
        slices > 1 ? scratch->partial : nullptr, slices > 1 ? scratch->ticket : nullptr);
  } else if (std::is_same<TG, float>::value && std::is_same<TD, float>::value &&
             std::is_same<TY, float>::value && plane % 4 == 0 && aligned16(g) && aligned16(dy) &&
             (!relu || aligned16(y))) {
    const uint32_t plane4 = uint32_t(plane / 4);
    bias_act_backward_channel_kernel<float4, float4, float4, kChanUnroll4>
        <<<channels, kChanThreads, 0, s>>>(reinterpret_cast<float4*>(g), db,
                                           reinterpret_cast<const float4*>(dy),
                                           reinterpret_cast<const float4*>(y), channels, plane4,
                                           uint32_t(batch) * plane4, relu, write_g);
  } else {
    bias_act_backward_channel_kernel<TG, TD, TY, kChanUnroll><<<channels, kChanThreads, 0, s>>>(
        g, db, dy, y, channels, uint32_t(plane), uint32_t(batch) * uint32_t(plane), relu, write_g);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void bias_act_forward(float* y, const float* bias, int batch, int channels, int64_t plane,
                      bool relu, cudaStream_t s) {
  launch_bias_act_forward("bias_act_forward", y, static_cast<const float*>(y), bias, batch,
                          channels, plane, relu, s);
}

void bias_act_forward(bf16* y, const float* bias, int batch, int channels, int64_t plane, bool relu,
                      cudaStream_t s) {
  launch_bias_act_forward("bias_act_forward (bf16)", y, static_cast<const bf16*>(y), bias, batch,
                          channels, plane, relu, s);
}

void bias_act_forward(bf16* y, const float* x, const float* bias, int batch, int channels,
                      int64_t plane, bool relu, cudaStream_t s) {
  launch_bias_act_forward("bias_act_forward (float to bf16)", y, x, bias, batch, channels, plane,
                          relu, s);
}

void bias_act_backward(float* dy, float* db, const float* y, int batch, int channels, int64_t plane,
                       bool relu, cudaStream_t s, const BiasGradScratch* scratch) {
  launch_bias_act_backward("bias_act_backward", dy, db, static_cast<const float*>(dy), y, batch,
                           channels, plane, relu, s, scratch);
}

void bias_act_backward(bf16* dy, float* db, const bf16* y, int batch, int channels, int64_t plane,
                       bool relu, cudaStream_t s, const BiasGradScratch* scratch) {
  launch_bias_act_backward("bias_act_backward (bf16)", dy, db, static_cast<const bf16*>(dy), y,
                           batch, channels, plane, relu, s, scratch);
}

void bias_act_backward(float* g, float* db, const bf16* dy, const bf16* y, int batch, int channels,
                       int64_t plane, bool relu, cudaStream_t s, const BiasGradScratch* scratch) {
  if (static_cast<const void*>(g) == static_cast<const void*>(dy))
    throw Error("bias_act_backward (bf16 to float): g and dy overlap");
  launch_bias_act_backward("bias_act_backward (bf16 to float)", g, db, dy, y, batch, channels,
                           plane, relu, s, scratch);
}

void bias_act_backward(bf16* g, float* db, const float* dy, const float* y, int batch, int channels,
                       int64_t plane, bool relu, cudaStream_t s, const BiasGradScratch* scratch) {
  if (static_cast<const void*>(g) == static_cast<const void*>(dy))
    throw Error("bias_act_backward (float to bf16): g and dy overlap");
  launch_bias_act_backward("bias_act_backward (float to bf16)", g, db, dy, y, batch, channels,
                           plane, relu, s, scratch);
}

int bias_grad_slice_rows(int rows) {
  if (rows < 2 * kSliceRows) return rows;
  const int64_t spread = (int64_t(rows) + kMaxSlices - 1) / kMaxSlices;  // keeps <= kMaxSlices
  return int(spread > kSliceRows ? spread : kSliceRows);
}

int bias_grad_slices(int rows) {
  if (rows < 2 * kSliceRows) return 1;
  const int64_t slice = bias_grad_slice_rows(rows);
  return int((int64_t(rows) + slice - 1) / slice);
}

size_t bias_grad_scratch_doubles(int batch, int channels, int64_t plane) {
  if (plane != 1 || batch < 1 || channels < 1) return 0;
  const int slices = bias_grad_slices(batch);
  return slices > 1 ? size_t(slices) * size_t(channels) : 0;
}

void add_inplace(float* a, const float* b, size_t n, cudaStream_t s) {
  if (n == 0) return;  // nothing to add
  if (!a || !b) throw Error("add_inplace: null pointer");
  add_inplace_kernel<<<grid_stride_blocks(n, kElemThreads), kElemThreads, 0, s>>>(a, b, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace cuvae
