// The fast CPU engine (host/cpu/cpu_fast.h) against the reference model in double precision: every
// activation, the loss parts, the logits' gradient and every parameter gradient, at awkward
// batch sizes and latent dimensions; bit-identical repeated runs; encode/decode alone.
//
// Tolerances. Both sides compute the same function; the engine sums in fp32 in oneDNN's order,
// the reference in double. A dot product of k fp32 terms carries a relative error of about
// sqrt(k) * 2^-24 ~ 6e-8 sqrt(k) when its terms do not cancel: k <= 576 in a convolution, 3,136
// in encoder.fc, B * 784 (up to 26,000 here) in a weight gradient, so 1e-5 relative L2 per
// tensor leaves a margin of ten or more; that is the bound and it is used for every
// tensor. Where a tensor is a sum whose terms cancel (a bias gradient of one element, the
// gradient of a layer with few outputs), its error scales with the terms, not the sum: those
// comparisons take an absolute floor of 1e-5 times the L2 norm of the sums of |term|, which
// the reference gives in double (magnitude_grads below).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "host/cpu/cpu_fast.h"
#include "host/cpu/cpu_model.h"
#include "host/cpu/inference_cpu.h"
#include "tests/fixtures.h"
#include "tests/test_support.h"

using namespace cuvae;
using cuvae::test::compare;

namespace {

constexpr double kRelTol = 1e-5;  // relative L2 per tensor (see the header)

// The fast engine loaded with the batch of `a` (float copies of x and eps).
void load(cpu::FastModel& m, const cpu::Activations<double>& a, int dim) {
  for (size_t i = 0; i < a.x.size(); ++i) m.x()[i] = float(a.x[i]);
  for (size_t i = 0; i < size_t(a.batch) * dim; ++i) m.eps()[i] = float(a.eps[i]);
}

// A ReLU has no derivative at 0, and a unit whose input is within rounding of 0 can be cut by
// one engine and passed by the other: its whole gradient then flows on one side only (seen: a
// decoder-free encoder.conv2 unit at 2e-8 moved encoder.conv1's weight gradient by 1e-2). Both
// sides are right; to compare gradients, the reference takes the engine's side at such units:
// where the masks differ, its ReLU output becomes the engine's. That changes nothing the
// reference computes beyond rounding, since both values are within `tol` of 0 (required here:
// a mask that differs at a value farther from 0 is a real error and fails).
int align_relu_masks(std::vector<double>& ref, const std::vector<float>& fast, const char* name) {
  double sq = 0;
  for (double v : ref) sq += v * v;
  const double tol = 1e-5 * std::sqrt(sq / double(ref.size()));  // of the layer's RMS
  int flips = 0;
  for (size_t i = 0; i < ref.size(); ++i)
    if ((ref[i] > 0) != (fast[i] > 0)) {
      INFO(name << "[" << i << "]: reference " << ref[i] << ", engine " << fast[i] << ", tolerance "
                << tol);
      REQUIRE(std::max(std::abs(ref[i]), std::abs(double(fast[i]))) <= tol);
      ref[i] = fast[i];
      ++flips;
    }
  return flips;
}

}  // namespace

TEST_CASE("fast CPU engine: activations, loss and every gradient match the double reference",
          "[cpu_fast][slow]") {
  const uint64_t seed = test::fresh_seed();
  // 128: the default batch, where a bias gradient summed over B x 784 terms in fp32 drifted.
  const int batch = GENERATE(1, 7, 33, 128);
  const int dim = GENERATE(2, 17);
  const double beta = GENERATE(1.0, 0.25);
  INFO("seed " << seed << " batch " << batch << " D " << dim << " beta " << beta);
  const ModelDesc d = make_vae(dim);
  std::vector<double> pd;
  cpu::Activations<double> ref;
  test::random_model_and_batch(d, seed, batch, pd, ref);
  const std::vector<float> pf(pd.begin(), pd.end());

  cpu::FastModel fast(d, batch);
  load(fast, ref, dim);
  const LossParts want = cpu::model_forward(d, pd.data(), ref, beta);
  const LossParts got = fast.forward(pf.data(), beta);

  // Activations in forward order, then the logits' gradient; each is compared on its own.
  for (const int slot : d.forward_slots()) {
    const std::vector<float> v = fast.read(slot);
    REQUIRE(v.size() == ref.slot(slot).size());
    REQUIRE_REL_L2(compare(v.data(), ref.slot(slot).data(), v.size()), d.slot_name(slot), kRelTol);
  }
  const std::vector<float> dlogits = fast.read_dlogits();
  REQUIRE(dlogits.size() == ref.dlogits.size());
  REQUIRE_REL_L2(compare(dlogits.data(), ref.dlogits.data(), dlogits.size()), "dlogits", kRelTol);
  int flips = 0;
  for (size_t id = 0; id < d.layers.size(); ++id)
    if (d.layers[id].relu)
      flips += align_relu_masks(ref.out[id], fast.read(int(id)), d.layers[id].name.c_str());
  INFO(flips << " ReLU units on the other side of 0 in the reference, aligned");
  INFO("loss " << got.loss << " vs " << want.loss);
  // The KL, 0.5 sum_j (mu^2 + exp(logvar) - 1 - logvar), nearly cancels for a fresh model (a
  // KL of 1e-4 from terms of order 1), and its error scales with those terms: fp32 mu and
  // logvar, exact to ~1e-7 of themselves, move it by ~1e-7 of them. So each KL is held to
  // kRelTol of its terms' magnitude (kl_terms[b]), not of itself.
  std::vector<double> kl_terms(size_t(batch), 0.0);
  for (int b = 0; b < batch; ++b)
    for (int j = 0; j < dim; ++j) {
      const double m = ref.out[kEncMu][size_t(b) * dim + j],
                   lv = ref.out[kEncLogvar][size_t(b) * dim + j];
      kl_terms[size_t(b)] += 0.5 * (m * m + std::exp(lv) + 1.0 + std::abs(lv));
    }
  double kl_terms_mean = 0;
  for (const double t : kl_terms) kl_terms_mean += t / batch;
  REQUIRE(std::abs(got.recon - want.recon) <= 1e-6 * want.recon);
  REQUIRE(std::abs(got.kl - want.kl) <= kRelTol * kl_terms_mean);
  REQUIRE(std::abs(got.loss - want.loss) <= 1e-6 * want.loss);
  for (int b = 0; b < batch; ++b) {
    INFO("image " << b << ": KL " << fast.kl()[b] << " vs " << ref.kl[size_t(b)]);
    REQUIRE(std::abs(fast.recon()[b] - ref.recon[size_t(b)]) <= 1e-6 * ref.recon[size_t(b)]);
    REQUIRE(std::abs(fast.kl()[b] - ref.kl[size_t(b)]) <= kRelTol * kl_terms[size_t(b)]);
  }

  std::vector<double> gd(d.num_params);
  std::vector<float> gf(d.num_params);
  test::poison(gd), test::poison(gf);
  cpu::model_backward(d, pd.data(), ref, beta, gd.data());
  fast.backward(pf.data(), beta, gf.data());
  for (const ParamTensor& p : d.params)
    REQUIRE_REL_L2(compare(gf.data() + p.offset, gd.data() + p.offset, p.numel), p.name, kRelTol);
}

TEST_CASE("fast CPU engine: two engines on the same batch give the same bits", "[cpu_fast][slow]") {
  const uint64_t seed = test::fresh_seed();
  const int batch = GENERATE(5, 128);
  INFO("seed " << seed << " batch " << batch);
  const ModelDesc d = make_vae(2);
  std::vector<double> pd;
  cpu::Activations<double> ref;
  test::random_model_and_batch(d, seed, batch, pd, ref);
  const std::vector<float> p(pd.begin(), pd.end());
  cpu::FastModel a(d, batch), b(d, batch);
  load(a, ref, 2);
  load(b, ref, 2);
  std::vector<float> ga(d.num_params), gb(d.num_params);
  test::poison(ga), test::poison(gb);
  const LossParts la = a.forward(p.data(), 1.0);
  a.backward(p.data(), 1.0, ga.data());
  // The second engine runs twice: state left by a first pass must not leak into the next.
  b.forward(p.data(), 1.0);
  b.backward(p.data(), 1.0, gb.data());
  test::poison(gb);
  const LossParts lb = b.forward(p.data(), 1.0);
  b.backward(p.data(), 1.0, gb.data());
  REQUIRE(std::isfinite(la.loss));
  REQUIRE(la.loss == lb.loss);
  REQUIRE(std::memcmp(ga.data(), gb.data(), ga.size() * sizeof(float)) == 0);
}

TEST_CASE("fast CPU engine: encode and decode alone give the forward pass's values", "[cpu_fast]") {
  const uint64_t seed = test::fresh_seed();
  const int batch = GENERATE(1, 31);
  INFO("seed " << seed << " batch " << batch);
  const ModelDesc d = make_vae(3);
  std::vector<double> pd;
  cpu::Activations<double> ref;
  test::random_model_and_batch(d, seed, batch, pd, ref);
  const std::vector<float> p(pd.begin(), pd.end());
  cpu::model_encode(d, pd.data(), ref);
  cpu::FastModel m(d, batch);
  load(m, ref, 3);
  m.encode(p.data());
  const size_t n = size_t(batch) * 3;
  REQUIRE_REL_L2(compare(m.mu(), ref.out[kEncMu].data(), n), "mu", kRelTol);
  REQUIRE_REL_L2(compare(m.logvar(), ref.out[kEncLogvar].data(), n), "logvar", kRelTol);
  // Decode an arbitrary latent (not the encoder's).
  for (size_t i = 0; i < n; ++i) ref.z[i] = 2.0 * ref.eps[i];
  for (size_t i = 0; i < n; ++i) m.z()[i] = float(ref.z[i]);
  cpu::model_decode(d, pd.data(), ref);
  m.decode(p.data());
  REQUIRE_REL_L2(compare(m.logits(), ref.out[kDecOut].data(), size_t(batch) * kImagePixels),
                 "logits", kRelTol);
}

TEST_CASE("fast CPU engine: a non-finite weight is traced to the first layer it reaches",
          "[cpu_fast]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  const ModelDesc d = make_vae(2);
  std::vector<double> pd;
  cpu::Activations<double> ref;
  test::random_model_and_batch(d, seed, 4, pd, ref);
  std::vector<float> p(pd.begin(), pd.end());
  cpu::FastModel m(d, 4);
  load(m, ref, 2);
  m.forward(p.data(), 1.0);
  REQUIRE(m.first_nonfinite_activation() == "the loss");
  p[d.bias(kDecDeconv1).offset] = INFINITY;
  m.forward(p.data(), 1.0);
  REQUIRE(m.first_nonfinite_activation() == "the output of decoder.deconv1");
}

TEST_CASE("fast CPU inference: encode and decode in chunks match the reference engine",
          "[cpu_fast][slow]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  const ModelDesc d = make_vae(2);
  std::vector<float> params(d.num_params);
  init_params(d, seed, params.data());
  const std::unique_ptr<Inference> fast = make_cpu_inference(d, params, "cpu");
  const std::unique_ptr<Inference> ref = make_cpu_inference(d, params, "cpu-ref");
  REQUIRE(fast->device() == "cpu");
  REQUIRE(ref->device() == "cpu-ref");
  std::mt19937_64 rng(seed);
  // One image, a full chunk plus a remainder, two chunks plus one image, and 7 (run in the
  // engine of the 256-image chunks, its other rows holding an earlier call's data).
  for (const int count : {1, 300, 513, 7}) {
    INFO("count " << count);
    const std::vector<float> x =
        test::random_vector<float>(rng, size_t(count) * kImagePixels, 0, 1);
    const std::vector<float> z = test::random_vector<float>(rng, size_t(count) * 2, -3, 3);
    std::vector<float> mu(size_t(count) * 2), lv(mu.size()), mu_r(mu.size()), lv_r(mu.size());
    std::vector<float> logits(x.size()), logits_r(x.size());
    test::poison(mu), test::poison(lv), test::poison(logits);
    fast->encode(mu.data(), lv.data(), x.data(), count);
    ref->encode(mu_r.data(), lv_r.data(), x.data(), count);
    fast->decode(logits.data(), z.data(), count);
    ref->decode(logits_r.data(), z.data(), count);
    REQUIRE_REL_L2(compare(mu.data(), mu_r.data(), mu.size()), "mu", kRelTol);
    REQUIRE_REL_L2(compare(lv.data(), lv_r.data(), lv.size()), "logvar", kRelTol);
    REQUIRE_REL_L2(compare(logits.data(), logits_r.data(), logits.size()), "logits", kRelTol);
  }
  // New weights reach the engine.
  std::vector<float> other = params;
  for (float& v : other) v *= 0.5f;
  fast->set_params(other.data());
  ref->set_params(other.data());
  std::vector<float> x(kImagePixels, 0.5f), mu(2), lv(2), mu_r(2), lv_r(2);
  fast->encode(mu.data(), lv.data(), x.data(), 1);
  ref->encode(mu_r.data(), lv_r.data(), x.data(), 1);
  REQUIRE_REL_L2(compare(mu.data(), mu_r.data(), 2), "mu after set_params", kRelTol);
}
