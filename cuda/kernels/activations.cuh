// Bias + ReLU epilogue of a layer and its backward, and an elementwise add.
//   forward:  y[b][c][p] = relu?(y[b][c][p] + bias[c])      relu(v) = v > 0 ? v : 0
//   backward: dy = relu ? (y > 0 ? dy : 0) : dy   (y = the post-ReLU output; in place)
//             db[c] = sum over b, p of dy[b][c][p]  (fixed-order reduction in double)
// Layout (batch, channels, plane) row-major; a Linear layer's (B, out) output is plane = 1, and
// so is a channels-last (NHWC) convolution output, read as (B * H * W, C, 1).
// bf16 forms (the mixed-precision step, cuda/kernels/precision.cuh): values are read as float, the
// arithmetic is the float path's (a float add, the same select), and a bf16 result is the
// float result rounded to nearest even; db is always the sum of the float values (masked,
// before any rounding to bf16).
// Owns: bias_act_forward, bias_act_backward, add_inplace.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda/kernels/precision.cuh"

namespace cuvae {

// Scratch for a bias gradient over many rows (plane == 1 and batch >= 1024: a Linear layer at
// a large batch, or a channels-last convolution output read as (batch * height * width,
// channels)): the rows are split into slices reduced side by side, whose per-channel sums the
// last block to finish adds in slice order. Without scratch the reduction runs in one slice
// (fewer blocks; other last bits). partial: `capacity` doubles, at least
// bias_grad_scratch_doubles of the shape; ticket: one unsigned, zero before the first call
// (each call leaves it zero). Calls sharing a scratch must run in stream order.
struct BiasGradScratch {
  double* partial = nullptr;
  unsigned* ticket = nullptr;
  size_t capacity = 0;
};
// How a plane == 1 reduction over `rows` rows is sliced with scratch: below 1024 rows, one
// slice of all of them; else slices of bias_grad_slice_rows rows (512, or ceil(rows / 1024)
// past 524,288 rows), the last one shorter: bias_grad_slices = ceil(rows / slice_rows), 2 to
// 1024 of them. Functions of the shape only, so the bits are too.
int bias_grad_slice_rows(int rows);
int bias_grad_slices(int rows);
// Doubles of scratch partial sums that shape needs (0: none).
size_t bias_grad_scratch_doubles(int batch, int channels, int64_t plane);

// y (batch, channels, plane), in place; bias (channels).
void bias_act_forward(float* y, const float* bias, int batch, int channels, int64_t plane,
                      bool relu, cudaStream_t s);

// dy (batch, channels, plane), masked in place when relu; db (channels), written (not added);
// y (batch, channels, plane) the forward output after ReLU (unused when !relu, may be null
// then). dy, db and y must not overlap. Bit-reproducible run to run (the sums' order depends
// on the shape, and on whether scratch is given, only).
void bias_act_backward(float* dy, float* db, const float* y, int batch, int channels, int64_t plane,
                       bool relu, cudaStream_t s, const BiasGradScratch* scratch = nullptr);

// bf16 y (batch, channels, plane), in place: y = bf16(relu?(float(y) + bias[c])).
void bias_act_forward(bf16* y, const float* bias, int batch, int channels, int64_t plane, bool relu,
                      cudaStream_t s);
// y (batch, channels, plane) = bf16(relu?(x + bias[c])) from a float x of the same shape (a
// Linear layer computed in fp32 that feeds a bf16 convolution); x and y must not overlap.
void bias_act_forward(bf16* y, const float* x, const float* bias, int batch, int channels,
                      int64_t plane, bool relu, cudaStream_t s);

// bf16 dy and y, dy masked in place (as the float form); db (channels) float.
void bias_act_backward(bf16* dy, float* db, const bf16* y, int batch, int channels, int64_t plane,
                       bool relu, cudaStream_t s, const BiasGradScratch* scratch = nullptr);
// Out of place, changing the type: g = relu ? (y > 0 ? dy : 0) : dy, stored as g's type;
// db[c] = the sum of the float g values. g, dy, y (batch, channels, plane); none overlap.
//   float g from bf16 dy, y: the bf16 gradient arriving at a layer computed in fp32;
//   bf16 g from float dy, y: a layer computed in fp32 handing its gradient to bf16 GEMMs.
void bias_act_backward(float* g, float* db, const bf16* dy, const bf16* y, int batch, int channels,
                       int64_t plane, bool relu, cudaStream_t s,
                       const BiasGradScratch* scratch = nullptr);
void bias_act_backward(bf16* g, float* db, const float* dy, const float* y, int batch, int channels,
                       int64_t plane, bool relu, cudaStream_t s,
                       const BiasGradScratch* scratch = nullptr);

// a (n) += b (n); a and b must not partially overlap.
void add_inplace(float* a, const float* b, size_t n, cudaStream_t s);

}  // namespace cuvae
