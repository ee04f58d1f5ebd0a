// CPU reference layers: forward against direct definitions written here independently, and
// every backward against central finite differences in double precision.
#include <catch2/catch.hpp>
#include <cmath>
#include <functional>

#include "host/core/step_scalars.h"
#include "host/cpu/cpu_ref.h"
#include "tests/test_support.h"

using namespace cuvae;
using cuvae::test::compare;
using cuvae::test::Diff;

namespace {

using Vec = std::vector<double>;

Layer conv_layer(int cin, int cout, int hw, int stride) {
  Layer l{"test.conv", LayerKind::Conv2d, cin, cout};
  l.kernel = 3, l.stride = stride, l.pad = 1;
  l.in_h = l.in_w = hw;
  l.out_h = l.out_w = (hw + 2 - 3) / stride + 1;
  return l;
}

Layer deconv_layer(int cin, int cout, int hw, int stride) {
  Layer l{"test.deconv", LayerKind::ConvTranspose2d, cin, cout};
  l.kernel = 3, l.stride = stride, l.pad = 1, l.out_pad = stride - 1;
  l.in_h = l.in_w = hw;
  l.out_h = l.out_w = (hw - 1) * stride - 2 + 3 + l.out_pad;
  return l;
}

// Direct definitions (no im2col): the convolution sum and the transposed-convolution scatter.
Vec direct_conv(const Vec& x, const Vec& w, const Vec& b, int batch, const Layer& l) {
  Vec y(size_t(batch) * l.out_size());
  for (int n = 0; n < batch; ++n)
    for (int co = 0; co < l.out_channels; ++co)
      for (int oy = 0; oy < l.out_h; ++oy)
        for (int ox = 0; ox < l.out_w; ++ox) {
          double s = b[co];
          for (int ci = 0; ci < l.in_channels; ++ci)
            for (int ky = 0; ky < 3; ++ky)
              for (int kx = 0; kx < 3; ++kx) {
                const int iy = oy * l.stride - l.pad + ky, ix = ox * l.stride - l.pad + kx;
                if (iy < 0 || iy >= l.in_h || ix < 0 || ix >= l.in_w) continue;
                s += w[((co * l.in_channels + ci) * 3 + ky) * 3 + kx] *
                     x[((size_t(n) * l.in_channels + ci) * l.in_h + iy) * l.in_w + ix];
              }
          y[((size_t(n) * l.out_channels + co) * l.out_h + oy) * l.out_w + ox] = s;
        }
  return y;
}

Vec direct_deconv(const Vec& x, const Vec& w, const Vec& b, int batch, const Layer& l) {
  Vec y(size_t(batch) * l.out_size());
  for (int n = 0; n < batch; ++n)
    for (int co = 0; co < l.out_channels; ++co)
      for (int p = 0; p < l.out_h * l.out_w; ++p)
        y[(size_t(n) * l.out_channels + co) * l.out_h * l.out_w + p] = b[co];
  for (int n = 0; n < batch; ++n)
    for (int ci = 0; ci < l.in_channels; ++ci)
      for (int iy = 0; iy < l.in_h; ++iy)
        for (int ix = 0; ix < l.in_w; ++ix)
          for (int co = 0; co < l.out_channels; ++co)
            for (int ky = 0; ky < 3; ++ky)
              for (int kx = 0; kx < 3; ++kx) {
                const int oy = iy * l.stride - l.pad + ky, ox = ix * l.stride - l.pad + kx;
                if (oy < 0 || oy >= l.out_h || ox < 0 || ox >= l.out_w) continue;
                y[((size_t(n) * l.out_channels + co) * l.out_h + oy) * l.out_w + ox] +=
                    x[((size_t(n) * l.in_channels + ci) * l.in_h + iy) * l.in_w + ix] *
                    w[((ci * l.out_channels + co) * 3 + ky) * 3 + kx];
              }
  return y;
}

// Checks d(sum r*y)/d(v) from the backward against central differences at `samples`
// coordinates of v (all of them when v is small). `f` evaluates sum r*y for the current v.
void check_fd(const std::string& name, Vec& v, const Vec& analytic,
              const std::function<double()>& f, std::mt19937_64& rng, int samples = 40,
              double h = 1e-4, double tol = 1e-7) {
  REQUIRE(v.size() == analytic.size());
  std::uniform_int_distribution<size_t> pick(0, v.size() - 1);
  const bool all = v.size() <= size_t(samples);
  for (int s = 0; s < (all ? int(v.size()) : samples); ++s) {
    const size_t i = all ? size_t(s) : pick(rng);
    const double keep = v[i];
    v[i] = keep + h;
    const double up = f();
    v[i] = keep - h;
    const double down = f();
    v[i] = keep;
    const double numeric = (up - down) / (2 * h);
    INFO(name << "[" << i << "]: analytic " << analytic[i] << ", numeric " << numeric);
    REQUIRE(std::isfinite(analytic[i]));
    REQUIRE(std::abs(analytic[i] - numeric) <= tol * (1 + std::abs(numeric)));
  }
}

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

struct LayerCase {
  Layer layer;
  int batch;
};

// Forward against the direct definition, backward against finite differences, and the float
// instantiation against the double one.
void check_layer(const LayerCase& c, uint64_t seed) {
  const Layer& l = c.layer;
  const int batch = c.batch;
  INFO("layer " << l.name << " in " << l.in_channels << "x" << l.in_h << "x" << l.in_w << " out "
                << l.out_channels << "x" << l.out_h << "x" << l.out_w << " stride " << l.stride
                << " batch " << batch << " seed " << seed);
  std::mt19937_64 rng(seed);
  const size_t nw = size_t(l.in_channels) * l.out_channels * 9;
  Vec x = test::random_vector<double>(rng, size_t(batch) * l.in_size(), -1, 1);
  Vec w = test::random_vector<double>(rng, nw, -0.5, 0.5);
  Vec b = test::random_vector<double>(rng, size_t(l.out_channels), -0.5, 0.5);
  const Vec r = test::random_vector<double>(rng, size_t(batch) * l.out_size(), -1, 1);
  const bool conv = l.kind == LayerKind::Conv2d;
  auto forward = [&](Vec& y) {
    if (conv)
      cpu::conv2d_forward(y.data(), x.data(), w.data(), b.data(), batch, l);
    else
      cpu::conv_transpose2d_forward(y.data(), x.data(), w.data(), b.data(), batch, l);
  };
  Vec y(r.size());
  test::poison(y);
  forward(y);
  const Vec want = conv ? direct_conv(x, w, b, batch, l) : direct_deconv(x, w, b, batch, l);
  REQUIRE_MAX_ABS(compare(y.data(), want.data(), y.size()), "forward", 1e-12);

  Vec dx(x.size()), dw(w.size()), db(b.size());
  test::poison(dx), test::poison(dw), test::poison(db);
  if (conv)
    cpu::conv2d_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), batch, l);
  else
    cpu::conv_transpose2d_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(),
                                   batch, l);
  auto loss = [&] {
    Vec yy(r.size());
    forward(yy);
    return dot(r, yy);
  };
  check_fd("dx", x, dx, loss, rng);
  check_fd("dw", w, dw, loss, rng);
  check_fd("db", b, db, loss, rng);

  // float instantiation: same math, float storage, double sums.
  auto to_f = [](const Vec& v) { return std::vector<float>(v.begin(), v.end()); };
  std::vector<float> xf = to_f(x), wf = to_f(w), bf = to_f(b), rf = to_f(r);
  std::vector<float> yf(y.size()), dxf(dx.size()), dwf(dw.size()), dbf(db.size());
  test::poison(yf), test::poison(dxf), test::poison(dwf), test::poison(dbf);
  if (conv) {
    cpu::conv2d_forward(yf.data(), xf.data(), wf.data(), bf.data(), batch, l);
    cpu::conv2d_backward(dxf.data(), dwf.data(), dbf.data(), rf.data(), xf.data(), wf.data(), batch,
                         l);
  } else {
    cpu::conv_transpose2d_forward(yf.data(), xf.data(), wf.data(), bf.data(), batch, l);
    cpu::conv_transpose2d_backward(dxf.data(), dwf.data(), dbf.data(), rf.data(), xf.data(),
                                   wf.data(), batch, l);
  }
  // float inputs are the double ones rounded (relative 6e-8); sums stay in double.
  REQUIRE_REL_L2(compare(yf.data(), want.data(), y.size()), "float forward", 1e-6);
  REQUIRE_REL_L2(compare(dxf.data(), dx.data(), dx.size()), "float dx", 1e-6);
  REQUIRE_REL_L2(compare(dwf.data(), dw.data(), dw.size()), "float dw", 1e-6);
  // db is a sum of batch * H * W terms of r per channel and cancels (one output channel: 1,568
  // terms of +-1 summing to about 1), so the rounding of r alone can move it by more than 1e-6
  // relative. Its reference is therefore the sum of the rounded r, in double: what the float
  // instantiation computes before its one final rounding.
  Vec db_of_rf(db.size(), 0.0);
  const size_t plane = size_t(l.out_h) * l.out_w;
  for (size_t i = 0; i < rf.size(); ++i) db_of_rf[i / plane % db.size()] += double(rf[i]);
  REQUIRE_REL_L2(compare(dbf.data(), db_of_rf.data(), db.size()), "float db", 1e-6);
}

}  // namespace

TEST_CASE("matmul equals the triple loop at awkward sizes", "[cpu_ref]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (auto [m, n, k] :
       {std::tuple{1, 1, 1}, {3, 31, 7}, {17, 257, 5}, {2, 4097, 3}, {31, 1, 300}}) {
    INFO("m " << m << " n " << n << " k " << k);
    const Vec a = test::random_vector<double>(rng, size_t(m) * k, -1, 1);
    const Vec b = test::random_vector<double>(rng, size_t(k) * n, -1, 1);
    Vec c0 = test::random_vector<double>(rng, size_t(m) * n, -1, 1);
    Vec want(c0.size()), c(c0.size());
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        double s = 0;
        for (int kk = 0; kk < k; ++kk) s += a[size_t(i) * k + kk] * b[size_t(kk) * n + j];
        want[size_t(i) * n + j] = s;
      }
    test::poison(c);
    cpu::matmul(c.data(), a.data(), b.data(), m, n, k, false);
    REQUIRE_MAX_ABS(compare(c.data(), want.data(), c.size()), "C = A B", 1e-12);
    c = c0;
    cpu::matmul(c.data(), a.data(), b.data(), m, n, k, true);
    for (size_t i = 0; i < want.size(); ++i) want[i] += c0[i];
    REQUIRE_MAX_ABS(compare(c.data(), want.data(), c.size()), "C += A B", 1e-12);
  }
}

TEST_CASE("conv2d and its transpose: forward and gradients", "[cpu_ref][slow]") {
  const uint64_t seed = test::fresh_seed();
  const LayerCase c = GENERATE(values<LayerCase>({
      {conv_layer(1, 32, 28, 2), 1},     // encoder.conv1
      {conv_layer(32, 64, 14, 2), 2},    // encoder.conv2
      {conv_layer(3, 5, 7, 2), 3},       // odd sizes, odd image side
      {conv_layer(2, 3, 5, 1), 2},       // stride 1
      {deconv_layer(64, 64, 7, 2), 1},   // decoder.deconv1
      {deconv_layer(64, 32, 14, 2), 1},  // decoder.deconv2
      {deconv_layer(32, 1, 28, 1), 2},   // decoder.out
      {deconv_layer(3, 5, 5, 2), 3},     // odd sizes
  }));
  check_layer(c, seed);
}

TEST_CASE("linear layer: forward and gradients", "[cpu_ref][slow]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (auto [batch, in, out] : {std::tuple{1, 3136, 16}, {3, 16, 17}, {7, 2, 3136}, {129, 5, 1}}) {
    INFO("batch " << batch << " in " << in << " out " << out);
    Vec x = test::random_vector<double>(rng, size_t(batch) * in, -1, 1);
    Vec w = test::random_vector<double>(rng, size_t(in) * out, -1, 1);
    Vec b = test::random_vector<double>(rng, size_t(out), -1, 1);
    const Vec r = test::random_vector<double>(rng, size_t(batch) * out, -1, 1);
    Vec y(r.size()), want(r.size());
    test::poison(y);
    cpu::linear_forward(y.data(), x.data(), w.data(), b.data(), batch, in, out);
    for (int n = 0; n < batch; ++n)
      for (int o = 0; o < out; ++o) {
        double s = b[o];
        for (int i = 0; i < in; ++i) s += w[size_t(o) * in + i] * x[size_t(n) * in + i];
        want[size_t(n) * out + o] = s;
      }
    REQUIRE_MAX_ABS(compare(y.data(), want.data(), y.size()), "linear forward", 1e-12);
    Vec dx(x.size()), dw(w.size()), db(b.size());
    test::poison(dx), test::poison(dw), test::poison(db);
    cpu::linear_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), batch, in,
                         out);
    auto loss = [&] {
      Vec yy(r.size());
      cpu::linear_forward(yy.data(), x.data(), w.data(), b.data(), batch, in, out);
      return dot(r, yy);
    };
    check_fd("dx", x, dx, loss, rng);
    check_fd("dw", w, dw, loss, rng);
    check_fd("db", b, db, loss, rng);
  }
}

TEST_CASE("ReLU forward and backward", "[cpu_ref]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const size_t n = GENERATE(1, 31, 4097);
  Vec x = test::random_vector<double>(rng, n, -1, 1);
  for (double& v : x)
    if (std::abs(v) < 1e-3) v = 0.5;  // finite differences need distance from the kink
  const Vec r = test::random_vector<double>(rng, n, -1, 1);
  Vec y(n), dx(n);
  test::poison(y), test::poison(dx);
  cpu::relu_forward(y.data(), x.data(), n);
  for (size_t i = 0; i < n; ++i) REQUIRE(y[i] == (x[i] > 0 ? x[i] : 0.0));
  cpu::relu_backward(dx.data(), r.data(), y.data(), n);
  auto loss = [&] {
    Vec yy(n);
    cpu::relu_forward(yy.data(), x.data(), n);
    return dot(r, yy);
  };
  check_fd("dx", x, dx, loss, rng, 40, 1e-5);
}

TEST_CASE("reparameterization and KL: forward and the fused gradient", "[cpu_ref]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int batch = GENERATE(1, 3, 127);
  const int dim = GENERATE(1, 2, 17);
  const double beta = GENERATE(0.0, 1.0, 2.5);
  INFO("batch " << batch << " D " << dim << " beta " << beta);
  const size_t n = size_t(batch) * dim;
  Vec mu = test::random_vector<double>(rng, n, -2, 2);
  Vec lv = test::random_vector<double>(rng, n, -4, 2);
  const Vec eps = test::random_vector<double>(rng, n, -2, 2);
  const Vec r = test::random_vector<double>(rng, n, -1, 1);  // dz
  Vec z(n);
  test::poison(z);
  cpu::reparam_forward(z.data(), mu.data(), lv.data(), eps.data(), n);
  for (size_t i = 0; i < n; ++i) REQUIRE(z[i] == Approx(mu[i] + std::exp(lv[i] / 2) * eps[i]));
  Vec dmu(n), dlv(n);
  test::poison(dmu), test::poison(dlv);
  cpu::reparam_backward(dmu.data(), dlv.data(), r.data(), mu.data(), lv.data(), eps.data(), batch,
                        dim, beta);
  // f = sum r*z + beta * mean_b KL_b
  auto f = [&] {
    Vec zz(n);
    cpu::reparam_forward(zz.data(), mu.data(), lv.data(), eps.data(), n);
    double kl = 0;
    for (size_t i = 0; i < n; ++i) kl += -0.5 * (1 + lv[i] - mu[i] * mu[i] - std::exp(lv[i]));
    return dot(r, zz) + beta * kl / batch;
  };
  check_fd("dmu", mu, dmu, f, rng, 40, 1e-5, 1e-8);
  check_fd("dlogvar", lv, dlv, f, rng, 40, 1e-5, 1e-8);
}

TEST_CASE("BCE+KL loss: value, gradient and stability at extreme logits", "[cpu_ref]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int batch = GENERATE(1, 3, 129), pixels = 784, dim = 2;
  const double beta = 0.7;
  Vec logits = test::random_vector<double>(rng, size_t(batch) * pixels, -8, 8);
  Vec x = test::random_vector<double>(rng, logits.size(), 0, 1);
  x[0] = 0, x[1] = 1;
  Vec mu = test::random_vector<double>(rng, size_t(batch) * dim, -1, 1);
  Vec lv = test::random_vector<double>(rng, mu.size(), -1, 1);
  Vec dl(logits.size()), recon(static_cast<size_t>(batch)), kl(static_cast<size_t>(batch));
  test::poison(dl), test::poison(recon), test::poison(kl);
  const LossParts p = cpu::bce_kl_loss(dl.data(), recon.data(), kl.data(), logits.data(), x.data(),
                                       mu.data(), lv.data(), batch, pixels, dim, beta);
  // Direct (unstable but fine at |l| <= 8) definitions.
  double rsum = 0, ksum = 0;
  for (int b = 0; b < batch; ++b) {
    double rb = 0, kb = 0;
    for (int q = 0; q < pixels; ++q) {
      const size_t i = size_t(b) * pixels + q;
      const double s = 1 / (1 + std::exp(-logits[i]));
      rb -= x[i] * std::log(s) + (1 - x[i]) * std::log(1 - s);
      REQUIRE(dl[i] == Approx((s - x[i]) / batch).margin(1e-15));
    }
    for (int j = 0; j < dim; ++j) {
      const size_t i = size_t(b) * dim + j;
      kb += -0.5 * (1 + lv[i] - mu[i] * mu[i] - std::exp(lv[i]));
    }
    REQUIRE(recon[size_t(b)] == Approx(rb).epsilon(1e-12));
    REQUIRE(kl[size_t(b)] == Approx(kb).epsilon(1e-12));
    rsum += rb, ksum += kb;
  }
  REQUIRE(p.recon == Approx(rsum / batch).epsilon(1e-12));
  REQUIRE(p.kl == Approx(ksum / batch).epsilon(1e-12));
  REQUIRE(p.loss == p.recon + beta * p.kl);
  // Gradient w.r.t. logits by finite differences.
  auto f = [&] {
    Vec g(logits.size());
    return cpu::bce_kl_loss(g.data(), nullptr, nullptr, logits.data(), x.data(), mu.data(),
                            lv.data(), batch, pixels, dim, beta)
        .loss;
  };
  // The batch loss sums ~1e5 terms: h = 1e-3 keeps its rounding (~1e-10) small next to h.
  check_fd("dlogits", logits, dl, f, rng, 40, 1e-3, 1e-6);

  // Extreme logits: exact values, finite gradients, for float storage too.
  for (double l : {100.0, -100.0, 1000.0, -1000.0, 30.0, -30.0}) {
    for (double t : {0.0, 1.0, 0.25}) {
      INFO("logit " << l << " target " << t);
      const float lf = float(l), tf = float(t), zero = 0;
      float g = NAN;
      double rec = NAN;
      cpu::bce_kl_loss(&g, &rec, nullptr, &lf, &tf, &zero, &zero, 1, 1, 1, 1.0);
      const double want = std::max(l, 0.0) - l * t + std::log1p(std::exp(-std::abs(l)));
      REQUIRE(std::isfinite(rec));
      REQUIRE(rec == Approx(want).epsilon(1e-12));
      const double sig = l > 0 ? 1.0 : 0.0;  // exactly, to double precision, at |l| >= 30
      REQUIRE(std::isfinite(g));
      REQUIRE(g == Approx(sig - t).margin(1e-12));
    }
  }
}

TEST_CASE("Adam step follows the PyTorch formulation", "[cpu_ref]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const size_t n = GENERATE(1, 31, 4097);
  AdamConfig cfg;
  cfg.lr = 3e-3f;
  std::vector<float> p = test::random_vector<float>(rng, n, -1, 1), m(n, 0.f), v(n, 0.f);
  std::vector<double> pd(p.begin(), p.end()), md(n, 0), vd(n, 0);
  for (int64_t step = 1; step <= 5; ++step) {
    const std::vector<float> g = test::random_vector<float>(rng, n, -2, 2);
    cpu::adam_step(p.data(), m.data(), v.data(), g.data(), n, cfg, step);
    for (size_t i = 0; i < n; ++i) {
      md[i] = 0.9 * md[i] + 0.1 * g[i];
      vd[i] = 0.999 * vd[i] + 0.001 * double(g[i]) * g[i];
      const double mhat = md[i] / (1 - std::pow(0.9, step));
      const double vhat = vd[i] / (1 - std::pow(0.999, step));
      pd[i] -= double(cfg.lr) * mhat / (std::sqrt(vhat) + double(cfg.eps));
    }
    // float state vs a double evaluation of the same formula: a few float roundings per step.
    REQUIRE_MAX_ABS(compare(p.data(), pd.data(), n), "params after step", 1e-6);
    REQUIRE_MAX_ABS(compare(m.data(), md.data(), n), "m", 1e-6);
    REQUIRE_MAX_ABS(compare(v.data(), vd.data(), n), "v", 1e-6);
  }
}

TEST_CASE("Adam's per-step scalars and the GPU trainer's epoch step table", "[cpu_ref]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const float lr = 1e-3f, b1 = 0.9f, b2 = 0.999f;
  // The scalars against their definition, evaluated independently in long double.
  for (const int64_t t : {int64_t(1), int64_t(2), int64_t(10), int64_t(1 + rng() % 1000000)}) {
    INFO("step " << t);
    const StepScalars sc = step_scalars(lr, b1, b2, t);
    REQUIRE(sc.step == uint32_t(t));
    const long double bc1 = 1.0L - std::pow((long double)b1, (long double)t);
    const long double bc2 = 1.0L - std::pow((long double)b2, (long double)t);
    REQUIRE(double(sc.step_size) == Approx(double((long double)lr / bc1)).epsilon(1e-7));
    REQUIRE(double(sc.inv_sqrt_bc2) == Approx(double(1.0L / std::sqrt(bc2))).epsilon(1e-7));
  }
  // A resumed epoch of 7 steps that continues at its step 3 as Adam step 41, inside a KL
  // warm-up of 43 steps: its entries carry the ramp's weights, then beta.
  const KlSchedule kl{0.75, 43};
  const std::vector<StepScalars> table = epoch_step_table(lr, b1, b2, 3, 7, 41, kl);
  REQUIRE(table.size() == 7);
  for (size_t k = 0; k < 3; ++k) REQUIRE(table[k].step == 0u);
  for (size_t k = 3; k < 7; ++k) {
    const int64_t t = int64_t(41 + k - 3);
    const StepScalars want = step_scalars(lr, b1, b2, t);
    REQUIRE(table[k].step == want.step);
    REQUIRE(table[k].step_size == want.step_size);
    REQUIRE(table[k].inv_sqrt_bc2 == want.inv_sqrt_bc2);
    REQUIRE(table[k].kl_weight == (t <= 43 ? float(0.75 * double(t - 1) / 43.0) : 0.75f));
  }
  REQUIRE(epoch_step_table(lr, b1, b2, 0, 1, 1, {})[0].step == 1u);
  REQUIRE(epoch_step_table(lr, b1, b2, 0, 1, 1, {})[0].kl_weight == 1.0f);  // beta 1, no ramp
  REQUIRE(epoch_step_table(lr, b1, b2, 4, 4, 9, kl).size() == 4);  // nothing left: all zero
}

TEST_CASE("the KL warm-up's weight per step: 0, a linear ramp, then beta", "[cpu_ref]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const double beta = 0.25 + double(rng() % 1000) / 250.0;  // in [0.25, 4.25)
  const int64_t w = 1 + int64_t(rng() % 5000);              // warm-up steps
  INFO("beta " << beta << " over " << w << " steps");
  const KlSchedule kl{beta, w};
  REQUIRE(kl.weight(1) == 0.0);  // the first step trains the reconstruction alone
  double previous = -1.0;
  for (int64_t t = 1; t <= w; ++t) {
    REQUIRE(kl.warming(t));
    // float(beta (t - 1) / W), the same value the GPU's step table holds.
    const double want = double(float(beta * double(t - 1) / double(w)));
    REQUIRE(kl.weight(t) == want);
    REQUIRE(kl.weight(t) >= previous);  // never falls
    REQUIRE(kl.weight(t) < beta);
    previous = kl.weight(t);
  }
  // Linear: the midpoint of the ramp within float rounding of beta / 2.
  if (w % 2 == 0) CHECK(kl.weight(w / 2 + 1) == Approx(beta / 2).epsilon(1e-7));
  for (const int64_t t : {w + 1, w + 2, w + 1 + int64_t(rng() % 100000)}) {
    REQUIRE_FALSE(kl.warming(t));
    REQUIRE(kl.weight(t) == beta);  // beta itself, not its float rounding
  }
  // No warm-up: beta from the first step.
  const KlSchedule none{beta, 0};
  REQUIRE_FALSE(none.warming(1));
  REQUIRE(none.weight(1) == beta);
}
