// cuDNN convolutions (see conv.cuh for the math). Owns the cuDNN handle, the descriptors of
// each layer at one batch size and its three chosen algorithms.
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

// cuDNN 9 marks this legacy convolution API (cudnnConvolutionForward / BackwardData /
// BackwardFilter, their descriptors and algorithm queries) deprecated in favour of the backend
// graph API. It is still supported, and it is far simpler to get right for three plain fp32
// convolutions than building and finalizing operation graphs. cudnn_graph.h only attaches the
// deprecation attribute when CUDNN_WARN_DEPRECATED is defined, so making sure it is undefined
// here, before the include, keeps the warnings quiet in this file alone.
#undef CUDNN_WARN_DEPRECATED
#include <cudnn.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "cuda/libs/conv.cuh"
#include "cuda/libs/conv_select.h"
#include "cuda/runtime/cuda_check.cuh"

namespace cuvae {
namespace {

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

}  // namespace
}  // namespace cuvae

#define CUDNN_CHECK(expr)                                                   \
  do {                                                                      \
    const cudnnStatus_t cuvae_status_ = (expr);                             \
    if (cuvae_status_ != CUDNN_STATUS_SUCCESS)                              \
      ::cuvae::throw_cudnn_error(cuvae_status_, #expr, __FILE__, __LINE__); \
  } while (0)

namespace cuvae {
namespace {

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

const char* algo_name(cudnnConvolutionFwdAlgo_t a) {
  switch (a) {
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM:
      return "IMPLICIT_GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM:
      return "IMPLICIT_PRECOMP_GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_GEMM:
      return "GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_DIRECT:
      return "DIRECT";
    case CUDNN_CONVOLUTION_FWD_ALGO_FFT:
      return "FFT";
    case CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING:
      return "FFT_TILING";
    case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD:
      return "WINOGRAD";
    case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED:
      return "WINOGRAD_NONFUSED";
    default:
      return "unknown";
  }
}
const char* algo_name(cudnnConvolutionBwdDataAlgo_t a) {
  switch (a) {
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_0:
      return "ALGO_0";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_1:
      return "ALGO_1";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT:
      return "FFT";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING:
      return "FFT_TILING";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD:
      return "WINOGRAD";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED:
      return "WINOGRAD_NONFUSED";
    default:
      return "unknown";
  }
}
const char* algo_name(cudnnConvolutionBwdFilterAlgo_t a) {
  switch (a) {
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0:
      return "ALGO_0";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1:
      return "ALGO_1";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT:
      return "FFT";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3:
      return "ALGO_3";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD:
      return "WINOGRAD";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED:
      return "WINOGRAD_NONFUSED";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING:
      return "FFT_TILING";
    default:
      return "unknown";
  }
}

// cuDNN's math type as conv_select.h names it. A value this file does not know counts as
// ALLOW_CONVERSION, which no policy takes.
AlgoMath algo_math(cudnnMathType_t m) {
  switch (m) {
    case CUDNN_DEFAULT_MATH:
      return AlgoMath::Default;
    case CUDNN_TENSOR_OP_MATH:
      return AlgoMath::TensorOp;
    case CUDNN_FMA_MATH:
      return AlgoMath::Fma;
    default:
      return AlgoMath::TensorOpAllowConversion;
  }
}
const char* math_name(cudnnMathType_t m) {
  switch (m) {
    case CUDNN_DEFAULT_MATH:
    case CUDNN_TENSOR_OP_MATH:
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION:
    case CUDNN_FMA_MATH:
      return algo_math_name(algo_math(m));
    default:
      return "unknown";
  }
}

// The math type a descriptor runs with: always FMA_MATH in Fp32Strict, else the chosen
// algorithm's own.
cudnnMathType_t math_for_policy(ConvMath math, cudnnMathType_t chosen) {
  return math == ConvMath::Fp32Strict ? CUDNN_FMA_MATH : chosen;
}

// Whether an algorithm computes in a transform domain (FFT, or Winograd's minimal filtering).
bool is_transform(cudnnConvolutionFwdAlgo_t a) {
  return a == CUDNN_CONVOLUTION_FWD_ALGO_FFT || a == CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING ||
         a == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD ||
         a == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
}
bool is_transform(cudnnConvolutionBwdDataAlgo_t a) {
  return a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT ||
         a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING ||
         a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD ||
         a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED;
}
bool is_transform(cudnnConvolutionBwdFilterAlgo_t a) {
  return a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT ||
         a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING ||
         a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD ||
         a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED;
}

// Picks from cuDNN's result list (heuristic order for Deterministic, measured times for
// Fastest; see conv_select.h): sets each acceptable candidate up on `conv` in the policy's
// order, that is its math type (math_for_policy()) and then query(algo, &bytes), cuDNN's
// workspace query for the routine, and takes the first where both succeed. A refused set-up
// moves on to the next candidate; when none is left, throws Error listing every candidate and
// why it was not taken. `what` names the direction for the message. On return `conv` carries
// the chosen algorithm's math type and *workspace its workspace (at least what cuDNN reported
// with the result).
template <typename Perf, typename Query>
Perf select_algo(const std::vector<Perf>& results, int count, cudnnConvolutionDescriptor_t conv,
                 ConvAlgoPolicy policy, ConvMath math, bool tf32_hardware, const std::string& what,
                 Query query, size_t* workspace) {
  std::vector<AlgoCandidate> cands(size_t(std::max(count, 0)));
  for (size_t i = 0; i < cands.size(); ++i) {
    const Perf& r = results[i];
    AlgoCandidate& c = cands[i];
    c.algo = int(r.algo);
    c.name = algo_name(r.algo);
    c.math = algo_math(r.mathType);
    c.time_ms = r.time;
    c.deterministic = r.determinism == CUDNN_DETERMINISTIC;
    c.reported_ok = r.status == CUDNN_STATUS_SUCCESS;
    c.status = cudnnGetErrorString(r.status);
  }
  size_t bytes = 0;
  // cuDNN's per-thread log of its last error, read (which empties it) before each set-up so that
  // a failure's reason carries its own message, not one an earlier call left there.
  auto last_log = [] {
    char detail[512] = {};
    cudnnGetLastErrorString(detail, sizeof(detail));
    return std::string(detail);
  };
  auto refused = [&](const std::string& call, cudnnStatus_t status) {
    const std::string detail = last_log();
    return call + ": " + cudnnGetErrorString(status) +
           (detail.empty() ? "" : " (last cuDNN log message: " + detail + ")");
  };
  const size_t chosen = select_candidate(
      cands, policy, math, tf32_hardware, what, [&](size_t i) -> std::optional<std::string> {
        last_log();
        const Perf& r = results[i];
        const cudnnMathType_t m = math_for_policy(math, r.mathType);
        cudnnStatus_t status = cudnnSetConvolutionMathType(conv, m);
        if (status != CUDNN_STATUS_SUCCESS)
          return refused(std::string("cudnnSetConvolutionMathType(") + math_name(m) + ")", status);
        status = query(r.algo, &bytes);
        if (status != CUDNN_STATUS_SUCCESS)
          return refused(std::string("the workspace query under ") + math_name(m), status);
        return std::nullopt;
      });
  *workspace = std::max(bytes, results[chosen].memory);
  return results[chosen];
}

}  // namespace

// ---- CudnnHandle -------------------------------------------------------------------------

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

struct ConvOp::Impl {
  const CudnnHandle::Impl* h = nullptr;
  Layer layer;
  int batch = 0;
  ConvMath math = ConvMath::Fp32Strict;
  ConvAlgoPolicy policy = ConvAlgoPolicy::Deterministic;
  ConvLayout layout = ConvLayout::Nchw;

  TensorDesc image;   // conv input  (B, C, image_h, image_w), NCHW or NHWC
  TensorDesc grid;    // conv output (B, K, grid_h, grid_w), the same layout
  FilterDesc filter;  // [K, C, kernel, kernel] (NCHW) or [K, kernel, kernel, C] (NHWC)
  // One convolution descriptor per cuDNN routine: each carries the math type its chosen
  // algorithm reported, and the three choices need not agree.
  ConvDesc conv_fwd, conv_bwd_data, conv_bwd_filter;

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

  // The three cuDNN routines in image/grid terms (see the table at the top). The pointers are
  // float or bf16 as the descriptors say; the scaling factors are float for both.
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

namespace {

std::string layer_label(const Layer& l, int batch) {
  return l.name + " (" + (l.kind == LayerKind::Conv2d ? "Conv2d" : "ConvTranspose2d") + ", batch " +
         std::to_string(batch) + ")";
}

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

void ConvOp::Impl::choose_fwd() {
  int max_count = 0;
  CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h->handle, &max_count));
  std::vector<cudnnConvolutionFwdAlgoPerf_t> results(size_t(std::max(max_count, 1)));
  int count = 0;
  if (policy == ConvAlgoPolicy::Deterministic)
    CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h->handle, image.get(), filter.get(),
                                                       conv_fwd.get(), grid.get(), max_count,
                                                       &count, results.data()));
  else
    CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(h->handle, image.get(), filter.get(),
                                                     conv_fwd.get(), grid.get(), max_count, &count,
                                                     results.data()));
  fwd = select_algo(
      results, count, conv_fwd.get(), policy, math, h->tf32_hardware,
      layer_label(layer, batch) + " convolution forward",
      [&](cudnnConvolutionFwdAlgo_t algo, size_t* bytes) {
        return cudnnGetConvolutionForwardWorkspaceSize(h->handle, image.get(), filter.get(),
                                                       conv_fwd.get(), grid.get(), algo, bytes);
      },
      &ws_fwd);
}

void ConvOp::Impl::choose_bwd_data() {
  int max_count = 0;
  CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h->handle, &max_count));
  std::vector<cudnnConvolutionBwdDataAlgoPerf_t> results(size_t(std::max(max_count, 1)));
  int count = 0;
  if (policy == ConvAlgoPolicy::Deterministic)
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h->handle, filter.get(), grid.get(),
                                                            conv_bwd_data.get(), image.get(),
                                                            max_count, &count, results.data()));
  else
    CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithm(h->handle, filter.get(), grid.get(),
                                                          conv_bwd_data.get(), image.get(),
                                                          max_count, &count, results.data()));
  bwd_data = select_algo(
      results, count, conv_bwd_data.get(), policy, math, h->tf32_hardware,
      layer_label(layer, batch) + " convolution backward-data",
      [&](cudnnConvolutionBwdDataAlgo_t algo, size_t* bytes) {
        return cudnnGetConvolutionBackwardDataWorkspaceSize(
            h->handle, filter.get(), grid.get(), conv_bwd_data.get(), image.get(), algo, bytes);
      },
      &ws_bwd_data);
}

void ConvOp::Impl::choose_bwd_filter() {
  int max_count = 0;
  CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h->handle, &max_count));
  std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> results(size_t(std::max(max_count, 1)));
  int count = 0;
  if (policy == ConvAlgoPolicy::Deterministic)
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h->handle, image.get(), grid.get(),
                                                              conv_bwd_filter.get(), filter.get(),
                                                              max_count, &count, results.data()));
  else
    CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithm(h->handle, image.get(), grid.get(),
                                                            conv_bwd_filter.get(), filter.get(),
                                                            max_count, &count, results.data()));
  bwd_filter = select_algo(
      results, count, conv_bwd_filter.get(), policy, math, h->tf32_hardware,
      layer_label(layer, batch) + " convolution backward-filter",
      [&](cudnnConvolutionBwdFilterAlgo_t algo, size_t* bytes) {
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(
            h->handle, image.get(), grid.get(), conv_bwd_filter.get(), filter.get(), algo, bytes);
      },
      &ws_bwd_filter);
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

bool ConvOp::uses_transform(ConvPass pass) const {
  const Impl& p = *impl_;
  switch (pass) {  // the layer passes map to cuDNN's routines as the table at the top says
    case ConvPass::Forward:
      return p.transposed() ? is_transform(p.bwd_data.algo) : is_transform(p.fwd.algo);
    case ConvPass::BackwardData:
      return p.transposed() ? is_transform(p.fwd.algo) : is_transform(p.bwd_data.algo);
    case ConvPass::BackwardFilter:
      return is_transform(p.bwd_filter.algo);
  }
  return false;
}

ConvLayout ConvOp::layout() const {
  return impl_->layout;
}

std::string ConvOp::describe() const {
  const Impl& p = *impl_;
  auto part = [](const char* routine, const char* algo, cudnnMathType_t m, size_t bytes) {
    return std::string(routine) + " " + algo + " (" + math_name(m) + ", " + std::to_string(bytes) +
           " B)";
  };
  const std::string f = part("ConvolutionForward", algo_name(p.fwd.algo), p.fwd.mathType, p.ws_fwd);
  const std::string bd = part("ConvolutionBackwardData", algo_name(p.bwd_data.algo),
                              p.bwd_data.mathType, p.ws_bwd_data);
  const std::string bf = part("ConvolutionBackwardFilter", algo_name(p.bwd_filter.algo),
                              p.bwd_filter.mathType, p.ws_bwd_filter);
  std::ostringstream os;
  os << layer_label(p.layer, p.batch) << " [" << conv_policy_name(p.policy) << ", "
     << conv_math_name(p.math) << ", " << (p.layout == ConvLayout::Nhwc ? "NHWC" : "NCHW")
     << "]: forward=" << (p.transposed() ? bd : f)
     << "; backward_data=" << (p.transposed() ? f : bd) << "; backward_filter=" << bf
     << "; workspace " << p.workspace << " B";
  return os.str();
}

std::string cudnn_version() {
  // cudnnGetVersion(): major * 10000 + minor * 100 + patch since cuDNN 9.
  const size_t v = cudnnGetVersion();
  return "cuDNN " + std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
         std::to_string(v % 100);
}

}  // namespace cuvae
