// The GPU inference engine against the CPU one: encode and decode at chunk-crossing sizes.
#include <catch2/catch.hpp>

#include "host/inference.h"
#include "tests/fixtures.h"
#include "tests/test_support.h"

using namespace cuvae;
using cuvae::test::compare;

TEST_CASE("GPU inference equals the CPU reference", "[gpu][inference]") {
  const uint64_t seed = test::fresh_seed();
  const int dim = GENERATE(1, 2, 17);
  const int count = GENERATE(1, 3, 513, 1100);  // crosses the 512-image chunks
  INFO("seed " << seed << " D " << dim << " count " << count);
  const ModelDesc d = make_vae(dim);
  const TrainState st = test::fresh_state(d, seed);
  auto gpu = make_gpu_inference(d, st.params);
  auto cpu = make_cpu_inference(d, st.params);
  std::mt19937_64 rng(seed);
  const std::vector<float> x = test::random_vector<float>(rng, size_t(count) * kImagePixels, 0, 1);
  std::vector<float> mu_g(size_t(count) * dim), lv_g(mu_g.size()), mu_c(mu_g.size()),
      lv_c(mu_g.size());
  test::poison(mu_g), test::poison(lv_g);
  gpu->encode(mu_g.data(), lv_g.data(), x.data(), count);
  cpu->encode(mu_c.data(), lv_c.data(), x.data(), count);
  // fp32 on both sides, different summation orders (cuDNN/cuBLAS vs double sums).
  REQUIRE_REL_L2(compare(mu_g.data(), mu_c.data(), mu_c.size()), "mu", 1e-5);
  REQUIRE_REL_L2(compare(lv_g.data(), lv_c.data(), lv_c.size()), "logvar", 1e-5);
  const std::vector<float> z = test::random_vector<float>(rng, size_t(count) * dim, -3, 3);
  std::vector<float> l_g(size_t(count) * kImagePixels), l_c(l_g.size());
  test::poison(l_g);
  gpu->decode(l_g.data(), z.data(), count);
  cpu->decode(l_c.data(), z.data(), count);
  REQUIRE_REL_L2(compare(l_g.data(), l_c.data(), l_c.size()), "logits", 1e-5);
}
