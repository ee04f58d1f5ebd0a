// cuDNN convolutions (see conv.cuh for the math): the cuDNN handle, the descriptors of each
// layer at one batch size, and the calls. The algorithm choice is conv_algo.cu; the private
// types both share (ConvOp::Impl, CUDNN_CHECK) are conv_impl.cuh.
//
// One geometry serves both layer kinds: a cuDNN convolution from an "image" tensor (the conv
// input, NCHW) to a "grid" tensor (the conv output) through a filter [K, C, 3, 3]:
//   Conv2d           image = x (B, in, in_h, in_w),   grid = y (B, out, out_h, out_w),
//                    filter [K=out, C=in] = PyTorch's [out,in,3,3]
//   ConvTranspose2d  image = y (B, out, out_h, out_w), grid = x (B, in, in_h, in_w),
//                    filter [K=in, C=out] = PyTorch's [in,out,3,3]
// and the three cuDNN routines map to the layer's passes as
//   layer pass        Conv2d                          ConvTranspose2d
//   forward           ConvolutionForward (x -> y)     ConvolutionBackwardData (dy:=x, dx:=y)
//   backward_data     ConvolutionBackwardData         ConvolutionForward (x:=dy, y:=dx)
//   backward_filter   BackwardFilter (x, dy)          BackwardFilter (x:=dy, dy:=x)
// For the transposed conv, the output padding is implied by the tensor sizes: the constructor
// checks that cuDNN's forward output of the image is exactly the grid.
#include "cuda/libs/conv_impl.cuh"  // first: cuDNN's header as conv_impl.cuh explains

#include <algorithm>
#include <climits>
#include <cstdio>
#include <sstream>
#include <string>

#include "cuda/runtime/cuda_check.cuh"

namespace cuvae {
namespace conv_detail {

[[noreturn]] void throw_cudnn_error(cudnnStatus_t status, const char* expr, const char* file,
                                    int line) {
  std::string msg = std::string(expr) + " failed at " + file + ":" + std::to_string(line) + ": " +
                    cudnnGetErrorString(status);
  // cuDNN 9 keeps a per-thread log of its last error with more detail (which check failed).
  char detail[512] = {};
  cudnnGetLastErrorString(detail, sizeof(detail));
  if (detail[0]) msg += " (last cuDNN log message: " + std::string(detail) + ")";
  throw CudnnError(msg);
}

std::string layer_label(const Layer& l, int batch) {
  return l.name + " (" + (l.kind == LayerKind::Conv2d ? "Conv2d" : "ConvTranspose2d") + ", batch " +
         std::to_string(batch) + ")";
}

}  // namespace conv_detail

// ---- CudnnHandle -------------------------------------------------------------------------

CudnnHandle::CudnnHandle(cudaStream_t stream) : impl_(std::make_unique<Impl>()) {
  int device = 0, major = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  impl_->tf32_hardware = major >= 8;
  CUDNN_CHECK(cudnnCreate(&impl_->handle));
  CUDNN_CHECK(cudnnSetStream(impl_->handle, stream));
  impl_->stream = stream;
}
CudnnHandle::~CudnnHandle() = default;
CudnnHandle::CudnnHandle(CudnnHandle&&) noexcept = default;
CudnnHandle& CudnnHandle::operator=(CudnnHandle&&) noexcept = default;

cudaStream_t CudnnHandle::stream() const {
  return impl_->stream;
}

// ---- ConvOp ------------------------------------------------------------------------------

namespace {

using conv_detail::ConvDesc;
using conv_detail::layer_label;

// Sizes cuDNN's legacy API holds in int: the whole tensor must stay below 2^31 elements.
void check_tensor_size(const Layer& l, int batch, int64_t per_image, const char* which) {
  if (int64_t(batch) * per_image > int64_t(INT_MAX))
    throw TooLargeForDevice(layer_label(l, batch) + ": the " + which + " tensor has " +
                            std::to_string(int64_t(batch) * per_image) +
                            " elements, more than cuDNN's 2^31 - 1");
}

// The layer's own sizes against its kernel/stride/pad/out_pad (PyTorch's formulas).
void check_layer(const Layer& l, int batch) {
  const std::string label = layer_label(l, batch);
  if (l.kind != LayerKind::Conv2d && l.kind != LayerKind::ConvTranspose2d)
    throw Error("ConvOp: " + l.name + " is not a Conv2d or ConvTranspose2d layer");
  if (batch < 1) throw Error(label + ": batch must be >= 1");
  if (l.in_channels < 1 || l.out_channels < 1 || l.kernel < 1 || l.stride < 1 || l.pad < 0 ||
      l.in_h < 1 || l.in_w < 1 || l.out_h < 1 || l.out_w < 1)
    throw Error(label + ": channels, kernel, stride and sizes must be positive, pad >= 0");
  int want_h, want_w;
  if (l.kind == LayerKind::Conv2d) {
    want_h = (l.in_h + 2 * l.pad - l.kernel) / l.stride + 1;
    want_w = (l.in_w + 2 * l.pad - l.kernel) / l.stride + 1;
    if (l.out_pad != 0) throw Error(label + ": a Conv2d has no output padding");
  } else {
    if (l.out_pad < 0 || l.out_pad >= l.stride)
      throw Error(label + ": output padding must be in [0, stride)");
    want_h = (l.in_h - 1) * l.stride - 2 * l.pad + l.kernel + l.out_pad;
    want_w = (l.in_w - 1) * l.stride - 2 * l.pad + l.kernel + l.out_pad;
  }
  if (want_h != l.out_h || want_w != l.out_w)
    throw Error(label + ": output " + std::to_string(l.out_h) + "x" + std::to_string(l.out_w) +
                " disagrees with the geometry, which gives " + std::to_string(want_h) + "x" +
                std::to_string(want_w));
  check_tensor_size(l, batch, l.in_size(), "input");
  check_tensor_size(l, batch, l.out_size(), "output");
}

}  // namespace

void ConvOp::Impl::setup() {
  const Layer& l = layer;
  // image = conv input, grid = conv output (see the table at the top of the file).
  const int img_c = transposed() ? l.out_channels : l.in_channels;
  const int img_h = transposed() ? l.out_h : l.in_h;
  const int img_w = transposed() ? l.out_w : l.in_w;
  const int grid_c = transposed() ? l.in_channels : l.out_channels;
  const int grid_h = transposed() ? l.in_h : l.out_h;
  const int grid_w = transposed() ? l.in_w : l.out_w;

  // Bf16: bf16 tensors and filter with fp32 compute (cuDNN's pseudo-bf16 configuration).
  const cudnnDataType_t data = math == ConvMath::Bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
  // The dimensions are given as N, C, H, W in both layouts; the format says how they lie.
  const cudnnTensorFormat_t format =
      layout == ConvLayout::Nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
  CUDNN_CHECK(cudnnCreateTensorDescriptor(image.out()));
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(image.get(), format, data, batch, img_c, img_h, img_w));
  CUDNN_CHECK(cudnnCreateTensorDescriptor(grid.out()));
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(grid.get(), format, data, batch, grid_c, grid_h, grid_w));
  // K = grid channels, C = image channels: Conv2d [out,in,k,k], ConvTranspose2d [in,out,k,k]
  // (NCHW), or [out,k,k,in], [in,k,k,out] (NHWC: KRSC).
  CUDNN_CHECK(cudnnCreateFilterDescriptor(filter.out()));
  CUDNN_CHECK(
      cudnnSetFilter4dDescriptor(filter.get(), data, format, grid_c, img_c, l.kernel, l.kernel));

  // Cross-correlation (PyTorch's convention), fp32 compute, dilation 1. The starting math type
  // steers the algorithm queries; each descriptor then takes its chosen algorithm's.
  const cudnnMathType_t base_math = math == ConvMath::Fp32Strict ? CUDNN_FMA_MATH
                                    : math == ConvMath::Bf16     ? CUDNN_TENSOR_OP_MATH
                                                                 : CUDNN_DEFAULT_MATH;
  for (ConvDesc* c : {&conv_fwd, &conv_bwd_data, &conv_bwd_filter}) {
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(c->out()));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(c->get(), l.pad, l.pad, l.stride, l.stride, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(c->get(), base_math));
  }

  int n = 0, c = 0, oh = 0, ow = 0;
  CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(conv_fwd.get(), image.get(), filter.get(), &n,
                                                    &c, &oh, &ow));
  if (n != batch || c != grid_c || oh != grid_h || ow != grid_w) {
    std::ostringstream os;
    os << layer_label(l, batch) << ": cuDNN's convolution of the (" << batch << ", " << img_c
       << ", " << img_h << ", " << img_w << ") image gives (" << n << ", " << c << ", " << oh
       << ", " << ow << "), expected (" << batch << ", " << grid_c << ", " << grid_h << ", "
       << grid_w << ")";
    throw Error(os.str());
  }

  choose_fwd();
  choose_bwd_data();
  choose_bwd_filter();
  workspace = std::max({ws_fwd, ws_bwd_data, ws_bwd_filter});
}

void ConvOp::Impl::check_call(const char* fn, bool pointers_ok, const void* ws, size_t ws_bytes,
                              bool bf16) const {
  if (bf16 != (math == ConvMath::Bf16))
    throw Error(layer_label(layer, batch) + ": ConvOp::" + fn + ": " +
                (bf16 ? "bf16 tensors handed to an op built for float"
                      : "float tensors handed to an op built for bf16 (ConvMath::Bf16)"));
  if (!pointers_ok)
    throw Error(layer_label(layer, batch) + ": ConvOp::" + fn + ": null tensor pointer");
  if (ws_bytes < workspace)
    throw Error(layer_label(layer, batch) + ": ConvOp::" + fn + ": workspace of " +
                std::to_string(ws_bytes) + " bytes, the chosen algorithms need " +
                std::to_string(workspace));
  if (workspace > 0 && !ws)
    throw Error(layer_label(layer, batch) + ": ConvOp::" + fn + ": null workspace, " +
                std::to_string(workspace) + " bytes needed");
}

ConvOp::ConvOp(CudnnHandle& handle, const Layer& layer, int batch, ConvMath math,
               ConvAlgoPolicy policy, ConvLayout layout)
    : impl_(std::make_unique<Impl>()) {
  check_layer(layer, batch);
  if (!handle.impl_) throw Error("ConvOp: the CudnnHandle was moved from");
  impl_->h = handle.impl_.get();
  impl_->layer = layer;
  impl_->batch = batch;
  impl_->math = math;
  impl_->policy = policy;
  impl_->layout = layout;
  impl_->setup();
}
ConvOp::~ConvOp() = default;
ConvOp::ConvOp(ConvOp&&) noexcept = default;
ConvOp& ConvOp::operator=(ConvOp&&) noexcept = default;

size_t ConvOp::workspace_bytes() const {
  return impl_->workspace;
}

void ConvOp::Impl::forward(void* y, const void* x, const void* w, void* ws, size_t ws_bytes) const {
  if (transposed())
    conv_backward_data(y, x, w, ws, ws_bytes);  // y = conv^T(x)
  else
    conv_forward(y, x, w, ws, ws_bytes);
}

void ConvOp::Impl::backward_data(void* dx, const void* dy, const void* w, void* ws,
                                 size_t ws_bytes) const {
  if (transposed())
    conv_forward(dx, dy, w, ws, ws_bytes);  // dx = conv(dy)
  else
    conv_backward_data(dx, dy, w, ws, ws_bytes);
}

void ConvOp::Impl::backward_filter(void* dw, const void* x, const void* dy, void* ws,
                                   size_t ws_bytes) const {
  if (transposed())
    conv_backward_filter(dw, dy, x, ws, ws_bytes);  // image dy, grid x
  else
    conv_backward_filter(dw, x, dy, ws, ws_bytes);
}

void ConvOp::forward(float* y, const float* x, const float* w, void* workspace,
                     size_t workspace_bytes) const {
  impl_->check_call("forward", y && x && w, workspace, workspace_bytes, false);
  impl_->forward(y, x, w, workspace, workspace_bytes);
}

void ConvOp::backward_data(float* dx, const float* dy, const float* w, void* workspace,
                           size_t workspace_bytes) const {
  impl_->check_call("backward_data", dx && dy && w, workspace, workspace_bytes, false);
  impl_->backward_data(dx, dy, w, workspace, workspace_bytes);
}

void ConvOp::backward_filter(float* dw, const float* x, const float* dy, void* workspace,
                             size_t workspace_bytes) const {
  impl_->check_call("backward_filter", dw && x && dy, workspace, workspace_bytes, false);
  impl_->backward_filter(dw, x, dy, workspace, workspace_bytes);
}

void ConvOp::forward(bf16* y, const bf16* x, const bf16* w, void* workspace,
                     size_t workspace_bytes) const {
  impl_->check_call("forward", y && x && w, workspace, workspace_bytes, true);
  impl_->forward(y, x, w, workspace, workspace_bytes);
}

void ConvOp::backward_data(bf16* dx, const bf16* dy, const bf16* w, void* workspace,
                           size_t workspace_bytes) const {
  impl_->check_call("backward_data", dx && dy && w, workspace, workspace_bytes, true);
  impl_->backward_data(dx, dy, w, workspace, workspace_bytes);
}

void ConvOp::backward_filter(bf16* dw, const bf16* x, const bf16* dy, void* workspace,
                             size_t workspace_bytes) const {
  impl_->check_call("backward_filter", dw && x && dy, workspace, workspace_bytes, true);
  impl_->backward_filter(dw, x, dy, workspace, workspace_bytes);
}

bool ConvOp::is_bf16() const {
  return impl_->math == ConvMath::Bf16;
}

ConvLayout ConvOp::layout() const {
  return impl_->layout;
}

std::string cudnn_version() {
  // cudnnGetVersion(): major * 10000 + minor * 100 + patch since cuDNN 9.
  const size_t v = cudnnGetVersion();
  return "cuDNN " + std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
         std::to_string(v % 100);
}

}  // namespace cuvae
