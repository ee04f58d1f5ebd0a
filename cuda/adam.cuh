// Adam over the flat parameter buffer, PyTorch's formulation (the same as cpu::adam_step):
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Owns: adam_step.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace cuvae {

// params, m, v (n) updated in place; grads (n). step counts from 1. One launch.
void adam_step(float* params, float* m, float* v, const float* grads, size_t n, float lr,
               float beta1, float beta2, float eps, int64_t step, cudaStream_t s);

}  // namespace cuvae
