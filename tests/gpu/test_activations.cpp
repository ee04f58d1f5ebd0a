// GPU tests of the bias + activation kernels (cuda/kernels/activations.cuh): bias_act_forward and
// bias_act_backward (its deterministic bias gradient, the sliced column reduction with scratch),
// add_inplace, in fp32 against the CPU reference (host/cpu/cpu_ref.h) and in their bf16 forms
// against the float arithmetic rounded once: fresh random inputs at awkward shapes, every output
// poisoned before each launch, each launch repeated for the same bits. The bias gradient's
// reference sums and scratch: bias_grad.h.
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
#include "cuda/runtime/device_buffer.cuh"
#include "host/cpu/cpu_ref.h"
#include "tests/gpu/bias_grad.h"
#include "tests/gpu/checks.h"
#include "tests/gpu/device_io.h"
#include "tests/test_support.h"

using namespace cuvae;
using namespace cuvae::test;

namespace {

// (batch, channels, plane) shapes for the bias/activation kernels: every awkward batch with the
// model's planes (a Linear output is plane 1), channel counts that are not multiples of the
// 32-channel tile, and the two production shapes of the brief.
struct Shape {
  int batch, channels;
  int64_t plane;
};

std::vector<Shape> activation_shapes() {
  std::vector<Shape> shapes;
  for (int batch : {1, 3, 127, 129})
    for (int64_t plane : {1, 49, 196, 784}) shapes.push_back({batch, plane == 1 ? 33 : 5, plane});
  shapes.push_back({128, 32, 784});  // conv layer, one block per channel
  shapes.push_back({128, 3136, 1});  // Linear (B, 7*7*64), the channel-tiled kernel
  shapes.push_back({129, 1, 784});   // one channel (the decoder's output layer)
  shapes.push_back({3, 4097, 1});    // partial last tile of 32 channels
  shapes.push_back({1, 1, 1});
  return shapes;
}

// NaN, +Inf and -Inf in turn in dy at dead units (y == 0; every 7th position looked at, up to 30
// of them). Behind a dead unit the gradient is dropped by a select, not a multiply by 0: they must
// come out as 0 (as in cpu::relu_backward) and never poison db.
void specials_behind_dead_units(std::vector<float>& dy, const std::vector<float>& y) {
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity()};
  int k = 0;
  for (size_t i = 0; i < dy.size() && k < 30; i += 7)
    if (y[i] == 0.0f) dy[i] = specials[k++ % 3];
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

// ---- bias + activation --------------------------------------------------------------------------

TEST_CASE("bias_act_forward adds the channel bias and applies ReLU exactly",
          "[gpu][kernels][activations]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const bool relu = GENERATE(true, false);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  for (const Shape& sh : activation_shapes()) {
    INFO("shape (" << sh.batch << ", " << sh.channels << ", " << sh.plane << ") relu " << relu);
    const size_t n = size_t(sh.batch) * sh.channels * size_t(sh.plane);
    std::vector<float> y = uniform(rng, n, -1, 1);
    std::vector<float> bias = uniform(rng, size_t(sh.channels), -0.5, 0.5);
    // Signed zeros: -0 + -0 = -0 must become +0 under ReLU (v > 0 ? v : 0, as the CPU), which a
    // kernel using fmaxf(v, 0) may not do; and y = -bias gives exactly +0.
    bias[0] = -0.0f;
    for (size_t i = 0; i < std::min<size_t>(n, size_t(sh.plane)); i += 2) y[i] = -0.0f;
    if (n > 1) y[n - 1] = -bias[size_t(sh.channels) - 1];

    std::vector<float> want = y;
    for (int b = 0; b < sh.batch; ++b)
      for (int c = 0; c < sh.channels; ++c)
        for (int64_t p = 0; p < sh.plane; ++p) {
          float& v = want[(size_t(b) * sh.channels + size_t(c)) * size_t(sh.plane) + size_t(p)];
          v = v + bias[size_t(c)];
        }
    if (relu) cpu::relu_forward(want.data(), want.data(), n);

    auto d_y = to_device(y, s);
    const auto d_bias = to_device(bias, s);
    auto run = [&] {
      upload(d_y, y, s);  // in place: restart from the same input
      bias_act_forward(d_y.data(), d_bias.data(), sh.batch, sh.channels, sh.plane, relu, s);
      return to_host(d_y, s);
    };
    const auto got = run();
    // Exact: one fp32 add and a select, identical on both sides.
    require_bitwise_equal(got, want, "y");
    require_same_run(run(), got, "y");
  }
}

TEST_CASE("bias_act_backward masks dy and reduces db deterministically",
          "[gpu][kernels][activations]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const bool relu = GENERATE(true, false);
  // shift 1 places dy and y 4 bytes past a 16-byte boundary, which must send planes that are
  // multiples of 4 down the scalar path instead of the float4 one.
  const size_t shift = GENERATE(size_t(0), size_t(1));
  CudaStream stream;
  const cudaStream_t s = stream.get();
  for (const Shape& sh : activation_shapes()) {
    INFO("shape (" << sh.batch << ", " << sh.channels << ", " << sh.plane << ") relu " << relu
                   << " shift " << shift);
    const size_t n = size_t(sh.batch) * sh.channels * size_t(sh.plane);
    std::vector<float> dy = uniform(rng, n, -1, 1);
    std::vector<float> y = uniform(rng, n, -1, 1);
    cpu::relu_forward(y.data(), y.data(), n);  // a post-ReLU output: about half exact zeros
    if (relu) specials_behind_dead_units(dy, y);

    std::vector<float> dy_want = dy;
    if (relu) cpu::relu_backward(dy_want.data(), dy_want.data(), y.data(), n);
    std::vector<double> db_sum(size_t(sh.channels), 0.0);  // the definition, summed in double
    for (int b = 0; b < sh.batch; ++b)
      for (int c = 0; c < sh.channels; ++c)
        for (int64_t p = 0; p < sh.plane; ++p)
          db_sum[size_t(c)] +=
              double(dy_want[(size_t(b) * sh.channels + size_t(c)) * size_t(sh.plane) + size_t(p)]);
    const std::vector<float> db_want(db_sum.begin(), db_sum.end());

    // Device images: `shift` pad floats, the tensor, then kGuard guard floats that no launch may
    // touch (dy is written in place, so a write past either end would show there).
    constexpr size_t kGuard = 5;
    constexpr float kGuardValue = 12345.0f;
    auto placed = [&](const std::vector<float>& v) {
      std::vector<float> out(shift, kGuardValue);
      out.insert(out.end(), v.begin(), v.end());
      out.insert(out.end(), kGuard, kGuardValue);
      return out;
    };
    const std::vector<float> dy_placed = placed(dy);
    auto d_dy = to_device(dy_placed, s);
    const auto d_y = to_device(placed(y), s);
    DeviceBuffer<float> d_db(size_t(sh.channels));
    auto run = [&] {
      upload(d_dy, dy_placed, s);  // in place: restart from the same input
      poison_device(d_db, s);
      bias_act_backward(d_dy.data() + shift, d_db.data(), d_y.data() + shift, sh.batch, sh.channels,
                        sh.plane, relu, s);
      return std::make_pair(to_host(d_dy, s), to_host(d_db, s));
    };
    const auto got = run();
    for (size_t i = 0; i < got.first.size(); ++i)
      if (i < shift || i >= shift + n) {
        INFO("guard float " << i << " of dy's buffer");
        REQUIRE(got.first[i] == kGuardValue);
      }
    // dy: exact, a select per element.
    require_bitwise_equal(std::vector<float>(got.first.begin() + ptrdiff_t(shift),
                                             got.first.begin() + ptrdiff_t(shift + n)),
                          dy_want, "dy");
    // db: both sides sum the same floats in double, in different orders (a tree on the GPU):
    // the double sums differ by ~1e-16 relative and the float results by at most one rounding
    // (1.2e-7). floor 1e-3 (|db| reaches ~300) keeps channels that sum to ~0 meaningful; one
    // missing or doubled element (|dy| ~ 0.5) would be off by > 1e-3 relative.
    REQUIRE_MAX_REL(compare(got.second.data(), db_want.data(), db_want.size(), 1e-3), "db", 1e-6);
    const auto again = run();
    require_same_run(again.first, got.first, "dy");
    require_same_run(again.second, got.second, "db");
  }
}

// ---- bias_act_backward with scratch: the sliced column reduction (plane == 1) -------------------

namespace {

// (rows, channels) of a plane == 1 bias gradient: one slice short of the threshold (1023 rows),
// the first sliced size (1024: two slices of 512), an odd count, a Linear layer at large
// batches (decoder.fc's 3136 features), the model's channels-last conv outputs at batch 128
// (128*28*28 = 100352 rows of 32 channels, 128*14*14 = 25088 rows of 64), 33 channels (a
// partial last tile of 32), and single long columns: 512001 rows (1000 slices of 512 and a
// last one of 1), 524289 rows (1022 slices of 513, the last of 3) and 1000003 rows (977-row
// slices: the cap of 1024 slices).
std::vector<Rows> sliced_shapes() {
  return {{1023, 32},  {1023, 3136}, {1024, 1},   {1024, 64},   {5000, 33},
          {5000, 1},   {4097, 3136}, {25088, 64}, {100352, 32}, {100352, 1},
          {512001, 1}, {524289, 2},  {1000003, 3}};
}

// Multiples of 2^-10 in [-1, 1]: any sum of up to 2^43 of them is exact in double, so a column
// sum cannot depend on the order of its additions and db must equal float(the exact sum) bit
// for bit, sliced or not. A missing, doubled or misplaced term, however small, shows.
std::vector<float> dyadic(std::mt19937_64& rng, size_t n) {
  std::uniform_int_distribution<int> k(-1024, 1024);
  std::vector<float> v(n);
  for (float& x : v) x = float(k(rng)) * 0x1p-10f;
  return v;
}

// db against the reference column sums: with dyadic inputs (exact) float(the sum) bit for bit,
// else within sum_bound (tests/gpu/bias_grad.h) of the sum.
void require_column_sums(const std::vector<float>& db, const std::vector<RefSum>& want, bool exact,
                         const std::string& name) {
  REQUIRE(db.size() == want.size());
  if (!exact) {
    require_sums(db, want, name);
    return;
  }
  std::vector<float> rounded(want.size());
  for (size_t c = 0; c < want.size(); ++c) rounded[c] = float(want[c].sum);
  require_bitwise_equal(db, rounded, name + " (exact sums)");
}

// bias_act_backward in place on one (batch, channels, plane) case with ReLU or not: each run(sc)
// restarts from the same dy, poisons db, launches with the scratch sc and returns (dy, db).
class InPlaceBackward {
 public:
  InPlaceBackward(const std::vector<float>& dy, const std::vector<float>& y, Shape sh, bool relu,
                  cudaStream_t s)
      : dy_(dy),
        d_dy_(to_device(dy, s)),
        d_y_(to_device(y, s)),
        d_db_(size_t(sh.channels)),
        sh_(sh),
        relu_(relu),
        s_(s) {}
  std::pair<std::vector<float>, std::vector<float>> run(const BiasGradScratch* sc) {
    upload(d_dy_, dy_, s_);
    poison_device(d_db_, s_);
    bias_act_backward(d_dy_.data(), d_db_.data(), d_y_.data(), sh_.batch, sh_.channels, sh_.plane,
                      relu_, s_, sc);
    return {to_host(d_dy_, s_), to_host(d_db_, s_)};
  }

 private:
  const std::vector<float>& dy_;
  DeviceBuffer<float> d_dy_;
  const DeviceBuffer<float> d_y_;
  DeviceBuffer<float> d_db_;
  Shape sh_;
  bool relu_;
  cudaStream_t s_;
};

}  // namespace

TEST_CASE("bias_grad_slices and bias_grad_scratch_doubles follow the shape alone",
          "[gpu][kernels][activations]") {
  // 1 slice below 1024 rows; from there slices of 512 rows (ceil(rows / 1024) past 524,288
  // rows, so that there are at most 1024), the last one shorter but never empty.
  for (int rows = 0; rows <= (1 << 20) + 3; ++rows) {
    const int slices = bias_grad_slices(rows), slice_rows = bias_grad_slice_rows(rows);
    const int want_rows = rows < 1024 ? rows : std::max(512, (rows + 1023) / 1024);
    const int want = rows < 1024 ? 1 : (rows + want_rows - 1) / want_rows;
    const bool covers = rows < 1024 || (int64_t(slices - 1) * slice_rows < rows &&
                                        int64_t(slices) * slice_rows >= rows && slices <= 1024);
    if (slices != want || slice_rows != want_rows || !covers) {
      INFO("rows " << rows << ": " << slices << " slices of " << slice_rows);
      REQUIRE(slices == want);
      REQUIRE(slice_rows == want_rows);
      REQUIRE(covers);
    }
  }
  CHECK(bias_grad_slices(1023) == 1);
  CHECK(bias_grad_slices(1024) == 2);
  CHECK(bias_grad_slices(1535) == 3);  // 512 + 512 + 511
  CHECK(bias_grad_slices(1536) == 3);
  CHECK(bias_grad_slices(100352) == 196);
  CHECK(bias_grad_slices(524288) == 1024);
  CHECK(bias_grad_slice_rows(524289) == 513);
  CHECK(bias_grad_slices(524289) == 1023);
  CHECK(bias_grad_slices(std::numeric_limits<int>::max()) == 1024);
  CHECK(bias_grad_slice_rows(std::numeric_limits<int>::max()) == 2097152);

  // slices * channels when sliced, else 0; 0 for plane != 1 (the channel kernel takes no scratch)
  // and for an empty shape.
  CHECK(bias_grad_scratch_doubles(1023, 3136, 1) == 0);
  CHECK(bias_grad_scratch_doubles(1024, 64, 1) == 2 * 64);
  CHECK(bias_grad_scratch_doubles(5000, 33, 1) == 10 * 33);
  CHECK(bias_grad_scratch_doubles(100352, 32, 1) == 196 * 32);
  CHECK(bias_grad_scratch_doubles(4097, 3136, 1) == 9 * 3136);
  CHECK(bias_grad_scratch_doubles(2000000, 3136, 1) == size_t(1024) * 3136);
  CHECK(bias_grad_scratch_doubles(100352, 32, 784) == 0);
  CHECK(bias_grad_scratch_doubles(100352, 32, 2) == 0);
  CHECK(bias_grad_scratch_doubles(0, 32, 1) == 0);
  CHECK(bias_grad_scratch_doubles(100352, 0, 1) == 0);
  for (const Rows& sh : sliced_shapes()) {
    INFO("rows " << sh.rows << " channels " << sh.channels);
    const int slices = bias_grad_slices(sh.rows);
    CHECK(bias_grad_scratch_doubles(sh.rows, sh.channels, 1) ==
          (slices > 1 ? size_t(slices) * size_t(sh.channels) : 0));
  }
}

TEST_CASE("bias_act_backward with scratch reduces long columns in slices, deterministically",
          "[gpu][kernels][activations]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const bool relu = GENERATE(true, false);
  const bool exact = GENERATE(false, true);  // dyadic dy: every double sum exact (see dyadic())
  CudaStream stream;
  const cudaStream_t s = stream.get();
  const std::vector<Rows> shapes = sliced_shapes();
  const size_t capacity = scratch_capacity(shapes);
  // One scratch for every shape (its ticket is rearmed by each call, whatever the grid), and a
  // second one elsewhere in memory: the bits depend on the shape only, not on the scratch.
  DeviceScratch scratch(capacity, s), other(capacity + 7, s);
  const BiasGradScratch view = scratch.view(), other_view = other.view();
  for (const Rows& sh : shapes) {
    const int slices = bias_grad_slices(sh.rows);
    INFO("rows " << sh.rows << " channels " << sh.channels << " (" << slices << " slices) relu "
                 << relu << (exact ? " dyadic" : " uniform"));
    const size_t n = size_t(sh.rows) * size_t(sh.channels);
    std::vector<float> dy = exact ? dyadic(rng, n) : uniform(rng, n, -1, 1);
    std::vector<float> y = uniform(rng, n, -1, 1);
    cpu::relu_forward(y.data(), y.data(), n);  // a post-ReLU output: about half exact zeros
    if (relu) specials_behind_dead_units(dy, y);
    std::vector<float> dy_want = dy;
    if (relu) cpu::relu_backward(dy_want.data(), dy_want.data(), y.data(), n);
    const std::vector<RefSum> want = channel_sums(dy_want, sh.channels, 1);

    InPlaceBackward backward(dy, y, {sh.rows, sh.channels, 1}, relu, s);
    // Every run restarts from the same dy (in place), poisons db and the partial sums (a slice
    // sum read before it is written would be a NaN in db), and leaves the ticket at 0.
    auto run = [&](const BiasGradScratch* sc) {
      poison_device(scratch.partial, s);
      poison_device(other.partial, s);
      auto out = backward.run(sc);
      INFO("the ticket after the call");
      REQUIRE(scratch.ticket_value(s) == 0u);
      REQUIRE(other.ticket_value(s) == 0u);
      return out;
    };

    const auto got = run(&view);
    // dy: a select per element, exact (without relu, in place, it is left as it was).
    require_bitwise_equal(got.first, dy_want, "dy");
    require_column_sums(got.second, want, exact, "db (with scratch)");
    // The same scratch again (its ticket rearmed), then another scratch: the same bits.
    const auto again = run(&view);
    require_same_run(again.first, got.first, "dy");
    require_same_run(again.second, got.second, "db (with scratch)");
    require_same_run(run(&other_view).second, got.second, "db (another scratch)");

    // Without scratch: the single-slice reduction as before, within the same bound of the
    // reference (so within twice it of the sliced result), reproducible; the same bits as the
    // sliced one when the shape needs one slice anyway, or when every sum is exact.
    const auto plain = run(nullptr);
    require_bitwise_equal(plain.first, dy_want, "dy (no scratch)");
    require_column_sums(plain.second, want, exact, "db (no scratch)");
    require_same_run(run(nullptr).second, plain.second, "db (no scratch)");
    if (slices == 1 || exact)
      require_bitwise_equal(got.second, plain.second, "db, with vs without");
  }
}

TEST_CASE("bias_act_backward ignores scratch where one slice or the channel kernel serves",
          "[gpu][kernels][activations]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  // A scratch that would be refused if used (no partial sums, no ticket, no capacity), and a
  // real one whose ticket must stay untouched.
  const BiasGradScratch empty{};
  DeviceScratch real(size_t(1024) * 64, s);
  const BiasGradScratch real_view = real.view();
  // (batch, channels, plane): one slice (plane 1, fewer than 1024 rows) and the channel kernel
  // (plane > 1, with many more than 1024 rows in total), scalar and float4 paths.
  const Shape shapes[] = {{1023, 64, 1}, {1, 3136, 1}, {2048, 3, 49}, {4096, 2, 196}};
  for (const Shape& sh : shapes) {
    INFO("shape (" << sh.batch << ", " << sh.channels << ", " << sh.plane << ")");
    const size_t n = size_t(sh.batch) * sh.channels * size_t(sh.plane);
    const std::vector<float> dy = uniform(rng, n, -1, 1);
    std::vector<float> y = uniform(rng, n, -1, 1);
    cpu::relu_forward(y.data(), y.data(), n);
    InPlaceBackward backward(dy, y, sh, true, s);
    std::vector<float> dy_want = dy;
    cpu::relu_backward(dy_want.data(), dy_want.data(), y.data(), n);
    const auto plain = backward.run(nullptr);
    require_bitwise_equal(plain.first, dy_want, "dy (no scratch)");
    REQUIRE(std::all_of(plain.second.begin(), plain.second.end(),
                        [](float v) { return std::isfinite(v); }));  // db (no scratch)
    std::pair<std::vector<float>, std::vector<float>> with_empty, with_real;
    REQUIRE_NOTHROW(with_empty = backward.run(&empty));
    REQUIRE_NOTHROW(with_real = backward.run(&real_view));
    require_bitwise_equal(with_empty.first, plain.first, "dy, empty scratch vs none");
    require_bitwise_equal(with_empty.second, plain.second, "db, empty scratch vs none");
    require_bitwise_equal(with_real.first, plain.first, "dy, scratch vs none");
    require_bitwise_equal(with_real.second, plain.second, "db, scratch vs none");
    REQUIRE(real.ticket_value(s) == 0u);
  }
}

TEST_CASE("bias_act_backward checks its scratch before launching", "[gpu][kernels][activations]") {
  CudaStream stream;
  const cudaStream_t s = stream.get();
  const int rows = 5000, channels = 64;  // 9 slices: 576 partial sums
  const size_t need = bias_grad_scratch_doubles(rows, channels, 1);
  REQUIRE(need == 9 * 64);
  const size_t n = size_t(rows) * channels;
  const std::vector<float> dy(n, 0.25f), y(n, 1.0f);
  auto d_dy = to_device(dy, s);
  const auto d_y = to_device(y, s);
  DeviceBuffer<float> d_db(static_cast<size_t>(channels));
  DeviceScratch scratch(need, s);
  poison_device(d_db, s);

  // The message, or "" when nothing is thrown.
  auto message = [&](const BiasGradScratch& sc) -> std::string {
    try {
      bias_act_backward(d_dy.data(), d_db.data(), d_y.data(), rows, channels, 1, true, s, &sc);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  const std::string too_small = message({scratch.partial.data(), scratch.ticket.data(), need - 1});
  INFO("too small: \"" << too_small << "\"");
  REQUIRE_FALSE(too_small.empty());
  CHECK_THAT(too_small, Catch::Contains(std::to_string(need)));      // what the shape needs
  CHECK_THAT(too_small, Catch::Contains(std::to_string(need - 1)));  // what it was given
  CHECK_FALSE(message({nullptr, scratch.ticket.data(), need}).empty());
  CHECK_FALSE(message({scratch.partial.data(), nullptr, need}).empty());
  CHECK_FALSE(message({nullptr, nullptr, 0}).empty());
  // Nothing was launched: db still holds the poison, dy its values, the ticket 0.
  const std::vector<float> db = to_host(d_db, s);
  CHECK(std::all_of(db.begin(), db.end(), [](float v) { return std::isnan(v); }));
  require_bitwise_equal(to_host(d_dy, s), dy, "dy (untouched)");
  CHECK(scratch.ticket_value(s) == 0u);

  // Exactly the size needed is enough: db = 5000 * 0.25 per channel, exact.
  CHECK(message(scratch.view()).empty());
  require_bitwise_equal(to_host(d_db, s), std::vector<float>(size_t(channels), 1250.0f), "db");
  CHECK(scratch.ticket_value(s) == 0u);
}

TEST_CASE("add_inplace adds elementwise", "[gpu][kernels][activations]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const size_t n = GENERATE(size_t(1), size_t(31), size_t(4097), size_t(134165));
  INFO("n " << n);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  const std::vector<float> a = uniform(rng, n, -1, 1), b = uniform(rng, n, -1, 1);
  std::vector<float> want(n);
  for (size_t i = 0; i < n; ++i) want[i] = a[i] + b[i];
  auto d_a = to_device(a, s);
  const auto d_b = to_device(b, s);
  auto run = [&] {
    upload(d_a, a, s);
    add_inplace(d_a.data(), d_b.data(), n, s);
    return to_host(d_a, s);
  };
  const auto got = run();
  require_bitwise_equal(got, want, "a");  // exact: one fp32 add
  require_same_run(run(), got, "a");
}

// ---- bias + activation, bf16 forms --------------------------------------------------------------

TEST_CASE("bf16 bias_act_forward in place: the float add and select, rounded once",
          "[gpu][bf16][activations]") {
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
          "[gpu][bf16][activations]") {
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

TEST_CASE("bf16 bias_act_backward in place masks dy and sums db in double",
          "[gpu][bf16][activations]") {
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
          "[gpu][bf16][activations]") {
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
          "[gpu][bf16][activations]") {
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
          "[gpu][bf16][activations]") {
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
