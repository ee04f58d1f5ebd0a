// cuBLAS dense layers (see dense.cuh for the math). Owns the cuBLAS handle and its workspace.
//
// cuBLAS is column-major. A row-major (r, c) matrix M with leading dimension c is, byte for
// byte, the column-major (c, r) matrix M^T with leading dimension c. So each row-major product
// C = A B is computed as the column-major product C^T = B^T A^T, with every operand read in
// its "transposed" column-major view. Below, "cm" marks a column-major view, and
// cublasSgemm(opA, opB, m, n, k, A, lda, B, ldb, C, ldc) computes C (m x n) = opA(A) (m x k)
// opB(B) (k x n), with A stored (m x k) for N or (k x m) for T, lda >= its row count.
//
//   forward   y (B, out) = x (B, in) W^T
//     cm: y^T (out x B) = W (out x in) x^T (in x B)
//     W row-major [out, in] is cm W^T (in x out), ld in -> opA = T gives W (out x in)
//     x row-major (B, in)   is cm x^T (in x B),   ld in -> opB = N
//     y row-major (B, out)  is cm y^T (out x B),  ld out
//     => Sgemm(T, N, m=out, n=B, k=in, A=w, lda=in, B=x, ldb=in, C=y, ldc=out)
//
//   backward data   dx (B, in) = dy (B, out) W (out, in)
//     cm: dx^T (in x B) = W^T (in x out) dy^T (out x B)
//     W is cm W^T (in x out), ld in -> opA = N;  dy is cm dy^T (out x B), ld out -> opB = N
//     => Sgemm(N, N, m=in, n=B, k=out, A=w, lda=in, B=dy, ldb=out, C=dx, ldc=in)
//
//   backward filter   dW (out, in) = dy^T (out, B) x (B, in)
//     cm: dW^T (in x out) = x^T (in x B) dy (B x out)
//     x is cm x^T (in x B), ld in -> opA = N;  dy is cm dy^T (out x B), ld out -> opB = T
//     gives dy (B x out); dW row-major [out, in] is cm dW^T (in x out), ld in
//     => Sgemm(N, T, m=in, n=out, k=B, A=x, lda=in, B=dy, ldb=out, C=dw, ldc=in)
// The bf16 forms make the same calls through cublasGemmEx.
#include <cublas_v2.h>

#include <cstdio>
#include <string>

#include "cuda/libs/dense.cuh"
#include "cuda/runtime/cuda_check.cuh"
#include "cuda/runtime/device_buffer.cuh"

namespace cuvae {
namespace {

[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file,
                                     int line) {
  throw CublasError(std::string(expr) + " failed at " + file + ":" + std::to_string(line) + ": " +
                    cublasGetStatusName(status) + " (" + cublasGetStatusString(status) + ")");
}

}  // namespace
}  // namespace cuvae

#define CUBLAS_CHECK(expr)                                                   \
  do {                                                                       \
    const cublasStatus_t cuvae_status_ = (expr);                             \
    if (cuvae_status_ != CUBLAS_STATUS_SUCCESS)                              \
      ::cuvae::throw_cublas_error(cuvae_status_, #expr, __FILE__, __LINE__); \
  } while (0)

namespace cuvae {

std::string cublas_version() {
  int major = 0, minor = 0, patch = 0;
  if (cublasGetProperty(MAJOR_VERSION, &major) != CUBLAS_STATUS_SUCCESS ||
      cublasGetProperty(MINOR_VERSION, &minor) != CUBLAS_STATUS_SUCCESS ||
      cublasGetProperty(PATCH_LEVEL, &patch) != CUBLAS_STATUS_SUCCESS)
    return "cuBLAS (version unreadable)";
  return "cuBLAS " + std::to_string(major) + "." + std::to_string(minor) + "." +
         std::to_string(patch);
}

struct CublasHandle::Impl {
  // Freed after the handle: ~Impl's body destroys the handle, then the members go.
  DeviceBuffer<unsigned char> workspace;
  cublasHandle_t handle = nullptr;
  cudaStream_t stream = nullptr;
  bool tf32 = false;

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    if (!handle) return;
    const cublasStatus_t status = cublasDestroy(handle);
    if (status != CUBLAS_STATUS_SUCCESS)
      std::fprintf(stderr, "cuvae: warning: cublasDestroy failed: %s\n",
                   cublasGetStatusString(status));
  }
};

CublasHandle::CublasHandle(cudaStream_t stream, bool tf32) : impl_(std::make_unique<Impl>()) {
  // cuBLAS's recommended workspace: 32 MiB on Hopper and newer, 4 MiB before. Owning it means
  // no call allocates, and calls can be captured in a CUDA graph.
  int device = 0, major = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  const size_t workspace_bytes = size_t(major >= 9 ? 32 : 4) << 20;
  impl_->workspace = DeviceBuffer<unsigned char>(workspace_bytes, "the cuBLAS workspace");
  impl_->tf32 = tf32;
  CUBLAS_CHECK(cublasCreate(&impl_->handle));
  CUBLAS_CHECK(cublasSetStream(impl_->handle, stream));
  impl_->stream = stream;
  // After cublasSetStream, which resets the handle to cuBLAS's own workspace pool.
  CUBLAS_CHECK(cublasSetWorkspace(impl_->handle, impl_->workspace.data(), workspace_bytes));
  CUBLAS_CHECK(
      cublasSetMathMode(impl_->handle, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  CUBLAS_CHECK(cublasSetPointerMode(impl_->handle, CUBLAS_POINTER_MODE_HOST));
}
CublasHandle::~CublasHandle() = default;
CublasHandle::CublasHandle(CublasHandle&&) noexcept = default;
CublasHandle& CublasHandle::operator=(CublasHandle&&) noexcept = default;

cudaStream_t CublasHandle::stream() const {
  return impl_->stream;
}
bool CublasHandle::tf32() const {
  return impl_->tf32;
}
const CublasHandle::Impl& CublasHandle::impl() const {
  if (!impl_) throw Error("CublasHandle: used after being moved from");
  return *impl_;
}

namespace {

void check_dense(const char* fn, bool pointers_ok, int batch, int in, int out) {
  if (batch < 1 || in < 1 || out < 1)
    throw Error(std::string(fn) + ": batch, in and out must be >= 1 (got " + std::to_string(batch) +
                ", " + std::to_string(in) + ", " + std::to_string(out) + ")");
  if (!pointers_ok) throw Error(std::string(fn) + ": null tensor pointer");
}

}  // namespace

void dense_forward(const CublasHandle& h, float* y, const float* x, const float* w, int batch,
                   int in, int out) {
  check_dense("dense_forward", y && x && w, batch, in, out);
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_CHECK(cublasSgemm(h.impl().handle, CUBLAS_OP_T, CUBLAS_OP_N, out, batch, in, &one, w, in,
                           x, in, &zero, y, out));
}

void dense_backward_data(const CublasHandle& h, float* dx, const float* dy, const float* w,
                         int batch, int in, int out, bool accumulate) {
  check_dense("dense_backward_data", dx && dy && w, batch, in, out);
  const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  CUBLAS_CHECK(cublasSgemm(h.impl().handle, CUBLAS_OP_N, CUBLAS_OP_N, in, batch, out, &one, w, in,
                           dy, out, &beta, dx, in));
}

void dense_backward_filter(const CublasHandle& h, float* dw, const float* x, const float* dy,
                           int batch, int in, int out) {
  check_dense("dense_backward_filter", dw && x && dy, batch, in, out);
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_CHECK(cublasSgemm(h.impl().handle, CUBLAS_OP_N, CUBLAS_OP_T, in, out, batch, &one, x, in,
                           dy, out, &zero, dw, in));
}

namespace {

void check_pair(const char* fn, long long a_stride, long long b_stride) {
  if (a_stride < 0 || b_stride < 0) throw Error(std::string(fn) + ": negative stride");
}

}  // namespace

void dense_forward_pair(const CublasHandle& h, float* y, long long y_stride, const float* x,
                        const float* w, long long w_stride, int batch, int in, int out) {
  check_dense("dense_forward_pair", y && x && w, batch, in, out);
  check_pair("dense_forward_pair", y_stride, w_stride);
  const float one = 1.0f, zero = 0.0f;
  // x is shared by both products: batch stride 0.
  CUBLAS_CHECK(cublasSgemmStridedBatched(h.impl().handle, CUBLAS_OP_T, CUBLAS_OP_N, out, batch, in,
                                         &one, w, in, w_stride, x, in, 0, &zero, y, out, y_stride,
                                         2));
}

void dense_backward_filter_pair(const CublasHandle& h, float* dw, long long dw_stride,
                                const float* x, const float* dy, long long dy_stride, int batch,
                                int in, int out) {
  check_dense("dense_backward_filter_pair", dw && x && dy, batch, in, out);
  check_pair("dense_backward_filter_pair", dw_stride, dy_stride);
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_CHECK(cublasSgemmStridedBatched(h.impl().handle, CUBLAS_OP_N, CUBLAS_OP_T, in, out, batch,
                                         &one, x, in, 0, dy, out, dy_stride, &zero, dw, in,
                                         dw_stride, 2));
}

// ---- bf16 operands (the mixed-precision step) --------------------------------------------
// The same three products through cublasGemmEx: A and B bf16, C float or bf16, accumulation in
// fp32 (CUBLAS_COMPUTE_32F, the only compute type for bf16 inputs; cuBLAS runs it on tensor
// cores whatever the handle's math mode).

namespace {

void gemm_bf16(const CublasHandle& h, cublasOperation_t op_a, cublasOperation_t op_b, int m, int n,
               int k, const bf16* a, int lda, const bf16* b, int ldb, void* c,
               cudaDataType_t c_type, int ldc) {
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_CHECK(cublasGemmEx(h.impl().handle, op_a, op_b, m, n, k, &one, a, CUDA_R_16BF, lda, b,
                            CUDA_R_16BF, ldb, &zero, c, c_type, ldc, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
}

}  // namespace

void dense_forward(const CublasHandle& h, float* y, const bf16* x, const bf16* w, int batch, int in,
                   int out) {
  check_dense("dense_forward (bf16)", y && x && w, batch, in, out);
  gemm_bf16(h, CUBLAS_OP_T, CUBLAS_OP_N, out, batch, in, w, in, x, in, y, CUDA_R_32F, out);
}

void dense_backward_data(const CublasHandle& h, bf16* dx, const bf16* dy, const bf16* w, int batch,
                         int in, int out) {
  check_dense("dense_backward_data (bf16)", dx && dy && w, batch, in, out);
  gemm_bf16(h, CUBLAS_OP_N, CUBLAS_OP_N, in, batch, out, w, in, dy, out, dx, CUDA_R_16BF, in);
}

void dense_backward_filter(const CublasHandle& h, float* dw, const bf16* x, const bf16* dy,
                           int batch, int in, int out) {
  check_dense("dense_backward_filter (bf16)", dw && x && dy, batch, in, out);
  gemm_bf16(h, CUBLAS_OP_N, CUBLAS_OP_T, in, out, batch, x, in, dy, out, dw, CUDA_R_32F, in);
}

}  // namespace cuvae
