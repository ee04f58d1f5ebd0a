// GPU tests of the small kernels (cuda/data, shuffle, activations, reparam, loss, adam, and
// their step-table forms) against the CPU
// reference (host/cpu/cpu_ref.h, host/core/batch.h): fresh random inputs at awkward sizes, every
// output poisoned with NaN before each launch, each compared tensor with its own tolerance and the
// reason for it, and each launch repeated to check the results are bit-identical run to run.
// Compiled by the host compiler: it calls only the launchers and the CUDA runtime.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda/kernels/activations.cuh"
#include "cuda/kernels/adam.cuh"
#include "cuda/kernels/data.cuh"
#include "cuda/kernels/loss.cuh"
#include "cuda/kernels/reparam.cuh"
#include "cuda/kernels/shuffle.cuh"
#include "cuda/runtime/device_buffer.cuh"
#include "host/core/batch.h"
#include "host/core/step_scalars.h"
#include "host/cpu/cpu_ref.h"
#include "tests/gpu/bias_grad.h"
#include "tests/gpu/device_io.h"
#include "tests/test_support.h"

using namespace cuvae;
using namespace cuvae::test;

namespace {

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

std::vector<float> uniform(std::mt19937_64& rng, size_t n, double lo, double hi) {
  return test::random_vector<float>(rng, n, lo, hi);
}

double max_abs_of(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::abs(x)));
  return m;
}

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

}  // namespace

// ---- data -------------------------------------------------------------------------------------

TEST_CASE("gather_normalize equals gather_batch bit for bit", "[gpu][kernels]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int count = GENERATE(1, 3, 127, 129);
  const int pixels = GENERATE(784, 31, 256);
  INFO("count " << count << " pixels " << pixels);
  CudaStream stream;
  const cudaStream_t s = stream.get();

  const int n_images = 300;
  std::vector<uint8_t> images(size_t(n_images) * pixels);
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& v : images) v = uint8_t(byte(rng));
  for (int p = 0; p < pixels; ++p) images[size_t(p)] = uint8_t(p % 256);  // 0..255 in image 0
  std::vector<int32_t> index(static_cast<size_t>(count));
  std::uniform_int_distribution<int32_t> pick(0, n_images - 1);
  for (int32_t& i : index) i = pick(rng);
  index.back() = n_images - 1;  // the last image of the set (bounds)
  index.front() = 0;            // every byte value goes through the division

  std::vector<float> want(size_t(count) * pixels);
  gather_batch(want.data(), images.data(), index.data(), count, pixels);

  const auto d_images = to_device(images, s);
  const auto d_index = to_device(index, s);
  DeviceBuffer<float> d_x(want.size());
  auto run = [&] {
    poison_device(d_x, s);
    gather_normalize(d_x.data(), d_images.data(), d_index.data(), count, pixels, s);
    return to_host(d_x, s);
  };
  const auto got = run();
  // Exact: one IEEE division of the same two floats on both sides.
  require_bitwise_equal(got, want, "x");
  require_same_run(run(), got, "x");
}

TEST_CASE("gather_normalize turns a negative index into a NaN row", "[gpu][kernels]") {
  CudaStream stream;
  const cudaStream_t s = stream.get();
  const int pixels = 31;
  const std::vector<uint8_t> images(size_t(2) * pixels, 255);
  const std::vector<int32_t> index{1, -1};
  const auto d_images = to_device(images, s);
  const auto d_index = to_device(index, s);
  DeviceBuffer<float> d_x(size_t(2) * pixels);
  gather_normalize(d_x.data(), d_images.data(), d_index.data(), 2, pixels, s);
  const auto got = to_host(d_x, s);
  for (int p = 0; p < pixels; ++p) {
    INFO("pixel " << p);
    REQUIRE(got[size_t(p)] == 1.0f);
    REQUIRE(std::isnan(got[size_t(pixels + p)]));
  }
}

// ---- bias + activation --------------------------------------------------------------------------

TEST_CASE("bias_act_forward adds the channel bias and applies ReLU exactly", "[gpu][kernels]") {
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

TEST_CASE("bias_act_backward masks dy and reduces db deterministically", "[gpu][kernels]") {
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
          "[gpu][kernels]") {
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
          "[gpu][kernels]") {
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
          "[gpu][kernels]") {
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

TEST_CASE("bias_act_backward checks its scratch before launching", "[gpu][kernels]") {
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

TEST_CASE("add_inplace adds elementwise", "[gpu][kernels]") {
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

// ---- reparameterization -----------------------------------------------------------------------

TEST_CASE("reparam_forward draws the CPU's Philox noise and forms z", "[gpu][kernels]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int batch = GENERATE(1, 3, 127, 129);
  const int dim = GENERATE(1, 2, 17);
  // A noise seed and a step above 2^32, so both words of each reach the counter.
  const uint64_t noise_seed = rng(), step = (uint64_t(1) << 33) + rng() % 100000;
  INFO("batch " << batch << " D " << dim << " noise seed " << noise_seed << " step " << step);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  const size_t n = size_t(batch) * dim;
  // |mu| <= 2, exp(logvar / 2) <= 1.65, |eps| <= 5.8 (the largest Box-Muller radius for a 24-bit
  // uniform), so |z| < 12: the bounds the z tolerance below is derived from.
  const std::vector<float> mu = uniform(rng, n, -2, 2), logvar = uniform(rng, n, -3, 1);
  std::vector<float> eps_want(n);
  fill_eps(eps_want.data(), noise_seed, step, batch, dim);

  const auto d_mu = to_device(mu, s), d_logvar = to_device(logvar, s);
  DeviceBuffer<float> d_z(n), d_eps(n);
  auto run = [&] {
    poison_device(d_z, s);
    poison_device(d_eps, s);
    reparam_forward(d_z.data(), d_eps.data(), d_mu.data(), d_logvar.data(), noise_seed, step, batch,
                    dim, s);
    return std::make_pair(to_host(d_z, s), to_host(d_eps, s));
  };
  const auto got = run();
  // eps: the same Philox words and the same float Box-Muller, but the device logf/cosf differ
  // from glibc's by a few ulp (CUDA: logf 1 ulp, cosf 2 ulp), about 5e-7 relative at most.
  // A wrong counter (index, step or seed word) gives an unrelated value.
  REQUIRE_MAX_REL(compare(got.second.data(), eps_want.data(), n, 1e-6), "eps", 1e-5);
  // z: checked against the CPU formula fed with the GPU's own eps, so only expf differs (CUDA
  // 2 ulp, glibc < 1 ulp): <= 3 ulp of exp(lv/2) <= 1.65 times |eps| <= 5.8 is 2.1e-6, plus
  // one rounding each of the product and of z (< 16: 9.5e-7 each), so 5e-6 absolute.
  std::vector<float> z_want(n);
  cpu::reparam_forward(z_want.data(), mu.data(), logvar.data(), got.second.data(), n);
  REQUIRE_MAX_ABS(compare(got.first.data(), z_want.data(), n), "z", 5e-6);
  const auto again = run();
  require_same_run(again.first, got.first, "z");
  require_same_run(again.second, got.second, "eps");
}

TEST_CASE("reparam_backward: the dz path plus the beta-weighted KL gradient", "[gpu][kernels]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int batch = GENERATE(1, 3, 127, 129);
  const int dim = GENERATE(1, 2, 17);
  const float beta = GENERATE(1.0f, 0.25f, 0.0f);
  INFO("batch " << batch << " D " << dim << " beta " << beta);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  const size_t n = size_t(batch) * dim;
  const std::vector<float> dz = uniform(rng, n, -1, 1), mu = uniform(rng, n, -2, 2),
                           logvar = uniform(rng, n, -3, 1);
  std::vector<float> eps(n);
  std::normal_distribution<float> normal;
  for (float& e : eps) e = normal(rng);

  std::vector<float> dmu_want(n), dlogvar_want(n);
  cpu::reparam_backward(dmu_want.data(), dlogvar_want.data(), dz.data(), mu.data(), logvar.data(),
                        eps.data(), batch, dim, double(beta));

  const auto d_dz = to_device(dz, s), d_mu = to_device(mu, s), d_logvar = to_device(logvar, s),
             d_eps = to_device(eps, s);
  DeviceBuffer<float> d_dmu(n), d_dlogvar(n);
  auto run = [&] {
    poison_device(d_dmu, s);
    poison_device(d_dlogvar, s);
    reparam_backward(d_dmu.data(), d_dlogvar.data(), d_dz.data(), d_mu.data(), d_logvar.data(),
                     d_eps.data(), batch, dim, beta, s);
    return std::make_pair(to_host(d_dmu, s), to_host(d_dlogvar, s));
  };
  const auto got = run();
  // Both sides evaluate in double in the same order and round to float once; only the last
  // bit of the double exp can differ, which moves a float result by at most one rounding
  // (1.2e-7). floor 1e-6 for values that cancel to ~0 (the double error there is ~1e-16).
  REQUIRE_MAX_REL(compare(got.first.data(), dmu_want.data(), n, 1e-6), "dmu", 1e-6);
  REQUIRE_MAX_REL(compare(got.second.data(), dlogvar_want.data(), n, 1e-6), "dlogvar", 1e-6);
  const auto again = run();
  require_same_run(again.first, got.first, "dmu");
  require_same_run(again.second, got.second, "dlogvar");
}

// ---- loss ---------------------------------------------------------------------------------------

namespace {

struct LossResult {
  std::vector<float> dlogits, recon, kl;
};

struct LossCase {
  int batch, pixels, dim;
  std::vector<float> logits, x, mu, logvar;
};

// One GPU run of bce_kl_loss with every output poisoned first.
LossResult run_loss(const LossCase& c, cudaStream_t s) {
  const auto d_logits = to_device(c.logits, s), d_x = to_device(c.x, s), d_mu = to_device(c.mu, s),
             d_logvar = to_device(c.logvar, s);
  DeviceBuffer<float> d_dlogits(c.logits.size()), d_recon(size_t(c.batch)), d_kl(size_t(c.batch));
  poison_device(d_dlogits, s);
  poison_device(d_recon, s);
  poison_device(d_kl, s);
  bce_kl_loss(d_dlogits.data(), d_recon.data(), d_kl.data(), d_logits.data(), d_x.data(),
              d_mu.data(), d_logvar.data(), c.batch, c.pixels, c.dim, s);
  return {to_host(d_dlogits, s), to_host(d_recon, s), to_host(d_kl, s)};
}

// GPU against cpu::bce_kl_loss, then a second run bit-identical to the first.
void check_loss(const LossCase& c, cudaStream_t s) {
  std::vector<float> dlogits_want(c.logits.size());
  std::vector<double> recon_want(size_t(c.batch)), kl_want(size_t(c.batch));
  cpu::bce_kl_loss(dlogits_want.data(), recon_want.data(), kl_want.data(), c.logits.data(),
                   c.x.data(), c.mu.data(), c.logvar.data(), c.batch, c.pixels, c.dim, 1.0);
  const LossResult got = run_loss(c, s);
  // dlogits: each element is evaluated in double in the CPU's order and rounded once; the
  // device exp may differ in the last double bit, moving the float by at most one rounding
  // (1.2e-7). floor 1e-9 / B: sigmoid(l) - x can cancel to ~0, where the double error
  // (~1e-16 / B) must still count as small.
  REQUIRE_MAX_REL(
      compare(got.dlogits.data(), dlogits_want.data(), dlogits_want.size(), 1e-9 / c.batch),
      "dlogits", 1e-6);
  // recon, kl: per-image double sums (a tree on the GPU, sequential on the CPU: ~1e-15
  // relative apart for these sums of non-negative terms) stored as float on the GPU: one
  // rounding, 6e-8. The brief's 1e-6 relative leaves room for the device exp/log1p.
  REQUIRE_MAX_REL(compare(got.recon.data(), recon_want.data(), recon_want.size()), "recon", 1e-6);
  REQUIRE_MAX_REL(compare(got.kl.data(), kl_want.data(), kl_want.size(), 1e-9), "kl", 1e-6);
  const LossResult again = run_loss(c, s);
  require_same_run(again.dlogits, got.dlogits, "dlogits");
  require_same_run(again.recon, got.recon, "recon");
  require_same_run(again.kl, got.kl, "kl");
}

}  // namespace

TEST_CASE("bce_kl_loss matches the CPU value and gradient", "[gpu][kernels]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int batch = GENERATE(1, 3, 127, 129);
  const int pixels = GENERATE(784, 1, 257);
  const int dim = GENERATE(1, 2, 17);
  INFO("batch " << batch << " pixels " << pixels << " D " << dim);
  CudaStream stream;
  LossCase c{batch, pixels, dim, {}, {}, {}, {}};
  const size_t n = size_t(batch) * pixels, nz = size_t(batch) * dim;
  c.logits = uniform(rng, n, -8, 8);
  c.x.resize(n);
  std::uniform_int_distribution<int> byte(0, 255);  // targets as the data has them: k / 255
  for (float& t : c.x) t = float(byte(rng)) / 255.0f;
  c.mu = uniform(rng, nz, -2, 2);
  c.logvar = uniform(rng, nz, -3, 1);
  check_loss(c, stream.get());
}

TEST_CASE("bce_kl_loss is finite and exact at extreme logits", "[gpu][kernels]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  CudaStream stream;
  const float logit_values[] = {100.0f, -100.0f, 1e4f, -1e4f, 0.0f};
  const float target_values[] = {0.0f, 0.5f, 1.0f};
  const int batch = 4, pixels = 784, dim = 3;
  LossCase c{batch, pixels, dim, {}, {}, {}, {}};
  c.logits.resize(size_t(batch) * pixels);
  c.x.resize(c.logits.size());
  for (int p = 0; p < pixels; ++p) {
    // image 0: every (logit, target) pair, cycling; image 1: l = 1e4, x = 1 (loss exactly 0);
    // image 2: l = -1e4, x = 1 (loss 1e4 per pixel); image 3: random pairs of the set.
    c.logits[size_t(p)] = logit_values[p % 5];
    c.x[size_t(p)] = target_values[(p / 5) % 3];
    c.logits[size_t(pixels + p)] = 1e4f, c.x[size_t(pixels + p)] = 1.0f;
    c.logits[size_t(2 * pixels + p)] = -1e4f, c.x[size_t(2 * pixels + p)] = 1.0f;
    c.logits[size_t(3 * pixels + p)] = logit_values[rng() % 5];
    c.x[size_t(3 * pixels + p)] = target_values[rng() % 3];
  }
  // Large but finite latents: exp(20) and mu^2 = 100 are fine in double and in float.
  c.mu = {0.0f, 10.0f, -10.0f, 1.0f, 0.0f, -1.0f, 0.0f, 0.0f, 0.0f, 3.0f, -3.0f, 0.5f};
  c.logvar = {-20.0f, 0.0f, 20.0f, 1.0f, -1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 5.0f, -5.0f, 0.1f};

  const LossResult got = run_loss(c, stream.get());
  for (size_t i = 0; i < got.dlogits.size(); ++i) {
    INFO("dlogits[" << i << "] = " << got.dlogits[i] << " logit " << c.logits[i] << " target "
                    << c.x[i]);
    REQUIRE(std::isfinite(got.dlogits[i]));
  }
  for (int b = 0; b < batch; ++b) {
    INFO("image " << b << " recon " << got.recon[size_t(b)] << " kl " << got.kl[size_t(b)]);
    REQUIRE(std::isfinite(got.recon[size_t(b)]));
    REQUIRE(std::isfinite(got.kl[size_t(b)]));
  }
  REQUIRE(got.recon[1] == 0.0f);                 // log1p(exp(-1e4)) is exactly 0
  REQUIRE(got.recon[2] == float(1e4 * pixels));  // max(l,0) - l x = 1e4 per pixel, exact
  REQUIRE(got.kl[2] == 0.0f);                    // mu = 0, logvar = 0: no divergence
  check_loss(c, stream.get());                   // and everything equal to the CPU (1e-6 relative)
}

TEST_CASE("loss_accumulate adds the batch sums in double, deterministically", "[gpu][kernels]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int batch = GENERATE(1, 3, 127, 129, 4097);
  INFO("batch " << batch);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  const std::vector<float> recon = uniform(rng, size_t(batch), 0, 600),
                           kl = uniform(rng, size_t(batch), 0, 30);
  const std::vector<double> start{1.5, -2.25};  // += , not =
  double recon_sum = 0, kl_sum = 0;
  for (int b = 0; b < batch; ++b) recon_sum += double(recon[size_t(b)]), kl_sum += kl[size_t(b)];

  const auto d_recon = to_device(recon, s), d_kl = to_device(kl, s);
  auto d_sums = to_device(start, s);
  auto run = [&](int times) {
    upload(d_sums, start, s);
    for (int t = 0; t < times; ++t)
      loss_accumulate(d_sums.data(), d_recon.data(), d_kl.data(), batch, s);
    return to_host(d_sums, s);
  };
  // The same floats summed in double in another order (a tree): the sums of these positive
  // terms agree to ~batch * 1e-16 relative at worst.
  const auto once = run(1);
  const std::vector<double> want1{start[0] + recon_sum, start[1] + kl_sum};
  REQUIRE_MAX_REL(compare(once.data(), want1.data(), 2), "sums after one step", 1e-12);
  const auto twice = run(2);
  const std::vector<double> want2{start[0] + 2 * recon_sum, start[1] + 2 * kl_sum};
  REQUIRE_MAX_REL(compare(twice.data(), want2.data(), 2), "sums after two steps", 1e-12);
  require_same_run(run(1), once, "sums");
  require_same_run(run(2), twice, "sums");
}

TEST_CASE("the biased reparameterization kernels equal the head bias kernels plus reparam",
          "[gpu][kernels]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int batch = GENERATE(1, 129, 4097);  // 4097 x 17: many blocks, the last one reduces
  const int dim = GENERATE(1, 2, 17);
  INFO("batch " << batch << " D " << dim);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  const size_t n = size_t(batch) * dim;
  const std::vector<float> mu_raw = uniform(rng, n, -2, 2), lv_raw = uniform(rng, n, -3, 1);
  const std::vector<float> b_mu = uniform(rng, size_t(dim), -0.5, 0.5),
                           b_lv = uniform(rng, size_t(dim), -0.5, 0.5);
  const std::vector<float> dz = uniform(rng, n, -1, 1);
  const std::vector<StepScalars> table{step_scalars(1e-3f, 0.9f, 0.999f, 7)};
  const auto d_table = to_device(table, s);
  const auto d_cursor = to_device(std::vector<int32_t>{0}, s);
  const StepTable at{d_table.data(), d_cursor.data()};
  const uint64_t noise_seed = rng();
  const auto d_bmu = to_device(b_mu, s), d_blv = to_device(b_lv, s), d_dz = to_device(dz, s);

  // Unfused: the heads' bias kernels, reparam_forward, reparam_backward, the bias gradients.
  auto r_mu = to_device(mu_raw, s), r_lv = to_device(lv_raw, s);
  DeviceBuffer<float> r_z(n), r_eps(n), r_dmu(n), r_dlv(n), r_dbmu(static_cast<size_t>(dim)),
      r_dblv(static_cast<size_t>(dim));
  bias_act_forward(r_mu.data(), d_bmu.data(), batch, dim, 1, false, s);
  bias_act_forward(r_lv.data(), d_blv.data(), batch, dim, 1, false, s);
  reparam_forward(r_z.data(), r_eps.data(), r_mu.data(), r_lv.data(), noise_seed, at, batch, dim,
                  s);
  reparam_backward(r_dmu.data(), r_dlv.data(), d_dz.data(), r_mu.data(), r_lv.data(), r_eps.data(),
                   batch, dim, 0.5f, s);
  bias_act_backward(r_dmu.data(), r_dbmu.data(), nullptr, batch, dim, 1, false, s);
  bias_act_backward(r_dlv.data(), r_dblv.data(), nullptr, batch, dim, 1, false, s);

  // Biased: the raw heads in one buffer updated in place, as the trainer holds them.
  auto f_mu = to_device(mu_raw, s), f_lv = to_device(lv_raw, s);
  DeviceBuffer<float> f_z(n), f_eps(n), f_dmu(n), f_dlv(n), f_dbmu(static_cast<size_t>(dim)),
      f_dblv(static_cast<size_t>(dim));
  auto ticket = to_device(std::vector<unsigned>{0}, s);
  for (auto* buf : {&f_z, &f_eps, &f_dmu, &f_dlv, &f_dbmu, &f_dblv}) poison_device(*buf, s);
  reparam_forward_biased(f_z.data(), f_eps.data(), f_mu.data(), f_lv.data(), d_bmu.data(),
                         d_blv.data(), noise_seed, at, batch, dim, s);
  reparam_backward_biased(f_dmu.data(), f_dlv.data(), f_dbmu.data(), f_dblv.data(), ticket.data(),
                          d_dz.data(), f_mu.data(), f_lv.data(), f_eps.data(), batch, dim, 0.5f, s);

  require_bitwise_equal(to_host(f_mu, s), to_host(r_mu, s), "mu with its bias");
  require_bitwise_equal(to_host(f_lv, s), to_host(r_lv, s), "logvar with its bias");
  require_bitwise_equal(to_host(f_eps, s), to_host(r_eps, s), "eps");
  require_bitwise_equal(to_host(f_z, s), to_host(r_z, s), "z");
  const std::vector<float> dmu = to_host(f_dmu, s), dlv = to_host(f_dlv, s);
  require_bitwise_equal(dmu, to_host(r_dmu, s), "dmu");
  require_bitwise_equal(dlv, to_host(r_dlv, s), "dlogvar");
  REQUIRE(to_host(ticket, s)[0] == 0u);
  // Bias gradients: the same floats summed in double in another order, rounded once.
  const std::vector<float> dbmu = to_host(f_dbmu, s), dblv = to_host(f_dblv, s),
                           want_mu = to_host(r_dbmu, s), want_lv = to_host(r_dblv, s);
  for (int j = 0; j < dim; ++j) {
    INFO("dimension " << j);
    double abs_mu = 0, abs_lv = 0;
    for (int b = 0; b < batch; ++b) {
      abs_mu += std::abs(double(dmu[size_t(b) * dim + j]));
      abs_lv += std::abs(double(dlv[size_t(b) * dim + j]));
    }
    REQUIRE(std::isfinite(dbmu[size_t(j)]));
    REQUIRE(std::isfinite(dblv[size_t(j)]));
    REQUIRE(std::abs(double(dbmu[size_t(j)]) - want_mu[size_t(j)]) <=
            1.2e-7 * std::abs(double(want_mu[size_t(j)])) + 1e-12 * abs_mu);
    REQUIRE(std::abs(double(dblv[size_t(j)]) - want_lv[size_t(j)]) <=
            1.2e-7 * std::abs(double(want_lv[size_t(j)])) + 1e-12 * abs_lv);
  }
  // Again from the same inputs: the same bits, the ticket back at 0.
  for (auto* buf : {&f_dmu, &f_dlv, &f_dbmu, &f_dblv}) poison_device(*buf, s);
  reparam_backward_biased(f_dmu.data(), f_dlv.data(), f_dbmu.data(), f_dblv.data(), ticket.data(),
                          d_dz.data(), f_mu.data(), f_lv.data(), f_eps.data(), batch, dim, 0.5f, s);
  require_same_run(to_host(f_dbmu, s), dbmu, "db_mu");
  require_same_run(to_host(f_dblv, s), dblv, "db_logvar");
  REQUIRE(to_host(ticket, s)[0] == 0u);
}

TEST_CASE("bce_kl_loss_fused equals the four kernels it replaces", "[gpu][kernels]") {
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
  const std::vector<float> pre_bias = uniform(rng, n, -8, 8), bias = uniform(rng, 1, -1, 1);
  std::vector<float> x = uniform(rng, n, 0, 1);
  for (size_t i = 0; i < n; i += 7) x[i] = float(i % 2);  // exact 0 and 1 targets too
  const std::vector<float> mu = uniform(rng, nz, -2, 2), logvar = uniform(rng, nz, -3, 1);
  const std::vector<double> start{12.5, -3.25};  // the sums are added to, not set

  const auto d_pre = to_device(pre_bias, s), d_bias = to_device(bias, s), d_x = to_device(x, s),
             d_mu = to_device(mu, s), d_lv = to_device(logvar, s);
  // The unfused kernels: bias, loss, accumulate, bias gradient (dy is used as it is).
  auto d_logits = to_device(pre_bias, s);
  DeviceBuffer<float> ref_dl(n), ref_recon(nb), ref_kl(nb), ref_db(1);
  auto ref_sums = to_device(start, s);
  poison_device(ref_dl, s);
  poison_device(ref_db, s);
  bias_act_forward(d_logits.data(), d_bias.data(), batch, 1, pixels, false, s);
  bce_kl_loss(ref_dl.data(), ref_recon.data(), ref_kl.data(), d_logits.data(), d_x.data(),
              d_mu.data(), d_lv.data(), batch, pixels, dim, s);
  loss_accumulate(ref_sums.data(), ref_recon.data(), ref_kl.data(), batch, s);
  bias_act_backward(ref_dl.data(), ref_db.data(), nullptr, batch, 1, pixels, false, s);

  DeviceBuffer<float> dl(n), recon(nb), kl(nb), db(1);
  DeviceBuffer<double> image_dsum(nb);
  auto sums = to_device(start, s);
  auto ticket = to_device(std::vector<unsigned>{0}, s);
  FusedLossArgs a{};
  a.dlogits = dl.data();
  a.recon = recon.data();
  a.kl = kl.data();
  a.image_dsum = image_dsum.data();
  a.sums = sums.data();
  a.dbias = db.data();
  a.blocks_done = ticket.data();
  a.pre_bias = d_pre.data();
  a.bias = d_bias.data();
  a.x = d_x.data();
  a.mu = d_mu.data();
  a.logvar = d_lv.data();
  auto run = [&] {
    for (auto* buf : {&dl, &recon, &kl, &db}) poison_device(*buf, s);
    bce_kl_loss_fused(a, batch, pixels, dim, s);
  };
  run();
  // Per element and per image the same operations in the same order: exact.
  const std::vector<float> got_dl = to_host(dl, s);
  require_bitwise_equal(got_dl, to_host(ref_dl, s), "dlogits");
  require_bitwise_equal(to_host(recon, s), to_host(ref_recon, s), "recon");
  require_bitwise_equal(to_host(kl, s), to_host(ref_kl, s), "kl");
  const std::vector<double> once = to_host(sums, s);
  require_bitwise_equal(once, to_host(ref_sums, s), "sums");  // loss_accumulate's order
  REQUIRE(to_host(ticket, s)[0] == 0u);                       // ready for the next step
  // The bias gradient: the same floats summed in double in another order, rounded once. The
  // double sums differ by ~n * 1e-16 of sum |g|; the float results by at most an ulp.
  double abs_sum = 0;
  for (float g : got_dl) abs_sum += std::abs(double(g));
  const float want_db = to_host(ref_db, s)[0], got_db = to_host(db, s)[0];
  INFO("db fused " << got_db << " unfused " << want_db);
  REQUIRE(std::isfinite(got_db));
  REQUIRE(std::abs(double(got_db) - double(want_db)) <=
          1.2e-7 * std::abs(double(want_db)) + 1e-12 * abs_sum);
  // A second launch adds the same batch sums again and gives the same bits.
  run();
  loss_accumulate(ref_sums.data(), ref_recon.data(), ref_kl.data(), batch, s);
  require_bitwise_equal(to_host(sums, s), to_host(ref_sums, s), "sums after two launches");
  require_same_run(to_host(dl, s), got_dl, "dlogits");
  REQUIRE(to_host(db, s)[0] == got_db);
  REQUIRE(to_host(ticket, s)[0] == 0u);
}

// ---- Adam ---------------------------------------------------------------------------------------

namespace {

struct AdamState {
  std::vector<float> params, m, v;
};

// GPU state after `steps` Adam steps from `start` with grads[k] at step first_step + k, and the
// same on the CPU; compared after every step.
void check_adam(const AdamState& start, const std::vector<std::vector<float>>& grads,
                int64_t first_step, const AdamConfig& cfg, cudaStream_t s) {
  const size_t n = start.params.size();
  AdamState cpu_state = start;
  auto d_params = to_device(start.params, s), d_m = to_device(start.m, s),
       d_v = to_device(start.v, s);
  DeviceBuffer<float> d_grads(n);
  std::vector<AdamState> gpu_states;
  for (size_t k = 0; k < grads.size(); ++k) {
    const int64_t step = first_step + int64_t(k);
    INFO("step " << step);
    cpu::adam_step(cpu_state.params.data(), cpu_state.m.data(), cpu_state.v.data(), grads[k].data(),
                   n, cfg, step);
    upload(d_grads, grads[k], s);
    adam_step(d_params.data(), d_m.data(), d_v.data(), nullptr, d_grads.data(), n, cfg.lr,
              cfg.beta1, cfg.beta2, cfg.eps, step, s);
    const AdamState got{to_host(d_params, s), to_host(d_m, s), to_host(d_v, s)};
    // The kernel performs the CPU's fp32 operations in its order with the bias corrections
    // rounded on the host exactly as the CPU rounds them, so on x86-64 (no FMA contraction in
    // the CPU build) every value is expected bit-equal; the tolerances allow for a host
    // compiler that contracts (one ulp here and there) and nothing more.
    // m: can cancel to ~0, so errors are measured against the largest |m| (floor).
    REQUIRE_MAX_REL(compare(got.m.data(), cpu_state.m.data(), n, max_abs_of(cpu_state.m)), "m",
                    1e-6);
    // v: a sum of non-negative terms, no cancellation: plain relative error.
    REQUIRE_MAX_REL(compare(got.v.data(), cpu_state.v.data(), n), "v", 1e-6);
    // params: |p| < 2, so 2 ulp is 2.4e-7; an update off by one ulp moves p by at most one.
    // An error in the update of 1e-4 relative (lr 1e-3) would already show.
    REQUIRE_MAX_ABS(compare(got.params.data(), cpu_state.params.data(), n), "params", 2.4e-7);
    gpu_states.push_back(got);
  }
  // Determinism: the same sequence again from the same start gives the same bits.
  upload(d_params, start.params, s);
  upload(d_m, start.m, s);
  upload(d_v, start.v, s);
  for (size_t k = 0; k < grads.size(); ++k) {
    upload(d_grads, grads[k], s);
    adam_step(d_params.data(), d_m.data(), d_v.data(), nullptr, d_grads.data(), n, cfg.lr,
              cfg.beta1, cfg.beta2, cfg.eps, first_step + int64_t(k), s);
  }
  require_same_run(to_host(d_params, s), gpu_states.back().params, "params");
  require_same_run(to_host(d_m, s), gpu_states.back().m, "m");
  require_same_run(to_host(d_v, s), gpu_states.back().v, "v");
}

}  // namespace

TEST_CASE("adam_step matches cpu::adam_step", "[gpu][kernels]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const size_t n = GENERATE(size_t(1), size_t(31), size_t(4097), size_t(134165));
  INFO("n " << n);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  // Gradients over many magnitudes, some far below eps so that eps matters in the denominator.
  auto make_grads = [&] {
    std::vector<float> g = uniform(rng, n, -1, 1);
    std::uniform_int_distribution<int> exponent(-12, 1);
    for (float& x : g) x *= std::pow(10.0f, float(exponent(rng)));
    return g;
  };

  SECTION("the first steps from zero moments (large bias corrections)") {
    const AdamConfig cfg;  // lr 1e-3, betas 0.9 / 0.999, eps 1e-7: the reference setup
    const AdamState start{uniform(rng, n, -1, 1), std::vector<float>(n, 0.0f),
                          std::vector<float>(n, 0.0f)};
    check_adam(start, {make_grads(), make_grads(), make_grads()}, 1, cfg, s);
  }
  SECTION("a late step with warm moments and another configuration") {
    AdamConfig cfg;
    cfg.lr = 1e-2f, cfg.beta1 = 0.8f, cfg.beta2 = 0.99f, cfg.eps = 1e-8f;
    // sqrt(v) >= |m| keeps the updates ~lr, so |p| stays below 2 (the params tolerance).
    const AdamState start{uniform(rng, n, -1, 1), uniform(rng, n, -0.1, 0.1),
                          uniform(rng, n, 0.01, 0.02)};
    check_adam(start, {make_grads(), make_grads()}, 1000, cfg, s);
  }
}

TEST_CASE("adam_step reports the earliest non-finite gradient", "[gpu][kernels]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const size_t n = GENERATE(size_t(31), size_t(134165));
  INFO("n " << n);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  std::uniform_int_distribution<size_t> pick(0, n - 1);
  DeviceBuffer<float> d_params = to_device(uniform(rng, n, -1, 1), s);
  DeviceBuffer<float> d_m = to_device(std::vector<float>(n, 0.0f), s);
  DeviceBuffer<float> d_v = to_device(std::vector<float>(n, 0.0f), s);
  DeviceBuffer<float> d_grads(n);
  DeviceBuffer<unsigned long long> flag =
      to_device(std::vector<unsigned long long>{kNoNonfinite}, s);
  const AdamConfig cfg;
  auto step = [&](int64_t t, const std::vector<float>& g) {
    upload(d_grads, g, s);
    adam_step(d_params.data(), d_m.data(), d_v.data(), flag.data(), d_grads.data(), n, cfg.lr,
              cfg.beta1, cfg.beta2, cfg.eps, t, s);
    return to_host(flag, s)[0];
  };
  // Finite steps leave the word alone.
  for (int64_t t = 1; t <= 3; ++t) REQUIRE(step(t, uniform(rng, n, -1, 1)) == kNoNonfinite);
  // Step 4: a NaN at i and an infinity at j; the lower index is reported.
  std::vector<float> g = uniform(rng, n, -1, 1);
  const size_t i = pick(rng), j = pick(rng);
  g[i] = std::numeric_limits<float>::quiet_NaN();
  g[j] = -std::numeric_limits<float>::infinity();
  const unsigned long long want = (4ull << 32) | std::min(i, j);
  REQUIRE(step(4, g) == want);
  // A later bad step at a lower index does not replace the earlier step.
  std::vector<float> g2 = uniform(rng, n, -1, 1);
  g2[0] = std::numeric_limits<float>::infinity();
  REQUIRE(step(5, g2) == want);
}

// ---- the epoch permutation and the step table ---------------------------------------------------

TEST_CASE("DeviceShuffle draws epoch_permutation's order", "[gpu][kernels]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t n = GENERATE(int64_t(1), int64_t(2), int64_t(129), int64_t(60000));
  INFO("n " << n);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  DeviceShuffle shuffle(n);
  DeviceBuffer<int32_t> perm(static_cast<size_t>(n));
  const uint64_t order_seed = rng();
  for (const int64_t epoch : {int64_t(1), int64_t(2), int64_t(1 + rng() % 1000)}) {
    INFO("epoch " << epoch);
    poison_device(perm, s);  // -1 everywhere
    shuffle.draw(perm.data(), order_seed, epoch, s);
    const std::vector<int32_t> got = to_host(perm, s);
    REQUIRE(got == epoch_permutation(order_seed, epoch, n));
  }
}

TEST_CASE("the step-table launchers equal the argument launchers bit for bit", "[gpu][kernels]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  const AdamConfig cfg;
  // Entries for steps t - 1, t, t + 1; the cursor names the middle one, so a kernel that
  // reads the wrong entry (or the argument path's zero scalars) gives other numbers.
  const int64_t t = 2 + int64_t(rng() % 100000);
  INFO("step " << t);
  const std::vector<StepScalars> table{step_scalars(cfg.lr, cfg.beta1, cfg.beta2, t - 1),
                                       step_scalars(cfg.lr, cfg.beta1, cfg.beta2, t),
                                       step_scalars(cfg.lr, cfg.beta1, cfg.beta2, t + 1)};
  const auto d_table = to_device(table, s);
  auto d_cursor = to_device(std::vector<int32_t>{1}, s);
  const StepTable at{d_table.data(), d_cursor.data()};

  SECTION("adam_step, the non-finite report included") {
    const size_t n = 4097;
    std::uniform_int_distribution<size_t> pick(0, n - 1);
    std::vector<float> g = uniform(rng, n, -1, 1);
    const size_t bad = pick(rng);
    g[bad] = std::numeric_limits<float>::quiet_NaN();
    const std::vector<float> p0 = uniform(rng, n, -1, 1), m0 = uniform(rng, n, -0.1, 0.1),
                             v0 = uniform(rng, n, 0.01, 0.02);
    const auto d_g = to_device(g, s);
    std::vector<float> results[2][3];
    unsigned long long flags[2];
    for (int form = 0; form < 2; ++form) {
      auto d_p = to_device(p0, s), d_m = to_device(m0, s), d_v = to_device(v0, s);
      auto flag = to_device(std::vector<unsigned long long>{kNoNonfinite}, s);
      if (form == 0)
        adam_step(d_p.data(), d_m.data(), d_v.data(), flag.data(), d_g.data(), n, cfg.lr, cfg.beta1,
                  cfg.beta2, cfg.eps, t, s);
      else
        adam_step(d_p.data(), d_m.data(), d_v.data(), flag.data(), d_g.data(), n, cfg.beta1,
                  cfg.beta2, cfg.eps, at, s);
      results[form][0] = to_host(d_p, s);
      results[form][1] = to_host(d_m, s);
      results[form][2] = to_host(d_v, s);
      flags[form] = to_host(flag, s)[0];
    }
    require_bitwise_equal(results[1][0], results[0][0], "params");
    require_bitwise_equal(results[1][1], results[0][1], "m");
    require_bitwise_equal(results[1][2], results[0][2], "v");
    REQUIRE(flags[0] == ((unsigned long long)t << 32 | bad));
    REQUIRE(flags[1] == flags[0]);
  }
  SECTION("reparam_forward draws the noise of counter t - 1") {
    const int batch = 129, dim = 3;
    const size_t n = size_t(batch) * dim;
    const auto d_mu = to_device(uniform(rng, n, -2, 2), s);
    const auto d_lv = to_device(uniform(rng, n, -3, 1), s);
    const uint64_t noise_seed = rng();
    DeviceBuffer<float> d_z(n), d_eps(n);
    std::vector<float> z[2], eps[2];
    for (int form = 0; form < 2; ++form) {
      poison_device(d_z, s);
      poison_device(d_eps, s);
      if (form == 0)
        reparam_forward(d_z.data(), d_eps.data(), d_mu.data(), d_lv.data(), noise_seed,
                        uint64_t(t - 1), batch, dim, s);
      else
        reparam_forward(d_z.data(), d_eps.data(), d_mu.data(), d_lv.data(), noise_seed, at, batch,
                        dim, s);
      z[form] = to_host(d_z, s);
      eps[form] = to_host(d_eps, s);
    }
    require_bitwise_equal(eps[1], eps[0], "eps");
    require_bitwise_equal(z[1], z[0], "z");
  }
  SECTION("gather_normalize takes the batch at the cursor; advance_cursor counts") {
    const int pixels = 784, n_images = 300, stride = 64;  // batches 64 x 4 + 44
    std::vector<uint8_t> images(size_t(n_images) * pixels);
    std::uniform_int_distribution<int> byte(0, 255);
    for (uint8_t& v : images) v = uint8_t(byte(rng));
    std::vector<int32_t> perm(n_images);
    for (int i = 0; i < n_images; ++i) perm[size_t(i)] = i;
    std::shuffle(perm.begin(), perm.end(), rng);
    const auto d_images = to_device(images, s);
    const auto d_perm = to_device(perm, s);
    upload(d_cursor, std::vector<int32_t>{4}, s);
    const int count = n_images - 4 * stride;
    DeviceBuffer<float> d_x(size_t(count) * pixels);
    poison_device(d_x, s);
    gather_normalize(d_x.data(), d_images.data(), d_perm.data(), d_cursor.data(), stride, count,
                     pixels, s);
    const std::vector<float> got = to_host(d_x, s);
    std::vector<float> want(got.size());
    gather_batch(want.data(), images.data(), perm.data() + 4 * stride, count, pixels);
    require_bitwise_equal(got, want, "x");
    // The mixed-precision form: the same x, and x_lo = x rounded to bf16 (the host's
    // round-to-nearest-even conversion from cuda_bf16.h), from one pass.
    DeviceBuffer<bf16> d_x_lo(size_t(count) * pixels);
    poison_device(d_x, s);
    CUDA_CHECK(cudaMemsetAsync(d_x_lo.data(), 0xff, d_x_lo.bytes(), s));  // bf16 NaNs
    gather_normalize(d_x.data(), d_x_lo.data(), d_images.data(), d_perm.data(), d_cursor.data(),
                     stride, count, pixels, s);
    require_bitwise_equal(to_host(d_x, s), want, "x (with its bf16 copy)");
    std::vector<bf16> lo(d_x_lo.size());
    d_x_lo.download(lo.data(), lo.size(), s);
    stream.synchronize();
    size_t wrong = 0;
    for (size_t i = 0; i < lo.size(); ++i) {
      const bf16 expect = __float2bfloat16_rn(want[i]);
      if (std::memcmp(&lo[i], &expect, sizeof(bf16)) != 0) ++wrong;
    }
    INFO("bf16 copies differing from the rounded x: " << wrong << " of " << lo.size());
    REQUIRE(wrong == 0);
    advance_cursor(d_cursor.data(), s);
    advance_cursor(d_cursor.data(), s);
    REQUIRE(to_host(d_cursor, s)[0] == 6);
  }
}

// ---- argument checks ----------------------------------------------------------------------------

TEST_CASE("launchers reject nonsense sizes and null pointers", "[gpu][kernels]") {
  CudaStream stream;
  const cudaStream_t s = stream.get();
  DeviceBuffer<float> f(64);
  DeviceBuffer<double> d(2);
  DeviceBuffer<uint8_t> u8(64);
  DeviceBuffer<int32_t> i32(4);
  CUDA_CHECK(cudaMemsetAsync(i32.data(), 0, i32.bytes(), s));
  // The one call below that launches (bias_act_backward on 1 element) reads p[0]: zeroed, as
  // cudaMalloc leaves memory uninitialised (compute-sanitizer's initcheck would flag the read).
  CUDA_CHECK(cudaMemsetAsync(f.data(), 0, f.bytes(), s));
  float* p = f.data();

  REQUIRE_THROWS_AS(gather_normalize(p, u8.data(), i32.data(), 0, 8, s), Error);
  REQUIRE_THROWS_AS(gather_normalize(p, u8.data(), i32.data(), 1, 0, s), Error);
  REQUIRE_THROWS_AS(gather_normalize(nullptr, u8.data(), i32.data(), 1, 8, s), Error);
  REQUIRE_THROWS_AS(gather_normalize(p, u8.data(), nullptr, 1, 8, s), Error);

  REQUIRE_THROWS_AS(bias_act_forward(p, p + 32, 0, 1, 1, true, s), Error);
  REQUIRE_THROWS_AS(bias_act_forward(p, p + 32, 1, 0, 1, true, s), Error);
  REQUIRE_THROWS_AS(bias_act_forward(p, p + 32, 1, 1, 0, true, s), Error);
  REQUIRE_THROWS_AS(bias_act_forward(p, nullptr, 1, 1, 1, true, s), Error);
  REQUIRE_THROWS_AS(bias_act_backward(p, p + 32, p + 48, -1, 1, 1, true, s), Error);
  REQUIRE_THROWS_AS(bias_act_backward(p, p + 32, nullptr, 1, 1, 1, true, s), Error);
  REQUIRE_THROWS_AS(bias_act_backward(p, nullptr, p + 48, 1, 1, 1, false, s), Error);
  REQUIRE_THROWS_AS(bias_act_backward(p, p + 32, p + 48, 2, 1, int64_t(1) << 31, true, s), Error);
  REQUIRE_NOTHROW(bias_act_backward(p, p + 32, nullptr, 1, 1, 1, false, s));  // y unused
  REQUIRE_THROWS_AS(add_inplace(nullptr, p, 4, s), Error);
  REQUIRE_NOTHROW(add_inplace(nullptr, nullptr, 0, s));  // nothing to do

  REQUIRE_THROWS_AS(reparam_forward(p, p + 8, p + 16, p + 24, 1, 1, 0, 2, s), Error);
  REQUIRE_THROWS_AS(reparam_forward(p, p + 8, p + 16, p + 24, 1, 1, 2, 0, s), Error);
  REQUIRE_THROWS_AS(reparam_forward(p, nullptr, p + 16, p + 24, 1, 1, 2, 2, s), Error);
  REQUIRE_THROWS_AS(reparam_backward(p, p + 8, p + 16, p + 24, p + 32, p + 40, 0, 2, 1.0f, s),
                    Error);
  REQUIRE_THROWS_AS(reparam_backward(p, p + 8, p + 16, p + 24, nullptr, p + 40, 2, 2, 1.0f, s),
                    Error);

  REQUIRE_THROWS_AS(bce_kl_loss(p, p + 8, p + 16, p + 24, p + 32, p + 40, p + 48, 0, 4, 2, s),
                    Error);
  REQUIRE_THROWS_AS(bce_kl_loss(p, p + 8, p + 16, p + 24, p + 32, p + 40, p + 48, 1, 0, 2, s),
                    Error);
  REQUIRE_THROWS_AS(bce_kl_loss(p, p + 8, p + 16, p + 24, p + 32, p + 40, p + 48, 1, 4, 0, s),
                    Error);
  REQUIRE_THROWS_AS(bce_kl_loss(p, nullptr, p + 16, p + 24, p + 32, p + 40, p + 48, 1, 4, 2, s),
                    Error);
  REQUIRE_THROWS_AS(loss_accumulate(d.data(), p, p + 8, 0, s), Error);
  REQUIRE_THROWS_AS(loss_accumulate(nullptr, p, p + 8, 1, s), Error);
  FusedLossArgs fa{
      p,      p + 8,  p + 16, d.data(), d.data(), p + 24, reinterpret_cast<unsigned*>(p + 25),
      p + 26, p + 27, p + 28, p + 29,   p + 30};
  REQUIRE_THROWS_AS(bce_kl_loss_fused(fa, 0, 4, 2, s), Error);
  REQUIRE_THROWS_AS(bce_kl_loss_fused(fa, 1, 4, 0, s), Error);
  fa.blocks_done = nullptr;
  REQUIRE_THROWS_AS(bce_kl_loss_fused(fa, 1, 4, 2, s), Error);

  REQUIRE_THROWS_AS(
      adam_step(p, p + 8, p + 16, nullptr, p + 24, 8, 1e-3f, 0.9f, 0.999f, 1e-7f, 0, s), Error);
  REQUIRE_THROWS_AS(
      adam_step(p, p + 8, p + 16, nullptr, p + 24, 8, 1e-3f, 1.0f, 0.999f, 1e-7f, 1, s), Error);
  REQUIRE_THROWS_AS(
      adam_step(p, nullptr, p + 16, nullptr, p + 24, 8, 1e-3f, 0.9f, 0.999f, 1e-7f, 1, s), Error);
  REQUIRE_NOTHROW(adam_step(nullptr, nullptr, nullptr, nullptr, nullptr, 0, 1e-3f, 0.9f, 0.999f,
                            1e-7f, 1,
                            s));  // n == 0: nothing to do

  // The step-table forms need the table and the cursor.
  const StepTable no_table{nullptr, i32.data()};
  const StepTable no_cursor{reinterpret_cast<const StepScalars*>(p), nullptr};
  REQUIRE_THROWS_AS(gather_normalize(p, u8.data(), i32.data(), nullptr, 1, 1, 8, s), Error);
  REQUIRE_THROWS_AS(gather_normalize(p, u8.data(), i32.data(), i32.data(), -1, 1, 8, s), Error);
  REQUIRE_THROWS_AS(advance_cursor(nullptr, s), Error);
  REQUIRE_THROWS_AS(reparam_forward(p, p + 8, p + 16, p + 24, 1, no_table, 2, 2, s), Error);
  REQUIRE_THROWS_AS(reparam_forward(p, p + 8, p + 16, p + 24, 1, no_cursor, 2, 2, s), Error);
  const StepTable table_ok{reinterpret_cast<const StepScalars*>(p), i32.data()};
  REQUIRE_THROWS_AS(
      reparam_forward_biased(p, p + 8, p + 16, p + 24, nullptr, p + 40, 1, table_ok, 2, 2, s),
      Error);
  REQUIRE_THROWS_AS(reparam_backward_biased(p, p + 8, p + 16, p + 24, nullptr, p + 32, p + 40,
                                            p + 48, p + 56, 2, 2, 1.0f, s),
                    Error);
  REQUIRE_THROWS_AS(
      adam_step(p, p + 8, p + 16, nullptr, p + 24, 8, 0.9f, 0.999f, 1e-7f, no_table, s), Error);
  REQUIRE_THROWS_AS(
      adam_step(p, p + 8, p + 16, nullptr, p + 24, 8, 1.0f, 0.999f, 1e-7f, no_cursor, s), Error);
  REQUIRE_THROWS_AS(DeviceShuffle(0), Error);
  CUDA_CHECK(cudaStreamSynchronize(s));  // the one real launch above ran cleanly
}
