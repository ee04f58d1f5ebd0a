// Faults during training, at the library level: a stop request between any two steps leaves a
// state that, saved, loaded and resumed, ends bit-identical to an uninterrupted run with the
// same epoch metrics; the position inside an epoch is checked on load; a NaN or infinity
// stops training with TrainingDiverged naming the step and the tensor; the helpers that name
// a bad parameter element find the right tensor and element.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "host/core/error.h"
#include "host/core/model.h"
#include "host/cpu/trainer_cpu.h"
#include "host/io/checkpoint.h"
#include "host/io/safetensors.h"
#include "tests/fixtures.h"
#include "tests/test_support.h"

using namespace cuvae;
namespace fs = std::filesystem;

namespace {

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TrainRun run_of(const TrainConfig& cfg, const ImageSet& images) {
  TrainRun run;
  run.cfg = cfg;
  run.train_images = images.count;
  run.train_crc32 = image_checksum(images);
  return run;
}

}  // namespace

TEST_CASE("a stop between any two steps, saved and resumed, equals the straight run",
          "[faults][trainer][checkpoint][slow]") {
  const uint64_t seed = test::fresh_seed();
  const std::string device = GENERATE("cpu", "cpu-ref");  // the fast engine and the reference
  INFO("seed " << seed << " device " << device);
  const ModelDesc d = make_vae(2);
  const ImageSet images = test::synthetic_images(seed, 21);  // batch 8: 8 + 8 + 5
  TrainConfig cfg = test::small_config(seed, 8, 0.5, device);
  cfg.epochs = 2;
  const TrainState fresh = test::fresh_state(d, seed);
  TrainState straight = fresh;
  std::vector<EpochMetrics> straight_m;
  REQUIRE(
      train_cpu(cfg, d, images, straight, [&](const EpochMetrics& m) { straight_m.push_back(m); }));
  REQUIRE(straight.step == 6);

  const fs::path dir = test::temp_dir("cuvae_faults_");
  const std::string path = (dir / "train_state.safetensors").string();
  // Stop before step k + 1 for every k of the run (k = 0: before anything ran).
  for (int64_t k = 0; k < straight.step; ++k) {
    INFO("stop after step " << k);
    TrainState st = fresh;
    std::vector<EpochMetrics> metrics;
    int64_t asked = 0;
    const bool done = train_cpu(
        cfg, d, images, st, [&](const EpochMetrics& m) { metrics.push_back(m); }, nullptr,
        [&] { return asked++ == k; });
    REQUIRE_FALSE(done);
    REQUIRE(st.step == k);
    REQUIRE(st.epoch == k / 3);
    REQUIRE(st.epoch_step == k % 3);
    REQUIRE((st.epoch_step > 0) == (st.epoch_recon_sum > 0));
    save_train_state(path, d, run_of(cfg, images), st);
    LoadedTrainState loaded = load_train_state(path);
    REQUIRE(loaded.state.epoch_step == st.epoch_step);
    REQUIRE(loaded.state.epoch_recon_sum == st.epoch_recon_sum);
    REQUIRE(loaded.state.epoch_kl_sum == st.epoch_kl_sum);
    REQUIRE(train_cpu(cfg, d, images, loaded.state,
                      [&](const EpochMetrics& m) { metrics.push_back(m); }));
    REQUIRE(same_bits(loaded.state.params, straight.params));
    REQUIRE(same_bits(loaded.state.adam_m, straight.adam_m));
    REQUIRE(same_bits(loaded.state.adam_v, straight.adam_v));
    REQUIRE(loaded.state.epoch_step == 0);
    REQUIRE(metrics.size() == 2);
    for (size_t e = 0; e < 2; ++e) {
      INFO("epoch " << e + 1);
      CHECK(metrics[e].epoch == int(e) + 1);
      CHECK(metrics[e].images == 21);
      CHECK(metrics[e].steps == 3);
      CHECK(metrics[e].loss == straight_m[e].loss);
      CHECK(metrics[e].recon == straight_m[e].recon);
      CHECK(metrics[e].kl == straight_m[e].kl);
    }
  }
  fs::remove_all(dir);
}

TEST_CASE("the position inside an epoch is checked when a state loads", "[faults][checkpoint]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  const ModelDesc d = make_vae(2);
  const ImageSet images = test::synthetic_images(seed, 21);
  TrainConfig cfg = test::small_config(seed, 8, 1.0);  // 3 steps an epoch
  const TrainRun run = run_of(cfg, images);
  const fs::path dir = test::temp_dir("cuvae_faults_");
  const std::string path = (dir / "train_state.safetensors").string();
  TrainState good = test::fresh_state(d, seed);
  good.epoch = 1;
  good.epoch_step = 2;
  good.step = 5;
  good.epoch_recon_sum = 8123.5;
  good.epoch_kl_sum = 12.25;
  save_train_state(path, d, run, good);
  REQUIRE(load_train_state(path).state.step == 5);

  auto refused = [&](TrainState st, const std::string& why) {
    INFO("expect: " << why);
    save_train_state(path, d, run, st);
    try {
      load_train_state(path);
      FAIL("accepted");
    } catch (const InputError& e) {
      const std::string msg = e.what();
      CHECK(msg.find(path) != std::string::npos);
      CHECK(msg.find(why) != std::string::npos);
    }
  };
  TrainState st = good;
  st.step = 6;
  refused(st, "does not match");
  st = good;
  st.epoch_step = 3, st.step = 6;
  refused(st, "outside an epoch of 3 steps");
  st = good;
  st.epoch_step = -1, st.step = 2;
  refused(st, "outside an epoch");
  st = good;
  st.epoch_kl_sum = -1;
  refused(st, "impossible loss sums");
  st = good;
  st.epoch_recon_sum = std::numeric_limits<double>::infinity();
  refused(st, "impossible loss sums");
  st = good;
  st.epoch_step = 0, st.step = 3;  // at a boundary the sums must be empty
  refused(st, "impossible loss sums");

  // A file without the two position tensors (written before they existed) loads at a
  // boundary; one with only one of them is refused.
  SafetensorsFile f = read_safetensors((save_train_state(path, d, run, good), path));
  auto write_without = [&](const std::vector<std::string>& drop) {
    std::vector<TensorOut> out;
    for (const auto& [name, t] : f.tensors) {
      bool skip = false;
      for (const std::string& n : drop) skip = skip || n == name;
      if (!skip) out.push_back({name, t.dtype, t.shape, t.bytes.data()});
    }
    write_safetensors(path, out, f.metadata);
  };
  const int64_t boundary_step = 3;
  f.tensors["step"].bytes.assign(reinterpret_cast<const uint8_t*>(&boundary_step),
                                 reinterpret_cast<const uint8_t*>(&boundary_step) + 8);
  write_without({"epoch_step", "epoch_sums"});
  const LoadedTrainState old = load_train_state(path);
  CHECK(old.state.epoch_step == 0);
  CHECK(old.state.epoch_recon_sum == 0);
  write_without({"epoch_sums"});
  CHECK_THROWS_AS(load_train_state(path), InputError);
  fs::remove_all(dir);
}

TEST_CASE("a non-finite forward pass stops training, naming the step and the tensor",
          "[faults][trainer][slow]") {
  const uint64_t seed = test::fresh_seed();
  const std::string device = GENERATE("cpu", "cpu-ref");  // the fast engine and the reference
  INFO("seed " << seed << " device " << device);
  const ModelDesc d = make_vae(2);
  const ImageSet images = test::synthetic_images(seed, 20);
  TrainConfig cfg = test::small_config(seed, 4, 1.0, device);
  cfg.epochs = 2;
  TrainState st = test::fresh_state(d, seed);
  REQUIRE(train_cpu(cfg, d, images, st, [](const EpochMetrics&) {}));  // 10 good steps
  cfg.epochs = 3;

  struct Case {
    const char* param;
    float value;
    const char* tensor;  // named in the message
  };
  // A NaN bias first shows in that layer's output (neither has a ReLU that could hide it);
  // huge first-layer weights overflow either the encoder's activations or, when the pixels
  // under a filter are faint, the encoder's weight gradients.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Case cases[] = {{"encoder.mu.bias", nan, "the loss is not finite; first bad tensor: mu"},
                        {"decoder.out.bias", nan, "first bad tensor: the logits (decoder.out)"},
                        {"encoder.conv1.weight", 3e38f, "encoder.conv"}};
  for (const Case& c : cases) {
    INFO(c.param);
    TrainState bad = st;
    const ParamTensor& p = d.param(c.param);
    std::fill(bad.params.begin() + long(p.offset), bad.params.begin() + long(p.offset + p.numel),
              c.value);
    try {
      train_cpu(cfg, d, images, bad, [](const EpochMetrics&) { FAIL("finished an epoch"); });
      FAIL("no TrainingDiverged");
    } catch (const TrainingDiverged& e) {
      const std::string msg = e.what();
      INFO(msg);
      CHECK(msg.find("step 11 (epoch 3)") != std::string::npos);
      CHECK(msg.find(c.tensor) != std::string::npos);
    }
    CHECK(bad.step == 10);  // the bad step was not counted
  }
}

TEST_CASE("non-finite parameter elements are named by tensor and element", "[faults][model]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const ModelDesc d = make_vae(3);
  std::vector<float> flat = test::random_vector<float>(rng, d.num_params, -1, 1);
  CHECK(first_nonfinite_param(d, flat.data()).empty());
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> g = flat;
    const size_t i = std::uniform_int_distribution<size_t>(0, d.num_params - 1)(rng);
    const size_t j = std::uniform_int_distribution<size_t>(0, d.num_params - 1)(rng);
    g[i] = std::numeric_limits<float>::quiet_NaN();
    g[j] = -std::numeric_limits<float>::infinity();
    const size_t first = std::min(i, j);
    const ParamTensor* owner = nullptr;
    for (const ParamTensor& p : d.params)
      if (first >= p.offset && first < p.offset + p.numel) owner = &p;
    REQUIRE(owner != nullptr);
    const std::string want = owner->name + " (element " + std::to_string(first - owner->offset) +
                             " of " + shape_string(owner->shape) + ")";
    CHECK(first_nonfinite_param(d, g.data()) == want);
    CHECK(param_element_name(d, first) == want);
  }
  CHECK(param_element_name(d, d.num_params).find("outside the parameters") != std::string::npos);
}
