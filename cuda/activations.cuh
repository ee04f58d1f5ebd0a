// Bias + ReLU epilogue of a layer and its backward, and an elementwise add.
//   forward:  y[b][c][p] = relu?(y[b][c][p] + bias[c])      relu(v) = v > 0 ? v : 0
//   backward: dy = relu ? (y > 0 ? dy : 0) : dy   (y = the post-ReLU output; in place)
//             db[c] = sum over b, p of dy[b][c][p]  (fixed-order reduction in double)
// Layout (batch, channels, plane) row-major; a Linear layer's (B, out) output is plane = 1.
// Owns: bias_act_forward, bias_act_backward, add_inplace.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace cuvae {

// y (batch, channels, plane), in place; bias (channels).
void bias_act_forward(float* y, const float* bias, int batch, int channels, int64_t plane,
                      bool relu, cudaStream_t s);

// dy (batch, channels, plane), masked in place when relu; db (channels), written (not added);
// y (batch, channels, plane) the forward output after ReLU (unused when !relu, may be null
// then). dy, db and y must not overlap. Bit-reproducible run to run (no atomics).
void bias_act_backward(float* dy, float* db, const float* y, int batch, int channels, int64_t plane,
                       bool relu, cudaStream_t s);

// a (n) += b (n); a and b must not partially overlap.
void add_inplace(float* a, const float* b, size_t n, cudaStream_t s);

}  // namespace cuvae
