// `cuvae anomaly`: how well the per-image score of `cuvae encode` (the one-sample negative
// ELBO) tells the test images of --against OUT (the outliers, positives) from those of --data
// IN (data like the training data, negatives): the ROC AUC, the true-positive rate and the
// threshold at 1% and 5% false positives (anomaly.h defines them), one summary line on stdout,
// optionally the figures as JSON, and a picture of both score histograms and the ROC curve.
// Notes and progress go to stderr. Every bad flag or file is an InputError before any work.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "host/app/cli.h"
#include "host/app/cli_util.h"
#include "host/app/commands.h"
#include "host/app/model_cmd.h"
#include "host/app/run_folder.h"
#include "host/core/error.h"
#include "host/core/inference.h"
#include "host/eval/anomaly.h"
#include "host/io/atomic_file.h"
#include "host/io/checkpoint.h"
#include "host/io/idx.h"

namespace cuvae {
namespace {

namespace fs = std::filesystem;

cxxopts::Options anomaly_options() {
  cxxopts::Options options(
      "cuvae anomaly",
      "Score the test images of --data (inliers) and --against (outliers) with the one-sample "
      "negative ELBO and report how well the score separates them: ROC AUC, and the "
      "true-positive rate and threshold at 1% and 5% false positives.");
  // clang-format off
  options.add_options()
    ("run", "run folder (its model.safetensors) or a .safetensors model file",
       cxxopts::value<std::string>(), "RUN")
    ("data", "folder of the inliers, data like the training data (its t10k-* test files)",
       cxxopts::value<std::string>()->default_value("data/mnist"), "IN")
    ("against", "folder of the outliers (its t10k-* test files), e.g. Fashion-MNIST",
       cxxopts::value<std::string>(), "OUT")
    ("limit", "the first N test images of each folder (0: all)",
       cxxopts::value<std::string>()->default_value("0"), "N")
    ("seed", "seed of the noise of the score's z sample (as cuvae encode and eval --seed)",
       cxxopts::value<std::string>()->default_value("0"), "N")
    ("device", kDeviceOptionHelp, cxxopts::value<std::string>()->default_value("gpu"), "DEV")
    ("png", "the picture: both score histograms and the ROC curve (default: RUN/anomaly.png)",
       cxxopts::value<std::string>(), "FILE")
    ("json", "also write the figures as JSON to FILE ('-': stdout, the summary line then on "
             "stderr)", cxxopts::value<std::string>(), "FILE")
    ("h,help", "show this help");
  // clang-format on
  options.parse_positional({"run"});
  options.positional_help("RUN");
  return options;
}

constexpr const char* kAnomalyHelpNotes =
    "\nThe score of an image is BCE(x, decode(z)) summed over the pixels + KL(q(z|x) || N(0, I)) "
    "with one z\nsample, the neg_elbo of `cuvae encode` (same --seed, same numbers); "
    "outliers should score higher.\nAUC: P(outlier score > inlier score), ties counted 1/2. "
    "At a false-positive rate a, the\nthreshold t is the smallest score with at most a of the "
    "inlier scores strictly above it (an\ninlier score); an image is flagged when its score is "
    "> t, so with ties at t the achieved rate\n(fpr in the JSON) is below a. TPR is the fraction "
    "of outliers flagged.\n";

struct AnomalyFlags {
  std::string run, in_dir, out_dir, png_path, json_path;
  int64_t limit = 0;
  uint64_t seed = 0;
  std::string device;
  bool explicit_device = false;
};

AnomalyFlags parse_anomaly_flags(const cxxopts::ParseResult& r) {
  AnomalyFlags f;
  f.run = required_run(r, "anomaly");
  f.in_dir = r["data"].as<std::string>();
  if (f.in_dir.empty()) throw InputError("--data: empty folder name");
  if (!r.count("against"))
    throw InputError("--against: required (the folder of the outlier images, e.g. Fashion-MNIST)");
  f.out_dir = r["against"].as<std::string>();
  if (f.out_dir.empty()) throw InputError("--against: empty folder name");
  f.limit = parse_int_flag("--limit", r["limit"].as<std::string>(), 0, INT32_MAX);
  f.seed = parse_seed_flag("--seed", r["seed"].as<std::string>());
  f.device = r["device"].as<std::string>();
  check_device_flag(f.device);
  f.explicit_device = r.count("device") > 0;
  if (r.count("png")) {
    f.png_path = r["png"].as<std::string>();
    check_output_path("--png", f.png_path, "PNG file");
  }
  if (r.count("json")) {
    f.json_path = r["json"].as<std::string>();
    check_result_path("--json", f.json_path, "JSON file");
  }
  return f;
}

// One set of test images and its scores.
struct ScoredSet {
  std::string dir, name;
  Dataset data;
  int64_t n = 0;
  std::vector<double> scores;  // in image order
};

std::vector<double> score_set(Inference& model, const ScoredSet& s, uint64_t seed,
                              const std::string& what) {
  ImageProgress progress("scores of " + what + ":");
  return neg_elbo_scores(model, s.data.images, seed, s.n,
                         [&](int64_t done, int64_t total) { progress.show(done, total); });
}

// Per label of the outliers: images, median score, the fraction flagged at each threshold.
nlohmann::json by_label(const ScoredSet& s, const AnomalyResult& r) {
  std::map<int, std::vector<double>> groups;
  for (int64_t i = 0; i < s.n; ++i)
    groups[int(s.data.labels.labels[size_t(i)])].push_back(s.scores[size_t(i)]);
  nlohmann::json rows = nlohmann::json::array();
  for (auto& [label, v] : groups) {
    std::sort(v.begin(), v.end());
    const double n = double(v.size());
    rows.push_back({{"label", label},
                    {"images", v.size()},
                    {"median", quantile(v, 0.5)},
                    {"flagged_at_fpr_1pct", double(count_above(v, r.at_1pct.threshold)) / n},
                    {"flagged_at_fpr_5pct", double(count_above(v, r.at_5pct.threshold)) / n}});
  }
  return rows;
}

nlohmann::json set_json(const ScoredSet& s, const std::vector<double>& sorted) {
  return {{"data", s.dir},
          {"split", "test"},
          {"images", s.n},
          {"median", quantile(sorted, 0.5)},
          {"percentile_99", quantile(sorted, 0.99)}};
}

nlohmann::json point_json(const OperatingPoint& p) {
  return {{"target_fpr", p.target_fpr}, {"threshold", p.threshold}, {"fpr", p.fpr}, {"tpr", p.tpr},
          {"in_above", p.in_above},     {"out_above", p.out_above}};
}

std::string percent(double v) {
  return fixed(100 * v, 1) + "%";
}

std::string summary_line(const ScoredSet& in, const ScoredSet& out, const AnomalyResult& r,
                         const std::string& device) {
  std::string line = "anomaly: ROC AUC " + fixed(r.auc, 4);
  for (const OperatingPoint* p : {&r.at_1pct, &r.at_5pct})
    line += "; at " + fixed(100 * p->target_fpr, 0) + "% FPR: TPR " + percent(p->tpr) +
            " (threshold " + fixed(p->threshold, 2) + ", FPR " + percent(p->fpr) + ")";
  line += "; in " + in.name + ": " + counted(in.n, "test image") + ", median " +
          fixed(quantile(r.in, 0.5), 2) + "; out " + out.name + ": " +
          counted(out.n, "test image") + ", median " + fixed(quantile(r.out, 0.5), 2) +
          "; device " + device;
  return line;
}

ScoredSet open_set(const std::string& dir, int64_t limit) {
  ScoredSet s;
  s.dir = dir;
  s.name = folder_name(dir);
  s.data = load_dataset_noted(dir, Split::Test, std::cerr);
  if (s.data.size() < 1) throw InputError(s.data.images.path + ": no test images");
  s.n = limited_count("--limit", limit, s.data.size(), "test image", " of " + dir, std::cerr);
  return s;
}

}  // namespace

int cmd_anomaly(int argc, char** argv) {
  cxxopts::Options options = anomaly_options();
  const cxxopts::ParseResult r = parse_or_throw(options, argc, argv);
  if (r.count("help")) {
    std::cout << options.help() << kAnomalyHelpNotes;
    return 0;
  }
  const AnomalyFlags f = parse_anomaly_flags(r);
  const RunModel run = find_run_model(f.run);
  std::string png = f.png_path;
  if (png.empty()) {
    png = (fs::path(run.dir) / "anomaly.png").string();
    check_output_path("--png", png, "PNG file");  // the default, in the run's folder
  }
  const LoadedModel m = load_model(run.model);
  ScoredSet in = open_set(f.in_dir, f.limit), out = open_set(f.out_dir, f.limit);
  const std::unique_ptr<Inference> model = make_engine(m, f.device, f.explicit_device);
  std::cerr << "cuvae: model " << run.model << " (latent dim " << m.desc.latent_dim << "); in "
            << f.in_dir << ": " << with_commas(in.n) << " test images; out " << f.out_dir << ": "
            << with_commas(out.n) << " test images; device " << model->device() << "\n";
  in.scores = score_set(*model, in, f.seed, "in");
  out.scores = score_set(*model, out, f.seed, "out");
  const AnomalyResult res = analyse_scores(in.scores, out.scores);

  const std::string in_label = "in: " + in.name + " (" + with_commas(in.n) + ")";
  const std::string out_label = "out: " + out.name + " (" + with_commas(out.n) + ")";
  write_anomaly_png(png, res, in_label, out_label,
                    "one-sample negative ELBO of " + out.name + " against " + in.name);
  std::cerr << "cuvae: wrote " << png << "\n";
  if (!f.json_path.empty()) {
    nlohmann::json out_json = set_json(out, res.out);
    out_json["by_label"] = by_label(out, res);
    const nlohmann::json j = {
        {"model", run.model},
        {"score", "one-sample negative ELBO (nats), the neg_elbo of cuvae encode"},
        {"seed", f.seed},
        {"device", model->device()},
        {"in", set_json(in, res.in)},
        {"out", out_json},
        {"auc", res.auc},
        {"at_fpr", {point_json(res.at_1pct), point_json(res.at_5pct)}},
        {"png", png},
        {"version", kVersion}};
    write_result_text("--json", f.json_path, j.dump(2) + "\n");
    if (!is_stdout_path(f.json_path)) std::cerr << "cuvae: wrote " << f.json_path << "\n";
  }
  summary_stream(f.json_path) << summary_line(in, out, res, model->device()) << "\n";
  return 0;
}

}  // namespace cuvae
