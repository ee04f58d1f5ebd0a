// oneDNN's single-precision GEMM behind a row-major interface (gemm.h). With cpu_fast.cpp and
// cpu_fast_prims.cpp, the only files that include oneDNN.
#include "host/cpu/gemm.h"

#include <dnnl.h>
#include <omp.h>

#include <string>

#include "host/core/error.h"

namespace cuvae::cpu {
namespace {

// Products of fewer multiply-adds than this run on the calling thread alone: a few milliseconds
// of work on one core at most, where waking and joining the OpenMP team can cost more on shared
// cores (a thread that is not scheduled holds the other spinning at the barrier). Measured on
// two busy cores: `cuvae classify` at 100 labels per class, whose fits run thousands of 800 x
// 784 x 10 products, took 49 s threaded and 5.6 s on one thread. oneDNN reads the thread count
// at each call.
constexpr double kThreadedWork = double(1 << 25);

class OneThread {
 public:
  explicit OneThread(bool active) : saved_(active ? omp_get_max_threads() : 0) {
    if (saved_) omp_set_num_threads(1);
  }
  ~OneThread() {
    if (saved_) omp_set_num_threads(saved_);
  }
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;

 private:
  int saved_;
};

}  // namespace

void sgemm(float* c, const float* a, const float* b, const GemmShape& s, float alpha, float beta) {
  if (s.m < 0 || s.n < 0 || s.k < 0) throw Error("sgemm: negative size");
  if (s.m == 0 || s.n == 0) return;
  // Stored widths of a, b and c: op(a) = a (m, k) or a^T with a (k, m); likewise b.
  const int64_t width_a = s.trans_a ? s.m : s.k, width_b = s.trans_b ? s.k : s.n;
  const int64_t lda = s.lda ? s.lda : width_a, ldb = s.ldb ? s.ldb : width_b,
                ldc = s.ldc ? s.ldc : s.n;
  if (lda < width_a || ldb < width_b || ldc < s.n)
    throw Error("sgemm: a leading dimension is smaller than its matrix's width");
  if (s.k == 0) {  // no products: c = beta * c (oneDNN wants k >= 1 with its leading dims)
    for (int64_t i = 0; i < s.m; ++i)
      for (int64_t j = 0; j < s.n; ++j)
        c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  // Inside a parallel region (the caller threads over blocks) or a small product: one thread.
  const OneThread serial(omp_in_parallel() ||
                         double(s.m) * double(s.n) * double(s.k) < kThreadedWork);
  const dnnl_status_t st = dnnl_sgemm(s.trans_a ? 'T' : 'N', s.trans_b ? 'T' : 'N', s.m, s.n, s.k,
                                      alpha, a, lda, b, ldb, beta, c, ldc);
  if (st != dnnl_success)
    throw Error("oneDNN sgemm failed (status " + std::to_string(int(st)) + ") on " +
                std::to_string(s.m) + " x " + std::to_string(s.n) + " x " + std::to_string(s.k));
}

}  // namespace cuvae::cpu
