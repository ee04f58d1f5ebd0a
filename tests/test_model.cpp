// The model description: names, shapes, offsets, parameter count, and the initialisation.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "host/core/error.h"
#include "host/core/model.h"
#include "tests/test_support.h"

using namespace cuvae;

TEST_CASE("model description has the PyTorch names, shapes and 134,165 parameters at D=2",
          "[model]") {
  const ModelDesc d = make_vae(2);
  REQUIRE(d.num_params == 134165);
  const std::vector<std::pair<std::string, std::vector<int64_t>>> expected = {
      {"encoder.conv1.weight", {32, 1, 3, 3}},
      {"encoder.conv1.bias", {32}},
      {"encoder.conv2.weight", {64, 32, 3, 3}},
      {"encoder.conv2.bias", {64}},
      {"encoder.fc.weight", {16, 3136}},
      {"encoder.fc.bias", {16}},
      {"encoder.mu.weight", {2, 16}},
      {"encoder.mu.bias", {2}},
      {"encoder.logvar.weight", {2, 16}},
      {"encoder.logvar.bias", {2}},
      {"decoder.fc.weight", {3136, 2}},
      {"decoder.fc.bias", {3136}},
      {"decoder.deconv1.weight", {64, 64, 3, 3}},
      {"decoder.deconv1.bias", {64}},
      {"decoder.deconv2.weight", {64, 32, 3, 3}},
      {"decoder.deconv2.bias", {32}},
      {"decoder.out.weight", {32, 1, 3, 3}},
      {"decoder.out.bias", {1}},
  };
  REQUIRE(d.params.size() == expected.size());
  size_t offset = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    INFO(expected[i].first);
    CHECK(d.params[i].name == expected[i].first);
    CHECK(d.params[i].shape == expected[i].second);
    CHECK(d.params[i].offset == offset);  // contiguous, in state_dict order
    offset += d.params[i].numel;
  }
  CHECK(offset == d.num_params);
}

TEST_CASE("layer shapes follow the Keras-example architecture", "[model]") {
  const int dim = GENERATE(1, 2, 17);
  const ModelDesc d = make_vae(dim);
  CHECK(d.layer(kEncConv1).out_size() == 32 * 14 * 14);
  CHECK(d.layer(kEncConv2).out_size() == 64 * 7 * 7);
  CHECK(d.layer(kEncFc).out_size() == 16);
  CHECK(d.layer(kEncMu).out_size() == dim);
  CHECK(d.layer(kDecFc).out_size() == 3136);
  CHECK(d.layer(kDecDeconv1).out_size() == 64 * 14 * 14);
  CHECK(d.layer(kDecDeconv2).out_size() == 32 * 28 * 28);
  CHECK(d.layer(kDecOut).out_size() == 784);
  CHECK(d.layer(kDecDeconv1).out_pad == 1);
  CHECK(d.layer(kDecOut).out_pad == 0);
  // Parameter count grows by the two heads and decoder.fc: 2*(16D + D) + 3136D.
  CHECK(d.num_params == 134165 + size_t(dim - 2) * (2 * 17 + 3136));
  for (LayerId id : {kEncConv1, kEncConv2, kEncFc, kDecFc, kDecDeconv1, kDecDeconv2})
    CHECK(d.layer(id).relu);
  for (LayerId id : {kEncMu, kEncLogvar, kDecOut}) CHECK_FALSE(d.layer(id).relu);
  // The topology the engines walk: two chains, the heads on encoder.fc's output, z read by
  // decoder.fc, every other layer reading the one before it.
  CHECK(d.encoder == std::vector<LayerId>{kEncConv1, kEncConv2, kEncFc, kEncMu, kEncLogvar});
  CHECK(d.decoder == std::vector<LayerId>{kDecFc, kDecDeconv1, kDecDeconv2, kDecOut});
  CHECK(d.mu_head == kEncMu);
  CHECK(d.logvar_head == kEncLogvar);
  CHECK(d.output == kDecOut);
  CHECK(d.layer(kEncConv1).input == kImageSlot);
  CHECK(d.layer(kEncLogvar).input == kEncFc);
  CHECK(d.layer(kDecFc).input == kLatentSlot);
  for (LayerId id : {kEncConv2, kEncFc, kEncMu, kDecDeconv1, kDecDeconv2, kDecOut})
    CHECK(d.layer(id).input == id - 1);
  CHECK(d.readers(kEncFc) == std::vector<LayerId>{kEncMu, kEncLogvar});
  CHECK(d.readers(kLatentSlot) == std::vector<LayerId>{kDecFc});
  CHECK(d.readers(kDecOut).empty());
  CHECK(d.slot_size(kLatentSlot) == size_t(dim));
  CHECK(d.slot_size(kImageSlot) == size_t(kImagePixels));
  CHECK(d.forward_slots().size() == size_t(kNumLayers) + 1);
  CHECK(d.slot_name(kEncConv1) == "the output of encoder.conv1");
  CHECK(d.slot_name(kEncMu) == "mu (encoder.mu)");
  CHECK(d.slot_name(kLatentSlot) == "z");
  CHECK(d.slot_name(kDecOut) == "the logits (decoder.out)");
}

TEST_CASE("latent dimension out of range is refused", "[model]") {
  CHECK_THROWS_AS(make_vae(0), InputError);
  CHECK_THROWS_AS(make_vae(-3), InputError);
  CHECK_THROWS_AS(make_vae(kMaxLatentDim + 1), InputError);
  CHECK_THROWS_AS(make_vae(2).param("encoder.nope.weight"), Error);
}

TEST_CASE("Glorot-uniform initialisation: bounds, spread, zero biases, seeded", "[model]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  const ModelDesc d = make_vae(2);
  std::vector<float> a(d.num_params), b(d.num_params), c(d.num_params);
  test::poison(a);
  test::poison(b);
  init_params(d, seed, a.data());
  init_params(d, seed, b.data());
  init_params(d, seed + 1, c.data());
  REQUIRE(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);  // same seed
  size_t same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i] == c[i] && a[i] != 0.0f;
  CHECK(same < 10);  // another seed, other weights
  for (const ParamTensor& p : d.params) {
    INFO(p.name);
    if (p.fan_in == 0) {
      for (size_t i = 0; i < p.numel; ++i) REQUIRE(a[p.offset + i] == 0.0f);
      continue;
    }
    const double limit = std::sqrt(6.0 / (p.fan_in + p.fan_out));
    double sum = 0, sq = 0;
    for (size_t i = 0; i < p.numel; ++i) {
      const double w = a[p.offset + i];
      REQUIRE(std::isfinite(w));
      REQUIRE(std::abs(w) <= limit);
      sum += w;
      sq += w * w;
    }
    if (p.numel >= 1000) {  // uniform(-L, L): mean 0, variance L^2 / 3
      const double n = double(p.numel), mean = sum / n, var = sq / n - mean * mean;
      CHECK(std::abs(mean) < 5 * limit / std::sqrt(3 * n));
      CHECK(var == Approx(limit * limit / 3).epsilon(0.05));
    }
  }
}
