// The GPU inference engine against the CPU one: encode and decode at chunk-crossing sizes.
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "host/cpu/cpu_model.h"
#include "host/cpu/inference_cpu.h"
#include "host/gpu/inference_gpu.h"
#include "tests/fixtures.h"
#include "tests/test_support.h"

using namespace cuvae;
using cuvae::test::compare;

namespace {

// The latent heads' outputs mu, logvar = b + W h3 (encoder.mu, encoder.logvar: 16 inputs) sum
// 17 terms per element, and a single mu (D = 1, one image) can nearly cancel: its error then
// scales with the terms, not with the sum. Per element, the sum of |term| of the head `id` on
// the CPU encoder's h3 of every image: |b_j| + sum_k |W_jk| h3_k (h3 >= 0, after a ReLU).
std::vector<double> head_term_magnitudes(const ModelDesc& d, const std::vector<float>& params,
                                         const cpu::Activations<float>& a, LayerId id) {
  const Layer& l = d.layer(id);
  const float* w = params.data() + d.weight(id).offset;  // [D, 16]
  const float* b = params.data() + d.bias(id).offset;
  const size_t in = size_t(l.in_channels), out = size_t(l.out_channels);
  std::vector<double> m(size_t(a.batch) * out);
  for (size_t i = 0; i < size_t(a.batch); ++i)
    for (size_t j = 0; j < out; ++j) {
      double t = std::abs(double(b[j]));
      for (size_t k = 0; k < in; ++k)
        t += std::abs(double(w[j * in + k])) * double(a.out[kEncFc][i * in + k]);
      m[i * out + j] = t;
    }
  return m;
}

}  // namespace

TEST_CASE("GPU inference equals the CPU reference", "[gpu][inference]") {
  const uint64_t seed = test::fresh_seed();
  const int dim = GENERATE(1, 2, 17);
  const int count = GENERATE(1, 3, 513, 1100);  // crosses the 512-image chunks
  INFO("seed " << seed << " D " << dim << " count " << count);
  const ModelDesc d = make_vae(dim);
  const TrainState st = test::fresh_state(d, seed);
  auto gpu = make_gpu_inference(d, st.params);
  auto cpu = make_cpu_inference(d, st.params, "cpu-ref");
  std::mt19937_64 rng(seed);
  const std::vector<float> x = test::random_vector<float>(rng, size_t(count) * kImagePixels, 0, 1);
  std::vector<float> mu_g(size_t(count) * dim), lv_g(mu_g.size()), mu_c(mu_g.size()),
      lv_c(mu_g.size());
  test::poison(mu_g), test::poison(lv_g);
  gpu->encode(mu_g.data(), lv_g.data(), x.data(), count);
  cpu->encode(mu_c.data(), lv_c.data(), x.data(), count);
  // fp32 on both sides, different summation orders (cuDNN/cuBLAS vs double sums): 1e-5, or 1e-5
  // of the magnitudes of the terms each element sums (the head's bias and weights times the
  // encoder's h3; see head_term_magnitudes) where the sums cancel. The terms carry the
  // encoder's fp32 error, relative to each term, and the 17-term sum adds at most 16 roundings
  // of sum |t|: the same allowance, relative to the terms, as 1e-5 of a sum that does not
  // cancel. A wrong weight or a missing bias moves mu by a whole term, far more.
  cpu::Activations<float> a;
  a.resize(d, count);
  a.x = x;
  cpu::model_encode(d, st.params.data(), a);
  const std::vector<double> mu_terms = head_term_magnitudes(d, st.params, a, kEncMu),
                            lv_terms = head_term_magnitudes(d, st.params, a, kEncLogvar);
  REQUIRE_REL_L2_FLOOR(compare(mu_g.data(), mu_c.data(), mu_c.size()), "mu", 1e-5,
                       1e-5 * test::l2_norm(mu_terms, 0, mu_terms.size()));
  REQUIRE_REL_L2_FLOOR(compare(lv_g.data(), lv_c.data(), lv_c.size()), "logvar", 1e-5,
                       1e-5 * test::l2_norm(lv_terms, 0, lv_terms.size()));
  const std::vector<float> z = test::random_vector<float>(rng, size_t(count) * dim, -3, 3);
  std::vector<float> l_g(size_t(count) * kImagePixels), l_c(l_g.size());
  test::poison(l_g);
  gpu->decode(l_g.data(), z.data(), count);
  cpu->decode(l_c.data(), z.data(), count);
  REQUIRE_REL_L2(compare(l_g.data(), l_c.data(), l_c.size()), "logits", 1e-5);
}
