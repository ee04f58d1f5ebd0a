// GPU tests of the reparameterization kernels (cuda/kernels/reparam.cuh): reparam_forward (the
// CPU's Philox noise) and reparam_backward against the CPU reference (host/cpu/cpu_ref.h), and
// the biased forms against the head bias kernels plus reparam, bit for bit.
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
#include "cuda/kernels/reparam.cuh"
#include "cuda/runtime/device_buffer.cuh"
#include "host/core/batch.h"
#include "host/core/step_scalars.h"
#include "host/cpu/cpu_ref.h"
#include "tests/gpu/checks.h"
#include "tests/gpu/device_io.h"
#include "tests/test_support.h"

using namespace cuvae;
using namespace cuvae::test;

// ---- reparameterization -----------------------------------------------------------------------

TEST_CASE("reparam_forward draws the CPU's Philox noise and forms z", "[gpu][kernels][reparam]") {
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

TEST_CASE("reparam_backward: the dz path plus the beta-weighted KL gradient",
          "[gpu][kernels][reparam]") {
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

TEST_CASE("reparam_backward with the KL weight from the step table is the launch given it",
          "[gpu][kernels][reparam]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int batch = GENERATE(1, 129, 4097);
  const int dim = GENERATE(1, 17);
  INFO("batch " << batch << " D " << dim);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  const size_t n = size_t(batch) * dim;
  const auto d_mu = to_device(uniform(rng, n, -2, 2), s),
             d_lv = to_device(uniform(rng, n, -3, 1), s),
             d_dz = to_device(uniform(rng, n, -1, 1), s),
             d_eps = to_device(uniform(rng, n, -3, 3), s);
  // A step in the middle of a warm-up: its weight is neither 0 nor beta.
  const KlSchedule ramp{2.0, 900};
  const std::vector<StepScalars> table{step_scalars(1e-3f, 0.9f, 0.999f, 1 + rng() % 900, ramp)};
  const auto d_table = to_device(table, s);
  const auto d_cursor = to_device(std::vector<int32_t>{0}, s);
  const StepTable at{d_table.data(), d_cursor.data()};
  const float w = table[0].kl_weight;
  INFO("weight " << w);
  const size_t dims = size_t(dim);
  DeviceBuffer<float> g_dmu(n), g_dlv(n), t_dmu(n), t_dlv(n), g_bmu(dims), g_blv(dims), t_bmu(dims),
      t_blv(dims);
  for (auto* buf : {&g_dmu, &g_dlv, &t_dmu, &t_dlv, &g_bmu, &g_blv, &t_bmu, &t_blv})
    poison_device(*buf, s);
  reparam_backward(g_dmu.data(), g_dlv.data(), d_dz.data(), d_mu.data(), d_lv.data(), d_eps.data(),
                   batch, dim, w, s);
  reparam_backward(t_dmu.data(), t_dlv.data(), d_dz.data(), d_mu.data(), d_lv.data(), d_eps.data(),
                   batch, dim, at, s);
  require_bitwise_equal(to_host(t_dmu, s), to_host(g_dmu, s), "dmu");
  require_bitwise_equal(to_host(t_dlv, s), to_host(g_dlv, s), "dlogvar");
  auto ticket_g = to_device(std::vector<unsigned>{0}, s),
       ticket_t = to_device(std::vector<unsigned>{0}, s);
  reparam_backward_biased(g_dmu.data(), g_dlv.data(), g_bmu.data(), g_blv.data(), ticket_g.data(),
                          d_dz.data(), d_mu.data(), d_lv.data(), d_eps.data(), batch, dim, w, s);
  reparam_backward_biased(t_dmu.data(), t_dlv.data(), t_bmu.data(), t_blv.data(), ticket_t.data(),
                          d_dz.data(), d_mu.data(), d_lv.data(), d_eps.data(), batch, dim, at, s);
  require_bitwise_equal(to_host(t_dmu, s), to_host(g_dmu, s), "dmu (biased)");
  require_bitwise_equal(to_host(t_bmu, s), to_host(g_bmu, s), "dbias mu");
  require_bitwise_equal(to_host(t_blv, s), to_host(g_blv, s), "dbias logvar");
  REQUIRE(to_host(ticket_t, s)[0] == 0u);
  REQUIRE_THROWS_AS(
      reparam_backward(t_dmu.data(), t_dlv.data(), d_dz.data(), d_mu.data(), d_lv.data(),
                       d_eps.data(), batch, dim, StepTable{nullptr, nullptr}, s),
      Error);
}

// ---- the biased forms ---------------------------------------------------------------------------

TEST_CASE("the biased reparameterization kernels equal the head bias kernels plus reparam",
          "[gpu][kernels][reparam]") {
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
