// GPU tests of the cuDNN convolutions (ConvOp, cuda/libs/conv.cuh) against the CPU reference
// (host/cpu/cpu_ref.h, in double on the same inputs, zero bias): strict fp32 with both policies,
// NCHW and NHWC, bit-reproducible with the deterministic policy, TF32 within a LOOSE bound,
// argument checks; and ConvMath::Bf16 against a double reference on the bf16 inputs. Every output
// is poisoned before each call; the seed is printed (replay with CUVAE_TEST_SEED=<seed>).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cuda/libs/conv.cuh"
#include "cuda/runtime/device_buffer.cuh"
#include "host/core/error.h"
#include "host/core/model.h"
#include "host/cpu/cpu_ref.h"
#include "tests/gpu/checks.h"
#include "tests/gpu/device_io.h"
#include "tests/gpu/layouts.h"
#include "tests/test_support.h"

using namespace cuvae;
using namespace cuvae::test;

namespace {

// ---- tolerances of the FFT and Winograd passes --------------------------------------------------

// LOOSER, for a pass whose chosen algorithm is FFT or Winograd (ConvOp::uses_transform), as the
// Fastest policy may choose. These do not sum an output's own products: they transform tiles of
// the input and the filter, multiply pointwise and transform back, and the rounding of each
// step is relative to the norms of the transformed tiles, amplified by the transforms' matrices
// (a few times for FFTs and for Winograd F(2x2, 3x3), one to two orders of magnitude more for
// the larger Winograd tiles): in fp32 up to ~1e-4 relative where a direct sum gives ~1e-6.
// 1e-3 leaves room and still rejects a wrong index, transpose or stride (~1). Under TF32 the
// pointwise products may run on tensor cores with 10-bit mantissas, and the inverse transform
// amplifies that rounding in turn: 3e-2, still far from a wrong result. (Bounds from the
// algorithms' structure, not yet measured on this project's GPUs.)
constexpr double kTransformRelL2Tol = 1e-3;
constexpr double kTf32TransformRelL2Tol = 3e-2;

// ---- helpers -----------------------------------------------------------------------------

Layer conv_layer(const std::string& name, int cin, int cout, int h, int w, int stride) {
  Layer l{name, LayerKind::Conv2d, cin, cout};
  l.kernel = 3, l.stride = stride, l.pad = 1;
  l.in_h = h, l.in_w = w;
  l.out_h = (h + 2 - 3) / stride + 1;
  l.out_w = (w + 2 - 3) / stride + 1;
  return l;
}

Layer deconv_layer(const std::string& name, int cin, int cout, int h, int w, int stride,
                   int out_pad) {
  Layer l{name, LayerKind::ConvTranspose2d, cin, cout};
  l.kernel = 3, l.stride = stride, l.pad = 1, l.out_pad = out_pad;
  l.in_h = h, l.in_w = w;
  l.out_h = (h - 1) * stride - 2 + 3 + out_pad;
  l.out_w = (w - 1) * stride - 2 + 3 + out_pad;
  return l;
}

// The model's layers plus odd geometries: channel counts that are not multiples of anything,
// odd and non-square images, stride 2 with and without output padding, stride 1.
std::vector<Layer> all_conv_geometries() {
  std::vector<Layer> v = model_conv_layers();
  v.push_back(conv_layer("odd.conv_3to5_7x7_s2", 3, 5, 7, 7, 2));
  v.push_back(conv_layer("odd.conv_3to5_7x7_s1", 3, 5, 7, 7, 1));
  v.push_back(conv_layer("odd.conv_2to3_9x6_s2", 2, 3, 9, 6, 2));
  v.push_back(deconv_layer("odd.deconv_3to5_5x5_s2_op1", 3, 5, 5, 5, 2, 1));
  v.push_back(deconv_layer("odd.deconv_3to5_5x5_s2_op0", 3, 5, 5, 5, 2, 0));
  v.push_back(deconv_layer("odd.deconv_3to5_5x5_s1", 3, 5, 5, 5, 1, 0));
  v.push_back(deconv_layer("odd.deconv_4to2_3x6_s2_op1", 4, 2, 3, 6, 2, 1));
  return v;
}

constexpr int kBatches[] = {1, 3, 127, 129};

size_t weight_count(const Layer& l) {
  return size_t(l.in_channels) * l.out_channels * l.kernel * l.kernel;
}
// Random inputs of one conv layer at one batch, and the CPU reference outputs in double.
struct ConvCase {
  std::vector<float> x, w, dy;          // (B,in,H,W), weight, (B,out,Ho,Wo)
  std::vector<double> y, dx, dw;        // reference forward, backward-data, backward-filter
  int64_t y_terms, dx_terms, dw_terms;  // products summed per output element (at most)
};

ConvCase make_case(const Layer& l, int batch, std::mt19937_64& rng, bool with_reference) {
  ConvCase c;
  c.x = test::random_vector<float>(rng, size_t(batch) * l.in_size(), -1, 1);
  c.w = test::random_vector<float>(rng, weight_count(l), -0.5, 0.5);
  c.dy = test::random_vector<float>(rng, size_t(batch) * l.out_size(), -1, 1);
  const int64_t taps = int64_t(l.kernel) * l.kernel;
  c.y_terms = l.in_channels * taps;
  c.dx_terms = l.out_channels * taps;
  // The filter gradient sums over the batch and the positions of the conv's output grid: the
  // layer output for a Conv2d, the layer input for a transposed one.
  c.dw_terms = int64_t(batch) * (l.kind == LayerKind::Conv2d ? int64_t(l.out_h) * l.out_w
                                                             : int64_t(l.in_h) * l.in_w);
  if (!with_reference) return c;
  const std::vector<double> x = widen(c.x), w = widen(c.w), dy = widen(c.dy);
  const std::vector<double> zero_bias(size_t(l.out_channels), 0.0);
  std::vector<double> db(size_t(l.out_channels));  // ignored: the bias is not ConvOp's
  c.y.resize(size_t(batch) * l.out_size());
  c.dx.resize(x.size());
  c.dw.resize(w.size());
  if (l.kind == LayerKind::Conv2d) {
    cpu::conv2d_forward(c.y.data(), x.data(), w.data(), zero_bias.data(), batch, l);
    cpu::conv2d_backward(c.dx.data(), c.dw.data(), db.data(), dy.data(), x.data(), w.data(), batch,
                         l);
  } else {
    cpu::conv_transpose2d_forward(c.y.data(), x.data(), w.data(), zero_bias.data(), batch, l);
    cpu::conv_transpose2d_backward(c.dx.data(), c.dw.data(), db.data(), dy.data(), x.data(),
                                   w.data(), batch, l);
  }
  return c;
}

// Device copies of a case's inputs and room for the three outputs.
struct ConvBuffers {
  DeviceBuffer<float> x, w, dy, y, dx, dw;
  ConvBuffers(const ConvCase& c, const CudaStream& s)
      : x(upload(c.x, s)),
        w(upload(c.w, s)),
        dy(upload(c.dy, s)),
        y(c.dy.size(), "y"),
        dx(c.x.size(), "dx"),
        dw(c.w.size(), "dw") {}
};

struct ConvOutputs {
  std::vector<float> y, dx, dw;
};

// Poisons the outputs, runs the three passes, downloads the results.
ConvOutputs run_conv(const ConvOp& op, ConvBuffers& b, DeviceBuffer<unsigned char>& ws,
                     const CudaStream& s) {
  poison(b.y, s), poison(b.dx, s), poison(b.dw, s);
  op.forward(b.y.data(), b.x.data(), b.w.data(), ws.data(), ws.size());
  op.backward_data(b.dx.data(), b.dy.data(), b.w.data(), ws.data(), ws.size());
  op.backward_filter(b.dw.data(), b.x.data(), b.dy.data(), ws.data(), ws.size());
  CUDA_CHECK(cudaGetLastError());
  return {download(b.y, s), download(b.dx, s), download(b.dw, s)};
}

// Each output against the reference within the larger of tol_floor and the fp32 bound of its
// sums; for a pass whose algorithm is FFT or Winograd, within the larger of that and
// transform_tol (kTransformRelL2Tol or kTf32TransformRelL2Tol: see there).
void compare_conv(const ConvOutputs& got, const ConvCase& c, const ConvOp& op, double tol_floor,
                  double transform_tol) {
  auto tol = [&](ConvPass pass, int64_t terms) {
    const double direct = std::max(tol_floor, fp32_rel_l2_tol(terms));
    return op.uses_transform(pass) ? std::max(direct, transform_tol) : direct;
  };
  check_rel_l2(compare(got.y.data(), c.y.data(), c.y.size()), "forward y",
               tol(ConvPass::Forward, c.y_terms));
  check_rel_l2(compare(got.dx.data(), c.dx.data(), c.dx.size()), "backward_data dx",
               tol(ConvPass::BackwardData, c.dx_terms));
  check_rel_l2(compare(got.dw.data(), c.dw.data(), c.dw.size()), "backward_filter dw",
               tol(ConvPass::BackwardFilter, c.dw_terms));
}

const char* policy_name(ConvAlgoPolicy p) {
  return p == ConvAlgoPolicy::Deterministic ? "Deterministic" : "Fastest";
}

// ---- layouts ---------------------------------------------------------------------------------
//
// Each ConvOp test that runs an op in both layouts (GENERATE over ConvLayout) keeps the CPU
// reference in NCHW: for an NHWC op the inputs are permuted into channels-last order before the
// upload and the outputs back after the download (tests/gpu/layouts.h).

struct LayerAtBatch {
  Layer layer;
  int batch;
};

// The strict fp32 comparison's cases. NCHW: every geometry at every batch of kBatches. NHWC: the
// model's layers at batches 1, 3 and 64, and the odd geometries at batch 3.
std::vector<LayerAtBatch> strict_cases(ConvLayout layout) {
  std::vector<LayerAtBatch> v;
  if (layout == ConvLayout::Nchw) {
    for (const Layer& l : all_conv_geometries())
      for (int batch : kBatches) v.push_back({l, batch});
    return v;
  }
  for (const Layer& l : model_conv_layers())
    for (int batch : {1, 3, 64}) v.push_back({l, batch});
  for (const Layer& l : all_conv_geometries())
    if (l.name.rfind("odd.", 0) == 0) v.push_back({l, 3});
  return v;
}
}  // namespace

// ---- convolutions ------------------------------------------------------------------------

TEST_CASE("ConvOp matches the CPU reference in strict fp32, both policies, NCHW and NHWC",
          "[gpu][conv]") {
  const ConvLayout layout = GENERATE(ConvLayout::Nchw, ConvLayout::Nhwc);
  const bool nhwc = layout == ConvLayout::Nhwc;
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  CudaStream stream;
  CudnnHandle cudnn(stream.get());
  for (const LayerAtBatch& lb : strict_cases(layout)) {
    const Layer& l = lb.layer;
    INFO(conv_label(l, lb.batch) << ", " << layout_name(layout));
    const ConvCase c = make_case(l, lb.batch, rng, true);
    // Named, not a temporary: upload() does not wait for its copies to finish.
    const ConvCase c_nhwc = nhwc ? channels_last(c, l, lb.batch) : ConvCase{};
    ConvBuffers b(nhwc ? c_nhwc : c, stream);
    for (ConvAlgoPolicy policy : {ConvAlgoPolicy::Deterministic, ConvAlgoPolicy::Fastest}) {
      INFO("policy " << policy_name(policy));
      const ConvOp op(cudnn, l, lb.batch, ConvMath::Fp32Strict, policy, layout);
      INFO(op.describe());
      CHECK(op.layout() == layout);
      CHECK_THAT(op.describe(), Catch::Contains(layout_name(layout)));
      DeviceBuffer<unsigned char> ws(op.workspace_bytes(), "the conv workspace");
      // The same tolerances in both layouts: the layout changes where values lie, not the
      // arithmetic. LOOSER for a pass the Fastest policy gave to FFT or Winograd (see
      // kTransformRelL2Tol).
      compare_conv(in_reference_layout(run_conv(op, b, ws, stream), l, lb.batch, layout), c, op,
                   0.0, kTransformRelL2Tol);
    }
  }
}

TEST_CASE("ConvOp with the deterministic policy is bit-reproducible, NCHW and NHWC",
          "[gpu][conv]") {
  const ConvLayout layout = GENERATE(ConvLayout::Nchw, ConvLayout::Nhwc);
  const bool nhwc = layout == ConvLayout::Nhwc;
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  CudaStream stream;
  CudnnHandle cudnn(stream.get());
  std::vector<Layer> layers = model_conv_layers();
  layers.push_back(conv_layer("odd.conv_3to5_7x7_s2", 3, 5, 7, 7, 2));
  layers.push_back(deconv_layer("odd.deconv_3to5_5x5_s2_op1", 3, 5, 5, 5, 2, 1));
  // NHWC at batch 64 where NCHW takes 129.
  const std::vector<int> batches = nhwc ? std::vector<int>{3, 64} : std::vector<int>{3, 129};
  for (const Layer& l : layers)
    for (int batch : batches) {
      INFO(conv_label(l, batch) << ", " << layout_name(layout));
      const ConvCase c = make_case(l, batch, rng, false);
      // Named, not a temporary: upload() does not wait for its copies to finish.
      const ConvCase c_nhwc = nhwc ? channels_last(c, l, batch) : ConvCase{};
      ConvBuffers b(nhwc ? c_nhwc : c, stream);
      // Two ops built independently must choose the same algorithms, and two runs of either
      // must give the same bits (including backward_filter, where atomics would show). The bits
      // are compared in the op's own layout.
      const ConvOp first(cudnn, l, batch, ConvMath::Fp32Strict, ConvAlgoPolicy::Deterministic,
                         layout);
      const ConvOp second(cudnn, l, batch, ConvMath::Fp32Strict, ConvAlgoPolicy::Deterministic,
                          layout);
      INFO(first.describe());
      REQUIRE(first.describe() == second.describe());
      DeviceBuffer<unsigned char> ws(first.workspace_bytes(), "the conv workspace");
      const ConvOutputs a = run_conv(first, b, ws, stream);
      const ConvOutputs a2 = run_conv(first, b, ws, stream);
      const ConvOutputs s = run_conv(second, b, ws, stream);
      CHECK(all_finite(a.y));
      CHECK(all_finite(a.dx));
      CHECK(all_finite(a.dw));
      CHECK(bit_identical(a.y, a2.y));
      CHECK(bit_identical(a.dx, a2.dx));
      CHECK(bit_identical(a.dw, a2.dw));
      CHECK(bit_identical(a.y, s.y));
      CHECK(bit_identical(a.dx, s.dx));
      CHECK(bit_identical(a.dw, s.dw));
    }
}

TEST_CASE("ConvOp throws on a too-small workspace and null pointers, before launching",
          "[gpu][conv]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  CudaStream stream;
  CudnnHandle cudnn(stream.get());
  int exercised = 0;
  for (const Layer& l : model_conv_layers())
    for (ConvAlgoPolicy policy : {ConvAlgoPolicy::Deterministic, ConvAlgoPolicy::Fastest}) {
      const int batch = 129;
      INFO(conv_label(l, batch) << ", policy " << policy_name(policy));
      const ConvCase c = make_case(l, batch, rng, false);
      ConvBuffers b(c, stream);
      const ConvOp op(cudnn, l, batch, ConvMath::Fp32Strict, policy);
      INFO(op.describe());
      const size_t need = op.workspace_bytes();
      DeviceBuffer<unsigned char> ws(need, "the conv workspace");

      // Null tensors are rejected whatever the workspace.
      CHECK_THROWS_AS(op.forward(nullptr, b.x.data(), b.w.data(), ws.data(), need), Error);
      CHECK_THROWS_AS(op.backward_data(b.dx.data(), nullptr, b.w.data(), ws.data(), need), Error);
      CHECK_THROWS_AS(op.backward_filter(b.dw.data(), b.x.data(), nullptr, ws.data(), need), Error);
      if (need == 0) continue;
      ++exercised;
      poison(b.y, stream), poison(b.dx, stream), poison(b.dw, stream);
      CHECK_THROWS_AS(op.forward(b.y.data(), b.x.data(), b.w.data(), ws.data(), need - 1), Error);
      CHECK_THROWS_AS(op.backward_data(b.dx.data(), b.dy.data(), b.w.data(), ws.data(), need - 1),
                      Error);
      CHECK_THROWS_AS(op.backward_filter(b.dw.data(), b.x.data(), b.dy.data(), ws.data(), need - 1),
                      Error);
      CHECK_THROWS_AS(op.forward(b.y.data(), b.x.data(), b.w.data(), nullptr, need), Error);
      // Nothing was launched: the outputs still hold the poison.
      const std::vector<float> y = download(b.y, stream), dw = download(b.dw, stream);
      CHECK(std::all_of(y.begin(), y.end(), [](float f) { return std::isnan(f); }));
      CHECK(std::all_of(dw.begin(), dw.end(), [](float f) { return std::isnan(f); }));
    }
  if (exercised == 0)
    WARN("no chosen algorithm needed a workspace, so the too-small case was not exercised");
}

TEST_CASE("ConvOp rejects inconsistent layers", "[gpu][conv]") {
  CudaStream stream;
  CudnnHandle cudnn(stream.get());
  const auto build = [&](const Layer& l, int batch) {
    ConvOp op(cudnn, l, batch, ConvMath::Fp32Strict, ConvAlgoPolicy::Deterministic);
  };
  Layer wrong_out = conv_layer("bad.conv", 3, 5, 7, 7, 2);
  wrong_out.out_h += 1;
  CHECK_THROWS_AS(build(wrong_out, 2), Error);
  Layer wrong_pad = deconv_layer("bad.deconv", 3, 5, 5, 5, 2, 1);
  wrong_pad.out_pad = 2;  // >= stride, and out_h no longer matches
  CHECK_THROWS_AS(build(wrong_pad, 2), Error);
  Layer linear{"bad.linear", LayerKind::Linear, 3, 5};
  CHECK_THROWS_AS(build(linear, 2), Error);
  CHECK_THROWS_AS(build(conv_layer("ok.conv", 3, 5, 7, 7, 2), 0), Error);
  CHECK_NOTHROW(build(conv_layer("ok.conv", 3, 5, 7, 7, 2), 1));
}

TEST_CASE("ConvOp with TF32 runs and stays within a LOOSE bound, NCHW and NHWC", "[gpu][conv]") {
  const ConvLayout layout = GENERATE(ConvLayout::Nchw, ConvLayout::Nhwc);
  const bool nhwc = layout == ConvLayout::Nhwc;
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  CudaStream stream;
  CudnnHandle cudnn(stream.get());
  for (const Layer& l : model_conv_layers()) {
    const int batch = nhwc ? 64 : 127;
    INFO(conv_label(l, batch) << ", " << layout_name(layout));
    const ConvCase c = make_case(l, batch, rng, true);
    // Named, not a temporary: upload() does not wait for its copies to finish.
    const ConvCase c_nhwc = nhwc ? channels_last(c, l, batch) : ConvCase{};
    ConvBuffers b(nhwc ? c_nhwc : c, stream);
    for (ConvAlgoPolicy policy : {ConvAlgoPolicy::Deterministic, ConvAlgoPolicy::Fastest}) {
      INFO("policy " << policy_name(policy));
      const ConvOp op(cudnn, l, batch, ConvMath::Tf32, policy, layout);
      INFO(op.describe());
      CHECK(op.layout() == layout);
      DeviceBuffer<unsigned char> ws(op.workspace_bytes(), "the conv workspace");
      // LOOSE: TF32, see top; LOOSER for FFT or Winograd under TF32 (kTf32TransformRelL2Tol).
      compare_conv(in_reference_layout(run_conv(op, b, ws, stream), l, batch, layout), c, op,
                   kTf32RelL2Tol, kTf32TransformRelL2Tol);
    }
  }
}

// ---- channels-last (NHWC) convolutions ---------------------------------------------------------

TEST_CASE("the tests' NHWC permutations put channels last and invert each other", "[gpu][conv]") {
  // (n, c, h, w) = (2, 3, 2, 4), each element's value its NCHW index.
  std::vector<float> v(2 * 3 * 2 * 4);
  std::iota(v.begin(), v.end(), 0.0f);
  const std::vector<float> t = nchw_to_nhwc(v, 2, 3, 2, 4);
  // (b, c, y, x) moves from ((b*3 + c)*2 + y)*4 + x to ((b*2 + y)*4 + x)*3 + c.
  CHECK(t[0] == 0.0f);    // (0, 0, 0, 0)
  CHECK(t[1] == 8.0f);    // (0, 1, 0, 0)
  CHECK(t[2] == 16.0f);   // (0, 2, 0, 0)
  CHECK(t[3] == 1.0f);    // (0, 0, 0, 1)
  CHECK(t[12] == 4.0f);   // (0, 0, 1, 0)
  CHECK(t[24] == 24.0f);  // (1, 0, 0, 0)
  CHECK(t[47] == 47.0f);  // (1, 2, 1, 3)
  CHECK(nhwc_to_nchw(t, 2, 3, 2, 4) == v);
  // A filter [K, C, R, S] = [2, 3, 3, 3]: (k, c, r, s) moves to ((k*3 + r)*3 + s)*3 + c.
  std::vector<float> f(2 * 3 * 3 * 3);
  std::iota(f.begin(), f.end(), 0.0f);
  const std::vector<float> g = kcrs_to_krsc(f, 2, 3, 3, 3);
  CHECK(g[1] == 9.0f);    // (0, 1, 0, 0)
  CHECK(g[3] == 1.0f);    // (0, 0, 0, 1)
  CHECK(g[9] == 3.0f);    // (0, 0, 1, 0)
  CHECK(g[27] == 27.0f);  // (1, 0, 0, 0)
  CHECK(krsc_to_kcrs(g, 2, 3, 3, 3) == f);
}

TEST_CASE("ConvOp reports its layout: NCHW unless built with ConvLayout::Nhwc", "[gpu][conv]") {
  CudaStream stream;
  CudnnHandle cudnn(stream.get());
  for (const Layer& l : model_conv_layers()) {
    INFO(conv_label(l, 3));
    const ConvOp plain(cudnn, l, 3, ConvMath::Fp32Strict, ConvAlgoPolicy::Deterministic);
    const ConvOp nhwc(cudnn, l, 3, ConvMath::Fp32Strict, ConvAlgoPolicy::Deterministic,
                      ConvLayout::Nhwc);
    INFO(plain.describe() << "\n" << nhwc.describe());
    CHECK(plain.layout() == ConvLayout::Nchw);
    CHECK_THAT(plain.describe(), Catch::Contains("NCHW") && !Catch::Contains("NHWC"));
    CHECK(nhwc.layout() == ConvLayout::Nhwc);
    CHECK_THAT(nhwc.describe(), Catch::Contains("NHWC") && !Catch::Contains("NCHW"));
  }
}

// ---- convolutions in bf16 (ConvMath::Bf16) ------------------------------------------------------

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
