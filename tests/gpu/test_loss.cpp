// GPU tests of the BCE + KL loss kernels (cuda/kernels/loss.cuh): bce_kl_loss against the CPU
// reference (host/cpu/cpu_ref.h), at extreme logits too, loss_accumulate, the fused loss against
// the four kernels it replaces, and its bf16 form against the float kernel on the widened logits.
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
#include "cuda/kernels/loss.cuh"
#include "cuda/runtime/device_buffer.cuh"
#include "host/cpu/cpu_ref.h"
#include "tests/gpu/bias_grad.h"
#include "tests/gpu/checks.h"
#include "tests/gpu/device_io.h"
#include "tests/test_support.h"

using namespace cuvae;
using namespace cuvae::test;

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

TEST_CASE("bce_kl_loss matches the CPU value and gradient", "[gpu][kernels][loss]") {
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

TEST_CASE("bce_kl_loss is finite and exact at extreme logits", "[gpu][kernels][loss]") {
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

TEST_CASE("loss_accumulate adds the batch sums in double, deterministically",
          "[gpu][kernels][loss]") {
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

TEST_CASE("kl_weighted_accumulate adds the step's KL weight times loss_accumulate's KL sum",
          "[gpu][kernels][loss]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int batch = GENERATE(1, 129, 4097);
  INFO("batch " << batch);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  const std::vector<float> recon = uniform(rng, size_t(batch), 0, 600),
                           kl = uniform(rng, size_t(batch), 0, 30);
  // Two table entries with different weights; the cursor picks the second.
  const KlSchedule ramp{1.5, 1000};
  const std::vector<StepScalars> table{step_scalars(1e-3f, 0.9f, 0.999f, 10, ramp),
                                       step_scalars(1e-3f, 0.9f, 0.999f, 400, ramp)};
  const auto d_table = to_device(table, s);
  const auto d_cursor = to_device(std::vector<int32_t>{1}, s);
  const StepTable at{d_table.data(), d_cursor.data()};
  const auto d_recon = to_device(recon, s), d_kl = to_device(kl, s);
  // loss_accumulate's KL sum (the same order) times the weight, added to a start value.
  auto d_sums = to_device(std::vector<double>{0.0, 0.0}, s);
  loss_accumulate(d_sums.data(), d_recon.data(), d_kl.data(), batch, s);
  const double kl_sum = to_host(d_sums, s)[1];
  const double start = 3.25;
  auto d_weighted = to_device(std::vector<double>{start}, s);
  kl_weighted_accumulate(d_weighted.data(), d_kl.data(), batch, at, s);
  const double got = to_host(d_weighted, s)[0];
  REQUIRE(table[1].kl_weight == float(1.5 * 399.0 / 1000.0));
  REQUIRE(got == start + double(table[1].kl_weight) * kl_sum);  // bit for bit
  REQUIRE_THROWS_AS(kl_weighted_accumulate(d_weighted.data(), d_kl.data(), 0, at, s), Error);
  REQUIRE_THROWS_AS(
      kl_weighted_accumulate(d_weighted.data(), d_kl.data(), batch, StepTable{nullptr, nullptr}, s),
      Error);
}

TEST_CASE("bce_kl_loss_fused equals the four kernels it replaces", "[gpu][kernels][loss]") {
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

// ---- the fused loss in bf16 ---------------------------------------------------------------------

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

  // The float kernel (itself tested against the unfused kernels and the CPU in the fp32 cases
  // above).
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
