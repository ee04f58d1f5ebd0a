// Adam over the flat parameter buffer, PyTorch's formulation (the same as cpu::adam_step):
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// It also watches the gradients: a NaN or infinity in grads[i] at step t lowers
// *first_nonfinite to (t << 32) | i (atomicMin), so after any number of steps the word names
// the earliest bad step and its lowest bad index, read back once when convenient. The caller
// sets it to kNoNonfinite first; the update itself goes ahead (the run is to be stopped).
// Owns: adam_step.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "host/core/step_scalars.h"

namespace cuvae {

constexpr unsigned long long kNoNonfinite = ~0ull;

// params, m, v (n) updated in place; first_nonfinite (1, may be null) lowered as above;
// grads (n). step counts from 1 (below 2^31); n below 2^32. One launch.
void adam_step(float* params, float* m, float* v, unsigned long long* first_nonfinite,
               const float* grads, size_t n, float lr, float beta1, float beta2, float eps,
               int64_t step, cudaStream_t s);

// The same update with the step's t, lr / (1 - b1^t) and 1 / sqrt(1 - b2^t) read on the device
// from at.table[*at.cursor] (host/core/step_scalars.h; the caller keeps t below 2^31): the form a
// captured CUDA graph replays. Bit for bit the launch above for the same scalars.
void adam_step(float* params, float* m, float* v, unsigned long long* first_nonfinite,
               const float* grads, size_t n, float beta1, float beta2, float eps, StepTable at,
               cudaStream_t s);

}  // namespace cuvae
