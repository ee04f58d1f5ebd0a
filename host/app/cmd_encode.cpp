// `cuvae encode`: one CSV row per image of a dataset split: index, label, z_mean, z_log_var and
// the one-sample negative ELBO (the anomaly score), written atomically (or to stdout: --csv -);
// one summary line on stdout (stderr with --csv -), progress on stderr. Every bad flag or file
// is an InputError before any work is done.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "host/app/cli.h"
#include "host/app/cli_util.h"
#include "host/app/commands.h"
#include "host/app/model_cmd.h"
#include "host/app/run_folder.h"
#include "host/core/error.h"
#include "host/core/inference.h"
#include "host/eval/evaluate.h"
#include "host/io/checkpoint.h"
#include "host/io/idx.h"

namespace cuvae {
namespace {

cxxopts::Options encode_options() {
  cxxopts::Options options(
      "cuvae encode",
      "Write one CSV row per image: index, label, z_mean_*, z_log_var_* and neg_elbo, the "
      "one-sample negative ELBO (nats), usable as an anomaly score.");
  add_model_data_options(options);
  // clang-format off
  options.add_options()
    ("csv", "output CSV file (written atomically; '-': stdout, the summary line then on stderr)",
       cxxopts::value<std::string>(), "FILE")
    ("limit", "the first N images only (0: all)", cxxopts::value<std::string>()->default_value("0"), "N")
    ("seed", "seed of the noise of the neg_elbo sample", cxxopts::value<std::string>()->default_value("0"), "N")
    ("device", kDeviceOptionHelp, cxxopts::value<std::string>()->default_value("gpu"), "DEV")
    ("h,help", "show this help");
  // clang-format on
  options.parse_positional({"run"});
  options.positional_help("RUN");
  return options;
}

// The CSV of encode: the header, then one row per image as the engine encodes it. Returns the
// images' scores (neg_elbo), sorted.
std::vector<double> write_encodings(const std::string& csv_path, Inference& model,
                                    const Dataset& data, uint64_t seed, int64_t n) {
  const int dim = model.desc().latent_dim;
  ResultFile f("--csv", csv_path);
  std::FILE* out = f.get();
  std::fputs("index,label", out);
  for (int j = 0; j < dim; ++j) std::fprintf(out, ",z_mean_%d", j);
  for (int j = 0; j < dim; ++j) std::fprintf(out, ",z_log_var_%d", j);
  std::fputs(",neg_elbo\n", out);
  std::vector<double> scores;
  scores.reserve(size_t(n));
  {
    ImageProgress progress("encode:");
    evaluate_elbo_chunks(model, data.images, seed, n,
                         [&](int64_t first, int count, const float*, const float*, const float* mu,
                             const float* logvar, const double* recon, const double* kl) {
                           for (int i = 0; i < count; ++i) {
                             const int64_t index = first + i;
                             std::fprintf(out, "%lld,%d", static_cast<long long>(index),
                                          int(data.labels.labels[size_t(index)]));
                             for (int j = 0; j < dim; ++j)
                               std::fprintf(out, ",%.9g", mu[size_t(i) * dim + j]);
                             for (int j = 0; j < dim; ++j)
                               std::fprintf(out, ",%.9g", logvar[size_t(i) * dim + j]);
                             const double score = recon[i] + kl[i];
                             if (!std::isfinite(score))
                               throw Error("encode: the negative ELBO of image " +
                                           std::to_string(index) +
                                           " is not finite (the model's outputs are not finite)");
                             std::fprintf(out, ",%.10g\n", score);
                             scores.push_back(score);
                           }
                           progress.show(first + count, n);
                         });
  }
  f.commit();
  std::sort(scores.begin(), scores.end());
  return scores;
}

}  // namespace

int cmd_encode(int argc, char** argv) {
  cxxopts::Options options = encode_options();
  const cxxopts::ParseResult r = parse_or_throw(options, argc, argv);
  if (r.count("help")) {
    std::cout
        << options.help()
        << "\nneg_elbo = BCE(x, decode(z)) summed over the pixels + KL(q(z|x) || N(0, I)) "
           "with one\nz sample (the same noise as `cuvae eval --seed`). A high value marks an "
           "image the model\nexplains badly. The CPU reference encodes about 200 images/s.\n";
    return 0;
  }
  const std::string run = required_run(r, "encode");
  const std::string data_dir = r["data"].as<std::string>();
  if (data_dir.empty()) throw InputError("--data: empty folder name");
  const Split split = split_of(r["split"].as<std::string>());
  if (!r.count("csv")) throw InputError("--csv: required (the file to write)");
  const std::string csv_path = r["csv"].as<std::string>();
  check_result_path("--csv", csv_path, "CSV file");
  const int64_t limit = parse_int_flag("--limit", r["limit"].as<std::string>(), 0, INT32_MAX);
  const uint64_t seed = parse_seed_flag("--seed", r["seed"].as<std::string>());
  const std::string device = r["device"].as<std::string>();
  check_device_flag(device);

  const LoadedModel m = load_model(find_run_model(run).model);
  const Dataset data = load_dataset_noted(data_dir, split, std::cerr);
  const std::unique_ptr<Inference> model = make_engine(m, device, r.count("device") > 0);
  const int64_t n =
      limited_count("--limit", limit, data.size(), std::string(split_name(split)) + " image",
                    " of " + data_dir, std::cerr);
  const std::vector<double> scores = write_encodings(csv_path, *model, data, seed, n);
  summary_stream(csv_path) << "cuvae: "
                           << (is_stdout_path(csv_path) ? "encoded" : "wrote " + csv_path + ":")
                           << " " << with_commas(n) << " " << split_name(split)
                           << (n == 1 ? " image" : " images") << "; neg_elbo median "
                           << fixed(quantile(scores, 0.5), 2) << ", 99th percentile "
                           << fixed(quantile(scores, 0.99), 2) << ", max "
                           << fixed(scores.back(), 2) << " (device " << model->device() << ")\n";
  return 0;
}

}  // namespace cuvae
