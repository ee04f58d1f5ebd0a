// The whole CPU reference model: every parameter gradient against central finite differences
// of the loss in double precision, float against double, and bit-reproducibility.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <map>

#include "host/core/batch.h"
#include "host/core/bf16_round.h"
#include "host/cpu/cpu_model.h"
#include "tests/fixtures.h"
#include "tests/test_support.h"

using namespace cuvae;
using cuvae::test::compare;

using test::random_model_and_batch;

TEST_CASE("whole-model gradients match finite differences (double)", "[cpu_model][slow]") {
  const uint64_t seed = test::fresh_seed();
  const int dim = GENERATE(1, 3);
  const double beta = dim == 1 ? 1.0 : 2.0;
  const int batch = 3;
  INFO("seed " << seed << " D " << dim << " beta " << beta);
  const ModelDesc d = make_vae(dim);
  std::vector<double> params;
  cpu::Activations<double> a;
  random_model_and_batch(d, seed, batch, params, a);
  cpu::model_forward(d, params.data(), a, beta);
  std::vector<double> grads(d.num_params);
  test::poison(grads);
  cpu::model_backward(d, params.data(), a, beta, grads.data());
  for (double g : grads) REQUIRE(std::isfinite(g));  // every parameter's gradient was written

  std::mt19937_64 rng(seed ^ 0x5eed);
  cpu::Activations<double> probe = a;
  auto loss = [&] { return cpu::model_forward(d, params.data(), probe, beta).loss; };
  // A central difference only measures the gradient when w +- h stay in the same linear
  // piece of every ReLU. After each probe the sign pattern of all six ReLU layers is
  // compared with the unperturbed one; if a unit flipped, h shrinks tenfold (three tries),
  // and a coordinate that still crosses a kink is not judged (and counted).
  auto same_relu_pattern = [&] {
    for (size_t id = 0; id < d.layers.size(); ++id) {
      if (!d.layers[id].relu) continue;
      const std::vector<double>& base = a.out[id];
      const std::vector<double>& now = probe.out[id];
      for (size_t i = 0; i < base.size(); ++i)
        if ((base[i] > 0) != (now[i] > 0)) return false;
    }
    return true;
  };
  int checked = 0, on_kink = 0;
  for (const ParamTensor& p : d.params) {
    // The largest gradient of the tensor plus random coordinates.
    size_t largest = 0;
    for (size_t i = 1; i < p.numel; ++i)
      if (std::abs(grads[p.offset + i]) > std::abs(grads[p.offset + largest])) largest = i;
    std::vector<size_t> coords = {largest};
    std::uniform_int_distribution<size_t> pick(0, p.numel - 1);
    for (int k = 0; k < 4; ++k) coords.push_back(pick(rng));
    for (size_t i : coords) {
      double& w = params[p.offset + i];
      const double keep = w;
      double h = 1e-5, numeric = NAN;
      for (int attempt = 0; attempt < 3; ++attempt, h /= 10) {
        w = keep + h;
        const double up = loss();
        const bool up_ok = same_relu_pattern();
        w = keep - h;
        const double down = loss();
        const bool down_ok = same_relu_pattern();
        w = keep;
        if (up_ok && down_ok) {
          numeric = (up - down) / (2 * h);
          break;
        }
      }
      if (std::isnan(numeric)) {
        ++on_kink;
        continue;
      }
      ++checked;
      const double analytic = grads[p.offset + i];
      INFO(p.name << "[" << i << "]: analytic " << analytic << ", numeric " << numeric << " (h "
                  << h << ")");
      // Inside one linear piece the loss is smooth, so truncation (h^2) is negligible; the
      // rounding of a loss near 500 (measured: ~3e-13 per evaluation) bounds the absolute
      // error by about 1e-12 / h (1e-7 at h = 1e-5, 1e-5 at h = 1e-7).
      REQUIRE(std::abs(analytic - numeric) <= 1e-6 * std::abs(numeric) + 1e-12 / h);
    }
  }
  INFO("checked " << checked << " coordinates, " << on_kink << " left on a ReLU kink");
  REQUIRE(on_kink <= 3);
}

TEST_CASE("float reference agrees with the double reference", "[cpu_model]") {
  const uint64_t seed = test::fresh_seed();
  const int batch = GENERATE(1, 7);
  INFO("seed " << seed << " batch " << batch);
  const ModelDesc d = make_vae(2);
  std::vector<double> pd;
  std::vector<float> pf;
  cpu::Activations<double> ad;
  cpu::Activations<float> af;
  random_model_and_batch(d, seed, batch, pd, ad);
  random_model_and_batch(d, seed, batch, pf, af);
  const LossParts ld = cpu::model_forward(d, pd.data(), ad, 1.0);
  const LossParts lf = cpu::model_forward(d, pf.data(), af, 1.0);
  REQUIRE(std::abs(lf.loss - ld.loss) <= 1e-6 * std::abs(ld.loss));
  REQUIRE(std::abs(lf.kl - ld.kl) <= 1e-5 * std::abs(ld.kl) + 1e-9);
  std::vector<double> gd(d.num_params);
  std::vector<float> gf(d.num_params);
  test::poison(gd), test::poison(gf);
  cpu::model_backward(d, pd.data(), ad, 1.0, gd.data());
  cpu::model_backward(d, pf.data(), af, 1.0, gf.data());
  for (const ParamTensor& p : d.params)
    REQUIRE_REL_L2(compare(gf.data() + p.offset, gd.data() + p.offset, p.numel), p.name, 1e-5);
}

TEST_CASE("forward and backward are bit-reproducible", "[cpu_model]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  const ModelDesc d = make_vae(2);
  std::vector<float> p;
  cpu::Activations<float> a;
  random_model_and_batch(d, seed, 5, p, a);
  cpu::Activations<float> b = a;
  std::vector<float> g1(d.num_params), g2(d.num_params);
  const LossParts l1 = cpu::model_forward(d, p.data(), a, 1.0);
  cpu::model_backward(d, p.data(), a, 1.0, g1.data());
  const LossParts l2 = cpu::model_forward(d, p.data(), b, 1.0);
  cpu::model_backward(d, p.data(), b, 1.0, g2.data());
  REQUIRE(l1.loss == l2.loss);
  REQUIRE(std::memcmp(g1.data(), g2.data(), g1.size() * sizeof(float)) == 0);
}

TEST_CASE("the model of the bf16 mixed-precision step stores bf16 values and follows fp32",
          "[cpu_model][bf16][slow]") {
  const uint64_t seed = test::fresh_seed();
  const int batch = GENERATE(3, 64);
  INFO("seed " << seed << " batch " << batch);
  const ModelDesc d = make_vae(2);
  std::vector<float> p;
  cpu::Activations<float> mixed;
  random_model_and_batch(d, seed, batch, p, mixed);
  cpu::Activations<float> ref = mixed;
  const LossParts lm = cpu::model_forward_mixed(d, p.data(), mixed, 1.0);
  const LossParts lr = cpu::model_forward(d, p.data(), ref, 1.0);
  // What the mixed step stores in bf16 holds bf16 values (the conversion is the identity on
  // them); what it keeps in fp32 does not, in general.
  auto bf16_valued = [](const std::vector<float>& v) {
    return std::all_of(v.begin(), v.end(), [](float x) { return round_bf16(x) == x; });
  };
  CHECK(bf16_valued(mixed.out[kEncConv1]));
  CHECK(bf16_valued(mixed.out[kEncConv2]));
  CHECK(bf16_valued(mixed.out[kDecFc]));
  CHECK(bf16_valued(mixed.out[kDecDeconv1]));
  CHECK(bf16_valued(mixed.out[kDecDeconv2]));
  CHECK(bf16_valued(mixed.dlogits));
  CHECK_FALSE(bf16_valued(mixed.out[kEncFc]));
  CHECK_FALSE(bf16_valued(mixed.out[kDecOut]));  // a float bias added to bf16 sums
  CHECK_FALSE(bf16_valued(ref.out[kEncConv1]));
  // It is the same model: the loss within 1e-3 (measured: ~5e-5; bf16 keeps 8 significand
  // bits and the BCE averages its errors over 784 pixels), and the whole gradient points the
  // same way (measured cosine > 0.9999; single small tensors move more, up to ~0.1 relative at
  // batch 3, as ReLU units near 0 switch). Yet not the fp32 model: the gradients differ.
  REQUIRE(std::isfinite(lm.loss));
  REQUIRE(std::abs(lm.loss - lr.loss) <= 1e-3 * lr.loss);
  REQUIRE(std::abs(lm.loss - (lm.recon + lm.kl)) <= 1e-9 * lm.loss);
  std::vector<float> gm(d.num_params), gr(d.num_params);
  test::poison(gm);
  cpu::model_backward_mixed(d, p.data(), mixed, 1.0, gm.data());
  cpu::model_backward(d, p.data(), ref, 1.0, gr.data());
  double dot = 0, nm = 0, nr = 0;
  for (size_t i = 0; i < d.num_params; ++i) {
    REQUIRE(std::isfinite(gm[i]));
    dot += double(gm[i]) * gr[i], nm += double(gm[i]) * gm[i], nr += double(gr[i]) * gr[i];
  }
  const double cosine = dot / std::sqrt(nm * nr);
  INFO("cosine of the mixed and fp32 gradients " << cosine);
  CHECK(cosine >= 0.999);
  CHECK(compare(gm.data(), gr.data(), d.num_params).rel_l2 > 1e-5);
  // The roundings, not the sums' precision, make the difference: accumulating in double
  // moves the result far less (measured: loss ~1e-8, gradients ~1e-3 at batch 64).
  std::vector<double> pd(p.begin(), p.end());
  cpu::Activations<double> md;
  random_model_and_batch(d, seed, batch, pd, md);
  const LossParts ld = cpu::model_forward_mixed(d, pd.data(), md, 1.0);
  REQUIRE(std::abs(ld.loss - lm.loss) <= 1e-6 * lm.loss);
}

TEST_CASE("epoch permutations are seeded permutations", "[batch]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  const int64_t n = GENERATE(1, 2, 31, 4097);
  const auto p1 = epoch_permutation(seed, 1, n), again = epoch_permutation(seed, 1, n);
  const auto p2 = epoch_permutation(seed, 2, n);
  REQUIRE(p1 == again);
  std::vector<int32_t> sorted = p1;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < n; ++i) REQUIRE(sorted[size_t(i)] == i);
  if (n > 30) {
    CHECK(p1 != p2);
    int fixed = 0;
    for (int64_t i = 0; i < n; ++i) fixed += p1[size_t(i)] == i;
    CHECK(fixed < 8 + n / 100);  // a shuffled order, not the identity
  }
}

TEST_CASE("epoch permutations are uniform over the orders", "[batch]") {
  // n = 4 has 24 orders; over 24,000 epochs each is expected 1,000 times (sd 31). A bias of the
  // kind a broken shuffle shows (a fixed point favoured, an order never drawn) is far outside
  // the +-200 allowed; a fair shuffle leaves it with probability below 1e-9 per order.
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::map<std::vector<int32_t>, int> seen;
  for (int64_t epoch = 1; epoch <= 24000; ++epoch) ++seen[epoch_permutation(seed, epoch, 4)];
  REQUIRE(seen.size() == 24);
  for (const auto& [order, count] : seen) {
    INFO("order " << order[0] << order[1] << order[2] << order[3]);
    CHECK(std::abs(count - 1000) < 200);
  }
}

TEST_CASE("batches are gathered and normalised to 0..1, and eps is standard normal", "[batch]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::vector<uint8_t> pixels(3 * 4);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = uint8_t(i * 23);
  pixels[5] = 255;
  const int32_t index[2] = {2, 1};
  std::vector<float> x(8);
  test::poison(x);
  gather_batch(x.data(), pixels.data(), index, 2, 4);
  for (int p = 0; p < 4; ++p) {
    REQUIRE(x[size_t(p)] == float(pixels[size_t(8 + p)]) / 255.0f);
    REQUIRE(x[size_t(4 + p)] == float(pixels[size_t(4 + p)]) / 255.0f);
  }
  REQUIRE(x[5] == 1.0f);
  std::vector<float> eps(100000), again(100000);
  fill_eps(eps.data(), seed, 7, 50000, 2);
  fill_eps(again.data(), seed, 7, 50000, 2);
  REQUIRE(eps == again);
  double sum = 0, sq = 0;
  for (float e : eps) {
    REQUIRE(std::isfinite(e));
    sum += e;
    sq += double(e) * e;
  }
  const double mean = sum / eps.size(), var = sq / eps.size() - mean * mean;
  CHECK(std::abs(mean) < 0.02);
  CHECK(std::abs(var - 1) < 0.03);
  std::vector<float> other(100000);
  fill_eps(other.data(), seed, 8, 50000, 2);
  CHECK(other != eps);  // another step, other noise
}

namespace {

// (B, C, H, W) -> (B, H, W, C).
std::vector<double> to_hwc(const std::vector<double>& v, int batch, int c_n, int h_n, int w_n) {
  std::vector<double> out(v.size());
  for (int b = 0; b < batch; ++b)
    for (int c = 0; c < c_n; ++c)
      for (int h = 0; h < h_n; ++h)
        for (int w = 0; w < w_n; ++w)
          out[((size_t(b) * h_n + h) * w_n + w) * c_n + c] =
              v[((size_t(b) * c_n + c) * h_n + h) * w_n + w];
  return out;
}

// A layer's forward in channels-last terms, read from the device-order parameters `dev`:
// a direct convolution (or its transpose) over (B, H, W, C) tensors with a [A, kh, kw, B]
// filter, or a dense layer; bias and ReLU as the layer says. Written from the layer
// definitions, independent of the CPU reference's NCHW loops.
std::vector<double> channels_last_layer(const ModelDesc& d, LayerId id, const double* dev,
                                        const std::vector<double>& in, int batch) {
  const Layer& l = d.layer(id);
  const double* w = dev + d.weight(id).offset;
  const double* bias = dev + d.bias(id).offset;
  std::vector<double> out(size_t(batch) * size_t(l.out_size()), 0.0);
  if (l.kind == LayerKind::Linear) {
    for (int b = 0; b < batch; ++b)
      for (int o = 0; o < l.out_channels; ++o) {
        double s = bias[o];
        for (int i = 0; i < l.in_channels; ++i)
          s += w[size_t(o) * l.in_channels + i] * in[size_t(b) * l.in_channels + i];
        out[size_t(b) * l.out_channels + o] = s;
      }
  } else {
    const int k = l.kernel, ci = l.in_channels, co = l.out_channels;
    for (int b = 0; b < batch; ++b)
      for (int iy = 0; iy < l.in_h; ++iy)
        for (int ix = 0; ix < l.in_w; ++ix)
          for (int ky = 0; ky < k; ++ky)
            for (int kx = 0; kx < k; ++kx)
              for (int c = 0; c < ci; ++c)
                for (int o = 0; o < co; ++o) {
                  int oy, ox;
                  double wv;
                  if (l.kind == LayerKind::Conv2d) {
                    // y[oy, ox] += W[o, ky, kx, c] x[oy*s - p + ky, ox*s - p + kx]: visit the
                    // input position and solve for the output one.
                    const int ty = iy + l.pad - ky, tx = ix + l.pad - kx;
                    if (ty < 0 || tx < 0 || ty % l.stride || tx % l.stride) continue;
                    oy = ty / l.stride;
                    ox = tx / l.stride;
                    wv = w[((size_t(o) * k + ky) * k + kx) * ci + c];
                  } else {  // y[iy*s - p + ky, ix*s - p + kx] += W[c, ky, kx, o] x[iy, ix]
                    oy = iy * l.stride - l.pad + ky;
                    ox = ix * l.stride - l.pad + kx;
                    wv = w[((size_t(c) * k + ky) * k + kx) * co + o];
                  }
                  if (oy < 0 || ox < 0 || oy >= l.out_h || ox >= l.out_w) continue;
                  out[((size_t(b) * l.out_h + oy) * l.out_w + ox) * co + o] +=
                      wv * in[((size_t(b) * l.in_h + iy) * l.in_w + ix) * ci + c];
                }
    for (size_t i = 0; i < out.size(); ++i) out[i] += bias[i % size_t(co)];
  }
  if (l.relu)
    for (double& v : out) v = v > 0 ? v : 0;
  return out;
}

}  // namespace

TEST_CASE("channels_last_order permutes each tensor within its span into the NHWC layout",
          "[cpu_model]") {
  const int dim = GENERATE(1, 2, 5);
  const ModelDesc d = make_vae(dim);
  const std::vector<uint32_t> order = channels_last_order(d);
  REQUIRE(order.size() == d.num_params);
  std::vector<int> seen(d.num_params, 0);
  size_t moved = 0;
  for (const ParamTensor& p : d.params)
    for (size_t i = p.offset; i < p.offset + p.numel; ++i) {
      INFO(p.name << " element " << i - p.offset);
      REQUIRE(order[i] >= p.offset);
      REQUIRE(order[i] < p.offset + p.numel);
      ++seen[order[i]];
      if (order[i] != i) ++moved;
    }
  for (int s : seen) REQUIRE(s == 1);
  // Kept in place: every bias but decoder.fc's, the latent heads, the 1-channel filters' own
  // positions aside, the rest moves.
  for (const char* name : {"encoder.conv1.bias", "encoder.mu.weight", "encoder.logvar.bias",
                           "decoder.deconv2.bias", "decoder.out.bias"}) {
    const ParamTensor& p = d.param(name);
    for (size_t i = p.offset; i < p.offset + p.numel; ++i) REQUIRE(order[i] == i);
  }
  // A few elements spelled out: encoder.conv2.weight [64, 32, 3, 3] stored [64, 3, 3, 32],
  // so device element (o=1, ky=2, kx=0, c=5) is host element (1, 5, 2, 0); encoder.fc's
  // column (h=1, w=2, c=3) of row 4 is the host column c*49 + h*7 + w; decoder.fc's row
  // (h=6, w=6, c=63) is host row 63*49 + 48, each row D wide.
  const ParamTensor& c2 = d.param("encoder.conv2.weight");
  CHECK(order[c2.offset + ((1 * 3 + 2) * 3 + 0) * 32 + 5] ==
        c2.offset + ((1 * 32 + 5) * 3 + 2) * 3);
  const ParamTensor& fc = d.param("encoder.fc.weight");
  CHECK(order[fc.offset + 4 * 3136 + (1 * 7 + 2) * 64 + 3] ==
        fc.offset + 4 * 3136 + 3 * 49 + 1 * 7 + 2);
  const ParamTensor& dfc = d.param("decoder.fc.weight");
  const size_t last_row = (6 * 7 + 6) * 64 + 63;
  for (int j = 0; j < dim; ++j)
    CHECK(order[dfc.offset + last_row * size_t(dim) + size_t(j)] ==
          dfc.offset + (63 * 49 + 48) * size_t(dim) + size_t(j));
  CHECK(moved > d.num_params / 2);
}

TEST_CASE("the model's layers read in channels-last order give the model's activations",
          "[cpu_model]") {
  const uint64_t seed = test::fresh_seed();
  const int dim = GENERATE(1, 3);
  const int batch = 2;
  INFO("seed " << seed << " D " << dim);
  const ModelDesc d = make_vae(dim);
  std::vector<double> params;
  cpu::Activations<double> a;
  random_model_and_batch(d, seed, batch, params, a);
  cpu::model_forward(d, params.data(), a, 1.0);
  const std::vector<uint32_t> order = channels_last_order(d);
  std::vector<double> dev(d.num_params);
  for (size_t i = 0; i < dev.size(); ++i) dev[i] = params[order[i]];

  // Each layer from the model's own (NCHW) input, in channels-last terms, against the model's
  // output in channels-last terms. Doubles: only the summation order differs. A shape {C, H, W}
  // says the tensor is a (C, H, W) image per batch entry to lay out channels last; {} that it
  // is flat (the latent side of the dense layers).
  using Shape = std::vector<int>;
  auto hwc = [&](const std::vector<double>& v, const Shape& s) {
    return s.empty() ? v : to_hwc(v, batch, s[0], s[1], s[2]);
  };
  auto shape_in = [&](LayerId id) {
    const Layer& l = d.layer(id);
    return Shape{l.in_channels, l.in_h, l.in_w};
  };
  auto shape_out = [&](LayerId id) {
    const Layer& l = d.layer(id);
    return Shape{l.out_channels, l.out_h, l.out_w};
  };
  auto check = [&](LayerId id, const std::vector<double>& in, const Shape& in_shape,
                   const std::vector<double>& out, const Shape& out_shape) {
    INFO(d.layer(id).name);
    const std::vector<double> want = hwc(out, out_shape);
    const std::vector<double> got =
        channels_last_layer(d, id, dev.data(), hwc(in, in_shape), batch);
    REQUIRE(got.size() == want.size());
    double scale = 0;
    for (double v : want) scale = std::max(scale, std::fabs(v));
    for (size_t i = 0; i < got.size(); ++i)
      REQUIRE(std::fabs(got[i] - want[i]) <= 1e-12 * (1 + scale));
  };
  check(kEncConv1, a.x, shape_in(kEncConv1), a.out[kEncConv1], shape_out(kEncConv1));
  check(kEncConv2, a.out[kEncConv1], shape_in(kEncConv2), a.out[kEncConv2], shape_out(kEncConv2));
  check(kEncFc, a.out[kEncConv2], shape_out(kEncConv2), a.out[kEncFc],
        {});                                                     // its input: conv2's (64, 7, 7)
  check(kDecFc, a.z, {}, a.out[kDecFc], shape_in(kDecDeconv1));  // its output: deconv1's (64, 7, 7)
  check(kDecDeconv1, a.out[kDecFc], shape_in(kDecDeconv1), a.out[kDecDeconv1],
        shape_out(kDecDeconv1));
  check(kDecDeconv2, a.out[kDecDeconv1], shape_in(kDecDeconv2), a.out[kDecDeconv2],
        shape_out(kDecDeconv2));
  check(kDecOut, a.out[kDecDeconv2], shape_in(kDecOut), a.out[kDecOut],
        shape_out(kDecOut));  // no ReLU: the logits
}
