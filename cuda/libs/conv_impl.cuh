// The private side of the cuDNN convolutions (conv.cuh), shared by conv.cu (descriptors, the
// calls) and conv_algo.cu (algorithm choice): cuDNN's header, CUDNN_CHECK, the descriptor
// owner, CudnnHandle::Impl, and ConvOp::Impl with its descriptors, its chosen algorithms and
// the three cuDNN routines in image/grid terms (the table at the top of conv.cu). Included by
// those two files only, first, so that cuDNN's header comes in as the comment below says.
#pragma once

// cuDNN 9 marks this legacy convolution API (cudnnConvolutionForward / BackwardData /
// BackwardFilter, their descriptors and algorithm queries) deprecated in favour of the backend
// graph API. It is still supported, and it is far simpler to get right for three plain fp32
// convolutions than building and finalizing operation graphs. cudnn_graph.h only attaches the
// deprecation attribute when CUDNN_WARN_DEPRECATED is defined, so making sure it is undefined
// here, before the include, keeps the warnings quiet in the files that include this header
// (conv.cu, conv_algo.cu) alone.
#undef CUDNN_WARN_DEPRECATED
#include <cudnn.h>

#include <cstddef>
#include <cstdio>
#include <string>

#include "cuda/libs/conv.cuh"
#include "host/core/model.h"

namespace cuvae {
namespace conv_detail {

// Throws CudnnError naming the failing expression, file:line, cuDNN's message and its last log
// message (CUDNN_CHECK).
[[noreturn]] void throw_cudnn_error(cudnnStatus_t status, const char* expr, const char* file,
                                    int line);

// "encoder.conv1 (Conv2d, batch 128)": how messages name a ConvOp.
std::string layer_label(const Layer& l, int batch);

}  // namespace conv_detail
}  // namespace cuvae

#define CUDNN_CHECK(expr)                                                                \
  do {                                                                                   \
    const cudnnStatus_t cuvae_status_ = (expr);                                          \
    if (cuvae_status_ != CUDNN_STATUS_SUCCESS)                                           \
      ::cuvae::conv_detail::throw_cudnn_error(cuvae_status_, #expr, __FILE__, __LINE__); \
  } while (0)

namespace cuvae {
namespace conv_detail {

// Owns one cuDNN descriptor; Destroy is its cudnnDestroy*Descriptor. Created by the caller
// through out() so that CUDNN_CHECK names the real create call.
template <typename D, cudnnStatus_t (*Destroy)(D)>
class Owned {
 public:
  Owned() = default;
  ~Owned() {
    if (!d_) return;
    const cudnnStatus_t status = Destroy(d_);
    if (status != CUDNN_STATUS_SUCCESS)
      std::fprintf(stderr, "cuvae: warning: destroying a cuDNN descriptor failed: %s\n",
                   cudnnGetErrorString(status));
  }
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  D get() const { return d_; }
  D* out() { return &d_; }

 private:
  D d_ = nullptr;
};

using TensorDesc = Owned<cudnnTensorDescriptor_t, cudnnDestroyTensorDescriptor>;
using FilterDesc = Owned<cudnnFilterDescriptor_t, cudnnDestroyFilterDescriptor>;
using ConvDesc = Owned<cudnnConvolutionDescriptor_t, cudnnDestroyConvolutionDescriptor>;

}  // namespace conv_detail

struct CudnnHandle::Impl {
  cudnnHandle_t handle = nullptr;
  cudaStream_t stream = nullptr;
  bool tf32_hardware = false;  // compute capability >= 8: DEFAULT_MATH may mean TF32

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    if (!handle) return;
    const cudnnStatus_t status = cudnnDestroy(handle);
    if (status != CUDNN_STATUS_SUCCESS)
      std::fprintf(stderr, "cuvae: warning: cudnnDestroy failed: %s\n",
                   cudnnGetErrorString(status));
  }
};

struct ConvOp::Impl {
  const CudnnHandle::Impl* h = nullptr;
  Layer layer;
  int batch = 0;
  ConvMath math = ConvMath::Fp32Strict;
  ConvAlgoPolicy policy = ConvAlgoPolicy::Deterministic;
  ConvLayout layout = ConvLayout::Nchw;

  conv_detail::TensorDesc image;   // conv input  (B, C, image_h, image_w), NCHW or NHWC
  conv_detail::TensorDesc grid;    // conv output (B, K, grid_h, grid_w), the same layout
  conv_detail::FilterDesc filter;  // [K, C, kernel, kernel] (NCHW) or [K, kernel, kernel, C] (NHWC)
  // One convolution descriptor per cuDNN routine: each carries the math type its chosen
  // algorithm reported, and the three choices need not agree.
  conv_detail::ConvDesc conv_fwd, conv_bwd_data, conv_bwd_filter;

  cudnnConvolutionFwdAlgoPerf_t fwd{};
  cudnnConvolutionBwdDataAlgoPerf_t bwd_data{};
  cudnnConvolutionBwdFilterAlgoPerf_t bwd_filter{};
  size_t ws_fwd = 0, ws_bwd_data = 0, ws_bwd_filter = 0;
  size_t workspace = 0;  // max of the three

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  bool transposed() const { return layer.kind == LayerKind::ConvTranspose2d; }

  void setup();
  void choose_fwd();
  void choose_bwd_data();
  void choose_bwd_filter();

  // Throws unless the call has every pointer, a large enough workspace and the op's data type
  // (bf16 says which overload was called).
  void check_call(const char* fn, bool pointers_ok, const void* ws, size_t ws_bytes,
                  bool bf16) const;
  // The three layer passes on untyped pointers (checked by the public overloads).
  void forward(void* y, const void* x, const void* w, void* ws, size_t ws_bytes) const;
  void backward_data(void* dx, const void* dy, const void* w, void* ws, size_t ws_bytes) const;
  void backward_filter(void* dw, const void* x, const void* dy, void* ws, size_t ws_bytes) const;

  // The three cuDNN routines in image/grid terms (see the table at the top of conv.cu). The
  // pointers are float or bf16 as the descriptors say; the scaling factors are float for both.
  void conv_forward(void* grid_out, const void* image_in, const void* w, void* ws,
                    size_t ws_bytes) const {
    const float one = 1.0f, zero = 0.0f;
    CUDNN_CHECK(cudnnConvolutionForward(h->handle, &one, image.get(), image_in, filter.get(), w,
                                        conv_fwd.get(), fwd.algo, ws, ws_bytes, &zero, grid.get(),
                                        grid_out));
  }
  void conv_backward_data(void* image_out, const void* grid_in, const void* w, void* ws,
                          size_t ws_bytes) const {
    const float one = 1.0f, zero = 0.0f;
    CUDNN_CHECK(cudnnConvolutionBackwardData(h->handle, &one, filter.get(), w, grid.get(), grid_in,
                                             conv_bwd_data.get(), bwd_data.algo, ws, ws_bytes,
                                             &zero, image.get(), image_out));
  }
  void conv_backward_filter(void* dw, const void* image_in, const void* grid_in, void* ws,
                            size_t ws_bytes) const {
    const float one = 1.0f, zero = 0.0f;
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(h->handle, &one, image.get(), image_in, grid.get(),
                                               grid_in, conv_bwd_filter.get(), bwd_filter.algo, ws,
                                               ws_bytes, &zero, filter.get(), dw));
  }
};

}  // namespace cuvae
