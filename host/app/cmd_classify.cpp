// `cuvae classify`: the semi-supervised probe of a trained model (host/eval/classify.h): for each
// number of labels per class, class-balanced draws of labelled training images; on each, k
// nearest neighbours and a logistic regression fitted on z_mean and, as the baseline, on the
// pixels (x / 255); their accuracy on the test split, as a table on stdout (mean ± standard
// deviation over the draws) and a JSON file. Progress and notes on stderr. Every bad flag or
// file is an InputError before any work is done.
#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "host/app/cli.h"
#include "host/app/cli_util.h"
#include "host/app/commands.h"
#include "host/app/model_cmd.h"
#include "host/app/run_folder.h"
#include "host/core/error.h"
#include "host/core/inference.h"
#include "host/eval/classify.h"
#include "host/eval/logreg.h"
#include "host/io/checkpoint.h"
#include "host/io/idx.h"

namespace cuvae {
namespace {

constexpr int kMaxRepeats = 1000;
constexpr int kAll = 0;  // "all" in --labels-per-class: the whole training split, one draw

cxxopts::Options classify_options() {
  cxxopts::Options options(
      "cuvae classify",
      "The semi-supervised probe of a trained model (the M1 model of Kingma et al., 2014): k "
      "nearest neighbours and a logistic regression fitted on z_mean of a few labelled training "
      "images, and on their pixels as the baseline; accuracy on the test split.");
  // clang-format off
  options.add_options()
    ("run", "run folder (its model.safetensors) or a .safetensors model file",
       cxxopts::value<std::string>(), "RUN")
    ("data", "folder with the MNIST-format IDX files (labels from train-*, scores on t10k-*)",
       cxxopts::value<std::string>()->default_value("data/mnist"), "DIR")
    ("labels-per-class", "labelled training images per class, comma-separated; 'all': the "
                         "whole training split (one draw)",
       cxxopts::value<std::string>()->default_value("1,10,100,all"), "LIST")
    ("repeats", "draws of each labelled subset (1-" + std::to_string(kMaxRepeats) + ")",
       cxxopts::value<std::string>()->default_value("5"), "R")
    ("seed", "seed of the draws", cxxopts::value<std::string>()->default_value("0"), "S")
    ("limit-test", "score on the first N test images only (0: all)",
       cxxopts::value<std::string>()->default_value("0"), "N")
    ("device", std::string("the encoder's device: ") + kDeviceOptionHelp,
       cxxopts::value<std::string>()->default_value("gpu"), "DEV")
    ("json", "also write the results as JSON to FILE ('-': stdout, the table then on stderr)",
       cxxopts::value<std::string>(), "FILE")
    ("h,help", "show this help");
  // clang-format on
  options.parse_positional({"run"});
  options.positional_help("RUN");
  return options;
}

// The rules of the probe, in words, with the numbers of the defaults that run.
std::string classify_help_notes() {
  const KnnOptions knn;
  const LogRegOptions lr;
  const auto num = [](double v) {
    std::ostringstream s;
    s << v;
    return s.str();
  };
  std::string grid;
  for (const double l : lr.lambdas) grid += (grid.empty() ? "" : ", ") + num(l);
  return "\nLabelled subsets: draw r of n per class takes, in each class, the n training images "
         "with the\nsmallest Philox keys of (--seed, r, image index), so the draws are nested "
         "across n. 'all' is\nthe whole training split (not class-balanced), drawn once.\n"
         "Features: z_mean from the encoder; the baseline: the pixels x / 255.\n"
         "k nearest neighbours: squared Euclidean distance, ties by the lower image index; a tied "
         "vote\ngoes to the tied class of the nearest neighbour. k from the odd 1, 3, ..., " +
         std::to_string(knn.max_k) +
         " (at most n - 1)\nby leave-one-out accuracy on the labelled subset (ties to the "
         "smaller k), over at most " +
         with_commas(knn.max_cv_queries) +
         "\nevenly spaced labelled images; with 1 label per class, k = 1.\n"
         "Logistic regression: softmax, mean cross-entropy + lambda/2 |W|^2 (biases not "
         "penalised), on\nfeatures standardised with the labelled subset's mean and standard "
         "deviation; L-BFGS until\nmax |gradient| <= " +
         num(lr.grad_tol) + " or " + std::to_string(lr.max_iterations) +
         " iterations. lambda from {" + grid + "}\nby stratified " + std::to_string(lr.folds) +
         "-fold cross-validation accuracy (fewer folds when a class has fewer\nlabels; ties to "
         "the larger lambda), one held-out fold instead above " +
         with_commas(lr.single_split_above) +
         " labelled images;\nthen the fit on all the labels. With 1 label per class, lambda = " +
         num(lr.fixed_lambda) +
         ".\nNeither choice sees the test split. The table gives the test accuracy, mean ± "
         "sample\nstandard deviation over the draws; --json FILE adds every draw's accuracy and "
         "choice.\n";
}

struct ClassifyFlags {
  std::string run, data_dir, device, json_path;
  bool explicit_device = false;
  std::vector<int> counts;  // labels per class; kAll for "all"
  int repeats = 5;
  uint64_t seed = 0;
  int64_t limit_test = 0;
};

std::vector<int> parse_counts(const std::string& text) {
  std::vector<int> counts;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const int c =
        item == "all" ? kAll : int(parse_int_flag("--labels-per-class", item, 1, 1000000));
    if (std::find(counts.begin(), counts.end(), c) != counts.end())
      throw InputError("--labels-per-class: " + quote_arg(item) + " appears twice");
    counts.push_back(c);
  }
  if (counts.empty() || text.back() == ',')
    throw InputError(
        "--labels-per-class: expected a comma-separated list of counts and 'all', "
        "got " +
        quote_arg(text));
  return counts;
}

ClassifyFlags parse_classify_flags(const cxxopts::ParseResult& r) {
  ClassifyFlags f;
  f.run = required_run(r, "classify");
  f.data_dir = r["data"].as<std::string>();
  if (f.data_dir.empty()) throw InputError("--data: empty folder name");
  f.counts = parse_counts(r["labels-per-class"].as<std::string>());
  f.repeats = int(parse_int_flag("--repeats", r["repeats"].as<std::string>(), 1, kMaxRepeats));
  f.seed = parse_seed_flag("--seed", r["seed"].as<std::string>());
  f.limit_test = parse_int_flag("--limit-test", r["limit-test"].as<std::string>(), 0, INT32_MAX);
  f.device = r["device"].as<std::string>();
  check_device_flag(f.device);
  f.explicit_device = r.count("device") > 0;
  if (r.count("json")) {
    f.json_path = r["json"].as<std::string>();
    check_result_path("--json", f.json_path, "JSON file");
  }
  return f;
}

std::string count_name(int count) {
  return count == kAll ? "all" : std::to_string(count);
}

// The labelled subsets: per count, the training rows of each draw.
struct Draws {
  std::vector<std::vector<std::vector<int64_t>>> rows;  // [count][draw] -> image indices
  std::vector<int64_t> needed;                          // their union, ascending
};

Draws make_draws(const ClassifyFlags& f, const Dataset& train) {
  const std::vector<int64_t> have = class_counts(train.labels.labels.data(), train.size());
  Draws d;
  for (const int count : f.counts) {
    std::vector<std::vector<int64_t>> draws;
    if (count == kAll) {
      std::vector<int64_t> all(size_t(train.size()));
      for (int64_t i = 0; i < train.size(); ++i) all[size_t(i)] = i;
      draws.push_back(all);
    } else {
      for (int c = 0; c < kClasses; ++c)
        if (have[size_t(c)] < count)
          throw InputError("--labels-per-class: " + std::to_string(count) +
                           " labels per class, but class " + std::to_string(c) + " has only " +
                           counted(have[size_t(c)], "training image") + " in " + f.data_dir);
      for (int r = 0; r < f.repeats; ++r)
        draws.push_back(
            balanced_draw(train.labels.labels.data(), train.size(), count, f.seed, uint32_t(r)));
    }
    for (const auto& rows : draws) d.needed.insert(d.needed.end(), rows.begin(), rows.end());
    d.rows.push_back(std::move(draws));
  }
  std::sort(d.needed.begin(), d.needed.end());
  d.needed.erase(std::unique(d.needed.begin(), d.needed.end()), d.needed.end());
  return d;
}

// The images of `rows` (ascending) as an image set of their own.
ImageSet gather_images(const ImageSet& images, const std::vector<int64_t>& rows) {
  ImageSet s;
  s.path = images.path;
  s.count = int64_t(rows.size());
  s.rows = images.rows, s.cols = images.cols;
  s.pixels.resize(rows.size() * size_t(kImagePixels));
  for (size_t i = 0; i < rows.size(); ++i)
    std::copy_n(images.pixels.begin() + rows[i] * kImagePixels, kImagePixels,
                s.pixels.begin() + long(i * kImagePixels));
  return s;
}

// Both feature sets of some images: z_mean and the pixels.
struct Features {
  FeatureSet z, pixels;
};

Features encode(Inference& model, const ImageSet& images, const std::string& what) {
  ImageProgress progress("encode " + what + ":");
  Features f;
  f.z = latent_means(model, images, images.count,
                     [&](int64_t done, int64_t total) { progress.show(done, total); });
  f.pixels = pixel_features(images, images.count);
  return f;
}

// One classifier on one feature set over the draws of a count.
struct Series {
  std::vector<double> accuracy;
  std::vector<nlohmann::json> choice;  // per draw: k or lambda and how it was chosen
  std::vector<double> chosen;          // per draw: k or lambda
};

struct CountResult {
  int count = 0;
  int64_t labelled = 0;
  Series knn[2], logreg[2];  // [0] z_mean, [1] pixels
  double seconds = 0;
};

const char* const kFeatureNames[2] = {"z_mean", "pixels"};

void record(CountResult& out, int feature, const DrawResult& d, const uint8_t* test_labels) {
  Series& k = out.knn[feature];
  k.accuracy.push_back(accuracy(d.knn_predicted, test_labels));
  k.chosen.push_back(d.knn.k);
  k.choice.push_back({{"k", d.knn.k},
                      {"rule", d.knn.rule},
                      {"grid", d.knn.grid},
                      {"cv_accuracy", d.knn.cv_accuracy},
                      {"seconds", d.knn_seconds}});
  Series& l = out.logreg[feature];
  l.accuracy.push_back(accuracy(d.logreg_predicted, test_labels));
  l.chosen.push_back(d.lambda);
  l.choice.push_back({{"lambda", d.lambda},
                      {"rule", d.lambda_rule},
                      {"grid", d.lambda_grid},
                      {"cv_accuracy", d.lambda_cv_accuracy},
                      {"iterations", d.iterations},
                      {"converged", d.converged},
                      {"stop", d.stop},
                      {"seconds", d.logreg_seconds}});
}

std::vector<CountResult> run_probe(const ClassifyFlags& f, const Draws& draws,
                                   const Features& train, const std::vector<uint8_t>& train_y,
                                   const Features& test, const uint8_t* test_labels) {
  const FeatureSet* train_sets[2] = {&train.z, &train.pixels};
  const FeatureSet* test_sets[2] = {&test.z, &test.pixels};
  const KnnOptions knn;
  const LogRegOptions logreg;
  std::vector<CountResult> results;
  ProgressLine line(ProgressLine::Stream::Stderr);
  for (size_t c = 0; c < f.counts.size(); ++c) {
    const auto t0 = std::chrono::steady_clock::now();
    CountResult out;
    out.count = f.counts[c];
    const auto& count_draws = draws.rows[c];
    for (size_t r = 0; r < count_draws.size(); ++r) {
      std::vector<int64_t> pos(count_draws[r].size());  // rows in the encoded union
      for (size_t i = 0; i < pos.size(); ++i)
        pos[i] = std::lower_bound(draws.needed.begin(), draws.needed.end(), count_draws[r][i]) -
                 draws.needed.begin();
      out.labelled = int64_t(pos.size());
      for (int feat = 0; feat < 2; ++feat) {
        const std::string where = count_name(out.count) + " labels/class, draw " +
                                  std::to_string(r + 1) + "/" + std::to_string(count_draws.size()) +
                                  ", " + kFeatureNames[feat];
        const LabelledSet set =
            select_rows(train_sets[feat]->x.data(), train_y.data(), train_sets[feat]->dim, pos);
        const DrawResult d =
            probe_draw(set, *test_sets[feat], knn, logreg, [&](const std::string& s) {
              if (line.enabled()) line.show(where + ": " + s);
            });
        record(out, feat, d, test_labels);
        if (!d.converged) {
          line.clear();
          std::cerr << "cuvae: note: " << where << ": the logistic regression at lambda "
                    << d.lambda << " stopped at its " << d.iterations
                    << "-iteration budget before max |gradient| <= " << logreg.grad_tol << "\n";
        }
      }
    }
    out.seconds = seconds_since(t0);
    line.clear();
    std::cerr << "cuvae: "
              << (out.count == kAll ? "all " + with_commas(out.labelled) + " labels"
                                    : count_name(out.count) + " labelled per class")
              << ", " << count_draws.size() << (count_draws.size() == 1 ? " draw" : " draws")
              << " in " << fixed(out.seconds, 1) << " s\n";
    results.push_back(std::move(out));
  }
  return results;
}

// "97.12 ± 0.31%", or without the ± for one draw.
std::string accuracy_text(const std::vector<double>& acc) {
  const MeanStd m = mean_std(acc);
  return fixed(100 * m.mean, 2) + (acc.size() > 1 ? " ± " + fixed(100 * m.std, 2) : "") + "%";
}

// "k 3", or "k 1-5" when the draws chose differently.
std::string choice_text(const char* name, std::vector<double> v, bool integer) {
  std::sort(v.begin(), v.end());
  const auto show = [&](double x) {
    if (integer) return std::to_string(int(x));
    std::ostringstream s;
    s << x;
    return s.str();
  };
  return std::string(name) + " " + show(v.front()) +
         (v.front() == v.back() ? "" : "-" + show(v.back()));
}

// s padded with spaces to `width` characters (UTF-8: "±" and "λ" are one character each).
std::string pad(const std::string& s, size_t width) {
  size_t chars = 0;
  for (const char ch : s) chars += (static_cast<unsigned char>(ch) & 0xC0) != 0x80;
  return s + std::string(chars < width ? width - chars : 1, ' ');
}

void print_table(std::ostream& os, const std::vector<CountResult>& results, int64_t test_images) {
  os << "test accuracy on " << with_commas(test_images)
     << " test images (mean ± standard deviation over the draws)\n"
     << pad("labels/class", 14) << pad("labelled", 10) << pad("draws", 7) << pad("features", 10)
     << pad("k nearest neighbours", 26) << "logistic regression\n";
  for (const CountResult& r : results)
    for (int feat = 0; feat < 2; ++feat)
      os << pad(count_name(r.count), 14) << pad(with_commas(r.labelled), 10)
         << pad(std::to_string(r.knn[feat].accuracy.size()), 7) << pad(kFeatureNames[feat], 10)
         << pad(accuracy_text(r.knn[feat].accuracy) + " (" +
                    choice_text("k", r.knn[feat].chosen, true) + ")",
                26)
         << accuracy_text(r.logreg[feat].accuracy) << " ("
         << choice_text("λ", r.logreg[feat].chosen, false) << ")\n";
}

nlohmann::json series_json(const Series& s, const char* chosen_key, bool integer) {
  const MeanStd m = mean_std(s.accuracy);
  nlohmann::json chosen = nlohmann::json::array();
  for (const double v : s.chosen)
    chosen.push_back(integer ? nlohmann::json(int(v)) : nlohmann::json(v));
  return {{"accuracy", s.accuracy},
          {"mean", m.mean},
          {"std", s.accuracy.size() > 1 ? nlohmann::json(m.std) : nlohmann::json(nullptr)},
          {chosen_key, chosen},
          {"choice", s.choice}};
}

nlohmann::json result_json(const ClassifyFlags& f, const std::string& model_path, int latent_dim,
                           const std::string& device, int64_t train_images, int64_t test_images,
                           int64_t test_split, const std::vector<CountResult>& results,
                           double encode_s, double total_s) {
  nlohmann::json counts = nlohmann::json::array();
  for (const CountResult& r : results) {
    nlohmann::json c = {
        {"labels_per_class", r.count == kAll ? nlohmann::json("all") : nlohmann::json(r.count)},
        {"labelled", r.labelled},
        {"draws", r.knn[0].accuracy.size()},
        {"seconds", r.seconds}};
    for (int feat = 0; feat < 2; ++feat)
      c[kFeatureNames[feat]] = {{"knn", series_json(r.knn[feat], "k", true)},
                                {"logreg", series_json(r.logreg[feat], "lambda", false)}};
    counts.push_back(c);
  }
  return {{"model", model_path},
          {"data", f.data_dir},
          {"latent_dim", latent_dim},
          {"device", device},
          {"seed", f.seed},
          {"repeats", f.repeats},
          {"train_images", train_images},
          {"test_images", test_images},
          {"test_split_images", test_split},
          {"accuracy_of", "the test split; std: sample standard deviation over the draws"},
          {"results", counts},
          {"seconds", {{"encode", encode_s}, {"total", total_s}}},
          {"version", kVersion}};
}

}  // namespace

int cmd_classify(int argc, char** argv) {
  const auto t0 = std::chrono::steady_clock::now();
  cxxopts::Options options = classify_options();
  const cxxopts::ParseResult r = parse_or_throw(options, argc, argv);
  if (r.count("help")) {
    std::cout << options.help() << classify_help_notes();
    return 0;
  }
  const ClassifyFlags f = parse_classify_flags(r);
  const std::string model_path = find_run_model(f.run).model;
  const LoadedModel m = load_model(model_path);
  const Dataset train = load_dataset_noted(f.data_dir, Split::Train, std::cerr);
  const Dataset test = load_dataset_noted(f.data_dir, Split::Test, std::cerr);
  const Draws draws = make_draws(f, train);
  const std::unique_ptr<Inference> engine = make_engine(m, f.device, f.explicit_device);
  const int64_t n_test = limited_count("--limit-test", f.limit_test, test.size(), "test image",
                                       " of " + f.data_dir, std::cerr);
  std::cerr << "cuvae: model " << model_path << " (latent dim " << m.desc.latent_dim << "), "
            << f.data_dir << ": labels from " << with_commas(int64_t(draws.needed.size())) << " of "
            << with_commas(train.size()) << " training images, scored on " << with_commas(n_test)
            << " test images, device " << engine->device() << "\n";

  const auto t_enc = std::chrono::steady_clock::now();
  ImageSet test_images = test.images;
  test_images.count = n_test;
  test_images.pixels.resize(size_t(n_test) * kImagePixels);
  const Features train_f = encode(*engine, gather_images(train.images, draws.needed), "train");
  const Features test_f = encode(*engine, test_images, "test");
  std::vector<uint8_t> train_y(draws.needed.size());
  for (size_t i = 0; i < train_y.size(); ++i)
    train_y[i] = train.labels.labels[size_t(draws.needed[i])];
  const double encode_s = seconds_since(t_enc);

  const std::vector<CountResult> results =
      run_probe(f, draws, train_f, train_y, test_f, test.labels.labels.data());
  const double total_s = seconds_since(t0);
  print_table(summary_stream(f.json_path), results, n_test);
  std::cerr << "cuvae: " << fixed(total_s, 1) << " s in all (encoding " << fixed(encode_s, 1)
            << " s)\n";
  if (!f.json_path.empty()) {
    write_result_text("--json", f.json_path,
                      result_json(f, model_path, m.desc.latent_dim, engine->device(), train.size(),
                                  n_test, test.size(), results, encode_s, total_s)
                              .dump(2) +
                          "\n");
    if (!is_stdout_path(f.json_path)) std::cerr << "cuvae: wrote " << f.json_path << "\n";
  }
  return 0;
}

}  // namespace cuvae
