// The run folder (host/app/run_folder.h) and the output-path check of every command
// (host/app/cli_util.h): metrics.csv (a new file, rows appended whole, the rows a resume keeps,
// a foreign header refused and left alone), the free-space check, the folder's creation, the
// checkpoint, --overwrite's clearing, and the lookup of a run's model from a RUN argument.
#include <sys/statvfs.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "host/app/cli_util.h"
#include "host/app/run_folder.h"
#include "host/core/error.h"
#include "host/core/model.h"
#include "host/io/checkpoint.h"
#include "tests/test_support.h"

using namespace cuvae;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

// Random but plausible epoch metrics for epoch `epoch`.
EpochMetrics random_metrics(std::mt19937_64& rng, int epoch) {
  std::uniform_real_distribution<double> u(0.0, 200.0);
  EpochMetrics m;
  m.epoch = epoch;
  m.recon = u(rng);
  m.kl = u(rng) / 20;
  m.kl_weight = u(rng) / 200;
  m.loss = m.recon + m.kl_weight * m.kl;
  m.images = 1 + int64_t(rng() % 70000);
  m.steps = 1 + int64_t(rng() % 600);
  m.seconds = 0.5 + u(rng);
  m.images_per_s = double(m.images) / m.seconds;
  return m;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> fields_of(const std::string& line) {
  std::vector<std::string> fields;
  std::istringstream in(line);
  for (std::string f; std::getline(in, f, ',');) fields.push_back(f);
  if (!line.empty() && line.back() == ',') fields.push_back("");
  return fields;
}

// A metrics.csv row as MetricsCsv writes it (9 significant digits, test_loss empty for NaN).
std::string row_text(const EpochMetrics& m, double test_loss) {
  std::ostringstream row;
  row.precision(9);
  row << m.epoch << ',' << m.loss << ',' << m.recon << ',' << m.kl << ',';
  if (std::isfinite(test_loss)) row << test_loss;
  row << ',' << m.images << ',' << m.steps << ',' << m.images_per_s << ',' << m.seconds << ','
      << m.kl_weight;
  return row.str();
}

uint64_t free_bytes(const std::string& dir) {
  struct statvfs s {};
  REQUIRE(::statvfs(dir.c_str(), &s) == 0);
  return uint64_t(s.f_bavail) * s.f_frsize;
}

}  // namespace

TEST_CASE("metrics.csv of a new run: the header, then whole rows with an empty test_loss for NaN",
          "[run_folder]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const std::string dir = test::temp_dir("cuvae_runfolder_");
  const RunFolder folder(dir);
  // A new run replaces whatever a file of that name held.
  test::write_file(folder.metrics_path(), "not,a,metrics,file\n1,2\n");
  const EpochMetrics a = random_metrics(rng, 1), b = random_metrics(rng, 2);
  const double test_loss = 100.0 + double(seed % 1000) / 7.0;
  {
    MetricsCsv csv = folder.open_metrics(0, false, 1.0);
    CHECK(test::read_file(folder.metrics_path()) == std::string(MetricsCsv::kHeader) + "\n");
    csv.add(a, test_loss);
    csv.add(b, std::nan(""));
  }
  const std::vector<std::string> lines = lines_of(test::read_file(folder.metrics_path()));
  REQUIRE(lines.size() == 3);
  CHECK(lines[0] == MetricsCsv::kHeader);
  CHECK(lines[1] == row_text(a, test_loss));
  CHECK(lines[2] == row_text(b, std::nan("")));
  const std::vector<std::string> header = fields_of(lines[0]), row = fields_of(lines[2]);
  REQUIRE(row.size() == header.size());
  CHECK(header[4] == "test_loss");
  CHECK(row[4].empty());
  CHECK(std::stod(fields_of(lines[1])[4]) == Approx(test_loss).epsilon(1e-8));
  fs::remove_all(dir);
}

TEST_CASE("metrics.csv on resume keeps the completed epochs' rows and drops later and cut rows",
          "[run_folder]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const std::string dir = test::temp_dir("cuvae_runfolder_");
  const RunFolder folder(dir);
  const std::string header = std::string(MetricsCsv::kHeader) + "\n";
  std::vector<std::string> rows;
  for (int e = 1; e <= 5; ++e) rows.push_back(row_text(random_metrics(rng, e), 90.0 + e));
  const auto cut = [](const std::string& row) { return row.substr(0, row.rfind(',')); };

  // Epochs 1-4 written, then a kill cut the fifth row short; the state resumes after epoch 2
  // (the later epochs came from a state that was since replaced).
  test::write_file(folder.metrics_path(), header + rows[0] + "\n" + rows[1] + "\n" + rows[2] +
                                              "\n" + rows[3] + "\n" + cut(rows[4]));
  const EpochMetrics next = random_metrics(rng, 3);
  {
    MetricsCsv csv = folder.open_metrics(2, true, 1.0);
    csv.add(next, 80.5);
  }
  std::vector<std::string> lines = lines_of(test::read_file(folder.metrics_path()));
  REQUIRE(lines.size() == 4);
  CHECK(lines[0] == MetricsCsv::kHeader);
  CHECK(lines[1] == rows[0]);
  CHECK(lines[2] == rows[1]);
  CHECK(lines[3] == row_text(next, 80.5));

  // A kill after train_state was saved cut the row of the epoch it completed: the row goes, the
  // epoch counts as completed.
  test::write_file(folder.metrics_path(), header + rows[0] + "\n" + cut(rows[1]));
  { MetricsCsv csv = folder.open_metrics(2, true, 1.0); }
  lines = lines_of(test::read_file(folder.metrics_path()));
  REQUIRE(lines.size() == 2);
  CHECK(lines[1] == rows[0]);
  fs::remove_all(dir);
}

TEST_CASE("metrics.csv on resume refuses a foreign header and leaves the file as it was",
          "[run_folder]") {
  const std::string dir = test::temp_dir("cuvae_runfolder_");
  const RunFolder folder(dir);
  // Another column order: a reader going by column number would mix them up.
  const std::string foreign =
      "epoch,reconstruction,loss,kl,test_loss,images,steps,images_per_s,seconds\n"
      "1,150.5,155.25,4.75,,60000,469,12000,5\n";
  test::write_file(folder.metrics_path(), foreign);
  REQUIRE_THROWS_AS(folder.open_metrics(1, true, 1.0), InputError);
  REQUIRE_THROWS_WITH(
      folder.open_metrics(1, true, 1.0),
      Contains(folder.metrics_path() + ": unexpected header 'epoch,reconstruction"));
  CHECK(test::read_file(folder.metrics_path()) == foreign);
  // An empty file has no header either.
  test::write_file(folder.metrics_path(), "");
  REQUIRE_THROWS_WITH(folder.open_metrics(1, true, 1.0), Contains("unexpected header ''"));
  fs::remove_all(dir);
}

TEST_CASE("metrics.csv of a run from before kl_weight is rewritten on resume with beta",
          "[run_folder]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const std::string dir = test::temp_dir("cuvae_runfolder_");
  const RunFolder folder(dir);
  // Two rows in the old form (no kl_weight column), the second cut short by a kill.
  EpochMetrics old[2] = {random_metrics(rng, 1), random_metrics(rng, 2)};
  std::string text = std::string(MetricsCsv::kHeaderNoWeight) + "\n";
  std::vector<std::string> old_rows;
  for (EpochMetrics& m : old) {
    const std::string row = row_text(m, 95.5);
    old_rows.push_back(row.substr(0, row.rfind(',')));  // without the kl_weight field
  }
  text += old_rows[0] + "\n" + old_rows[1].substr(0, old_rows[1].rfind(','));
  test::write_file(folder.metrics_path(), text);
  const double beta = 0.5 + double(seed % 1000) / 1000.0;
  const EpochMetrics next = random_metrics(rng, 2);
  {
    MetricsCsv csv = folder.open_metrics(2, true, beta);
    csv.add(next, 81.25);
  }
  const std::vector<std::string> lines = lines_of(test::read_file(folder.metrics_path()));
  REQUIRE(lines.size() == 3);
  CHECK(lines[0] == MetricsCsv::kHeader);
  const std::vector<std::string> first = fields_of(lines[1]);
  REQUIRE(first.size() == fields_of(lines[0]).size());
  CHECK(lines[1].substr(0, lines[1].rfind(',')) == old_rows[0]);  // the old fields unchanged
  CHECK(std::stod(first.back()) == Approx(beta).epsilon(1e-8));   // and beta appended
  CHECK(lines[2] == row_text(next, 81.25));
  fs::remove_all(dir);
}

TEST_CASE("metrics.csv on resume starts afresh when the file is missing", "[run_folder]") {
  const std::string dir = test::temp_dir("cuvae_runfolder_");
  const RunFolder folder(dir);
  { MetricsCsv csv = folder.open_metrics(3, true, 1.0); }
  CHECK(test::read_file(folder.metrics_path()) == std::string(MetricsCsv::kHeader) + "\n");
  fs::remove_all(dir);
}

TEST_CASE("the free-space check refuses a folder without room for a checkpoint", "[run_folder]") {
  const std::string dir = test::temp_dir("cuvae_runfolder_");
  const RunFolder folder(dir);
  // Twice the state (weights and two Adam moments) and twice the model, plus the pictures.
  const size_t n = 1000003;
  CHECK(RunFolder::checkpoint_bytes(n) >= 2 * (4 * sizeof(float) * uint64_t(n)));
  CHECK(RunFolder::checkpoint_bytes(n) > RunFolder::checkpoint_bytes(n - 1));
  // The VAE fits (the scratch folder has a few MiB free)...
  const uint64_t free = free_bytes(dir);
  if (free > RunFolder::checkpoint_bytes(make_vae(2).num_params) + (64 << 20))
    CHECK_NOTHROW(folder.require_free_space(make_vae(2).num_params));
  // ... a model whose checkpoint needs twice the free space does not, and the message says
  // where and how much.
  const size_t huge = size_t(free / 16) + 1;
  REQUIRE(RunFolder::checkpoint_bytes(huge) > free);
  REQUIRE_THROWS_AS(folder.require_free_space(huge), InputError);
  REQUIRE_THROWS_WITH(folder.require_free_space(huge),
                      Contains("--out " + dir + ": only ") && Contains(" KiB free") &&
                          Contains(with_commas(int64_t(RunFolder::checkpoint_bytes(huge) >> 10))));
  fs::remove_all(dir);
}

TEST_CASE("the run folder is created with its parents and refused when it is a file",
          "[run_folder]") {
  const std::string dir = test::temp_dir("cuvae_runfolder_");
  const RunFolder nested(dir + "/a/b/run");
  CHECK_NOTHROW(nested.create());
  CHECK(fs::is_directory(nested.dir()));
  CHECK(fs::is_empty(nested.dir()));  // the write probe is gone
  test::write_file(dir + "/file", "x");
  REQUIRE_THROWS_AS(RunFolder(dir + "/file").create(), InputError);
  REQUIRE_THROWS_WITH(RunFolder(dir + "/file").create(),
                      Contains("--out " + dir + "/file: is a file, not a folder"));
  REQUIRE_THROWS_WITH(RunFolder(dir + "/file/run").create(),
                      Contains("--out " + dir + "/file/run: " + dir + "/file is a file"));
  fs::remove_all(dir);
}

TEST_CASE("a checkpoint writes the state and the model, which load back bit for bit",
          "[run_folder]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const std::string dir = test::temp_dir("cuvae_runfolder_");
  const RunFolder folder(dir);
  const ModelDesc desc = make_vae(1 + int(seed % 4));
  TrainState state;
  state.params = test::random_vector<float>(rng, desc.num_params, -1, 1);
  state.adam_m = test::random_vector<float>(rng, desc.num_params, -1e-3, 1e-3);
  state.adam_v = test::random_vector<float>(rng, desc.num_params, 0, 1e-6);
  state.epoch = 3;
  state.step = 3 * 7;
  TrainRun run;
  run.cfg.latent_dim = desc.latent_dim;
  run.cfg.seed = seed;
  run.train_images = 7 * 128;
  const double beta = 0.25 + double(seed % 8);
  CHECK_FALSE(folder.has_state());
  folder.save_checkpoint(desc, run, state, beta);
  CHECK(folder.has_state());
  const LoadedTrainState got = load_train_state(folder.state_path());
  CHECK(got.state.params == state.params);
  CHECK(got.state.adam_m == state.adam_m);
  CHECK(got.state.adam_v == state.adam_v);
  CHECK(got.state.epoch == 3);
  CHECK(got.run.cfg.seed == seed);
  const LoadedModel model = load_model(folder.model_path());
  CHECK(model.params == state.params);
  CHECK(model.beta == beta);
  CHECK(model.desc.latent_dim == desc.latent_dim);
  fs::remove_all(dir);
}

TEST_CASE("clearing an old run (--overwrite) removes its state, model and pictures, nothing else",
          "[run_folder]") {
  const std::string dir = test::temp_dir("cuvae_runfolder_");
  const RunFolder folder(dir);
  const std::vector<std::string> ours = {"train_state.safetensors",
                                         "model.safetensors",
                                         "grid_15.png",
                                         "grid_30_epoch2.png",
                                         "scatter.png",
                                         "reconstructions.png",
                                         "samples.png"};
  const std::vector<std::string> kept = {"metrics.csv", "config.json", "notes.png", "samples.txt",
                                         "my.safetensors"};
  for (const std::string& name : ours) test::write_file(dir + "/" + name, "x");
  for (const std::string& name : kept) test::write_file(dir + "/" + name, "x");
  folder.clear_old_run();
  for (const std::string& name : ours) CHECK_FALSE(fs::exists(dir + "/" + name));
  for (const std::string& name : kept) CHECK(fs::exists(dir + "/" + name));
  fs::remove_all(dir);
}

TEST_CASE("RUN: a run folder gives its model file, a model file its folder", "[run_folder]") {
  const std::string dir = test::temp_dir("cuvae_runfolder_");
  fs::create_directories(dir + "/run");
  test::write_file(dir + "/run/model.safetensors", "x");
  test::write_file(dir + "/other.safetensors", "x");
  fs::create_directories(dir + "/empty");

  const RunModel from_folder = find_run_model(dir + "/run");
  CHECK(from_folder.model == dir + "/run/model.safetensors");
  CHECK(from_folder.dir == dir + "/run");
  const RunModel from_file = find_run_model(dir + "/other.safetensors");
  CHECK(from_file.model == dir + "/other.safetensors");
  CHECK(from_file.dir == dir);
  // A dangling symlink is found, for the loader to report what it is.
  fs::create_symlink(dir + "/nowhere", dir + "/dangling.safetensors");
  CHECK(find_run_model(dir + "/dangling.safetensors").model == dir + "/dangling.safetensors");

  REQUIRE_THROWS_WITH(find_run_model(dir + "/empty"),
                      Contains(dir + "/empty: no model.safetensors in this folder"));
  REQUIRE_THROWS_WITH(find_run_model(dir + "/none"),
                      Contains(dir + "/none: no such run folder or model file"));
  REQUIRE_THROWS_AS(find_run_model(""), InputError);
  fs::remove_all(dir);
}

TEST_CASE("an output file is checked before any work: not a folder, in a folder that exists",
          "[run_folder]") {
  const std::string dir = test::temp_dir("cuvae_runfolder_");
  CHECK_NOTHROW(check_output_path("--json", dir + "/result.json"));
  CHECK_FALSE(fs::exists(dir + "/result.json"));  // checked, not created
  REQUIRE_THROWS_WITH(check_output_path("--json", ""), Contains("--json: empty file name"));
  REQUIRE_THROWS_WITH(check_output_path("--out", dir, "PNG file"),
                      Contains("--out " + dir + ": is a folder, expected a PNG file name"));
  REQUIRE_THROWS_WITH(check_output_path("--csv", dir + "/no/z.csv"),
                      Contains("--csv " + dir + "/no/z.csv: the folder " + dir + "/no"));
  REQUIRE_THROWS_AS(check_output_path("--csv", dir + "/no/z.csv"), InputError);
  fs::remove_all(dir);
}
