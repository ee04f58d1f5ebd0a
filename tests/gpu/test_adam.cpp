// GPU tests of the Adam kernel (cuda/kernels/adam.cuh) against cpu::adam_step
// (host/cpu/cpu_ref.h), step after step, and its report of the earliest non-finite gradient. Its
// step-table form: test_launchers.cpp.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda/kernels/adam.cuh"
#include "cuda/runtime/device_buffer.cuh"
#include "host/core/train_types.h"
#include "host/cpu/cpu_ref.h"
#include "tests/gpu/checks.h"
#include "tests/gpu/device_io.h"
#include "tests/test_support.h"

using namespace cuvae;
using namespace cuvae::test;

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

TEST_CASE("adam_step matches cpu::adam_step", "[gpu][kernels][adam]") {
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

TEST_CASE("adam_step reports the earliest non-finite gradient", "[gpu][kernels][adam]") {
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
