// cuDNN convolutions: the algorithm choice (conv.cuh, conv_select.h). For each of a ConvOp's
// three cuDNN routines, cuDNN's candidates (its heuristic ranking, or measured times with
// ConvAlgoPolicy::Fastest) go to select_candidate with their names, math types and
// determinism, and the first one the descriptor accepts is taken with its workspace; then what
// was chosen, as ConvOp::describe and ConvOp::uses_transform report it.
#include "cuda/libs/conv_impl.cuh"  // first: cuDNN's header as conv_impl.cuh explains

#include <algorithm>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/libs/conv_select.h"

namespace cuvae {
namespace {

using conv_detail::layer_label;

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

bool ConvOp::uses_transform(ConvPass pass) const {
  const Impl& p = *impl_;
  // The layer passes map to cuDNN's routines as the table at the top of conv.cu says.
  switch (pass) {
    case ConvPass::Forward:
      return p.transposed() ? is_transform(p.bwd_data.algo) : is_transform(p.fwd.algo);
    case ConvPass::BackwardData:
      return p.transposed() ? is_transform(p.fwd.algo) : is_transform(p.bwd_data.algo);
    case ConvPass::BackwardFilter:
      return is_transform(p.bwd_filter.algo);
  }
  return false;
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

}  // namespace cuvae
