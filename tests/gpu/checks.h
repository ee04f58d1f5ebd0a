// Shared by the GPU tests of the kernels (cuda/kernels, tests/gpu/test_<kernel>.cpp) and of the
// library wrappers (cuda/libs, test_conv.cpp and test_dense.cpp): bitwise comparisons and the
// check that a second run gives the same bits; uniform random inputs; bf16 on the host, rounded
// and widened as the device does (<cuda_bf16.h>'s conversions are host functions too); guarded
// device tensors (poisoned around the tensor, so a write outside it shows); the tolerances of
// the GEMM-shaped bf16 results (check_gemm); the fp32 tolerances and host/device copies of the
// cuDNN and cuBLAS tests. Compiled by the host compiler.
#pragma once

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iomanip>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/kernels/precision.cuh"
#include "cuda/runtime/device_buffer.cuh"
#include "tests/gpu/device_io.h"
#include "tests/test_support.h"

namespace cuvae::test {

// ---- bitwise comparisons
// -------------------------------------------------------------------------

template <typename T>
size_t first_bitwise_difference(const std::vector<T>& a, const std::vector<T>& b) {
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return i;
  return a.size();
}

// got == want bit for bit (so -0 != +0), and no NaN on either side.
template <typename T>
void require_bitwise_equal(const std::vector<T>& got, const std::vector<T>& want,
                           const std::string& name) {
  REQUIRE(got.size() == want.size());
  const test::Diff d = compare(got.data(), want.data(), got.size());
  INFO(d.report(name) << "; first bitwise difference at [" << first_bitwise_difference(got, want)
                      << "] of " << got.size());
  REQUIRE_FALSE(d.non_finite);
  REQUIRE(std::memcmp(got.data(), want.data(), got.size() * sizeof(T)) == 0);
}

// Two runs of the same launch on the same input: identical bits. (NaN == NaN bitwise, so each
// caller also compares the first run with the CPU reference, which rejects NaN.)
template <typename T>
void require_same_run(const std::vector<T>& second, const std::vector<T>& first,
                      const std::string& name) {
  REQUIRE(second.size() == first.size());
  INFO(name << ": second run differs from the first at [" << first_bitwise_difference(second, first)
            << "] of " << first.size());
  REQUIRE(std::memcmp(second.data(), first.data(), first.size() * sizeof(T)) == 0);
}

inline std::vector<float> uniform(std::mt19937_64& rng, size_t n, double lo, double hi) {
  return test::random_vector<float>(rng, n, lo, hi);
}

inline double max_abs_of(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::abs(x)));
  return m;
}

// ---- bf16 on the host -------------------------------------------------------------------------

inline uint16_t bits_of(bf16 v) {
  return static_cast<__nv_bfloat16_raw>(v).x;
}
inline uint32_t bits_of(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
}
inline uint64_t bits_of(double v) {
  uint64_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
}
inline bf16 bf16_from_bits(uint16_t u) {
  __nv_bfloat16_raw r;
  r.x = u;
  return bf16(r);
}
inline float float_from_bits(uint32_t u) {
  float v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}
// Nearest, ties to even: the device's __float2bfloat16_rn (cvt.rn.bf16.f32), on the host.
inline bf16 round_bf16(float f) {
  return __float2bfloat16_rn(f);
}
// Exact.
inline float widen(bf16 v) {
  return __bfloat162float(v);
}
// A float input as it is (for the helpers that take either).
inline float widen(float v) {
  return v;
}

inline double value_of(float v) {
  return v;
}
inline double value_of(bf16 v) {
  return widen(v);
}
inline double value_of(double v) {
  return v;
}

template <typename T>
std::string show(T v) {
  std::ostringstream os;
  os << std::setprecision(9) << value_of(v) << " (0x" << std::hex << std::setfill('0')
     << std::setw(int(2 * sizeof(T))) << uint64_t(bits_of(v)) << ")";
  return os.str();
}

// Every byte 0xFF (what poison_device writes): a NaN as float and as bf16.
template <typename T>
T poison_value();
template <>
inline float poison_value<float>() {
  return float_from_bits(0xFFFFFFFFu);
}
template <>
inline bf16 poison_value<bf16>() {
  return bf16_from_bits(0xFFFF);
}
template <typename T>
bool is_poison(T v) {
  return bits_of(v) == bits_of(poison_value<T>());
}

// Bitwise equality (so -0 != +0, and a NaN equals the same NaN).
template <typename T>
bool same_bits(T a, T b) {
  return bits_of(a) == bits_of(b);
}
template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!same_bits(a[i], b[i])) return false;
  return true;
}

inline std::vector<bf16> round_all(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = round_bf16(v[i]);
  return out;
}
inline std::vector<float> widen_all(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = widen(v[i]);
  return out;
}
template <typename T>
std::vector<double> to_double(const std::vector<T>& v, bool absolute = false) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    out[i] = absolute ? std::abs(value_of(v[i])) : value_of(v[i]);
  return out;
}
// Uniform floats rounded to bf16: operands that the device and the reference hold exactly.
inline std::vector<bf16> uniform_bf16(std::mt19937_64& rng, size_t n, double lo, double hi) {
  return round_all(uniform(rng, n, lo, hi));
}

inline const bf16 kBf16Zero = bf16_from_bits(0x0000);
inline const bf16 kBf16NegZero = bf16_from_bits(0x8000);

// Ties of bf16 (exactly half-way between two neighbours) near 1: 1 + 2^-8 lies between 1
// (even) and 1 + 2^-7 (odd), so nearest-even gives 1; 1 + 3 2^-8 lies between 1 + 2^-7 (odd)
// and 1 + 2^-6 (even) and gives 1 + 2^-6. Truncation or rounding half up gets one of them wrong.
constexpr float kTieDown = 1.0f + 0x1p-8f;
constexpr float kTieUp = 1.0f + 3 * 0x1p-8f;

// ---- guarded device tensors ------------------------------------------------------------------

// A device tensor of n elements at offset `shift` in a buffer with kGuard more elements after
// it. Everything around the tensor holds the poison pattern, so get() can tell a write outside
// the tensor, and a poisoned tensor shows an element a launch forgot to write.
constexpr size_t kGuard = 9;

template <typename T>
class Guarded {
 public:
  explicit Guarded(size_t n, size_t shift = 0)
      : buf_(shift + n + kGuard, "a guarded test tensor"), n_(n), shift_(shift) {}
  T* data() { return buf_.data() + shift_; }
  const T* data() const { return buf_.data() + shift_; }
  size_t size() const { return n_; }

  void poison(cudaStream_t s) { poison_device(buf_, s); }
  // The tensor = v, the rest of the buffer poisoned.
  void set(const std::vector<T>& v, cudaStream_t s) {
    REQUIRE(v.size() == n_);
    std::vector<T> h(buf_.size(), poison_value<T>());
    std::copy(v.begin(), v.end(), h.begin() + std::ptrdiff_t(shift_));
    buf_.upload(h.data(), h.size(), s);
    CUDA_CHECK(cudaStreamSynchronize(s));
  }
  // The tensor, after checking that nothing around it was written.
  std::vector<T> get(cudaStream_t s, const std::string& name) const {
    const std::vector<T> h = to_host(buf_, s);
    for (size_t i = 0; i < h.size(); ++i) {
      if (i >= shift_ && i < shift_ + n_) continue;
      if (!is_poison(h[i])) {
        FAIL(name << ": element " << std::ptrdiff_t(i) - std::ptrdiff_t(shift_) << " (outside the "
                  << n_ << "-element tensor) was written: " << show(h[i]));
      }
    }
    return std::vector<T>(h.begin() + std::ptrdiff_t(shift_),
                          h.begin() + std::ptrdiff_t(shift_ + n_));
  }

 private:
  DeviceBuffer<T> buf_;
  size_t n_, shift_;
};

template <typename T>
Guarded<T> guarded_input(const std::vector<T>& v, size_t shift, cudaStream_t s) {
  Guarded<T> g(v.size(), shift);
  g.set(v, s);
  return g;
}

// ---- comparisons ------------------------------------------------------------------------------

// got == want bit for bit (so -0 != +0 and every NaN fails, on either side; infinities may
// match). Reports how many differ and the first.
template <typename T>
void require_same_bits(const std::vector<T>& got, const std::vector<T>& want,
                       const std::string& name) {
  REQUIRE(got.size() == want.size());
  size_t differing = 0, nans = 0, first = got.size();
  for (size_t i = 0; i < got.size(); ++i) {
    const bool nan = std::isnan(value_of(got[i])) || std::isnan(value_of(want[i]));
    const bool differ = !same_bits(got[i], want[i]);
    if (nan) ++nans;
    if (differ && !nan) ++differing;
    if ((nan || differ) && first == got.size()) first = i;
  }
  INFO(name << ": " << differing << " of " << got.size() << " elements differ, " << nans
            << " NaN; first at [" << first << "]"
            << (first < got.size() ? ": got " + show(got[first]) + ", want " + show(want[first])
                                   : std::string()));
  REQUIRE(nans == 0);
  REQUIRE(differing == 0);
}

// ---- tolerances of the GEMM-shaped results (dense, conv) ----------------------------------------
//
// The operands are bf16, so each product a*b is exact in fp32 (8 + 8 significand bits), and the
// reference sums the same products in double: the whole difference is the device's fp32
// accumulation and, for a bf16 output, the final rounding. Per element i with n terms,
// S_i = sum |a b| and ref_i the double result:
//  * the final rounding of a bf16 output (nearest): at most 2^-8 |value| (8 significand bits);
//  * fp32 accumulation in any order: (n - 1) 2^-23 S_i even if every addition truncates (unit
//    error 2^-23; tensor-core block adds round toward zero), doubled because tensor cores also
//    align a block's products to its largest exponent before adding: n 2^-22 S_i. This bound is
//    rigorous but grows with n: for the long sums of the filter gradients (up to 101,136 terms)
//    it exceeds |ref_i| (~ S_i / sqrt(n) for terms of random sign). So the accumulation term is
//    the smaller of it and kAccRmsFraction of the tensor's RMS. Estimate: with a truncating
//    accumulator updated once per 16-deep tensor-core block, each update loses up to 2^-23 of
//    the running sum (~ sqrt(k) x a term) toward zero; summed without any cancellation that is
//    about n/16 x 2^-24 of the RMS: 2.4e-4 at n = 101,136, ~1e-3 if partial sums wander to 3x
//    their typical size, 1.2e-5 at n = 3136. kAccRmsFraction = 8e-3 leaves room for that; a
//    wrong, missing or stale element is off by ~the RMS.
//  * over the whole tensor, the relative L2 error: a float output sees only the accumulation
//    (its longest sums here are 3136 terms: ~1e-5 by the estimate above; strict fp32 FMA chains
//    give 4 u sqrt(n) = 1.3e-5); kFloatOutRelL2 = 3e-4 has 20x room and still rejects a result
//    that went through bf16 (~1.5e-3). A bf16 output adds its rounding: kBf16OutRelL2 =
//    2^-8 + 3e-4, the per-element rounding bound plus the accumulation allowance (the rounding
//    alone measures ~1.5e-3); accumulating in bf16 instead of fp32 (a wrong cuDNN compute type)
//    gives ~1e-2 for the sums of hundreds of terms and more for longer ones.
//  * LOOSER for a convolution pass whose chosen algorithm is FFT or Winograd
//    (ConvOp::uses_transform; the Fastest policy may choose one). These do not sum an output's
//    own products: they transform tiles of the input and the filter, multiply pointwise and
//    transform back, so an output's error follows the norms of the transformed tiles, amplified
//    by the transforms' matrices (up to ~10x for the tiles cuDNN uses), not its own sum |ab|.
//    The per-element accumulation term is then kTransformRmsFraction of the RMS alone, and the
//    rel L2 tolerance grows by kTransformRelL2: if the transformed tiles are held in bf16 (2^-8)
//    and amplified ~10x, ~4e-2 for an element at worst and ~1e-2 over the tensor. A wrong,
//    missing or stale element is still off by ~the RMS. (Bounds from the algorithms' structure,
//    not yet measured on this project's GPUs.)
constexpr double kAccRmsFraction = 8e-3;
constexpr double kBf16OutRel = 0x1p-8;
constexpr double kFloatOutRelL2 = 3e-4;
constexpr double kBf16OutRelL2 = 0x1p-8 + 3e-4;
constexpr double kTransformRmsFraction = 5e-2;
constexpr double kTransformRelL2 = 1e-2;

// A GEMM-shaped reference: the double result, S_i (the same GEMM on |a| and |b|), and the
// number of terms per element (at most).
struct GemmRef {
  std::vector<double> ref, abs;
  int64_t terms = 0;
};

// CHECK (not REQUIRE) so that one run on a GPU reports every tensor that is off. transform: the
// result of an FFT or Winograd convolution (the LOOSER bounds above).
template <typename T>
void check_gemm(const std::vector<T>& got, const GemmRef& r, const std::string& name,
                bool transform = false) {
  const bool bf16_out = sizeof(T) == sizeof(bf16);
  const double out_rel = bf16_out ? kBf16OutRel : 0.0;
  REQUIRE(got.size() == r.ref.size());
  double sq = 0;
  for (double v : r.ref) sq += v * v;
  const double rms = std::sqrt(sq / double(std::max<size_t>(r.ref.size(), 1)));
  size_t worst = 0;
  double worst_ratio = -1, worst_bound = 0;
  bool finite = true;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = value_of(got[i]);
    if (!std::isfinite(g)) {
      finite = false, worst = i;
      break;
    }
    const double acc = transform
                           ? kTransformRmsFraction * rms
                           : std::min(double(r.terms) * 0x1p-22 * r.abs[i], kAccRmsFraction * rms);
    // The smallest float keeps an exactly-zero reference meaningful (then got must be 0 too,
    // up to a denormal).
    const double bound = out_rel * std::abs(r.ref[i]) + (1 + out_rel) * acc +
                         double(std::numeric_limits<float>::denorm_min());
    const double ratio = std::abs(g - r.ref[i]) / bound;
    if (ratio > worst_ratio) worst_ratio = ratio, worst = i, worst_bound = bound;
  }
  const test::Diff d = compare(got.data(), r.ref.data(), got.size());
  const double l2_tol =
      (bf16_out ? kBf16OutRelL2 : kFloatOutRelL2) + (transform ? kTransformRelL2 : 0);
  INFO(d.report(name) << "; per element: worst [" << worst << "] got " << show(got[worst])
                      << ", want " << std::setprecision(9) << r.ref[worst] << ", bound "
                      << worst_bound << " (" << r.terms << " terms, sum |ab| " << r.abs[worst]
                      << ", rms " << rms << (transform ? ", FFT/Winograd" : "")
                      << "), error / bound " << worst_ratio << "; rel L2 tolerance " << l2_tol);
  CHECK(finite);
  CHECK_FALSE(d.non_finite);
  CHECK(worst_ratio <= 1.0);
  CHECK(d.rel_l2 <= l2_tol);
}

// ---- fp32 library results (cuDNN, cuBLAS): tolerances and copies
// ---------------------------------

//
// Each output element is a sum of n fp32 products; the reference sums the same fp32 inputs in
// double, so the whole difference is the GPU's fp32 rounding. With round-to-nearest
// (unit roundoff u = 2^-24) and terms of random sign, the rounding errors of a sum of n terms
// behave like a random walk and give a relative (L2) error of order u * sqrt(n); blocked and
// tree-shaped GPU reductions do better. So the bound is 1e-5 (about 170 u: far above any
// correct fp32 result for the short sums here, far below the O(1) error of a wrong index,
// transpose or stride), widened to 4 u sqrt(n) for the long sums of the filter gradients
// (n = batch x output positions, up to 101,136 terms for decoder.out at batch 129, which
// gives 7.6e-5). A layout or indexing bug shows up as rel L2 ~ 1, far above either.
constexpr double kUnitRoundoff = 1.0 / 16777216.0;  // 2^-24
inline double fp32_rel_l2_tol(int64_t terms) {
  return std::max(1e-5, 4.0 * kUnitRoundoff * std::sqrt(double(terms)));
}

// LOOSE, on purpose: TF32 tensor cores round each fp32 input to a 10-bit mantissa (relative
// error up to 2^-11 ~ 4.9e-4 per operand), so a TF32 result differs from the fp32 one by a few
// 1e-4 in rel L2. This bound only shows that the TF32 path runs and computes the right thing;
// the exactness of the layout and indexing is checked by the fp32-strict tests.
constexpr double kTf32RelL2Tol = 5e-3;

inline std::vector<double> widen(const std::vector<float>& v) {
  return {v.begin(), v.end()};
}

inline DeviceBuffer<float> upload(const std::vector<float>& h, const CudaStream& s) {
  DeviceBuffer<float> d(h.size(), "a test tensor");
  d.upload(h.data(), h.size(), s.get());
  return d;
}

// Every byte 0xFF: each float reads as a NaN.
inline void poison(DeviceBuffer<float>& d, const CudaStream& s) {
  CUDA_CHECK(cudaMemsetAsync(d.data(), 0xFF, d.bytes(), s.get()));
}

inline std::vector<float> download(const DeviceBuffer<float>& d, const CudaStream& s) {
  std::vector<float> h(d.size());
  d.download(h.data(), h.size(), s.get());
  s.synchronize();
  return h;
}

inline bool all_finite(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float f) { return std::isfinite(f); });
}

inline bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// CHECK (not REQUIRE) so that one run on a GPU reports every tensor that is off. abs_floor: see
// Diff::within_l2 (0: the relative bound alone).
inline void check_rel_l2(const Diff& d, const std::string& name, double tol, double abs_floor = 0) {
  INFO(d.report(name) << "; tolerance " << tol << ", absolute floor " << abs_floor);
  CHECK_FALSE(d.non_finite);
  CHECK(d.within_l2(tol, abs_floor));
}

}  // namespace cuvae::test
