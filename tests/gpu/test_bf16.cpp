// GPU tests of the bf16 mixed-precision kernels: to_bf16 and widen_spans
// (cuda/kernels/precision.cuh), the bf16 forms of the bias/ReLU epilogue
// (cuda/kernels/activations.cuh), of the dense layers (cuda/libs/dense.cuh), of the convolutions
// (ConvMath::Bf16, cuda/libs/conv.cuh) and of the fused loss (cuda/kernels/loss.cuh). The CPU side
// rounds exactly as the device does: <cuda_bf16.h>'s __float2bfloat16_rn (nearest, ties to even)
// and __bfloat162float are host functions too, so every elementwise result is compared bit for bit.
// The GEMM-shaped results (dense, conv) are compared with a double reference on the same bf16
// operands, element by element, against a bound derived from fp32 accumulation and the final
// rounding (see "tolerances" below); the sums in double (bias gradients) against the bound of two
// double summations in different orders. Inputs are fresh random numbers per run (the seed is
// printed; replay with CUVAE_TEST_SEED=<seed>). Outputs are poisoned (every byte 0xFF: a NaN in
// float and in bf16) before each launch and followed by guard elements that no launch may touch;
// with `shift` a tensor also starts one element past its buffer's (aligned) start. Compiled by the
// host compiler: it calls only the launchers and the CUDA runtime.
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
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda/kernels/activations.cuh"
#include "cuda/kernels/loss.cuh"
#include "cuda/kernels/precision.cuh"
#include "cuda/libs/conv.cuh"
#include "cuda/libs/dense.cuh"
#include "cuda/runtime/device_buffer.cuh"
#include "host/core/error.h"
#include "host/core/model.h"
#include "host/cpu/cpu_ref.h"
#include "tests/gpu/bias_grad.h"
#include "tests/gpu/device_io.h"
#include "tests/gpu/layouts.h"
#include "tests/test_support.h"

using namespace cuvae;
using namespace cuvae::test;

namespace {

// ---- bf16 on the host -------------------------------------------------------------------------

uint16_t bits_of(bf16 v) {
  return static_cast<__nv_bfloat16_raw>(v).x;
}
uint32_t bits_of(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
}
uint64_t bits_of(double v) {
  uint64_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
}
bf16 bf16_from_bits(uint16_t u) {
  __nv_bfloat16_raw r;
  r.x = u;
  return bf16(r);
}
float float_from_bits(uint32_t u) {
  float v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}
// Nearest, ties to even: the device's __float2bfloat16_rn (cvt.rn.bf16.f32), on the host.
bf16 round_bf16(float f) {
  return __float2bfloat16_rn(f);
}
// Exact.
float widen(bf16 v) {
  return __bfloat162float(v);
}
// A float input as it is (for the helpers that take either).
float widen(float v) {
  return v;
}

double value_of(float v) {
  return v;
}
double value_of(bf16 v) {
  return widen(v);
}
double value_of(double v) {
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
float poison_value<float>() {
  return float_from_bits(0xFFFFFFFFu);
}
template <>
bf16 poison_value<bf16>() {
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

std::vector<bf16> round_all(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = round_bf16(v[i]);
  return out;
}
std::vector<float> widen_all(const std::vector<bf16>& v) {
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

std::vector<float> uniform(std::mt19937_64& rng, size_t n, double lo, double hi) {
  return test::random_vector<float>(rng, n, lo, hi);
}
// Uniform floats rounded to bf16: operands that the device and the reference hold exactly.
std::vector<bf16> uniform_bf16(std::mt19937_64& rng, size_t n, double lo, double hi) {
  return round_all(uniform(rng, n, lo, hi));
}

const bf16 kBf16Zero = bf16_from_bits(0x0000);
const bf16 kBf16NegZero = bf16_from_bits(0x8000);

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

// A second run of the same launch on the same input: identical bits. (Each caller compares the
// first run with the reference, which rejects NaN.)
template <typename T>
void require_same_run(const std::vector<T>& second, const std::vector<T>& first,
                      const std::string& name) {
  REQUIRE(second.size() == first.size());
  size_t at = first.size();
  for (size_t i = 0; i < first.size() && at == first.size(); ++i)
    if (!same_bits(second[i], first[i])) at = i;
  INFO(name << ": the second run differs from the first at [" << at << "] of " << first.size());
  REQUIRE(at == first.size());
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

// ---- shapes of the bias/activation tests --------------------------------------------------------

struct ActShape {
  int batch, channels;
  int64_t plane;
};

// (batch, channels, plane): the awkward batches with one and 32 channels at the model's planes
// (196 = 14x14, 49 = 7x7; 1 for a Linear output), the two Linear outputs that meet bf16 in the
// mixed step (decoder.fc's 3136 features, encoder.fc's 16), and a plane past a block of 4096.
std::vector<ActShape> act_shapes() {
  std::vector<ActShape> v;
  for (int batch : {1, 3, 129})
    for (int channels : {1, 32})
      for (int64_t plane : {196, 49, 1}) v.push_back({batch, channels, plane});
  v.push_back({3, 3136, 1});
  v.push_back({129, 16, 1});
  v.push_back({2, 7, 4097});
  return v;
}

size_t numel(const ActShape& sh) {
  return size_t(sh.batch) * size_t(sh.channels) * size_t(sh.plane);
}
size_t channel_of(const ActShape& sh, size_t i) {
  return (i / size_t(sh.plane)) % size_t(sh.channels);
}
std::string label(const ActShape& sh) {
  return "shape (" + std::to_string(sh.batch) + ", " + std::to_string(sh.channels) + ", " +
         std::to_string(sh.plane) + ")";
}

// The float path's arithmetic: one float add and the select (v > 0 ? v : 0, which also turns
// -0 into +0); the bf16 forms round that float once.
float act_forward(float v, float bias, bool relu) {
  const float s = v + bias;
  return relu ? (s > 0.0f ? s : 0.0f) : s;
}
// The gradient mask: a select, so NaN or Inf behind a dead unit becomes +0.
float act_mask(float dy, float y, bool relu) {
  return relu ? (y > 0.0f ? dy : 0.0f) : dy;
}

// Ties of bf16 (exactly half-way between two neighbours) near 1: 1 + 2^-8 lies between 1
// (even) and 1 + 2^-7 (odd), so nearest-even gives 1; 1 + 3 2^-8 lies between 1 + 2^-7 (odd)
// and 1 + 2^-6 (even) and gives 1 + 2^-6. Truncation or rounding half up gets one of them wrong.
constexpr float kTieDown = 1.0f + 0x1p-8f;
constexpr float kTieUp = 1.0f + 3 * 0x1p-8f;

// Positions of dead units (y == 0) that get NaN or an infinity in dy when relu: the select
// must drop them (as in cpu::relu_backward) and they must never reach db.
template <typename Y, typename D>
void specials_behind_dead_units(std::vector<D>& dy, const std::vector<Y>& y,
                                const std::vector<D>& specials) {
  int k = 0;
  for (size_t i = 0; i < dy.size() && k < 30; i += 7)
    if (value_of(y[i]) == 0.0) dy[i] = specials[size_t(k++) % specials.size()];
}
// NaN, +Inf and -Inf: the usual specials behind dead units.
std::vector<float> float_specials() {
  return {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
          -std::numeric_limits<float>::infinity()};
}
std::vector<bf16> bf16_specials() {
  return {bf16_from_bits(0x7fc0), bf16_from_bits(0x7f80), bf16_from_bits(0xff80)};
}

// A post-ReLU output drawn from [-1, 1]: about half exact zeros (+0).
std::vector<float> post_relu(std::mt19937_64& rng, size_t n) {
  std::vector<float> y = uniform(rng, n, -1, 1);
  cpu::relu_forward(y.data(), y.data(), n);
  return y;
}
std::vector<bf16> post_relu_bf16(std::mt19937_64& rng, size_t n) {
  std::vector<bf16> y = uniform_bf16(rng, n, -1, 1);
  for (bf16& v : y) v = widen(v) > 0.0f ? v : kBf16Zero;
  return y;
}

// What the bf16 forward forms give: the float add and select on the input (a bf16 y widened
// exactly, or a float x), rounded once.
template <typename X>
std::vector<bf16> forward_reference(const std::vector<X>& x, const std::vector<float>& bias,
                                    const ActShape& sh, bool relu) {
  std::vector<bf16> want(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    want[i] = round_bf16(act_forward(widen(x[i]), bias[channel_of(sh, i)], relu));
  return want;
}

// What every backward form computes before it stores g and sums db: the mask on the inputs,
// bf16 ones widened exactly.
template <typename D, typename Y>
std::vector<float> masked_values(const std::vector<D>& dy, const std::vector<Y>& y, bool relu) {
  REQUIRE(y.size() == dy.size());
  std::vector<float> m(dy.size());
  for (size_t i = 0; i < dy.size(); ++i) m[i] = act_mask(widen(dy[i]), widen(y[i]), relu);
  return m;
}

// ---- one bias_act_backward form on host vectors -------------------------------------------------

// What one bias_act_backward call gives: g (for an in-place form, dy itself) and db.
template <typename G>
struct Backward {
  std::vector<G> g;
  std::vector<float> db;
};

// One bias_act_backward form (g G, dy D, y Y) on one case, in guarded device memory: dy, y and
// g at `shift`, db at 0. The forms that keep dy's type mask it in place (g is dy); the others
// write g in the other type and leave dy alone. run(scratch) restarts from the same state (in
// place: dy uploaded again; else g poisoned), poisons db and, given a scratch, its partial sums
// (a slice sum read before it is written would be a NaN in db), launches, and returns g and db,
// each after checking that nothing around it was written. dy must outlive the form.
template <typename G, typename D, typename Y>
class BackwardForm {
 public:
  static constexpr bool kInPlace = std::is_same_v<G, D>;
  static constexpr const char* kGName = kInPlace ? "dy" : "g";

  BackwardForm(const std::vector<D>& dy, const std::vector<Y>& y, const ActShape& sh, bool relu,
               size_t shift, cudaStream_t s)
      : dy_(dy),
        sh_(sh),
        relu_(relu),
        s_(s),
        d_dy_(guarded_input(dy, shift, s)),
        d_y_(guarded_input(y, shift, s)),
        d_g_(kInPlace ? 0 : dy.size(), shift),
        d_db_(size_t(sh.channels)) {
    REQUIRE(dy.size() == numel(sh));
    REQUIRE(y.size() == numel(sh));
  }

  cudaStream_t stream() const { return s_; }

  Backward<G> run(DeviceScratch* scratch = nullptr) {
    if constexpr (kInPlace)
      d_dy_.set(dy_, s_);
    else
      d_g_.poison(s_);
    d_db_.poison(s_);
    BiasGradScratch view{};
    if (scratch) {
      poison_device(scratch->partial, s_);
      view = scratch->view();
    }
    const BiasGradScratch* sc = scratch ? &view : nullptr;
    if constexpr (kInPlace) {
      bias_act_backward(d_dy_.data(), d_db_.data(), d_y_.data(), sh_.batch, sh_.channels, sh_.plane,
                        relu_, s_, sc);
      return {d_dy_.get(s_, kGName), d_db_.get(s_, "db")};
    } else {
      bias_act_backward(d_g_.data(), d_db_.data(), d_dy_.data(), d_y_.data(), sh_.batch,
                        sh_.channels, sh_.plane, relu_, s_, sc);
      return {d_g_.get(s_, kGName), d_db_.get(s_, "db")};
    }
  }

  // dy as it is on the device now: an out-of-place form must have left it alone.
  std::vector<D> dy_now(const std::string& name) const { return d_dy_.get(s_, name); }

 private:
  const std::vector<D>& dy_;
  ActShape sh_;
  bool relu_;
  cudaStream_t s_;
  Guarded<D> d_dy_;
  const Guarded<Y> d_y_;
  Guarded<G> d_g_;  // out of place only
  Guarded<float> d_db_;
};

// Runs a form twice: the first run's g bit for bit g_want (a select per element, a widening or
// one rounding: exact), its db within the bound of a double sum in another order of db_want
// (require_sums), the second run the same bits; with a scratch, its ticket back at 0 after each
// run. `how` is appended to the names. Returns the first run.
template <typename G, typename D, typename Y>
Backward<G> require_form(BackwardForm<G, D, Y>& form, const std::vector<G>& g_want,
                         const std::vector<RefSum>& db_want, const std::string& how = "",
                         DeviceScratch* scratch = nullptr) {
  const std::string g_name = BackwardForm<G, D, Y>::kGName + how, db_name = "db" + how;
  const Backward<G> got = form.run(scratch);
  if (scratch) CHECK(scratch->ticket_value(form.stream()) == 0u);
  require_same_bits(got.g, g_want, g_name);
  require_sums(got.db, db_want, db_name);
  const Backward<G> again = form.run(scratch);
  if (scratch) CHECK(scratch->ticket_value(form.stream()) == 0u);
  require_same_run(again.g, got.g, g_name);
  require_same_run(again.db, got.db, db_name);
  return got;
}

}  // namespace

// ---- to_bf16, and the span forms of to_bf16 and widen_spans ----------------------------------

namespace {

// A SpanMap of up to kMax tensors placed in the float buffer in one order with gaps between them,
// and in the bf16 buffer in another order, each start rounded up to a multiple of 8 elements (16
// bytes, as the trainer aligns its bf16 tensors). Elements of either buffer outside every span
// must be left alone.
struct SpanCase {
  SpanMap map;
  size_t float_size = 0, lo_size = 0;
};

SpanCase place_spans(const std::vector<size_t>& sizes, std::mt19937_64& rng) {
  SpanCase c;
  c.map.count = int(sizes.size());
  std::vector<size_t> order(sizes.size());
  for (size_t j = 0; j < order.size(); ++j) order[j] = j;
  std::uniform_int_distribution<size_t> gap(0, 5);
  std::shuffle(order.begin(), order.end(), rng);
  for (size_t j : order) {
    c.float_size += gap(rng);
    c.map.offset[j] = c.float_size;
    c.map.size[j] = sizes[j];
    c.float_size += sizes[j];
  }
  std::shuffle(order.begin(), order.end(), rng);
  for (size_t j : order) {
    c.lo_size = (c.lo_size + gap(rng) + 7) / 8 * 8;
    c.map.lo_offset[j] = c.lo_size;
    c.lo_size += sizes[j];
  }
  c.float_size += gap(rng) + 1;
  c.lo_size += gap(rng) + 1;
  return c;
}

// The span maps every conversion test runs: none, one span over both whole buffers, touching
// spans and an empty one (they share no index), the trainer's tensors (the five convolution
// weights and encoder.fc's), and kMax random sizes up to 1, 31, 4097 and 70000 (some empty).
std::vector<std::pair<std::string, SpanCase>> span_cases(std::mt19937_64& rng) {
  std::vector<std::pair<std::string, SpanCase>> v;
  v.emplace_back("no spans", SpanCase{SpanMap{}, 17, 17});
  SpanCase whole;
  whole.map.count = 1, whole.map.size[0] = 4097, whole.float_size = whole.lo_size = 4097;
  v.emplace_back("one span over both whole buffers", whole);
  SpanCase touching;
  touching.map.count = 3;
  touching.map.offset[0] = 0, touching.map.lo_offset[0] = 40, touching.map.size[0] = 40;
  touching.map.offset[1] = 40, touching.map.lo_offset[1] = 0, touching.map.size[1] = 40;
  touching.map.offset[2] = 40, touching.map.lo_offset[2] = 40, touching.map.size[2] = 0;
  touching.float_size = touching.lo_size = 80;
  v.emplace_back("touching spans, swapped, and an empty one", touching);
  const ModelDesc m = make_vae(2);
  std::vector<size_t> model_sizes;
  for (LayerId id : {kEncConv1, kEncConv2, kEncFc, kDecDeconv1, kDecDeconv2, kDecOut})
    model_sizes.push_back(m.weight(id).numel);
  v.emplace_back("the model's bf16 weights", place_spans(model_sizes, rng));
  for (size_t max_size : {size_t(1), size_t(31), size_t(4097), size_t(70000)}) {
    std::uniform_int_distribution<size_t> size(0, max_size);
    std::vector<size_t> sizes(SpanMap::kMax);
    for (size_t& n : sizes) n = size(rng);
    sizes[0] = max_size;  // at least one of the largest
    v.emplace_back("kMax spans of up to " + std::to_string(max_size) + " elements",
                   place_spans(sizes, rng));
  }
  return v;
}

std::string describe(const SpanMap& map) {
  std::ostringstream os;
  os << map.count << " spans:";
  for (int j = 0; j < map.count; ++j)
    os << " [" << map.offset[j] << " -> " << map.lo_offset[j] << ", " << map.size[j] << "]";
  return os.str();
}

// For each element of a buffer of `n`: the element of the other buffer that the map pairs it
// with, or n_other (none). lo_side: the bf16 buffer's view, else the float buffer's.
std::vector<size_t> partner(const SpanMap& map, size_t n, bool lo_side, size_t none) {
  std::vector<size_t> p(n, none);
  for (int j = 0; j < map.count; ++j)
    for (size_t k = 0; k < map.size[j]; ++k)
      p[(lo_side ? map.lo_offset[j] : map.offset[j]) + k] =
          (lo_side ? map.offset[j] : map.lo_offset[j]) + k;
  return p;
}

// Values that exercise the rounding: signed zeros, denormals and their ties, ties near 1 and at
// the top of the range, values that overflow to Inf, Inf, NaN (quiet, negative, signaling).
std::vector<float> rounding_specials() {
  const float inf = std::numeric_limits<float>::infinity();
  return {0.0f,
          -0.0f,
          float_from_bits(0x00000001),  // the smallest denormal: rounds to +0
          float_from_bits(0x00008000),  // a denormal tie between 0 (even) and 0x0001: +0
          float_from_bits(0x00018000),  // a denormal tie between 0x0001 and 0x0002 (even)
          float_from_bits(0x007fffff),  // the largest denormal: rounds up to the smallest normal
          float_from_bits(0x80400000),  // a negative denormal, exact in bf16
          kTieDown,
          kTieUp,
          -kTieDown,
          -kTieUp,
          float_from_bits(0x3f808001),  // just above a tie: rounds up
          float_from_bits(0x3f807fff),  // just below a tie: rounds down
          3.4e38f,                      // beyond bf16's largest finite value (3.3895e38) by
          -3.4e38f,                     // more than half an ulp: +-Inf
          std::numeric_limits<float>::max(),
          float_from_bits(0x7f7f7fff),  // below the tie at the top: the largest finite bf16
          float_from_bits(0x7f7f8000),  // the tie at the top: to even, which is Inf
          inf,
          -inf,
          std::numeric_limits<float>::quiet_NaN(),
          -std::numeric_limits<float>::quiet_NaN(),
          float_from_bits(0x7f800001),  // a signaling NaN with the lowest payload: NaN, not Inf
          float_from_bits(0xff800001)};
}

// n floats: half random bit patterns (every exponent, some Inf), half ordinary numbers, with the
// rounding specials (as many as fit) at random places. The only NaNs are the specials' four,
// whose bf16 forms can never be the poison 0xFFFF (canonical 0x7FFF, or with the payload kept
// 0x7FC0 / 0xFFC0), so a NaN output that is the poison is an element nobody wrote.
std::vector<float> conversion_input(std::mt19937_64& rng, size_t n) {
  std::vector<float> v(n);
  std::uniform_real_distribution<float> ordinary(-4.0f, 4.0f);
  for (size_t i = 0; i < n; ++i) {
    v[i] = i % 2 ? float_from_bits(uint32_t(rng() >> 32)) : ordinary(rng);
    if (std::isnan(v[i])) v[i] = float_from_bits(bits_of(v[i]) & 0xBFFFFFFFu);  // finite
  }
  std::vector<float> specials = rounding_specials();
  std::shuffle(specials.begin(), specials.end(), rng);
  std::copy_n(specials.begin(), std::min(n, specials.size()), v.begin());
  std::shuffle(v.begin(), v.end(), rng);
  return v;
}

// got[i] == bf16(src[i]) bit for bit, except that a NaN source only needs a NaN result (its
// payload is the implementation's) other than the poison.
void require_rounded(const std::vector<bf16>& got, const std::vector<float>& src,
                     const std::string& name) {
  REQUIRE(got.size() == src.size());
  std::vector<bf16> want(src.size()), got_cmp = got;
  for (size_t i = 0; i < src.size(); ++i) {
    want[i] = round_bf16(src[i]);
    if (std::isnan(src[i])) {
      INFO(name << "[" << i << "] from NaN " << show(src[i]) << " is " << show(got[i]));
      REQUIRE(std::isnan(widen(got[i])));
      REQUIRE_FALSE(is_poison(got[i]));
      want[i] = got_cmp[i] = kBf16Zero;  // checked: out of the bitwise comparison
    }
  }
  require_same_bits(got_cmp, want, name);
}

}  // namespace

TEST_CASE("to_bf16 rounds like the host __float2bfloat16_rn, bit for bit", "[gpu][bf16]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  // 16,776,965 = 65,535 blocks of 256 threads + 5: more than one grid's worth of elements.
  const size_t n = GENERATE(size_t(1), size_t(31), size_t(4097), size_t(65535) * 256 + 5);
  const size_t shift = GENERATE(size_t(0), size_t(1));  // 1: both 1 element past alignment
  INFO("n " << n << " shift " << shift);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  const std::vector<float> src = conversion_input(rng, n);
  const Guarded<float> d_src = guarded_input(src, shift, s);
  Guarded<bf16> d_dst(n, shift);
  auto run = [&] {
    d_dst.poison(s);
    to_bf16(d_dst.data(), d_src.data(), n, s);
    return d_dst.get(s, "dst");  // and nothing past the n elements written
  };
  const std::vector<bf16> got = run();
  require_rounded(got, src, "dst");
  require_same_run(run(), got, "dst");
  const std::vector<float> src_after = d_src.get(s, "src");  // an input: left alone, NaNs too
  REQUIRE(same_bits(src_after, src));
}

TEST_CASE("to_bf16 over a span map rounds each span to its place and nothing else", "[gpu][bf16]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  for (const auto& [what, c] : span_cases(rng)) {
    INFO(what << ": " << describe(c.map) << "; buffers " << c.float_size << " floats, " << c.lo_size
              << " bf16");
    const std::vector<float> src = conversion_input(rng, c.float_size);
    const DeviceBuffer<float> d_src = to_device(src, s);
    DeviceBuffer<bf16> d_lo(c.lo_size, "lo");
    poison_device(d_lo, s);
    to_bf16(d_lo.data(), d_src.data(), c.map, s);
    const std::vector<bf16> got = to_host(d_lo, s);
    const std::vector<size_t> from = partner(c.map, c.lo_size, true, c.float_size);
    std::vector<bf16> in_spans;
    std::vector<float> their_src;
    size_t untouched_written = 0, first = c.lo_size;
    for (size_t i = 0; i < c.lo_size; ++i) {
      if (from[i] < c.float_size) {
        in_spans.push_back(got[i]), their_src.push_back(src[from[i]]);
      } else if (!is_poison(got[i])) {
        if (untouched_written++ == 0) first = i;
      }
    }
    INFO(untouched_written << " bf16 elements outside the spans written, first [" << first << "]");
    REQUIRE(untouched_written == 0);
    require_rounded(in_spans, their_src, "lo in the spans");
    const std::vector<float> src_after = to_host(d_src, s);
    REQUIRE(same_bits(src_after, src));
  }
}

TEST_CASE("widen_spans widens each span exactly to its place and nothing else", "[gpu][bf16]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  for (const auto& [what, c] : span_cases(rng)) {
    INFO(what << ": " << describe(c.map) << "; buffers " << c.float_size << " floats, " << c.lo_size
              << " bf16");
    // Every bf16 value the rounding produces from the specials and random bits: -0, denormals,
    // the largest finite, Inf, NaN.
    const std::vector<bf16> lo = round_all(conversion_input(rng, c.lo_size));
    const DeviceBuffer<bf16> d_lo = to_device(lo, s);
    DeviceBuffer<float> d_dst(c.float_size, "dst");
    poison_device(d_dst, s);
    widen_spans(d_dst.data(), d_lo.data(), c.map, s);
    const std::vector<float> got = to_host(d_dst, s);
    const std::vector<size_t> from = partner(c.map, c.float_size, false, c.lo_size);
    size_t outside_written = 0, inside_wrong = 0, first = c.float_size;
    for (size_t i = 0; i < c.float_size; ++i) {
      bool ok;
      if (from[i] < c.lo_size) {
        const float want = widen(lo[from[i]]);  // exact
        ok = std::isnan(want) ? std::isnan(got[i]) && !is_poison(got[i])
                              : bits_of(got[i]) == bits_of(want);
        inside_wrong += !ok;
      } else {
        ok = is_poison(got[i]);
        outside_written += !ok;
      }
      if (!ok && first == c.float_size) first = i;
    }
    INFO(outside_written << " floats outside the spans written, " << inside_wrong
                         << " inside wrong; first at [" << first << "]"
                         << (first < c.float_size ? ": got " + show(got[first]) : std::string()));
    REQUIRE(outside_written == 0);
    REQUIRE(inside_wrong == 0);
  }
}

TEST_CASE("the span forms reject overlapping spans and a count outside [0, kMax]", "[gpu][bf16]") {
  CudaStream stream;
  const cudaStream_t s = stream.get();
  const size_t n = 64;
  const DeviceBuffer<float> d_f = to_device(std::vector<float>(n, 1.0f), s);
  const DeviceBuffer<bf16> d_l = to_device(std::vector<bf16>(n, bf16_from_bits(0x3f80)), s);
  DeviceBuffer<float> d_dst(n, "dst");
  DeviceBuffer<bf16> d_lo(n, "lo");
  poison_device(d_dst, s);
  poison_device(d_lo, s);

  SpanMap ok;  // two disjoint spans on both sides
  ok.count = 2;
  ok.offset[0] = 0, ok.lo_offset[0] = 0, ok.size[0] = 10;
  ok.offset[1] = 10, ok.lo_offset[1] = 16, ok.size[1] = 5;
  SpanMap float_overlap = ok;
  float_overlap.offset[1] = 9;  // float index 9 twice
  SpanMap lo_overlap = ok;
  lo_overlap.lo_offset[1] = 8;  // bf16 index 8 and 9 twice, the float side disjoint
  SpanMap inner = ok;
  inner.offset[1] = 2, inner.lo_offset[1] = 3;  // inside the first on both sides
  SpanMap too_many;
  too_many.count = SpanMap::kMax + 1;
  SpanMap negative;
  negative.count = -1;
  for (const SpanMap* bad : {&float_overlap, &lo_overlap, &inner, &too_many, &negative}) {
    INFO(describe(*bad));
    CHECK_THROWS_AS(to_bf16(d_lo.data(), d_f.data(), *bad, s), Error);
    CHECK_THROWS_AS(widen_spans(d_dst.data(), d_l.data(), *bad, s), Error);
  }
  // Nothing was launched: both outputs still hold the poison everywhere.
  const std::vector<float> dst = to_host(d_dst, s);
  const std::vector<bf16> lo = to_host(d_lo, s);
  CHECK(std::all_of(dst.begin(), dst.end(), [](float v) { return is_poison(v); }));
  CHECK(std::all_of(lo.begin(), lo.end(), [](bf16 v) { return is_poison(v); }));
}

// ---- bias + activation, bf16 forms --------------------------------------------------------------

TEST_CASE("bf16 bias_act_forward in place: the float add and select, rounded once", "[gpu][bf16]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const bool relu = GENERATE(true, false);
  const size_t shift = GENERATE(size_t(0), size_t(1));  // 1: y starts 2 bytes past alignment
  CudaStream stream;
  const cudaStream_t s = stream.get();
  for (const ActShape& sh : act_shapes()) {
    INFO(label(sh) << " relu " << relu << " shift " << shift);
    const size_t n = numel(sh);
    std::vector<float> bias = uniform(rng, size_t(sh.channels), -0.5, 0.5);
    std::vector<bf16> y = uniform_bf16(rng, n, -1, 1);
    // Channel 0: bias -0, so -0 + -0 = -0 (a kernel using fmaxf may keep -0 under ReLU; the
    // select gives +0). Channel 1: bias 2^-8 on y = 1 and 1 + 2^-7 gives the two ties.
    // Channel 2: a bias exact in bf16 and y = -bias gives exactly +0.
    bias[0] = -0.0f;
    if (sh.channels > 1) bias[1] = 0x1p-8f;
    if (sh.channels > 2) bias[2] = widen(round_bf16(bias[2]));
    for (size_t i = 0; i < n; ++i) {
      const size_t c = channel_of(sh, i);
      if (c == 0 && i % 2 == 0) y[i] = kBf16NegZero;
      if (c == 1 && i % 3 != 2) y[i] = round_bf16(i % 3 == 0 ? 1.0f : 1.0f + 0x1p-7f);
      if (c == 2 && i % 3 == 0) y[i] = round_bf16(-bias[2]);
    }
    const std::vector<bf16> want = forward_reference(y, bias, sh, relu);

    Guarded<bf16> d_y(n, shift);
    const DeviceBuffer<float> d_bias = to_device(bias, s);
    auto run = [&] {
      d_y.set(y, s);  // in place: restart from the same input
      bias_act_forward(d_y.data(), d_bias.data(), sh.batch, sh.channels, sh.plane, relu, s);
      return d_y.get(s, "y");
    };
    const std::vector<bf16> got = run();
    require_same_bits(got, want, "y");  // exact: the same float add, select and rounding
    require_same_run(run(), got, "y");
  }
}

TEST_CASE("bf16 bias_act_forward from a float x: the float add and select, rounded once",
          "[gpu][bf16]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const bool relu = GENERATE(true, false);
  const size_t shift = GENERATE(size_t(0), size_t(1));
  CudaStream stream;
  const cudaStream_t s = stream.get();
  for (const ActShape& sh : act_shapes()) {
    INFO(label(sh) << " relu " << relu << " shift " << shift);
    const size_t n = numel(sh);
    std::vector<float> bias = uniform(rng, size_t(sh.channels), -0.5, 0.5);
    std::vector<float> x = uniform(rng, n, -1, 1);
    // Channel 0 has bias -0, so x reaches the rounding unchanged: -0, the ties, and 3.4e38,
    // finite in float and +Inf in bf16 (the rounding overflows).
    bias[0] = -0.0f;
    const float channel0[] = {-0.0f, kTieDown, kTieUp, -kTieDown, -kTieUp};
    for (size_t i = 0; i < n; ++i)
      if (channel_of(sh, i) == 0 && i % 3 != 2) x[i] = channel0[(i / 3) % 5];
    x[0] = 3.4e38f;
    const std::vector<bf16> want = forward_reference(x, bias, sh, relu);

    const Guarded<float> d_x = guarded_input(x, shift, s);
    const DeviceBuffer<float> d_bias = to_device(bias, s);
    Guarded<bf16> d_y(n, shift);
    auto run = [&] {
      d_y.poison(s);
      bias_act_forward(d_y.data(), d_x.data(), d_bias.data(), sh.batch, sh.channels, sh.plane, relu,
                       s);
      return d_y.get(s, "y");
    };
    const std::vector<bf16> got = run();
    require_same_bits(got, want, "y");
    REQUIRE(bits_of(got[0]) == 0x7f80);  // +Inf
    require_same_run(run(), got, "y");
    require_same_bits(d_x.get(s, "x"), x, "x (an input, unchanged)");
  }
}

TEST_CASE("bf16 bias_act_backward in place masks dy and sums db in double", "[gpu][bf16]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const bool relu = GENERATE(true, false);
  const size_t shift = GENERATE(size_t(0), size_t(1));
  CudaStream stream;
  const cudaStream_t s = stream.get();
  for (const ActShape& sh : act_shapes()) {
    INFO(label(sh) << " relu " << relu << " shift " << shift);
    const size_t n = numel(sh);
    std::vector<bf16> dy = uniform_bf16(rng, n, -1, 1);
    const std::vector<bf16> y = post_relu_bf16(rng, n);
    if (relu) specials_behind_dead_units(dy, y, bf16_specials());
    // dy: a select per element, so its rounding is exact (a bf16 value or +0).
    const std::vector<float> masked = masked_values(dy, y, relu);
    BackwardForm<bf16, bf16, bf16> form(dy, y, sh, relu, shift, s);
    require_form(form, round_all(masked), channel_sums(masked, sh.channels, sh.plane));
  }
}

TEST_CASE("bias_act_backward from bf16 dy, y to a float g: masked, exact, db in double",
          "[gpu][bf16]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const bool relu = GENERATE(true, false);
  const size_t shift = GENERATE(size_t(0), size_t(1));
  CudaStream stream;
  const cudaStream_t s = stream.get();
  for (const ActShape& sh : act_shapes()) {
    INFO(label(sh) << " relu " << relu << " shift " << shift);
    const size_t n = numel(sh);
    std::vector<bf16> dy = uniform_bf16(rng, n, -1, 1);
    const std::vector<bf16> y = post_relu_bf16(rng, n);
    for (size_t i = 5; i < n; i += 11) dy[i] = kBf16NegZero;  // -0 passes a live unit as -0
    if (relu)
      specials_behind_dead_units(
          dy, y, {bf16_from_bits(0xffc0), bf16_from_bits(0x7f80), bf16_from_bits(0xff80)});
    // g: widening and a select, exact.
    const std::vector<float> g_want = masked_values(dy, y, relu);
    BackwardForm<float, bf16, bf16> form(dy, y, sh, relu, shift, s);
    require_form(form, g_want, channel_sums(g_want, sh.channels, sh.plane));
    // Out of place: the inputs are left alone (their NaN specials included, so compare bits).
    REQUIRE(same_bits(form.dy_now("dy"), dy));
  }
}

TEST_CASE("bias_act_backward from float dy, y to a bf16 g: rounded once, db of the float values",
          "[gpu][bf16]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const bool relu = GENERATE(true, false);
  const size_t shift = GENERATE(size_t(0), size_t(1));
  CudaStream stream;
  const cudaStream_t s = stream.get();
  for (const ActShape& sh : act_shapes()) {
    INFO(label(sh) << " relu " << relu << " shift " << shift);
    const size_t n = numel(sh);
    std::vector<float> dy = uniform(rng, n, -1, 1);
    const std::vector<float> y = post_relu(rng, n);
    // Ties at live units (they round to even) and values not exact in bf16 elsewhere; db must
    // sum the float values, not their bf16 roundings (2^-8 apart: far outside its bound).
    const float ties[] = {kTieDown, kTieUp, -kTieDown, -kTieUp};
    for (size_t i = 0, k = 0; i < n; i += 5)
      if (y[i] > 0.0f) dy[i] = ties[k++ % 4];
    if (relu) specials_behind_dead_units(dy, y, float_specials());
    const std::vector<float> masked = masked_values(dy, y, relu);
    BackwardForm<bf16, float, float> form(dy, y, sh, relu, shift, s);
    require_form(form, round_all(masked), channel_sums(masked, sh.channels, sh.plane));
    REQUIRE(same_bits(form.dy_now("dy"), dy));
  }
}

TEST_CASE("the bf16 bias_act_backward forms with scratch reduce long columns in slices",
          "[gpu][bf16]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const bool relu = GENERATE(true, false);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  // (rows, channels) at plane 1: one slice (1023 rows), two (1024), an odd count, the model's
  // channels-last conv output at batch 128 (128*28*28 = 100352 rows of 32 channels) and a Linear
  // output at a large batch (decoder.fc's 3136 features).
  const std::vector<Rows> shapes = {{1023, 32}, {1024, 1}, {5000, 33}, {100352, 32}, {4097, 3136}};
  const size_t capacity = scratch_capacity(shapes);
  // One scratch for every shape and form: each call must leave its ticket at 0 for the next.
  DeviceScratch device_scratch(capacity, s);

  for (const Rows& rows : shapes) {
    const ActShape sh{rows.rows, rows.channels, 1};
    const int slices = bias_grad_slices(sh.batch);
    INFO(label(sh) << " (" << slices << " slices) relu " << relu);
    const size_t n = numel(sh);
    std::vector<bf16> hdy = uniform_bf16(rng, n, -1, 1);
    const std::vector<bf16> hy = post_relu_bf16(rng, n);
    std::vector<float> fdy = uniform(rng, n, -1, 1);
    const std::vector<float> fy = post_relu(rng, n);
    if (relu) {
      specials_behind_dead_units(hdy, hy, bf16_specials());
      specials_behind_dead_units(fdy, fy, float_specials());
    }
    // The masked float values (bf16 inputs widened exactly); a bf16 g is their rounding (exact
    // for the bf16 inputs: a bf16 value or +0).
    const std::vector<float> masked_h = masked_values(hdy, hy, relu),
                             masked_f = masked_values(fdy, fy, relu);
    const std::vector<RefSum> sums_h = channel_sums(masked_h, sh.channels, sh.plane),
                              sums_f = channel_sums(masked_f, sh.channels, sh.plane);
    BackwardForm<bf16, bf16, bf16> in_place(hdy, hy, sh, relu, 0, s);
    BackwardForm<float, bf16, bf16> float_g(hdy, hy, sh, relu, 0, s);
    BackwardForm<bf16, float, float> bf16_g(fdy, fy, sh, relu, 0, s);

    // One form with and without scratch (require_form: g exact, db within the bound of two
    // double sums, a second run with the same bits, with scratch the ticket 0 after every
    // call); where one slice serves, the same db bits either way.
    auto check = [&](const std::string& name, auto& form, const auto& g_want,
                     const std::vector<RefSum>& sums) {
      INFO(name);
      const auto sliced = require_form(form, g_want, sums, " (with scratch)", &device_scratch);
      const auto plain = require_form(form, g_want, sums, " (no scratch)");
      if (slices == 1) require_same_bits(plain.db, sliced.db, "db, with vs without");
    };
    check("bf16 in place", in_place, round_all(masked_h), sums_h);
    check("bf16 dy, y to a float g", float_g, masked_h, sums_h);
    check("float dy, y to a bf16 g", bf16_g, round_all(masked_f), sums_f);
    // The out-of-place forms leave their inputs alone.
    CHECK(same_bits(float_g.dy_now("dy (bf16 input)"), hdy));
    CHECK(same_bits(bf16_g.dy_now("dy (float input)"), fdy));
  }

  // A scratch too small for the shape, or without its pointers, is refused by every form before
  // it launches (db keeps its poison).
  const ActShape big{5000, 33, 1};
  const size_t need = bias_grad_scratch_doubles(big.batch, big.channels, 1);
  REQUIRE(need == 9 * 33);
  REQUIRE(capacity >= need);
  const size_t n = numel(big);
  DeviceBuffer<bf16> hbuf(3 * n);
  DeviceBuffer<float> fbuf(3 * n);
  poison_device(hbuf, s), poison_device(fbuf, s);
  Guarded<float> d_db(size_t(big.channels));
  d_db.poison(s);
  bf16* h = hbuf.data();
  float* f = fbuf.data();
  const BiasGradScratch small{device_scratch.partial.data(), device_scratch.ticket.data(),
                              need - 1},
      no_partial{nullptr, device_scratch.ticket.data(), need},
      no_ticket{device_scratch.partial.data(), nullptr, need};
  for (const BiasGradScratch* sc : {&small, &no_partial, &no_ticket}) {
    CHECK_THROWS_AS(
        bias_act_backward(h, d_db.data(), h + n, big.batch, big.channels, 1, false, s, sc), Error);
    CHECK_THROWS_AS(
        bias_act_backward(f, d_db.data(), h, h + n, big.batch, big.channels, 1, false, s, sc),
        Error);
    CHECK_THROWS_AS(
        bias_act_backward(h, d_db.data(), f, f + n, big.batch, big.channels, 1, false, s, sc),
        Error);
  }
  CHECK_THROWS_WITH(
      bias_act_backward(h, d_db.data(), h + n, big.batch, big.channels, 1, false, s, &small),
      Catch::Contains(std::to_string(need)));
  const std::vector<float> db = d_db.get(s, "db");
  CHECK(std::all_of(db.begin(), db.end(), [](float v) { return is_poison(v); }));
  CHECK(device_scratch.ticket_value(s) == 0u);
}

// ---- dense --------------------------------------------------------------------------------------

namespace {

struct DenseSize {
  int batch, in, out;
};

// encoder.fc (3136 -> 16, the layer the mixed step runs in bf16) and its transpose shape at the
// awkward batches, odd sizes, and in = 1 (one product per element: exact before rounding).
std::vector<DenseSize> bf16_dense_sizes() {
  std::vector<DenseSize> v;
  for (int batch : {1, 31, 129}) {
    v.push_back({batch, 3136, 16});
    v.push_back({batch, 16, 3136});
    v.push_back({batch, 33, 17});
  }
  v.push_back({2, 1, 1});
  v.push_back({5, 1, 3136});
  return v;
}

}  // namespace

TEST_CASE("bf16 dense layers match a double reference within fp32 accumulation and rounding",
          "[gpu][bf16][dense]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  // The bf16 GEMMs ignore the handle's TF32 setting: both handles must meet the same bounds.
  const CublasHandle strict(s, false), tf32(s, true);
  for (const DenseSize& sz : bf16_dense_sizes()) {
    INFO("dense batch " << sz.batch << " in " << sz.in << " out " << sz.out);
    const std::vector<bf16> x = uniform_bf16(rng, size_t(sz.batch) * size_t(sz.in), -1, 1);
    const std::vector<bf16> w = uniform_bf16(rng, size_t(sz.out) * size_t(sz.in), -0.5, 0.5);
    const std::vector<bf16> dy = uniform_bf16(rng, size_t(sz.batch) * size_t(sz.out), -1, 1);
    GemmRef y, dx, dw;
    y.terms = sz.in, dx.terms = sz.out, dw.terms = sz.batch;  // terms per output element
    for (bool absolute : {false, true}) {
      const std::vector<double> xd = to_double(x, absolute), wd = to_double(w, absolute),
                                dyd = to_double(dy, absolute);
      const std::vector<double> zero_bias(size_t(sz.out), 0.0);
      std::vector<double> yr(dyd.size()), dxr(xd.size()), dwr(wd.size()), db(size_t(sz.out));
      cpu::linear_forward(yr.data(), xd.data(), wd.data(), zero_bias.data(), sz.batch, sz.in,
                          sz.out);
      cpu::linear_backward(dxr.data(), dwr.data(), db.data(), dyd.data(), xd.data(), wd.data(),
                           sz.batch, sz.in, sz.out);
      (absolute ? y.abs : y.ref) = std::move(yr);
      (absolute ? dx.abs : dx.ref) = std::move(dxr);
      (absolute ? dw.abs : dw.ref) = std::move(dwr);
    }

    const DeviceBuffer<bf16> d_x = to_device(x, s), d_w = to_device(w, s), d_dy = to_device(dy, s);
    Guarded<float> d_y(dy.size()), d_dw(w.size());
    Guarded<bf16> d_dx(x.size());
    std::vector<float> first_y, first_dw;
    std::vector<bf16> first_dx;
    for (const CublasHandle* h : {&strict, &tf32}) {
      INFO("handle " << (h->tf32() ? "with TF32" : "strict fp32"));
      d_y.poison(s), d_dx.poison(s), d_dw.poison(s);
      dense_forward(*h, d_y.data(), d_x.data(), d_w.data(), sz.batch, sz.in, sz.out);
      dense_backward_data(*h, d_dx.data(), d_dy.data(), d_w.data(), sz.batch, sz.in, sz.out);
      dense_backward_filter(*h, d_dw.data(), d_x.data(), d_dy.data(), sz.batch, sz.in, sz.out);
      const std::vector<float> got_y = d_y.get(s, "y"), got_dw = d_dw.get(s, "dW");
      const std::vector<bf16> got_dx = d_dx.get(s, "dx");
      check_gemm(got_y, y, "dense forward y (float)");
      check_gemm(got_dx, dx, "dense backward_data dx (bf16)");
      check_gemm(got_dw, dw, "dense backward_filter dW (float)");
      if (h == &strict) {
        first_y = got_y, first_dx = got_dx, first_dw = got_dw;
        // The same call again gives the same bits.
        d_y.poison(s), d_dx.poison(s), d_dw.poison(s);
        dense_forward(*h, d_y.data(), d_x.data(), d_w.data(), sz.batch, sz.in, sz.out);
        dense_backward_data(*h, d_dx.data(), d_dy.data(), d_w.data(), sz.batch, sz.in, sz.out);
        dense_backward_filter(*h, d_dw.data(), d_x.data(), d_dy.data(), sz.batch, sz.in, sz.out);
        require_same_run(d_y.get(s, "y"), first_y, "y");
        require_same_run(d_dx.get(s, "dx"), first_dx, "dx");
        require_same_run(d_dw.get(s, "dW"), first_dw, "dW");
      }
    }
  }
}

// ---- convolutions -------------------------------------------------------------------------------

namespace {

struct Bf16ConvCase {
  std::vector<bf16> x, w, dy;  // (B,in,H,W), weight, (B,out,Ho,Wo)
  GemmRef y, dx, dw;           // forward, backward data, backward filter
};

// bf16 inputs and the CPU reference (double, on the same values and on their magnitudes).
Bf16ConvCase make_conv_case(const Layer& l, int batch, std::mt19937_64& rng) {
  Bf16ConvCase c;
  c.x = uniform_bf16(rng, size_t(batch) * size_t(l.in_size()), -1, 1);
  c.w = uniform_bf16(rng, size_t(l.in_channels) * l.out_channels * l.kernel * l.kernel, -0.5, 0.5);
  c.dy = uniform_bf16(rng, size_t(batch) * size_t(l.out_size()), -1, 1);
  const int64_t taps = int64_t(l.kernel) * l.kernel;
  c.y.terms = l.in_channels * taps;
  c.dx.terms = l.out_channels * taps;
  // The filter gradient sums over the batch and the positions of the conv's output grid: the
  // layer output for a Conv2d, the layer input for a transposed one.
  c.dw.terms = int64_t(batch) * (l.kind == LayerKind::Conv2d ? int64_t(l.out_h) * l.out_w
                                                             : int64_t(l.in_h) * l.in_w);
  const std::vector<double> zero_bias(size_t(l.out_channels), 0.0);
  for (bool absolute : {false, true}) {
    const std::vector<double> x = to_double(c.x, absolute), w = to_double(c.w, absolute),
                              dy = to_double(c.dy, absolute);
    std::vector<double> y(dy.size()), dx(x.size()), dw(w.size()), db(size_t(l.out_channels));
    if (l.kind == LayerKind::Conv2d) {
      cpu::conv2d_forward(y.data(), x.data(), w.data(), zero_bias.data(), batch, l);
      cpu::conv2d_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), batch,
                           l);
    } else {
      cpu::conv_transpose2d_forward(y.data(), x.data(), w.data(), zero_bias.data(), batch, l);
      cpu::conv_transpose2d_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(),
                                     batch, l);
    }
    (absolute ? c.y.abs : c.y.ref) = std::move(y);
    (absolute ? c.dx.abs : c.dx.ref) = std::move(dx);
    (absolute ? c.dw.abs : c.dw.ref) = std::move(dw);
  }
  return c;
}

struct Bf16ConvOutputs {
  std::vector<bf16> y, dx, dw;
};

// Device copies of a case's inputs and guarded room for the three outputs.
struct Bf16ConvBuffers {
  DeviceBuffer<bf16> x, w, dy;
  Guarded<bf16> y, dx, dw;
  Bf16ConvBuffers(const Bf16ConvCase& c, cudaStream_t s)
      : x(to_device(c.x, s)),
        w(to_device(c.w, s)),
        dy(to_device(c.dy, s)),
        y(c.dy.size()),
        dx(c.x.size()),
        dw(c.w.size()) {}

  // Poisons the outputs, runs the three passes, downloads the results.
  Bf16ConvOutputs run(const ConvOp& op, DeviceBuffer<unsigned char>& ws, cudaStream_t s) {
    y.poison(s), dx.poison(s), dw.poison(s);
    op.forward(y.data(), x.data(), w.data(), ws.data(), ws.size());
    op.backward_data(dx.data(), dy.data(), w.data(), ws.data(), ws.size());
    op.backward_filter(dw.data(), x.data(), dy.data(), ws.data(), ws.size());
    return {y.get(s, "y"), dx.get(s, "dx"), dw.get(s, "dw")};
  }
};

}  // namespace

TEST_CASE("ConvOp with ConvMath::Bf16 matches a double reference on the bf16 inputs",
          "[gpu][bf16][conv]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  CudnnHandle cudnn(s);
  // NHWC: the same inputs permuted into channels-last order, the outputs permuted back.
  const ConvLayout layout = GENERATE(ConvLayout::Nchw, ConvLayout::Nhwc);
  const bool nhwc = layout == ConvLayout::Nhwc;
  for (const Layer& l : model_conv_layers())
    for (int batch : {1, 3, 129}) {
      INFO(conv_label(l, batch) << ", " << layout_name(layout));
      const Bf16ConvCase c = make_conv_case(l, batch, rng);
      Bf16ConvBuffers b(nhwc ? channels_last(c, l, batch) : c, s);
      auto run = [&](const ConvOp& op, DeviceBuffer<unsigned char>& ws) {
        return in_reference_layout(b.run(op, ws, s), l, batch, layout);
      };
      for (ConvAlgoPolicy policy : {ConvAlgoPolicy::Deterministic, ConvAlgoPolicy::Fastest}) {
        INFO("policy " << (policy == ConvAlgoPolicy::Deterministic ? "Deterministic" : "Fastest"));
        const ConvOp op(cudnn, l, batch, ConvMath::Bf16, policy, layout);
        INFO(op.describe());
        REQUIRE(op.is_bf16());
        REQUIRE(op.layout() == layout);
        DeviceBuffer<unsigned char> ws(op.workspace_bytes(), "the conv workspace");
        const Bf16ConvOutputs got = run(op, ws);
        // Every output bf16, each rounded once from its fp32 accumulation (dw too); LOOSER for a
        // pass the Fastest policy gave to FFT or Winograd (kTransformRmsFraction).
        check_gemm(got.y, c.y, "forward y", op.uses_transform(ConvPass::Forward));
        check_gemm(got.dx, c.dx, "backward_data dx", op.uses_transform(ConvPass::BackwardData));
        check_gemm(got.dw, c.dw, "backward_filter dw", op.uses_transform(ConvPass::BackwardFilter));
        if (policy == ConvAlgoPolicy::Deterministic) {  // and the same bits again
          const Bf16ConvOutputs again = run(op, ws);
          require_same_run(again.y, got.y, "y");
          require_same_run(again.dx, got.dx, "dx");
          require_same_run(again.dw, got.dw, "dw");
        }
      }
    }
}

TEST_CASE("ConvOp refuses float tensors on a Bf16 op and bf16 tensors on an fp32 op",
          "[gpu][bf16][conv]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  CudnnHandle cudnn(s);
  const Layer l = make_vae(2).layer(kEncConv2);
  const int batch = 3;
  INFO(conv_label(l, batch));
  const size_t nx = size_t(batch) * size_t(l.in_size()), ny = size_t(batch) * size_t(l.out_size()),
               nw = size_t(l.in_channels) * l.out_channels * l.kernel * l.kernel;
  const DeviceBuffer<float> fx = to_device(uniform(rng, nx, -1, 1), s),
                            fw = to_device(uniform(rng, nw, -1, 1), s),
                            fdy = to_device(uniform(rng, ny, -1, 1), s);
  const DeviceBuffer<bf16> hx = to_device(uniform_bf16(rng, nx, -1, 1), s),
                           hw = to_device(uniform_bf16(rng, nw, -1, 1), s),
                           hdy = to_device(uniform_bf16(rng, ny, -1, 1), s);
  DeviceBuffer<float> fy(ny), fdx(nx), fdw(nw);
  DeviceBuffer<bf16> hy(ny), hdx(nx), hdw(nw);
  for (auto* buf : {&fy, &fdx, &fdw}) poison_device(*buf, s);
  for (auto* buf : {&hy, &hdx, &hdw}) poison_device(*buf, s);

  const ConvOp lo(cudnn, l, batch, ConvMath::Bf16, ConvAlgoPolicy::Deterministic);
  const ConvOp hi(cudnn, l, batch, ConvMath::Fp32Strict, ConvAlgoPolicy::Deterministic);
  CHECK(lo.is_bf16());
  CHECK_FALSE(hi.is_bf16());
  CHECK_FALSE(ConvOp(cudnn, l, batch, ConvMath::Tf32, ConvAlgoPolicy::Deterministic).is_bf16());
  DeviceBuffer<unsigned char> ws(std::max(lo.workspace_bytes(), hi.workspace_bytes()), "ws");
  CHECK_THROWS_AS(lo.forward(fy.data(), fx.data(), fw.data(), ws.data(), ws.size()), Error);
  CHECK_THROWS_AS(lo.backward_data(fdx.data(), fdy.data(), fw.data(), ws.data(), ws.size()), Error);
  CHECK_THROWS_AS(lo.backward_filter(fdw.data(), fx.data(), fdy.data(), ws.data(), ws.size()),
                  Error);
  CHECK_THROWS_AS(hi.forward(hy.data(), hx.data(), hw.data(), ws.data(), ws.size()), Error);
  CHECK_THROWS_AS(hi.backward_data(hdx.data(), hdy.data(), hw.data(), ws.data(), ws.size()), Error);
  CHECK_THROWS_AS(hi.backward_filter(hdw.data(), hx.data(), hdy.data(), ws.data(), ws.size()),
                  Error);
  // Nothing was launched: every output still holds the poison.
  for (const auto* buf : {&fy, &fdx, &fdw}) {
    const std::vector<float> v = to_host(*buf, s);
    CHECK(std::all_of(v.begin(), v.end(), [](float f) { return is_poison(f); }));
  }
  for (const auto* buf : {&hy, &hdx, &hdw}) {
    const std::vector<bf16> v = to_host(*buf, s);
    CHECK(std::all_of(v.begin(), v.end(), [](bf16 f) { return is_poison(f); }));
  }
}

// ---- the fused loss -----------------------------------------------------------------------------

TEST_CASE("bce_kl_loss_fused in bf16 is the float kernel on the widened logits, rounded",
          "[gpu][bf16][loss]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int batch = GENERATE(1, 3, 129, 1000);
  const int dim = GENERATE(2, 17);
  const int pixels = 784;
  INFO("batch " << batch << " D " << dim);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  const size_t n = size_t(batch) * pixels, nz = size_t(batch) * dim, nb = size_t(batch);
  const std::vector<bf16> pre_bias = uniform_bf16(rng, n, -8, 8);
  const std::vector<float> pre_bias_f = widen_all(pre_bias);  // the same logits, as float
  const std::vector<float> bias = uniform(rng, 1, -1, 1);
  std::vector<float> x = uniform(rng, n, 0, 1);
  for (size_t i = 0; i < n; i += 7) x[i] = float(i % 2);  // exact 0 and 1 targets too
  const std::vector<float> mu = uniform(rng, nz, -2, 2), logvar = uniform(rng, nz, -3, 1);
  const std::vector<double> start{12.5, -3.25};  // the sums are added to, not set

  const DeviceBuffer<bf16> d_pre = to_device(pre_bias, s);
  const DeviceBuffer<float> d_pre_f = to_device(pre_bias_f, s), d_bias = to_device(bias, s),
                            d_x = to_device(x, s), d_mu = to_device(mu, s),
                            d_lv = to_device(logvar, s);

  // The float kernel (itself tested against the unfused kernels and the CPU in test_kernels).
  DeviceBuffer<float> f_dl(n), f_recon(nb), f_kl(nb), f_db(1);
  DeviceBuffer<double> f_image_dsum(nb);
  DeviceBuffer<double> f_sums = to_device(start, s);
  DeviceBuffer<unsigned> f_ticket = to_device(std::vector<unsigned>{0}, s);
  FusedLossArgs fa{};
  fa.dlogits = f_dl.data(), fa.recon = f_recon.data(), fa.kl = f_kl.data();
  fa.image_dsum = f_image_dsum.data(), fa.sums = f_sums.data(), fa.dbias = f_db.data();
  fa.blocks_done = f_ticket.data();
  fa.pre_bias = d_pre_f.data(), fa.bias = d_bias.data(), fa.x = d_x.data();
  fa.mu = d_mu.data(), fa.logvar = d_lv.data();
  bce_kl_loss_fused(fa, batch, pixels, dim, s);
  const std::vector<float> f_dlogits = to_host(f_dl, s);

  Guarded<bf16> dl(n);
  Guarded<float> recon(nb), kl(nb), db(1);
  DeviceBuffer<double> image_dsum(nb);
  DeviceBuffer<double> sums = to_device(start, s);
  DeviceBuffer<unsigned> ticket = to_device(std::vector<unsigned>{0}, s);
  FusedLossArgsBf16 a{};
  a.dlogits = dl.data(), a.recon = recon.data(), a.kl = kl.data();
  a.image_dsum = image_dsum.data(), a.sums = sums.data(), a.dbias = db.data();
  a.blocks_done = ticket.data();
  a.pre_bias = d_pre.data(), a.bias = d_bias.data(), a.x = d_x.data();
  a.mu = d_mu.data(), a.logvar = d_lv.data();
  auto run = [&] {
    dl.poison(s), recon.poison(s), kl.poison(s), db.poison(s);
    poison_device(image_dsum, s);  // scratch: the kernel must write before it reads
    bce_kl_loss_fused(a, batch, pixels, dim, s);
    return dl.get(s, "dlogits");
  };
  const std::vector<bf16> got_dl = run();

  // The same float logits and float arithmetic: recon, kl and the sums to the bit.
  require_same_bits(recon.get(s, "recon"), to_host(f_recon, s), "recon");
  require_same_bits(kl.get(s, "kl"), to_host(f_kl, s), "kl");
  const std::vector<double> once = to_host(sums, s);
  require_same_bits(once, to_host(f_sums, s), "sums");
  // Each gradient the float kernel's value rounded to nearest even.
  require_same_bits(got_dl, round_all(f_dlogits), "dlogits");
  REQUIRE(to_host(ticket, s)[0] == 0u);  // ready for the next step
  // The bias gradient: the stored bf16 gradients summed in double, rounded once.
  RefSum want_db;
  for (bf16 g : got_dl) want_db.add(double(widen(g)));
  const std::vector<float> got_db = db.get(s, "dbias");
  require_sums(got_db, {want_db}, "dbias");

  // A second launch adds the same batch sums again and gives the same bits.
  const std::vector<bf16> again = run();
  bce_kl_loss_fused(fa, batch, pixels, dim, s);
  require_same_bits(to_host(sums, s), to_host(f_sums, s), "sums after two launches");
  require_same_run(again, got_dl, "dlogits");
  require_same_run(db.get(s, "dbias"), got_db, "dbias");
  REQUIRE(to_host(ticket, s)[0] == 0u);
}

// ---- argument checks ----------------------------------------------------------------------------

TEST_CASE("the bf16 launchers reject nonsense sizes and null pointers", "[gpu][bf16]") {
  CudaStream stream;
  const cudaStream_t s = stream.get();
  DeviceBuffer<float> f(64);
  DeviceBuffer<bf16> h(64);
  float* p = f.data();
  bf16* q = h.data();

  CHECK_THROWS_AS(to_bf16(nullptr, p, 4, s), Error);
  CHECK_THROWS_AS(to_bf16(q, nullptr, 4, s), Error);
  CHECK_NOTHROW(to_bf16(nullptr, nullptr, 0, s));  // nothing to do

  CHECK_THROWS_AS(bias_act_forward(q, p, 0, 1, 1, true, s), Error);
  CHECK_THROWS_AS(bias_act_forward(q, p, 1, 0, 1, true, s), Error);
  CHECK_THROWS_AS(bias_act_forward(q, p, 1, 1, 0, true, s), Error);
  CHECK_THROWS_AS(bias_act_forward(q, static_cast<const float*>(nullptr), 1, 1, 1, true, s), Error);
  CHECK_THROWS_AS(bias_act_forward(q, p, p + 32, 0, 1, 1, true, s), Error);
  CHECK_THROWS_AS(bias_act_forward(q, nullptr, p + 32, 1, 1, 1, true, s), Error);
  CHECK_THROWS_AS(bias_act_backward(q, p, q + 32, -1, 1, 1, true, s), Error);
  CHECK_THROWS_AS(bias_act_backward(q, nullptr, q + 32, 1, 1, 1, true, s), Error);
  CHECK_THROWS_AS(bias_act_backward(p, p + 32, q, q + 32, 1, 1, 0, true, s), Error);
  CHECK_THROWS_AS(bias_act_backward(p, nullptr, q, q + 32, 1, 1, 1, true, s), Error);
  CHECK_THROWS_AS(bias_act_backward(q, p, p + 16, p + 32, 1, 0, 1, true, s), Error);
  CHECK_THROWS_AS(bias_act_backward(q, p, nullptr, p + 32, 1, 1, 1, true, s), Error);

  const CublasHandle cublas(s, false);
  CHECK_THROWS_AS(dense_forward(cublas, p, q, q + 32, 0, 2, 2), Error);
  CHECK_THROWS_AS(dense_forward(cublas, p, static_cast<const bf16*>(nullptr), q + 32, 2, 2, 2),
                  Error);
  CHECK_THROWS_AS(dense_backward_data(cublas, q, q + 16, q + 32, 2, 0, 2), Error);
  CHECK_THROWS_AS(dense_backward_filter(cublas, p, q, q + 32, 2, 2, -1), Error);

  DeviceBuffer<double> d(2);
  DeviceBuffer<unsigned> ticket(1);
  FusedLossArgsBf16 fa{q,      p + 8,  p + 16, d.data(), d.data(), p + 24, ticket.data(),
                       q + 32, p + 27, p + 28, p + 29,   p + 30};
  CHECK_THROWS_AS(bce_kl_loss_fused(fa, 0, 4, 2, s), Error);
  CHECK_THROWS_AS(bce_kl_loss_fused(fa, 1, 4, 0, s), Error);
  fa.blocks_done = nullptr;
  CHECK_THROWS_AS(bce_kl_loss_fused(fa, 1, 4, 2, s), Error);
  stream.synchronize();  // nothing above launched anything that could fault
}
