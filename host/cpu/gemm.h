// Single-precision matrix products on oneDNN's GEMM (dnnl_sgemm: JIT-compiled for the
// processor at hand, threaded with OpenMP), for the code above host/cpu that needs large plain
// products without seeing oneDNN: the nearest-neighbour distances and the logistic regression
// of host/eval/classify.
//   c (m, n) = alpha * op(a) * op(b) + beta * c,  op(a) (m, k), op(b) (k, n),
// every matrix row-major with its leading dimension (the distance between rows, in floats).
// The summation order is oneDNN's, fixed by the shapes and the thread count. A product of fewer
// than 2^25 multiply-adds, or one called inside an OpenMP parallel region, runs on the calling
// thread alone (gemm.cpp says why).
#pragma once

#include <cstdint>

namespace cuvae::cpu {

struct GemmShape {
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;  // op(a) = a^T: a is stored (k, m); op(b): b is (n, k)
  int64_t lda = 0, ldb = 0, ldc = 0;      // leading dimensions; 0: the packed width
};

// Throws Error on a bad shape or a oneDNN failure.
void sgemm(float* c, const float* a, const float* b, const GemmShape& shape, float alpha = 1.0f,
           float beta = 0.0f);

}  // namespace cuvae::cpu
