// GPU tests that span the kernel families (cuda/kernels): the step-table launchers (adam_step,
// reparam_forward, gather_normalize with its cursor and advance_cursor) against the argument
// launchers, bit for bit; and every launcher, fp32 and bf16, refusing nonsense sizes and null
// pointers before it launches.
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
#include "cuda/kernels/precision.cuh"
#include "cuda/kernels/reparam.cuh"
#include "cuda/kernels/shuffle.cuh"
#include "cuda/libs/dense.cuh"
#include "cuda/runtime/device_buffer.cuh"
#include "host/core/batch.h"
#include "host/core/error.h"
#include "host/core/step_scalars.h"
#include "host/core/train_types.h"
#include "tests/gpu/checks.h"
#include "tests/gpu/device_io.h"
#include "tests/test_support.h"

using namespace cuvae;
using namespace cuvae::test;

// ---- the step-table forms -----------------------------------------------------------------------

TEST_CASE("the step-table launchers equal the argument launchers bit for bit",
          "[gpu][kernels][adam][reparam][data]") {
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

TEST_CASE("launchers reject nonsense sizes and null pointers",
          "[gpu][kernels][data][activations][reparam][loss][adam][shuffle]") {
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

// ---- argument checks, bf16 forms ----------------------------------------------------------------

TEST_CASE("the bf16 launchers reject nonsense sizes and null pointers",
          "[gpu][bf16][precision][activations][dense][loss]") {
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
