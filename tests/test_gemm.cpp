// host/cpu/gemm: the row-major product on oneDNN's GEMM against plain loops in double, for every
// transpose combination, padded leading dimensions, accumulation into c (beta), k = 0, sizes on
// both sides of the one-thread threshold and calls from inside a parallel region.
#include <catch2/catch.hpp>
#include <random>
#include <vector>

#include "host/core/error.h"
#include "host/cpu/gemm.h"
#include "tests/test_support.h"

using namespace cuvae;
using cuvae::test::compare;

namespace {

// c (m, n) = alpha op(a) op(b) + beta c in double, reading the stored layouts directly.
std::vector<double> reference(const std::vector<float>& a, const std::vector<float>& b,
                              const std::vector<float>& c0, const cpu::GemmShape& s, int64_t lda,
                              int64_t ldb, int64_t ldc, double alpha, double beta) {
  std::vector<double> c(c0.begin(), c0.end());
  for (int64_t i = 0; i < s.m; ++i)
    for (int64_t j = 0; j < s.n; ++j) {
      double acc = 0;
      for (int64_t t = 0; t < s.k; ++t) {
        const double av = s.trans_a ? a[size_t(t * lda + i)] : a[size_t(i * lda + t)];
        const double bv = s.trans_b ? b[size_t(j * ldb + t)] : b[size_t(t * ldb + j)];
        acc += av * bv;
      }
      c[size_t(i * ldc + j)] = alpha * acc + beta * double(c0[size_t(i * ldc + j)]);
    }
  return c;
}

}  // namespace

TEST_CASE("sgemm matches a double reference for every layout", "[gemm]") {
  const uint64_t seed = test::fresh_seed();
  const bool ta = GENERATE(false, true), tb = GENERATE(false, true);
  const int64_t pad = GENERATE(int64_t(0), int64_t(3));
  // Small (one thread) and large (threaded: m n k above 2^25).
  const auto dims = GENERATE(std::vector<int64_t>{1, 1, 1}, std::vector<int64_t>{7, 10, 33},
                             std::vector<int64_t>{331, 257, 401});
  const int64_t m = dims[0], n = dims[1], k = dims[2];
  INFO("seed " << seed << " m n k " << m << " " << n << " " << k << " trans " << ta << tb << " pad "
               << pad);
  std::mt19937_64 rng(seed);
  cpu::GemmShape s;
  s.m = m, s.n = n, s.k = k, s.trans_a = ta, s.trans_b = tb;
  const int64_t lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
  if (pad) s.lda = lda, s.ldb = ldb, s.ldc = ldc;
  const std::vector<float> a = test::random_vector<float>(rng, size_t((ta ? k : m) * lda), -1, 1);
  const std::vector<float> b = test::random_vector<float>(rng, size_t((tb ? n : k) * ldb), -1, 1);
  const std::vector<float> c0 = test::random_vector<float>(rng, size_t(m * ldc), -1, 1);
  for (const float beta : {0.0f, 1.0f}) {
    std::vector<float> c = c0;
    if (beta == 0.0f)  // with beta = 0 c is only written: poison what the product covers
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) c[size_t(i * ldc + j)] = NAN;
    cpu::sgemm(c.data(), a.data(), b.data(), s, 0.5f, beta);
    const std::vector<double> want = reference(a, b, c0, s, lda, ldb, ldc, 0.5, beta);
    // Float sums of k terms of size <= 1: error ~ sqrt(k) 6e-8; the padding stays untouched.
    REQUIRE_MAX_ABS(compare(c.data(), want.data(), c.size()), "c", 1e-5);
  }
}

TEST_CASE("sgemm: k = 0 scales c by beta, bad shapes throw, calls inside a parallel region",
          "[gemm]") {
  cpu::GemmShape s;
  s.m = 2, s.n = 3, s.k = 0;
  std::vector<float> c = {1, 2, 3, 4, 5, 6};
  cpu::sgemm(c.data(), nullptr, nullptr, s, 1.0f, 2.0f);
  REQUIRE(c == std::vector<float>{2, 4, 6, 8, 10, 12});
  cpu::sgemm(c.data(), nullptr, nullptr, s, 1.0f, 0.0f);
  REQUIRE(c == std::vector<float>(6, 0.0f));
  s.k = 4;
  s.lda = 2;  // narrower than k
  REQUIRE_THROWS_AS(cpu::sgemm(c.data(), c.data(), c.data(), s), Error);

  // Two threads, each its own product, from inside a parallel region: the results are those of
  // the same products called alone.
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  cpu::GemmShape t;
  t.m = 64, t.n = 48, t.k = 100;
  const std::vector<float> a = test::random_vector<float>(rng, 2 * 64 * 100, -1, 1);
  const std::vector<float> b = test::random_vector<float>(rng, 100 * 48, -1, 1);
  std::vector<float> alone(2 * 64 * 48), inside(2 * 64 * 48);
  for (int p = 0; p < 2; ++p)
    cpu::sgemm(alone.data() + p * 64 * 48, a.data() + p * 6400, b.data(), t);
  test::poison(inside);
#pragma omp parallel for num_threads(2)
  for (int p = 0; p < 2; ++p)
    cpu::sgemm(inside.data() + p * 64 * 48, a.data() + p * 6400, b.data(), t);
  REQUIRE_MAX_ABS(compare(inside.data(), alone.data(), inside.size()), "in parallel", 1e-5);
}
