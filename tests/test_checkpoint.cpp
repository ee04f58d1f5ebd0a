// Checkpoints: train_state.safetensors and model.safetensors round trips (bit-exact), strict
// refusal of broken or foreign files (each an InputError naming the file), and the resume
// guarantee at the library level: 2 epochs + save + load + 2 more == 4 epochs straight, bit for
// bit, with a remainder batch. The run's --train-split round trips, and a state written before
// the flag existed (no train_split) loads as the training split.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "host/core/error.h"
#include "host/cpu/trainer_cpu.h"
#include "host/io/checkpoint.h"
#include "host/io/safetensors.h"
#include "tests/fixtures.h"
#include "tests/test_support.h"

using namespace cuvae;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir() {
  return test::temp_dir("cuvae_ckpt_");
}
std::string slurp(const fs::path& p) {
  return test::read_file(p.string());
}
void spit(const fs::path& p, const std::string& bytes) {
  test::write_file(p.string(), bytes);
}

// A state with random weights and moments (v >= 0), 3 epochs of 4 steps done.
TrainState random_state(const ModelDesc& d, std::mt19937_64& rng) {
  TrainState st;
  st.params = test::random_vector<float>(rng, d.num_params, -1, 1);
  st.adam_m = test::random_vector<float>(rng, d.num_params, -1e-3, 1e-3);
  st.adam_v = test::random_vector<float>(rng, d.num_params, 0, 1e-6);
  st.params[0] = -0.0f;
  st.params[1] = std::numeric_limits<float>::denorm_min();
  st.step = 12;
  st.epoch = 3;
  return st;
}

TrainRun sample_run(const ModelDesc& d, uint64_t seed) {
  TrainRun run;
  run.cfg.latent_dim = d.latent_dim;
  run.cfg.batch_size = 10;
  run.cfg.adam.lr = 3.3e-4f;  // not a short decimal: the text must carry every bit
  run.cfg.beta = 0.7;
  run.cfg.beta_warmup = 3;  // not the default: the field must be written
  run.cfg.seed = seed;
  run.cfg.epochs = 7;
  run.cfg.limit = 37;
  run.cfg.data_dir = "/data/some \"quoted\" folder";
  run.train_images = 37;  // 4 steps per epoch at batch 10
  run.train_crc32 = 0xdeadbeefu;
  run.test_limit = 1000;
  run.train_split = TrainSplit::TrainTest;  // not the default: the field must be written
  return run;
}

// The tensors and metadata of a file, to be edited into a broken one and written back.
struct RawFile {
  std::map<std::string, TensorIn> tensors;
  std::map<std::string, std::string> metadata;

  explicit RawFile(const std::string& path) {
    const SafetensorsFile f = read_safetensors(path);
    tensors = f.tensors;
    metadata = f.metadata;
  }
  void write(const std::string& path) const {
    std::vector<TensorOut> out;
    for (const auto& [name, t] : tensors) out.push_back({name, t.dtype, t.shape, t.bytes.data()});
    write_safetensors(path, out, metadata);
  }
};

// load(path) throws an InputError whose one-line message starts with the path and holds `words`.
void require_refused(const std::function<void(const std::string&)>& load, const std::string& path,
                     const std::string& words) {
  try {
    load(path);
    FAIL("accepted " << path << " (expected: " << words << ")");
  } catch (const InputError& e) {
    const std::string msg = e.what();
    INFO(msg);
    REQUIRE(msg.find(path) == 0);
    REQUIRE(msg.find('\n') == std::string::npos);
    REQUIRE(msg.find(words) != std::string::npos);
  }
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

const auto load_state = [](const std::string& p) { load_train_state(p); };
const auto load_weights = [](const std::string& p) { load_model(p); };

}  // namespace

TEST_CASE("train_state round trip is bit-exact", "[checkpoint]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const fs::path dir = temp_dir();
  const std::string path = (dir / "train_state.safetensors").string();
  const ModelDesc d = make_vae(3);
  TrainState st = random_state(d, rng);
  // Stopped inside epoch 4, after 2 of its 4 steps.
  st.epoch_step = 2;
  st.step += 2;
  st.epoch_recon_sum = 5123.0625 + double(seed % 1000) / 7.0;
  st.epoch_kl_sum = 31.5 / 3.0;
  st.epoch_weighted_kl_sum = 2.0 / 3.0 + double(seed % 1000) / 9.0;
  const TrainRun run = sample_run(d, seed);
  save_train_state(path, d, run, st);

  const LoadedTrainState got = load_train_state(path);
  CHECK(got.state.epoch_step == 2);
  CHECK(got.state.epoch_recon_sum == st.epoch_recon_sum);  // every bit (F64)
  CHECK(got.state.epoch_kl_sum == st.epoch_kl_sum);
  CHECK(got.state.epoch_weighted_kl_sum == st.epoch_weighted_kl_sum);
  CHECK(got.desc.latent_dim == 3);
  CHECK(same_bits(got.state.params, st.params));
  CHECK(same_bits(got.state.adam_m, st.adam_m));
  CHECK(same_bits(got.state.adam_v, st.adam_v));
  CHECK(got.state.step == st.step);
  CHECK(got.state.epoch == st.epoch);
  const TrainConfig& c = got.run.cfg;
  CHECK(c.latent_dim == 3);
  CHECK(c.batch_size == run.cfg.batch_size);
  CHECK(std::memcmp(&c.adam, &run.cfg.adam, sizeof c.adam) == 0);  // lr, betas, eps: every bit
  CHECK(c.beta == run.cfg.beta);
  CHECK(c.beta_warmup == 3);
  CHECK(c.seed == seed);
  CHECK(c.epochs == run.cfg.epochs);
  CHECK(c.limit == run.cfg.limit);
  CHECK(c.data_dir == run.cfg.data_dir);
  CHECK(got.run.train_images == run.train_images);
  CHECK(got.run.train_crc32 == run.train_crc32);
  CHECK(got.run.test_limit == run.test_limit);
  CHECK(got.run.train_split == TrainSplit::TrainTest);
  // The file documents itself: names, dtypes and the RNG note.
  const SafetensorsFile f = read_safetensors(path);
  CHECK(f.metadata.at("train_split") == "train+test");
  CHECK(f.metadata.at("seed") == std::to_string(seed));
  CHECK(f.metadata.at("format_version") == "1");
  CHECK(f.metadata.at("rng").find("whole RNG state") != std::string::npos);
  CHECK(f.get("adam.v.encoder.conv1.weight", DType::F32, {32, 1, 3, 3}).numel() == 288);
  CHECK(f.get("step", DType::I64, {1}).numel() == 1);
  CHECK(f.get("epoch_sums", DType::F64, {3}).numel() == 3);
  CHECK(f.tensors.size() == 3 * d.params.size() + 4);
  fs::remove_all(dir);
}

// Every setting train_state holds, at each end of the range the flags accept (the same
// constants, train_types.h), loads back bit for bit: a run can always resume its own
// checkpoint. (The latent dimension's upper end, 4096, would make a 460 MB file: its range is
// make_vae's, checked by the model tests.)
TEST_CASE("train_state holds every setting at the edges of the accepted ranges", "[checkpoint]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const test::TempDir dir("cuvae_ckpt_");
  const std::string path = (dir.path / "train_state.safetensors").string();
  const ModelDesc d = make_vae(1);
  const float tiny = std::numeric_limits<float>::min();  // the smallest normal float
  const float below_one = std::nextafter(1.0f, 0.0f);
  for (const bool high : {false, true}) {
    INFO((high ? "the upper ends" : "the lower ends"));
    TrainRun run;
    TrainConfig& c = run.cfg;
    c.latent_dim = 1;
    c.batch_size = int(high ? kBatchSizeRange.hi : kBatchSizeRange.lo);
    c.adam.lr = high ? float(kLrRange.hi) : tiny;
    c.beta = high ? kBetaRange.hi : kBetaRange.lo;
    c.beta_warmup = int(high ? kBetaWarmupRange.hi : kBetaWarmupRange.lo);
    c.adam.beta1 = high ? below_one : float(kAdamBetaRange.lo);
    c.adam.beta2 = high ? below_one : float(kAdamBetaRange.lo);
    c.adam.eps = high ? float(kAdamEpsRange.hi) : tiny;
    c.seed = high ? UINT64_MAX : 0;
    c.epochs = int(high ? kEpochsRange.hi : kEpochsRange.lo);
    c.limit = high ? kImageLimitRange.hi : kImageLimitRange.lo;
    c.data_dir = "d";
    run.train_images = high ? INT32_MAX : 1;
    run.test_limit = high ? kImageLimitRange.hi : kImageLimitRange.lo;
    run.train_crc32 = high ? 0xffffffffu : 0;
    TrainState st = random_state(d, rng);
    const int64_t steps = (run.train_images + c.batch_size - 1) / c.batch_size;
    st.epoch = 3;
    st.step = 3 * steps;
    for (const double beta : high ? std::vector<double>{kBetaRange.hi}
                                  : std::vector<double>{kBetaRange.lo, double(tiny)}) {
      INFO("beta " << beta);
      c.beta = beta;
      REQUIRE(kLrRange.holds(c.adam.lr));
      REQUIRE(kBetaRange.holds(c.beta));
      save_train_state(path, d, run, st);
      const LoadedTrainState got = load_train_state(path);
      const TrainConfig& g = got.run.cfg;
      CHECK(g.batch_size == c.batch_size);
      CHECK(std::memcmp(&g.adam, &c.adam, sizeof g.adam) == 0);  // lr, betas, eps: every bit
      CHECK(g.beta == c.beta);
      CHECK(g.beta_warmup == c.beta_warmup);
      CHECK(g.seed == c.seed);
      CHECK(g.epochs == c.epochs);
      CHECK(g.limit == c.limit);
      CHECK(g.latent_dim == 1);
      CHECK(got.run.train_images == run.train_images);
      CHECK(got.run.test_limit == run.test_limit);
      CHECK(got.run.train_crc32 == run.train_crc32);
      CHECK(got.state.step == st.step);
    }
  }
  // Just outside: a subnormal lr in a file is refused, as the flag refuses it.
  TrainRun run = sample_run(d, seed);
  run.cfg.latent_dim = 1;
  run.cfg.adam.lr = std::nextafter(tiny, 0.0f);
  TrainState st = random_state(d, rng);
  save_train_state(path, d, run, st);
  require_refused(load_state, path, "bad lr");
}

TEST_CASE("train_split: absent (an older file) is train, an unknown value is refused",
          "[checkpoint]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const fs::path dir = temp_dir();
  const std::string path = (dir / "train_state.safetensors").string();
  const std::string edited = (dir / "edited.safetensors").string();
  const ModelDesc d = make_vae(2);
  save_train_state(path, d, sample_run(d, seed), random_state(d, rng));
  const RawFile f(path);
  REQUIRE(f.metadata.at("train_split") == "train+test");

  RawFile g = f;
  g.metadata.erase("train_split");  // as written before --train-split existed
  g.write(edited);
  CHECK(load_train_state(edited).run.train_split == TrainSplit::Train);
  g.metadata["train_split"] = "train";
  g.write(edited);
  CHECK(load_train_state(edited).run.train_split == TrainSplit::Train);
  for (const char* bad : {"test", "train+test ", "Train", ""}) {
    g.metadata["train_split"] = bad;
    g.write(edited);
    require_refused(load_state, edited, "bad train_split '" + std::string(bad) + "'");
  }
  fs::remove_all(dir);
}

TEST_CASE("a state from before --beta-warmup (two epoch sums, no beta_warmup) loads as none",
          "[checkpoint]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const fs::path dir = temp_dir();
  const std::string path = (dir / "train_state.safetensors").string();
  const std::string edited = (dir / "edited.safetensors").string();
  const ModelDesc d = make_vae(2);
  TrainState st = random_state(d, rng);
  st.epoch_step = 1;
  st.step += 1;
  st.epoch_recon_sum = 1000.0 + double(seed % 1000);
  st.epoch_kl_sum = 40.25;
  st.epoch_weighted_kl_sum = 20.5;
  save_train_state(path, d, sample_run(d, seed), st);
  RawFile g(path);
  g.metadata.erase("beta_warmup");
  TensorIn& sums = g.tensors.at("epoch_sums");
  sums.shape = {2};
  sums.bytes.resize(2 * sizeof(double));  // (recon, KL): the layout those files have
  g.write(edited);
  const LoadedTrainState got = load_train_state(edited);
  CHECK(got.run.cfg.beta_warmup == 0);
  CHECK(got.state.epoch_recon_sum == st.epoch_recon_sum);
  CHECK(got.state.epoch_kl_sum == st.epoch_kl_sum);
  CHECK(got.state.epoch_weighted_kl_sum == 0.0);
  // Any other length, a negative or non-finite weighted sum, or a bad beta_warmup is refused.
  sums.shape = {4};
  sums.bytes.resize(4 * sizeof(double));
  g.write(edited);
  require_refused(load_state, edited, "epoch_sums");
  RawFile h(path);
  const double bad[3] = {1.0, 1.0, -1.0};
  std::memcpy(h.tensors.at("epoch_sums").bytes.data(), bad, sizeof bad);
  h.write(edited);
  require_refused(load_state, edited, "impossible loss sums");
  RawFile k(path);
  k.metadata["beta_warmup"] = "-1";
  k.write(edited);
  require_refused(load_state, edited, "beta_warmup");
  fs::remove_all(dir);
}

TEST_CASE("model.safetensors round trip through load_model", "[checkpoint]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const fs::path dir = temp_dir();
  const std::string path = (dir / "model.safetensors").string();
  const ModelDesc d = make_vae(2);
  const std::vector<float> params = test::random_vector<float>(rng, d.num_params, -1, 1);
  save_model(path, d, params, 0.25);
  const LoadedModel m = load_model(path);
  CHECK(m.desc.latent_dim == 2);
  CHECK(m.desc.num_params == 134165);
  CHECK(m.beta == 0.25);
  CHECK(same_bits(m.params, params));
  const SafetensorsFile f = read_safetensors(path);
  CHECK(f.metadata.at("format") == kModelFormat);
  CHECK(f.metadata.at("architecture") == kArchitecture);
  CHECK(f.tensors.size() == d.params.size());
  CHECK(f.get("decoder.deconv1.weight", DType::F32, {64, 64, 3, 3}).numel() == 36864);
  fs::remove_all(dir);
}

TEST_CASE("broken or foreign checkpoints are refused, naming the file", "[checkpoint]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const fs::path dir = temp_dir();
  const ModelDesc d = make_vae(2);
  const std::string state_path = (dir / "train_state.safetensors").string();
  const std::string model_path = (dir / "model.safetensors").string();
  const std::string bad = (dir / "bad.safetensors").string();
  const TrainState st = random_state(d, rng);
  save_train_state(state_path, d, sample_run(d, seed), st);
  save_model(model_path, d, st.params, 1.0);
  REQUIRE_NOTHROW(load_train_state(state_path));
  REQUIRE_NOTHROW(load_model(model_path));

  for (const auto& [good, load] : {std::pair{state_path, std::function(load_state)},
                                   std::pair{model_path, std::function(load_weights)}}) {
    INFO("based on " << good);
    const std::string bytes = slurp(good);
    {                                                // truncated
      spit(bad, bytes.substr(0, bytes.size() - 3));  // the last tensor runs past the end
      require_refused(load, bad, "outside the data area");
      spit(bad, bytes.substr(0, bytes.size() / 2));
      require_refused(load, bad, "");
      spit(bad, bytes.substr(0, 5));
      require_refused(load, bad, "too short");
    }
    {  // header length beyond the file
      std::string b = bytes;
      b[4] = '\x01';  // + 2^32 bytes of header
      spit(bad, b);
      require_refused(load, bad, "runs past the end");
    }
    {  // header that is not JSON
      std::string b = bytes;
      b[8] = '[';
      b[9] = '}';
      spit(bad, b);
      require_refused(load, bad, "not valid JSON");
    }
    {  // another latent_dim than the tensors
      RawFile f(good);
      f.metadata["latent_dim"] = "3";
      f.write(bad);
      require_refused(load, bad, "expected [3,");  // encoder.mu.weight [3, 16]
    }
    {  // another architecture
      RawFile f(good);
      f.metadata["architecture"] = "cuvae-mlp-vae";
      f.write(bad);
      require_refused(load, bad, "architecture 'cuvae-mlp-vae'");
    }
    {  // a missing tensor
      RawFile f(good);
      f.tensors.erase("decoder.out.bias");
      f.write(bad);
      require_refused(load, bad, "missing tensor 'decoder.out.bias'");
    }
    {  // an extra tensor
      RawFile f(good);
      f.tensors["encoder.extra.weight"] = f.tensors.at("decoder.out.bias");
      f.write(bad);
      require_refused(load, bad, "unexpected tensor 'encoder.extra.weight'");
    }
    {  // a wrong dtype
      RawFile f(good);
      TensorIn& t = f.tensors.at("encoder.fc.bias");  // 16 F32 -> 8 F64, same bytes
      t.dtype = DType::F64;
      t.shape = {8};
      f.write(bad);
      require_refused(load, bad, "has dtype F64, expected F32");
    }
    {  // a wrong shape
      RawFile f(good);
      f.tensors.at("encoder.conv1.weight").shape = {32, 9};
      f.write(bad);
      require_refused(load, bad, "has shape [32, 9], expected [32, 1, 3, 3]");
    }
    {  // a non-finite value
      RawFile f(good);
      const float nan = std::numeric_limits<float>::quiet_NaN();
      std::memcpy(f.tensors.at("decoder.fc.weight").bytes.data() + 4 * 17, &nan, 4);
      f.write(bad);
      require_refused(load, bad, "'decoder.fc.weight' holds a non-finite value");
    }
    {  // not a file at all
      require_refused(load, (dir / "missing.safetensors").string(), "cannot open");
    }
  }

  {  // the training state only: counters, moments, version, format
    RawFile f(state_path);
    RawFile g = f;
    int64_t step = 13;  // 3 epochs of 4 steps is 12
    std::memcpy(g.tensors.at("step").bytes.data(), &step, 8);
    g.write(bad);
    require_refused(load_state, bad, "step 13 does not match 3 epochs of 4 steps");
    g = f;
    g.tensors.at("epoch").dtype = DType::F64;
    g.write(bad);
    require_refused(load_state, bad, "'epoch' has dtype F64, expected I64");
    g = f;
    const float minus = -1.0f;
    std::memcpy(g.tensors.at("adam.v.encoder.mu.bias").bytes.data(), &minus, 4);
    g.write(bad);
    require_refused(load_state, bad, "negative second moment");
    g = f;
    const float inf = std::numeric_limits<float>::infinity();
    std::memcpy(g.tensors.at("adam.m.encoder.mu.bias").bytes.data(), &inf, 4);
    g.write(bad);
    require_refused(load_state, bad, "'adam.m.encoder.mu.bias' holds a non-finite value");
    g = f;
    g.metadata["format_version"] = "2";
    g.write(bad);
    require_refused(load_state, bad, "format_version 2");
    g = f;
    g.metadata.erase("seed");
    g.write(bad);
    require_refused(load_state, bad, "metadata has no 'seed'");
    g = f;
    g.metadata["lr"] = "fast";
    g.write(bad);
    require_refused(load_state, bad, "bad lr 'fast'");
    // A model file is not a training state, and the other way round.
    require_refused(load_state, model_path, "format 'cuvae-model-1'");
    require_refused(load_weights, state_path, "format 'cuvae-train-state'");
  }
  fs::remove_all(dir);
}

TEST_CASE("KL warm-up: a run stopped in the middle of the ramp resumes exactly",
          "[checkpoint][trainer][slow]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  const fs::path dir = temp_dir();
  const std::string path = (dir / "train_state.safetensors").string();
  const ModelDesc d = make_vae(2);
  const ImageSet images = test::synthetic_images(seed, 21);  // batch 8: 3 steps an epoch
  TrainConfig cfg = test::small_config(seed, 8, 2.0, "cpu");
  cfg.beta_warmup = 3;  // 9 steps of ramp
  cfg.epochs = 4;
  const TrainState fresh = test::fresh_state(d, seed);

  TrainState straight = fresh;
  std::vector<EpochMetrics> straight_m;
  train_cpu(cfg, d, images, straight, [&](const EpochMetrics& m) { straight_m.push_back(m); });
  REQUIRE(straight_m.size() == 4);

  // Stopped after step 5: inside epoch 2, in the middle of the ramp; saved, then a "new
  // process" resumes from the file alone.
  TrainState first = fresh;
  std::vector<EpochMetrics> resumed_m;
  int steps = 0;
  const bool done = train_cpu(
      cfg, d, images, first, [&](const EpochMetrics& m) { resumed_m.push_back(m); }, {},
      [&] { return steps++ == 5; });
  REQUIRE_FALSE(done);
  REQUIRE(first.step == 5);
  REQUIRE(first.epoch_step == 2);
  REQUIRE(first.epoch_weighted_kl_sum > 0);
  TrainRun run;
  run.cfg = cfg;
  run.train_images = images.count;
  run.train_crc32 = image_checksum(images);
  save_train_state(path, d, run, first);
  LoadedTrainState loaded = load_train_state(path);
  REQUIRE(loaded.run.cfg.beta_warmup == 3);
  TrainConfig cfg2 = loaded.run.cfg;
  cfg2.device = "cpu";
  train_cpu(cfg2, loaded.desc, images, loaded.state,
            [&](const EpochMetrics& m) { resumed_m.push_back(m); });

  REQUIRE(same_bits(loaded.state.params, straight.params));
  REQUIRE(same_bits(loaded.state.adam_m, straight.adam_m));
  REQUIRE(same_bits(loaded.state.adam_v, straight.adam_v));
  REQUIRE(resumed_m.size() == 4);
  for (size_t i = 0; i < 4; ++i) {
    INFO("epoch " << i + 1);
    CHECK(resumed_m[i].loss == straight_m[i].loss);
    CHECK(resumed_m[i].kl == straight_m[i].kl);
    CHECK(resumed_m[i].kl_weight == straight_m[i].kl_weight);
  }
  CHECK(straight_m[3].kl_weight == 2.0);
  fs::remove_all(dir);
}

TEST_CASE("resume: 2 epochs + save/load + 2 more == 4 epochs straight, bit for bit",
          "[checkpoint][trainer][slow]") {
  const uint64_t seed = test::fresh_seed();
  const std::string device = GENERATE("cpu", "cpu-ref");  // the fast engine and the reference
  INFO("seed " << seed << " device " << device);
  const fs::path dir = temp_dir();
  const std::string path = (dir / "train_state.safetensors").string();
  const ModelDesc d = make_vae(2);
  const ImageSet images = test::synthetic_images(seed, 21);  // batch 8: 8 + 8 + a remainder of 5
  TrainConfig cfg;
  cfg.device = device;
  cfg.seed = seed;
  cfg.batch_size = 8;
  cfg.beta = 0.5;
  cfg.adam.lr = 2e-3f;
  TrainState fresh;
  fresh.params.resize(d.num_params);
  init_params(d, seed, fresh.params.data());
  fresh.adam_m.assign(d.num_params, 0.0f);
  fresh.adam_v.assign(d.num_params, 0.0f);

  // Straight: 4 epochs.
  TrainState straight = fresh;
  cfg.epochs = 4;
  std::vector<EpochMetrics> straight_m;
  train_cpu(cfg, d, images, straight, [&](const EpochMetrics& m) { straight_m.push_back(m); });
  REQUIRE(straight.epoch == 4);
  REQUIRE(straight.step == 12);

  // 2 epochs, checkpoint, then a "new process": everything from the file.
  TrainState first = fresh;
  cfg.epochs = 2;
  std::vector<EpochMetrics> resumed_m;
  train_cpu(cfg, d, images, first, [&](const EpochMetrics& m) {
    resumed_m.push_back(m);
    REQUIRE(first.epoch == m.epoch);  // the state describes the end of the epoch it reports
  });
  TrainRun run;
  run.cfg = cfg;
  run.train_images = images.count;
  run.train_crc32 = image_checksum(images);
  save_train_state(path, d, run, first);
  first = TrainState();

  LoadedTrainState loaded = load_train_state(path);
  REQUIRE(loaded.state.epoch == 2);
  REQUIRE(loaded.run.train_crc32 == image_checksum(images));
  TrainConfig cfg2 = loaded.run.cfg;
  cfg2.epochs = 4;
  cfg2.device = device;  // not part of the run: a run may resume on another engine
  std::vector<StepProgress> steps;
  train_cpu(
      cfg2, loaded.desc, images, loaded.state,
      [&](const EpochMetrics& m) { resumed_m.push_back(m); },
      [&](const StepProgress& p) { steps.push_back(p); });

  REQUIRE(same_bits(loaded.state.params, straight.params));
  REQUIRE(same_bits(loaded.state.adam_m, straight.adam_m));
  REQUIRE(same_bits(loaded.state.adam_v, straight.adam_v));
  REQUIRE(loaded.state.step == straight.step);
  REQUIRE(loaded.state.epoch == 4);
  REQUIRE(resumed_m.size() == 4);
  for (size_t i = 0; i < 4; ++i) {
    INFO("epoch " << i + 1);
    CHECK(resumed_m[i].epoch == int(i) + 1);
    CHECK(resumed_m[i].loss == straight_m[i].loss);
    CHECK(resumed_m[i].recon == straight_m[i].recon);
    CHECK(resumed_m[i].kl == straight_m[i].kl);
  }
  // The per-step progress of the two resumed epochs: 3 steps each, the last one 5 images.
  REQUIRE(steps.size() == 6);
  CHECK(steps[0].epoch == 3);
  CHECK(steps[2].step == 3);
  CHECK(steps[2].steps == 3);
  CHECK(steps[2].images == 21);
  CHECK(steps[5].epoch == 4);
  CHECK(std::isfinite(steps[5].loss));
  // A state that has already reached cfg.epochs trains no further.
  const TrainState before = loaded.state;
  train_cpu(cfg2, d, images, loaded.state, [](const EpochMetrics&) { FAIL("ran an epoch"); });
  CHECK(same_bits(loaded.state.params, before.params));
  fs::remove_all(dir);
}

namespace {

// A safetensors file split into its header (parsed) and data area, to be edited and joined.
struct Parts {
  nlohmann::json header;
  std::string data;

  explicit Parts(const std::string& bytes) {
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(bytes[size_t(i)])) << (8 * i);
    header = nlohmann::json::parse(bytes.substr(8, n));
    data = bytes.substr(8 + n);
  }
  std::string join() const {
    const std::string text = header.dump();
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[size_t(i)] = char((uint64_t(text.size()) >> (8 * i)) & 0xff);
    return out + text + data;
  }
  // The tensor whose data comes last in the file.
  std::string last_tensor() const {
    std::string name;
    uint64_t begin = 0;
    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") continue;
      const uint64_t b = it.value()["data_offsets"][0].get<uint64_t>();
      if (name.empty() || b >= begin) name = it.key(), begin = b;
    }
    return name;
  }
};

using Loader = std::function<void(const SafetensorsFile&)>;

// The bytes are refused alike from a file (`path`) and from memory, with one line holding
// `words`.
void require_refused_both(const Loader& load, const std::string& path, const std::string& bytes,
                          const std::string& words) {
  spit(path, bytes);
  std::string from_file, from_memory;
  try {
    load(read_safetensors(path));
    FAIL_CHECK("accepted from a file (expected: " << words << ")");
  } catch (const InputError& e) {
    from_file = e.what();
  }
  try {
    load(parse_safetensors("mem", reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    FAIL_CHECK("accepted from memory (expected: " << words << ")");
  } catch (const InputError& e) {
    from_memory = e.what();
  }
  INFO("from the file: " << from_file);
  INFO("from memory: " << from_memory);
  CHECK(from_file.rfind(path + ": ", 0) == 0);
  CHECK(from_memory.rfind("mem: ", 0) == 0);
  CHECK(from_file.find('\n') == std::string::npos);
  CHECK(from_file.find(words) != std::string::npos);
  CHECK(from_file.substr(path.size()) == from_memory.substr(3));
}

}  // namespace

TEST_CASE("checkpoints cut short, with broken offsets, or missing or extra tensors are refused",
          "[checkpoint]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const fs::path dir = temp_dir();
  const ModelDesc d = make_vae(2);
  const std::string state_path = (dir / "train_state.safetensors").string();
  const std::string model_path = (dir / "model.safetensors").string();
  const std::string bad = (dir / "bad.safetensors").string();
  const TrainState st = random_state(d, rng);
  save_train_state(state_path, d, sample_run(d, seed), st);
  save_model(model_path, d, st.params, 1.0);
  const Loader state_loader = [](const SafetensorsFile& f) { train_state_from_safetensors(f); };
  const Loader model_loader = [](const SafetensorsFile& f) { model_from_safetensors(f); };

  for (const auto& [good, load] :
       {std::pair{state_path, state_loader}, std::pair{model_path, model_loader}}) {
    INFO("based on " << good);
    const std::string bytes = slurp(good);
    REQUIRE_NOTHROW(load(read_safetensors(good)));
    const Parts parts(bytes);
    const size_t header_end = bytes.size() - parts.data.size();

    // Cut short in the length field, in the header, at its end, in the data.
    std::uniform_int_distribution<size_t> in_data(header_end + 1, bytes.size() - 2);
    const std::vector<std::pair<size_t, std::string>> cuts = {
        {0, "too short"},
        {7, "too short"},
        {8, "runs past the end"},
        {8 + (header_end - 8) / 2, "runs past the end"},
        {header_end - 1, "runs past the end"},
        {header_end, "larger than the file's data"},
        // Inside the data, the first tensor (in name order) that no longer fits is refused,
        // by its shape ("larger than the file's data") or by its offsets ("outside the data
        // area"), whichever check meets it first.
        {in_data(rng), "data"},
        {bytes.size() - 1, "outside the data area"}};
    for (const auto& [len, words] : cuts) {
      INFO("cut to " << len << " of " << bytes.size() << " bytes");
      require_refused_both(load, bad, bytes.substr(0, len), words);
    }
    {  // header length beyond the file, by one byte and by 2^63
      std::string b = bytes;
      const uint64_t n = header_end - 8 + parts.data.size() + 1;
      for (int i = 0; i < 8; ++i) b[size_t(i)] = char((n >> (8 * i)) & 0xff);
      require_refused_both(load, bad, b, "runs past the end of the file");
      b[7] = '\x80';
      require_refused_both(load, bad, b, "runs past the end of the file");
    }
    {  // header not JSON, header not an object
      std::string b = bytes;
      b[8 + std::uniform_int_distribution<size_t>(0, 3)(rng)] = '\x01';
      require_refused_both(load, bad, b, "not valid JSON");
      Parts p = parts;
      p.header = nlohmann::json::array({1, 2});
      require_refused_both(load, bad, p.join(), "not a JSON object");
    }
    const std::string last = parts.last_tensor();
    {  // the last tensor's offsets beyond the data area
      Parts p = parts;
      auto& off = p.header[last]["data_offsets"];
      off = {off[0].get<uint64_t>() + 4, off[1].get<uint64_t>() + 4};
      require_refused_both(load, bad, p.join(), "'" + last + "': data_offsets");
      require_refused_both(load, bad, p.join(), "lie outside the data area");
    }
    {  // the last tensor moved onto the first bytes: overlapping another one
      Parts p = parts;
      auto& off = p.header[last]["data_offsets"];
      off = {uint64_t{0}, off[1].get<uint64_t>() - off[0].get<uint64_t>()};
      require_refused_both(load, bad, p.join(), "tensor data ranges overlap");
    }
    {  // the last tensor moved 4 bytes on, leaving a hole; bytes after the last tensor
      Parts p = parts;
      auto& off = p.header[last]["data_offsets"];
      const uint64_t begin = off[0].get<uint64_t>();
      off = {begin + 4, off[1].get<uint64_t>() + 4};
      p.data += std::string(4, '\0');
      require_refused_both(load, bad, p.join(),
                           "bytes " + std::to_string(begin) + " to " + std::to_string(begin + 4) +
                               " of the data area belong to no tensor");
      Parts q = parts;
      q.data += std::string(4, '\0');
      require_refused_both(load, bad, q.join(), "holds 4 bytes after the last tensor's data");
    }
    {  // a tensor's dtype or shape changed in the header only: its span no longer matches
      Parts p = parts;
      p.header["encoder.conv1.weight"]["dtype"] = "F64";
      require_refused_both(load, bad, p.join(), "dtype and shape need 2304");
      Parts q = parts;
      q.header["encoder.conv1.weight"]["shape"] = {32, 1, 3, 4};
      require_refused_both(load, bad, q.join(), "dtype and shape need 1536");
      Parts r = parts;  // the same byte count under another shape: the loader's check
      r.header["encoder.conv1.weight"]["shape"] = {3, 3, 1, 32};
      require_refused_both(
          load, bad, r.join(),
          "'encoder.conv1.weight' has shape [3, 3, 1, 32], expected [32, 1, 3, 3]");
    }
    {  // an empty file, a directory, a symlink loop where the file should be
      const std::string empty = (dir / "empty.safetensors").string();
      spit(empty, "");
      const auto refused = [&](const std::string& p, const std::string& words) {
        try {
          load(read_safetensors(p));
          FAIL_CHECK("accepted " << p);
        } catch (const InputError& e) {
          const std::string msg = e.what();
          INFO(msg);
          CHECK(msg.rfind(p + ": ", 0) == 0);
          CHECK(msg.find(words) != std::string::npos);
        }
      };
      refused(empty, "too short");
      const std::string sub = (dir / "a-folder.safetensors").string();
      fs::create_directories(sub);
      refused(sub, "is a directory");
      const std::string loop = (dir / "loop.safetensors").string();
      fs::remove(loop);
      fs::create_symlink("loop.safetensors", loop);
      refused(loop, "cannot open");
    }
  }

  {  // the training state: its own tensors missing, extra, or of the wrong dtype or shape
    const auto edited = [&](const std::function<void(RawFile&)>& edit) {
      RawFile f(state_path);
      edit(f);
      f.write(bad);
      return slurp(bad);
    };
    for (const std::string name : {"adam.m.encoder.conv1.weight", "adam.v.decoder.out.bias",
                                   "decoder.fc.weight", "step", "epoch"}) {
      require_refused_both(state_loader, bad, edited([&](RawFile& f) { f.tensors.erase(name); }),
                           "missing tensor '" + name + "'");
    }
    for (const std::string name : {"adam.m.encoder.extra", "adam.w.decoder.out.bias", "steps"}) {
      require_refused_both(state_loader, bad,
                           edited([&](RawFile& f) { f.tensors[name] = f.tensors.at("epoch"); }),
                           "unexpected tensor '" + name + "'");
    }
    require_refused_both(state_loader, bad, edited([](RawFile& f) {
                           f.tensors.at("step").shape = {1, 1};
                         }),
                         "'step' has shape [1, 1], expected [1]");
    require_refused_both(state_loader, bad,
                         edited([](RawFile& f) { f.tensors.at("step").dtype = DType::F64; }),
                         "'step' has dtype F64, expected I64");
    require_refused_both(state_loader, bad, edited([](RawFile& f) {
                           TensorIn& t = f.tensors.at("adam.m.decoder.out.bias");
                           t.dtype = DType::I32;
                         }),
                         "'adam.m.decoder.out.bias' has dtype I32, expected F32");
  }
  fs::remove_all(dir);
}
