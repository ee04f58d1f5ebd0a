// cuBLAS dense (Linear) layers, no bias (that is a separate kernel). Row-major activations
// (batch, features) and PyTorch's row-major weight W [out, in]:
//   forward          y  (B, out) = x  (B, in)  W^T
//   backward data    dx (B, in)  = dy (B, out) W
//   backward filter  dW (out, in) = dy^T (out, B) x (B, in)     (summed over the batch)
// Owns the cuBLAS handle (bound to one stream, with its own workspace); cuBLAS's header stays
// inside dense.cu (pimpl).
//
// The launchers take the handle first instead of the stream last (the project's launcher
// convention): cuBLAS binds the stream to the handle, so the handle is where the stream comes
// from and a separate stream argument could only disagree with it.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <memory>
#include <string>

#include "cuda/kernels/precision.cuh"
#include "host/core/error.h"

namespace cuvae {

// Thrown by CUBLAS_CHECK (dense.cu): the failing expression, file:line and cuBLAS's message.
class CublasError : public Error {
 public:
  using Error::Error;
};

// The cuBLAS library this process loaded, "cuBLAS 13.1.0" (no GPU needed; never throws).
std::string cublas_version();

// A cuBLAS handle bound to `stream`, host pointer mode, math mode CUBLAS_DEFAULT_MATH (strict
// fp32) or, with tf32, CUBLAS_TF32_TENSOR_OP_MATH. It owns a fixed cuBLAS workspace so that no
// call allocates (and calls can be captured in a CUDA graph). Move-only.
class CublasHandle {
 public:
  CublasHandle(cudaStream_t stream, bool tf32);
  ~CublasHandle();  // never throws; logs a failure to stderr
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  CublasHandle(CublasHandle&&) noexcept;
  CublasHandle& operator=(CublasHandle&&) noexcept;

  cudaStream_t stream() const;
  bool tf32() const;

  struct Impl;
  const Impl& impl() const;  // for dense.cu only: Impl is opaque everywhere else

 private:
  std::unique_ptr<Impl> impl_;
};

// All pointers are device pointers; outputs are overwritten (beta = 0). Enqueued on the
// handle's stream. Throw cuvae::Error for batch/in/out < 1 or a null pointer.
// y (batch, out) = x (batch, in) W^T;  w [out, in].
void dense_forward(const CublasHandle& h, float* y, const float* x, const float* w, int batch,
                   int in, int out);
// dx (batch, in) = dy (batch, out) W, or with accumulate, dx += dy W (cuBLAS beta = 1).
void dense_backward_data(const CublasHandle& h, float* dx, const float* dy, const float* w,
                         int batch, int in, int out, bool accumulate = false);
// dW (out, in) = dy^T x: dy (batch, out), x (batch, in).
void dense_backward_filter(const CublasHandle& h, float* dw, const float* x, const float* dy,
                           int batch, int in, int out);

// Two layers with the same input and shapes at once (the VAE's mu and logvar heads), as one
// strided-batched GEMM: layer i has its weight at w + i * w_stride and its output at
// y + i * y_stride (strides in floats, >= 0).
// y_i (batch, out) = x (batch, in) W_i^T.
void dense_forward_pair(const CublasHandle& h, float* y, long long y_stride, const float* x,
                        const float* w, long long w_stride, int batch, int in, int out);
// dW_i (out, in) = dy_i^T x, dW_i at dw + i * dw_stride, dy_i at dy + i * dy_stride.
void dense_backward_filter_pair(const CublasHandle& h, float* dw, long long dw_stride,
                                const float* x, const float* dy, long long dy_stride, int batch,
                                int in, int out);

// bf16 operands with fp32 accumulation (cublasGemmEx, CUBLAS_COMPUTE_32F, tensor cores; the
// handle's TF32 setting does not apply), for the mixed-precision step. Same shapes and math as
// the float forms; a float output is the fp32 accumulation rounded once, a bf16 output that
// value rounded to bf16.
void dense_forward(const CublasHandle& h, float* y, const bf16* x, const bf16* w, int batch, int in,
                   int out);
void dense_backward_data(const CublasHandle& h, bf16* dx, const bf16* dy, const bf16* w, int batch,
                         int in, int out);
void dense_backward_filter(const CublasHandle& h, float* dw, const bf16* x, const bf16* dy,
                           int batch, int in, int out);

}  // namespace cuvae
