// Bias + ReLU epilogue of a layer and its backward, and an elementwise add.
//   forward:  y[b][c][p] = relu?(y[b][c][p] + bias[c])      relu(v) = v > 0 ? v : 0
//   backward: dy = relu ? (y > 0 ? dy : 0) : dy   (y = the post-ReLU output; in place)
//             db[c] = sum over b, p of dy[b][c][p]  (fixed-order reduction in double)
// Layout (batch, channels, plane) row-major; a Linear layer's (B, out) output is plane = 1.
// bf16 forms (the mixed-precision step, cuda/precision.cuh): values are read as float, the
// arithmetic is the float path's (a float add, the same select), and a bf16 result is the
// float result rounded to nearest even; db is always the sum of the float values (masked,
// before any rounding to bf16).
// Owns: bias_act_forward, bias_act_backward, add_inplace.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda/precision.cuh"

namespace cuvae {

// y (batch, channels, plane), in place; bias (channels).
void bias_act_forward(float* y, const float* bias, int batch, int channels, int64_t plane,
                      bool relu, cudaStream_t s);

// dy (batch, channels, plane), masked in place when relu; db (channels), written (not added);
// y (batch, channels, plane) the forward output after ReLU (unused when !relu, may be null
// then). dy, db and y must not overlap. Bit-reproducible run to run (no atomics).
void bias_act_backward(float* dy, float* db, const float* y, int batch, int channels, int64_t plane,
                       bool relu, cudaStream_t s);

// bf16 y (batch, channels, plane), in place: y = bf16(relu?(float(y) + bias[c])).
void bias_act_forward(bf16* y, const float* bias, int batch, int channels, int64_t plane, bool relu,
                      cudaStream_t s);
// y (batch, channels, plane) = bf16(relu?(x + bias[c])) from a float x of the same shape (a
// Linear layer computed in fp32 that feeds a bf16 convolution); x and y must not overlap.
void bias_act_forward(bf16* y, const float* x, const float* bias, int batch, int channels,
                      int64_t plane, bool relu, cudaStream_t s);

// bf16 dy and y, dy masked in place (as the float form); db (channels) float.
void bias_act_backward(bf16* dy, float* db, const bf16* y, int batch, int channels, int64_t plane,
                       bool relu, cudaStream_t s);
// Out of place, changing the type: g = relu ? (y > 0 ? dy : 0) : dy, stored as g's type;
// db[c] = the sum of the float g values. g, dy, y (batch, channels, plane); none overlap.
//   float g from bf16 dy, y: the bf16 gradient arriving at a layer computed in fp32;
//   bf16 g from float dy, y: a layer computed in fp32 handing its gradient to bf16 GEMMs.
void bias_act_backward(float* g, float* db, const bf16* dy, const bf16* y, int batch, int channels,
                       int64_t plane, bool relu, cudaStream_t s);
void bias_act_backward(bf16* g, float* db, const float* dy, const float* y, int batch, int channels,
                       int64_t plane, bool relu, cudaStream_t s);

// a (n) += b (n); a and b must not partially overlap.
void add_inplace(float* a, const float* b, size_t n, cudaStream_t s);

}  // namespace cuvae
