// GPU tests of the cuDNN convolutions (ConvOp, cuda/libs/conv.cuh) and the cuBLAS dense layers
// (cuda/libs/dense.cuh, single and paired) against the CPU reference (host/cpu/cpu_ref.h, evaluated
// in double on the same fp32 inputs, with a zero bias; the bias gradient is not compared: bias is
// another kernel's). Every output is poisoned with NaN (0xFF bytes) before each call, so an element
// a call forgot to write fails the comparison. Inputs are fresh random numbers per run; the seed is
// printed (replay with CUVAE_TEST_SEED=<seed>).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda/libs/conv.cuh"
#include "cuda/libs/dense.cuh"
#include "cuda/runtime/device_buffer.cuh"
#include "host/core/model.h"
#include "host/cpu/cpu_ref.h"
#include "tests/gpu/layouts.h"
#include "tests/test_support.h"

using namespace cuvae;
using namespace cuvae::test;

namespace {

// ---- tolerances --------------------------------------------------------------------------
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
double fp32_rel_l2_tol(int64_t terms) {
  return std::max(1e-5, 4.0 * kUnitRoundoff * std::sqrt(double(terms)));
}

// LOOSE, on purpose: TF32 tensor cores round each fp32 input to a 10-bit mantissa (relative
// error up to 2^-11 ~ 4.9e-4 per operand), so a TF32 result differs from the fp32 one by a few
// 1e-4 in rel L2. This bound only shows that the TF32 path runs and computes the right thing;
// the exactness of the layout and indexing is checked by the fp32-strict tests.
constexpr double kTf32RelL2Tol = 5e-3;

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

std::vector<double> widen(const std::vector<float>& v) {
  return {v.begin(), v.end()};
}

DeviceBuffer<float> upload(const std::vector<float>& h, const CudaStream& s) {
  DeviceBuffer<float> d(h.size(), "a test tensor");
  d.upload(h.data(), h.size(), s.get());
  return d;
}

// Every byte 0xFF: each float reads as a NaN.
void poison(DeviceBuffer<float>& d, const CudaStream& s) {
  CUDA_CHECK(cudaMemsetAsync(d.data(), 0xFF, d.bytes(), s.get()));
}

std::vector<float> download(const DeviceBuffer<float>& d, const CudaStream& s) {
  std::vector<float> h(d.size());
  d.download(h.data(), h.size(), s.get());
  s.synchronize();
  return h;
}

bool all_finite(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float f) { return std::isfinite(f); });
}

bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// CHECK (not REQUIRE) so that one run on a GPU reports every tensor that is off. abs_floor: see
// Diff::within_l2 (0: the relative bound alone).
void check_rel_l2(const Diff& d, const std::string& name, double tol, double abs_floor = 0) {
  INFO(d.report(name) << "; tolerance " << tol << ", absolute floor " << abs_floor);
  CHECK_FALSE(d.non_finite);
  CHECK(d.within_l2(tol, abs_floor));
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
