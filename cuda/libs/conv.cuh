// cuDNN convolutions for the Conv2d and ConvTranspose2d layers (no bias: that is a separate
// kernel). Math, NCHW float tensors, cross-correlation (PyTorch semantics), 3x3 window:
//   Conv2d            y[b,k,oy,ox] = sum_{c,ky,kx} W[k,c,ky,kx] x[b,c,oy*s-p+ky,ox*s-p+kx]
//                     W is PyTorch's [out,in,3,3]; backward: dx = conv^T(dy), dW = dy (*) x.
//   ConvTranspose2d   the adjoint of the Conv2d that maps the (out, out_h, out_w) image to the
//                     (in, in_h, in_w) grid with the same stride/pad and filter [K=in, C=out]
//                     (PyTorch's [in,out,3,3] read as cuDNN's KCRS); the output padding is
//                     implied by the tensor sizes. So y = conv^T(x), dx = conv(dy), and
//                     dW = x (*) dy with dy in the conv-input role.
// Owns: the cuDNN handle (CudnnHandle) and, per layer and batch size, the tensor / filter /
// convolution descriptors and the three chosen algorithms (ConvOp). Everything expensive
// (descriptors, algorithm choice, workspace sizes) happens once in the ConvOp constructor; the
// calls only bind pointers. cuDNN's header stays inside conv.cu, conv_algo.cu and their private
// conv_impl.cuh (pimpl).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <memory>
#include <string>

#include "cuda/kernels/precision.cuh"
#include "host/core/error.h"
#include "host/core/model.h"

namespace cuvae {

// Thrown by CUDNN_CHECK (conv.cu): the failing expression, file:line and cuDNN's message.
class CudnnError : public Error {
 public:
  using Error::Error;
};

// Fp32Strict: FMA kernels only (CUDNN_FMA_MATH), no TF32 tensor cores.
// Tf32: CUDNN_DEFAULT_MATH, which lets cuDNN use TF32 tensor cores on Ampere and newer.
// Bf16: bf16 tensors and filters with fp32 accumulation (cuDNN's pseudo-bf16 configuration),
//   CUDNN_TENSOR_OP_MATH: bf16 tensor cores (Ampere and newer); for the mixed-precision step.
enum class ConvMath { Fp32Strict, Tf32, Bf16 };

// The memory layout of the activations and filters an op reads and writes.
// Nchw: tensors (batch, channels, height, width), filters PyTorch's [K, C, 3, 3] (see below).
// Nhwc: channels last: tensors (batch, height, width, channels), filters [K, 3, 3, C] (cuDNN's
//   KRSC; Conv2d [out,3,3,in], ConvTranspose2d [in,3,3,out]), the layout tensor-core kernels
//   read natively (with NCHW tensors cuDNN may transpose around them).
enum class ConvLayout { Nchw, Nhwc };

// Deterministic: cuDNN's heuristic ranking (cudnnGet*Algorithm_v7), first algorithm that
// reports CUDNN_DETERMINISTIC. The ranking does not depend on timing, so every run picks the
// same algorithms and training is bit-reproducible on the same GPU and library versions.
// Fastest: cudnnFind*Algorithm benchmarks every algorithm at setup and takes the fastest; the
// choice can change from run to run and may be non-deterministic (atomics).
enum class ConvAlgoPolicy { Deterministic, Fastest };

// A ConvOp's three layer passes (forward, backward_data, backward_filter below), for the
// questions asked about each.
enum class ConvPass { Forward, BackwardData, BackwardFilter };

// The cuDNN library this process loaded, "cuDNN 9.13.0" (no GPU needed; never throws).
std::string cudnn_version();

// A cuDNN handle bound to one stream (every ConvOp built on it runs there). Move-only.
class CudnnHandle {
 public:
  explicit CudnnHandle(cudaStream_t stream);
  ~CudnnHandle();  // never throws; logs a failure to stderr
  CudnnHandle(const CudnnHandle&) = delete;
  CudnnHandle& operator=(const CudnnHandle&) = delete;
  CudnnHandle(CudnnHandle&&) noexcept;
  CudnnHandle& operator=(CudnnHandle&&) noexcept;

  cudaStream_t stream() const;

  struct Impl;

 private:
  friend class ConvOp;
  std::unique_ptr<Impl> impl_;
};

// One Conv2d or ConvTranspose2d layer at one batch size. The CudnnHandle must outlive it.
// Move-only; a moved-from ConvOp may only be destroyed or assigned to.
class ConvOp {
 public:
  // Throws CudnnError for a geometry cuDNN rejects, Error for a layer whose sizes disagree
  // with its kernel/stride/pad/out_pad, or when no algorithm fits `math` (and `policy`): of
  // cuDNN's candidates for each routine, in the policy's order, the first whose set-up (math
  // type, workspace query) succeeds is taken (cuda/libs/conv_select.h), and the Error lists them
  // all with why each was not.
  ConvOp(CudnnHandle& handle, const Layer& layer, int batch, ConvMath math, ConvAlgoPolicy policy,
         ConvLayout layout = ConvLayout::Nchw);
  ~ConvOp();
  ConvOp(const ConvOp&) = delete;
  ConvOp& operator=(const ConvOp&) = delete;
  ConvOp(ConvOp&&) noexcept;
  ConvOp& operator=(ConvOp&&) noexcept;

  // The workspace every call below needs: the max over the three chosen algorithms. Each
  // call throws if handed fewer bytes than this (or a null workspace when this is > 0).
  size_t workspace_bytes() const;

  // All tensors are device pointers, batch-first, no bias; outputs are overwritten (beta = 0,
  // never read). Enqueued on the handle's stream; nothing is allocated. Shapes for Nchw (Nhwc:
  // channels last, see ConvLayout):
  //   x  (batch, in, in_h, in_w)     the layer input
  //   y  (batch, out, out_h, out_w)  the layer output
  //   w  Conv2d [out,in,3,3] / ConvTranspose2d [in,out,3,3]
  void forward(float* y, const float* x, const float* w, void* workspace,
               size_t workspace_bytes) const;
  // dx = dL/dx (batch, in, in_h, in_w) from dy = dL/dy (batch, out, out_h, out_w).
  void backward_data(float* dx, const float* dy, const float* w, void* workspace,
                     size_t workspace_bytes) const;
  // dw = dL/dW, summed over the batch, same layout as w.
  void backward_filter(float* dw, const float* x, const float* dy, void* workspace,
                       size_t workspace_bytes) const;

  // The same three passes for an op built with ConvMath::Bf16: bf16 tensors and filters, the
  // sums accumulated in fp32 and rounded once to bf16 (dw too). The float calls throw on a
  // Bf16 op and these on any other.
  void forward(bf16* y, const bf16* x, const bf16* w, void* workspace,
               size_t workspace_bytes) const;
  void backward_data(bf16* dx, const bf16* dy, const bf16* w, void* workspace,
                     size_t workspace_bytes) const;
  void backward_filter(bf16* dw, const bf16* x, const bf16* dy, void* workspace,
                       size_t workspace_bytes) const;
  bool is_bf16() const;  // built with ConvMath::Bf16
  // Whether the algorithm chosen for the layer pass computes in a transform domain: FFT (FFT,
  // FFT_TILING) or Winograd (WINOGRAD, WINOGRAD_NONFUSED). Their rounding is not a direct sum's:
  // an output's error is bounded by the norms of the transformed tiles it comes from, not by its
  // own terms, and in fp32 it can be one to two orders of magnitude larger. The Fastest policy
  // may choose them (and the Deterministic one where cuDNN ranks one first).
  bool uses_transform(ConvPass pass) const;
  ConvLayout layout() const;

  // One line naming the layer, the batch and the three algorithms (math type, workspace).
  std::string describe() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace cuvae
