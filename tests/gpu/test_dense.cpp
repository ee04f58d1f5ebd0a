// GPU tests of the cuBLAS dense layers (cuda/libs/dense.cuh, single and paired) against the CPU
// reference (host/cpu/cpu_ref.h, in double on the same fp32 inputs, zero bias) in strict fp32 and
// within a LOOSE bound under TF32, argument checks; and the bf16 forms against a double reference
// within fp32 accumulation and rounding.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda/libs/dense.cuh"
#include "cuda/runtime/device_buffer.cuh"
#include "host/core/error.h"
#include "host/cpu/cpu_ref.h"
#include "tests/gpu/checks.h"
#include "tests/gpu/device_io.h"
#include "tests/test_support.h"

using namespace cuvae;
using namespace cuvae::test;

// ---- dense -------------------------------------------------------------------------------

namespace {

struct DenseSize {
  int batch, in, out;
};
// encoder.fc at batch 1, tiny odd sizes, decoder.fc at an odd batch, a single output.
constexpr DenseSize kDenseSizes[] = {{1, 3136, 16}, {3, 16, 17}, {127, 2, 3136}, {129, 16, 1}};

struct DenseOutputs {
  std::vector<float> y, dx, dw;
};

// The dense layer's three GEMMs on |x|, |w| and |dy| (double, zero bias): per output element
// the sum of |term| it adds up. An output whose sum nearly cancels (a tensor of one or a few
// elements can) has an error that scales with these, not with the output; check_dense and the
// paired test give each comparison the floor tol * ||magnitudes|| besides the relative bound
// tol, the same allowance relative to the terms (rounding errors of a sum are bounded by
// multiples of sum |t|, and are far smaller relative to it than to a sum that cancels).
struct DenseMagnitudes {
  std::vector<double> y, dx, dw;
};

DenseMagnitudes dense_magnitudes(const float* x, const float* w, const float* dy, int batch, int in,
                                 int out) {
  auto abs_of = [](const float* v, size_t n) {
    std::vector<double> a(n);
    for (size_t i = 0; i < n; ++i) a[i] = std::abs(double(v[i]));
    return a;
  };
  const size_t nx = size_t(batch) * size_t(in), nw = size_t(out) * size_t(in),
               ny = size_t(batch) * size_t(out);
  const std::vector<double> xa = abs_of(x, nx), wa = abs_of(w, nw), dya = abs_of(dy, ny);
  const std::vector<double> zero_bias(size_t(out), 0.0);
  std::vector<double> db(static_cast<size_t>(out));
  DenseMagnitudes m{std::vector<double>(ny), std::vector<double>(nx), std::vector<double>(nw)};
  cpu::linear_forward(m.y.data(), xa.data(), wa.data(), zero_bias.data(), batch, in, out);
  cpu::linear_backward(m.dx.data(), m.dw.data(), db.data(), dya.data(), xa.data(), wa.data(), batch,
                       in, out);
  return m;
}

double norm_of(const std::vector<double>& v) {
  return l2_norm(v, 0, v.size());
}

DenseOutputs run_dense(const CublasHandle& h, const DenseSize& n, const DeviceBuffer<float>& x,
                       const DeviceBuffer<float>& w, const DeviceBuffer<float>& dy,
                       DeviceBuffer<float>& y, DeviceBuffer<float>& dx, DeviceBuffer<float>& dw,
                       const CudaStream& s) {
  poison(y, s), poison(dx, s), poison(dw, s);
  dense_forward(h, y.data(), x.data(), w.data(), n.batch, n.in, n.out);
  dense_backward_data(h, dx.data(), dy.data(), w.data(), n.batch, n.in, n.out);
  dense_backward_filter(h, dw.data(), x.data(), dy.data(), n.batch, n.in, n.out);
  return {download(y, s), download(dx, s), download(dw, s)};
}

void check_dense(bool tf32) {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  CudaStream stream;
  const CublasHandle h(stream.get(), tf32);
  for (const DenseSize& n : kDenseSizes) {
    INFO("dense batch " << n.batch << " in " << n.in << " out " << n.out
                        << (tf32 ? " (TF32)" : " (strict fp32)"));
    const std::vector<float> x = test::random_vector<float>(rng, size_t(n.batch) * n.in, -1, 1);
    const std::vector<float> w = test::random_vector<float>(rng, size_t(n.out) * n.in, -0.5, 0.5);
    const std::vector<float> dy = test::random_vector<float>(rng, size_t(n.batch) * n.out, -1, 1);
    const std::vector<double> xd = widen(x), wd = widen(w), dyd = widen(dy);
    const std::vector<double> zero_bias(size_t(n.out), 0.0);
    std::vector<double> y_ref(dy.size()), dx_ref(x.size()), dw_ref(w.size()), db(size_t(n.out));
    cpu::linear_forward(y_ref.data(), xd.data(), wd.data(), zero_bias.data(), n.batch, n.in, n.out);
    cpu::linear_backward(dx_ref.data(), dw_ref.data(), db.data(), dyd.data(), xd.data(), wd.data(),
                         n.batch, n.in, n.out);

    DeviceBuffer<float> d_x = upload(x, stream), d_w = upload(w, stream), d_dy = upload(dy, stream);
    DeviceBuffer<float> d_y(dy.size(), "y"), d_dx(x.size(), "dx"), d_dw(w.size(), "dw");
    const DenseOutputs got = run_dense(h, n, d_x, d_w, d_dy, d_y, d_dx, d_dw, stream);
    // Terms per element: y sums over in, dx over out, dW over the batch. With the floor of the
    // terms' magnitudes (dense_magnitudes): {129, 16, 1} has a 16-element dW, {1, 3136, 16} a
    // 16-element y.
    const DenseMagnitudes m = dense_magnitudes(x.data(), w.data(), dy.data(), n.batch, n.in, n.out);
    const double tol_floor = tf32 ? kTf32RelL2Tol : 0.0;  // LOOSE under TF32, see top
    const double y_tol = std::max(tol_floor, fp32_rel_l2_tol(n.in)),
                 dx_tol = std::max(tol_floor, fp32_rel_l2_tol(n.out)),
                 dw_tol = std::max(tol_floor, fp32_rel_l2_tol(n.batch));
    check_rel_l2(compare(got.y.data(), y_ref.data(), y_ref.size()), "dense forward y", y_tol,
                 y_tol * norm_of(m.y));
    check_rel_l2(compare(got.dx.data(), dx_ref.data(), dx_ref.size()), "dense backward_data dx",
                 dx_tol, dx_tol * norm_of(m.dx));
    check_rel_l2(compare(got.dw.data(), dw_ref.data(), dw_ref.size()), "dense backward_filter dW",
                 dw_tol, dw_tol * norm_of(m.dw));

    if (!tf32) {  // the same call twice gives the same bits
      const DenseOutputs again = run_dense(h, n, d_x, d_w, d_dy, d_y, d_dx, d_dw, stream);
      CHECK(bit_identical(got.y, again.y));
      CHECK(bit_identical(got.dx, again.dx));
      CHECK(bit_identical(got.dw, again.dw));
    }
  }
}

}  // namespace

TEST_CASE("dense layers match the CPU reference in strict fp32", "[gpu][dense]") {
  check_dense(false);
}

TEST_CASE("dense layers with TF32 run and stay within a LOOSE bound", "[gpu][dense]") {
  check_dense(true);
}

TEST_CASE("the paired dense launchers compute both latent heads in strict fp32", "[gpu][dense]") {
  // Two layers laid out as encoder.mu and encoder.logvar are: weight, bias, weight, bias (the
  // weight stride is out * in + out), outputs and output gradients max_batch * out apart.
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int in = 16;
  const int out = GENERATE(1, 2, 17);
  const int batch = GENERATE(1, 129);
  const int max_batch = batch + 3;  // a stride longer than the batch, as for the last batch
  INFO("batch " << batch << " out " << out);
  CudaStream stream;
  const CublasHandle h(stream.get(), false);
  const long long w_stride = (long long)out * in + out, y_stride = (long long)max_batch * out;
  const std::vector<float> x = test::random_vector<float>(rng, size_t(batch) * in, -1, 1);
  const std::vector<float> w = test::random_vector<float>(rng, size_t(2 * w_stride), -0.5, 0.5);
  const std::vector<float> dy = test::random_vector<float>(rng, size_t(2 * y_stride), -1, 1);
  DeviceBuffer<float> d_x = upload(x, stream), d_w = upload(w, stream), d_dy = upload(dy, stream);
  DeviceBuffer<float> d_y(size_t(2 * y_stride), "y"), d_dx(x.size(), "dx");
  DeviceBuffer<float> d_dw(size_t(2 * w_stride), "dW");
  poison(d_y, stream), poison(d_dx, stream), poison(d_dw, stream);
  dense_forward_pair(h, d_y.data(), y_stride, d_x.data(), d_w.data(), w_stride, batch, in, out);
  dense_backward_filter_pair(h, d_dw.data(), w_stride, d_x.data(), d_dy.data(), y_stride, batch, in,
                             out);
  dense_backward_data(h, d_dx.data(), d_dy.data(), d_w.data(), batch, in, out);
  dense_backward_data(h, d_dx.data(), d_dy.data() + y_stride, d_w.data() + w_stride, batch, in, out,
                      true);
  const std::vector<float> y = download(d_y, stream), dx = download(d_dx, stream),
                           dw = download(d_dw, stream);

  const std::vector<double> xd = widen(x), zero_bias(size_t(out), 0.0);
  std::vector<double> dx_ref(x.size(), 0.0), dx_terms(x.size(), 0.0);
  for (int head = 0; head < 2; ++head) {
    INFO("head " << head);
    const size_t wo = size_t(head * w_stride), yo = size_t(head * y_stride);
    const std::vector<double> wd(w.begin() + long(wo), w.begin() + long(wo) + out * in);
    const std::vector<double> dyd(dy.begin() + long(yo), dy.begin() + long(yo) + batch * out);
    std::vector<double> y_ref(size_t(batch) * out), dx_head(x.size()), dw_ref(wd.size()),
        db(static_cast<size_t>(out));
    cpu::linear_forward(y_ref.data(), xd.data(), wd.data(), zero_bias.data(), batch, in, out);
    cpu::linear_backward(dx_head.data(), dw_ref.data(), db.data(), dyd.data(), xd.data(), wd.data(),
                         batch, in, out);
    for (size_t i = 0; i < dx_ref.size(); ++i) dx_ref[i] += dx_head[i];
    // With the floor of the terms' magnitudes (dense_magnitudes): at out = 1 and batch = 1, y is
    // a single sum of 16 products.
    const DenseMagnitudes m =
        dense_magnitudes(x.data(), w.data() + wo, dy.data() + yo, batch, in, out);
    for (size_t i = 0; i < dx_terms.size(); ++i) dx_terms[i] += m.dx[i];
    check_rel_l2(compare(y.data() + yo, y_ref.data(), y_ref.size()), "paired forward y",
                 fp32_rel_l2_tol(in), fp32_rel_l2_tol(in) * norm_of(m.y));
    check_rel_l2(compare(dw.data() + wo, dw_ref.data(), dw_ref.size()), "paired dW",
                 fp32_rel_l2_tol(batch), fp32_rel_l2_tol(batch) * norm_of(m.dw));
    // The bias slots between the weights are not the GEMM's: still poison (NaN).
    for (int j = 0; j < out; ++j) CHECK(std::isnan(dw[wo + size_t(out * in + j)]));
  }
  // dx = dy_0 W_0 + dy_1 W_1, the second GEMM adding to the first's result.
  check_rel_l2(compare(dx.data(), dx_ref.data(), dx_ref.size()), "accumulated dx",
               2 * fp32_rel_l2_tol(out), 2 * fp32_rel_l2_tol(out) * norm_of(dx_terms));
}

TEST_CASE("dense layers reject bad sizes and null pointers", "[gpu][dense]") {
  CudaStream stream;
  const CublasHandle h(stream.get(), false);
  DeviceBuffer<float> a(64, "a"), b(64, "b"), c(64, "c");
  // The last call launches a GEMM that reads b and c: zeroed, as cudaMalloc leaves memory
  // uninitialised (compute-sanitizer's initcheck would flag the reads); a too, the output.
  for (DeviceBuffer<float>* buf : {&a, &b, &c})
    CUDA_CHECK(cudaMemsetAsync(buf->data(), 0, buf->bytes(), stream.get()));
  CHECK_THROWS_AS(dense_forward(h, a.data(), b.data(), c.data(), 0, 2, 2), Error);
  CHECK_THROWS_AS(dense_forward(h, a.data(), b.data(), c.data(), 2, 0, 2), Error);
  CHECK_THROWS_AS(dense_backward_data(h, a.data(), b.data(), c.data(), 2, 2, -1), Error);
  CHECK_THROWS_AS(dense_forward(h, nullptr, b.data(), c.data(), 2, 2, 2), Error);
  CHECK_THROWS_AS(dense_backward_data(h, a.data(), nullptr, c.data(), 2, 2, 2), Error);
  CHECK_THROWS_AS(dense_backward_filter(h, a.data(), b.data(), nullptr, 2, 2, 2), Error);
  CHECK_THROWS_AS(dense_forward_pair(h, a.data(), -1, b.data(), c.data(), 4, 2, 2, 2), Error);
  CHECK_THROWS_AS(dense_forward_pair(h, a.data(), 8, nullptr, c.data(), 4, 2, 2, 2), Error);
  CHECK_THROWS_AS(dense_backward_filter_pair(h, a.data(), 4, b.data(), c.data(), 8, 0, 2, 2),
                  Error);
  CHECK_NOTHROW(dense_forward(h, a.data(), b.data(), c.data(), 2, 2, 2));
  stream.synchronize();
}

// ---- dense, bf16 forms --------------------------------------------------------------------------

namespace {
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
