// `cuvae eval`: a trained model on a dataset split: the mean one-sample negative ELBO
// (reconstruction + KL, nats per image) and the importance-weighted bound IWAE_K on -log p(x)
// with its standard error (evaluate.h), as one readable line and a JSON object; optionally one
// batch (images, noise and cuvae's per-image loss) for tools/parity/check_model.py.
// stdout holds only the results (the line, then the JSON unless --json FILE); notes and
// progress go to stderr. Every bad flag or file is an InputError before any work is done.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "host/app/cli.h"
#include "host/app/cli_util.h"
#include "host/app/commands.h"
#include "host/app/model_cmd.h"
#include "host/app/run_folder.h"
#include "host/core/error.h"
#include "host/core/inference.h"
#include "host/eval/evaluate.h"
#include "host/gpu/device_info.h"
#include "host/io/checkpoint.h"
#include "host/io/idx.h"
#include "host/io/safetensors.h"

namespace cuvae {
namespace {

constexpr const char* kEvalBatchFormat = "cuvae-eval-batch-1";
// Defaults by engine: the GPU and the fast CPU engine score every image, the CPU reference
// (about 200 images/s) the first 1,000; importance samples per image by what each decodes in
// a few minutes on the test split.
constexpr int kGpuDefaultSamples = 1000;
constexpr int kCpuDefaultSamples = 100;
constexpr int kCpuRefDefaultSamples = 50;
constexpr int64_t kCpuRefDefaultLimit = 1000;
constexpr int kMaxSamples = 100000;

// One batch for tools/parity/check_model.py: the first `count` images, their eval noise
// (sample 0) and cuvae's per-image results on them.
void write_eval_batch(const std::string& path, Inference& model, const LoadedModel& m,
                      const ImageSet& images, int count, uint64_t seed, const std::string& split) {
  const int dim = m.desc.latent_dim;
  std::vector<float> x, eps, mu, logvar;
  std::vector<double> recon, kl;
  std::vector<int64_t> index;
  evaluate_elbo_chunks(
      model, images, seed, count,
      [&](int64_t first, int n, const float* cx, const float* ceps, const float* cmu,
          const float* clogvar, const double* crecon, const double* ckl) {
        x.insert(x.end(), cx, cx + size_t(n) * kImagePixels);
        eps.insert(eps.end(), ceps, ceps + size_t(n) * dim);
        mu.insert(mu.end(), cmu, cmu + size_t(n) * dim);
        logvar.insert(logvar.end(), clogvar, clogvar + size_t(n) * dim);
        recon.insert(recon.end(), crecon, crecon + n);
        kl.insert(kl.end(), ckl, ckl + n);
        for (int i = 0; i < n; ++i) index.push_back(first + i);
      });
  const int64_t b = int64_t(recon.size());
  double recon_sum = 0, kl_sum = 0, loss_sum = 0;
  for (int64_t i = 0; i < b; ++i) {
    recon_sum += recon[size_t(i)];
    kl_sum += kl[size_t(i)];
    loss_sum += recon[size_t(i)] + m.beta * kl[size_t(i)];
  }
  const double ref_loss = loss_sum / double(b), ref_recon = recon_sum / double(b),
               ref_kl = kl_sum / double(b);
  write_safetensors(path,
                    {{"batch.x", DType::F32, {b, 1, kImageSide, kImageSide}, x.data()},
                     {"batch.eps", DType::F32, {b, dim}, eps.data()},
                     {"batch.index", DType::I64, {b}, index.data()},
                     {"ref.mu", DType::F32, {b, dim}, mu.data()},
                     {"ref.logvar", DType::F32, {b, dim}, logvar.data()},
                     {"ref.recon_per_image", DType::F64, {b}, recon.data()},
                     {"ref.kl_per_image", DType::F64, {b}, kl.data()},
                     {"ref.loss", DType::F64, {1}, &ref_loss},
                     {"ref.recon", DType::F64, {1}, &ref_recon},
                     {"ref.kl", DType::F64, {1}, &ref_kl}},
                    {{"format", kEvalBatchFormat},
                     {"latent_dim", std::to_string(dim)},
                     {"beta", exact_text(m.beta)},
                     {"batch_size", std::to_string(b)},
                     {"seed", std::to_string(seed)},
                     {"split", split},
                     {"device", model.device()}});
}

cxxopts::Options eval_options() {
  cxxopts::Options options(
      "cuvae eval",
      "Evaluate a trained model on a dataset split: the mean negative ELBO (one z sample per "
      "image) and the importance-weighted bound IWAE_K on -log p(x), in nats per image.");
  add_model_data_options(options);
  // clang-format off
  options.add_options()
    ("iw-samples", "importance samples K per image (0: skip IWAE; default 1000 on the GPU, 100 "
                   "on the CPU, 50 with cpu-ref; at most " + std::to_string(kMaxSamples) + ")",
       cxxopts::value<std::string>(), "K")
    ("limit", "evaluate the first N images only (0: all; default all, but 1000 with cpu-ref)",
       cxxopts::value<std::string>(), "N")
    ("seed", "seed of the evaluation noise", cxxopts::value<std::string>()->default_value("0"), "N")
    ("device", kDeviceOptionHelp, cxxopts::value<std::string>()->default_value("gpu"), "DEV")
    ("json", "write the JSON object to FILE instead of stdout ('-': stdout, without the summary "
             "line, which goes to stderr)", cxxopts::value<std::string>(), "FILE")
    ("dump-batch", "also write the first --dump-images images, their noise and cuvae's loss to "
                   "FILE (.safetensors) for tools/parity/check_model.py",
       cxxopts::value<std::string>(), "FILE")
    ("dump-images", "images in the --dump-batch file (1-4096)",
       cxxopts::value<std::string>()->default_value("16"), "N")
    ("h,help", "show this help");
  // clang-format on
  options.parse_positional({"run"});
  options.positional_help("RUN");
  return options;
}

constexpr const char* kEvalHelpNotes =
    "\nThe CPU reference runs about 200 images/s (200-350 decodes/s) on two cores, and "
    "IWAE_K decodes\nK latents per image: hence the CPU defaults, K = 50 on the "
    "first 1000 images (50,000\ndecodes, about 2.5 minutes). The GPU defaults are "
    "K = 1000 on the whole split.\nThe \u00b1 figure is the standard error of the "
    "mean over the images (their spread, not only\nthe Monte Carlo noise).\n"
    "log p(x|z) is the Bernoulli likelihood of the training loss (BCE summed over "
    "the pixels); for\ngrey-level images it is the usual VAE-example 'nats', not a "
    "normalized density.\n";

// eval's flags, every one checked before anything is loaded.
struct EvalFlags {
  std::string run, data_dir;
  Split split = Split::Test;
  int samples = -1;    // --iw-samples; -1: the engine's default
  int64_t limit = -1;  // --limit; -1: the engine's default
  uint64_t seed = 0;
  std::string device;
  bool explicit_device = false;
  std::string json_path, dump_path;  // empty: not asked for
  int dump_images = 16;
};

EvalFlags parse_eval_flags(const cxxopts::ParseResult& r) {
  EvalFlags f;
  f.run = required_run(r, "eval");
  f.data_dir = r["data"].as<std::string>();
  if (f.data_dir.empty()) throw InputError("--data: empty folder name");
  f.split = split_of(r["split"].as<std::string>());
  if (r.count("iw-samples"))
    f.samples =
        int(parse_int_flag("--iw-samples", r["iw-samples"].as<std::string>(), 0, kMaxSamples));
  if (r.count("limit"))
    f.limit = parse_int_flag("--limit", r["limit"].as<std::string>(), 0, INT32_MAX);
  f.seed = parse_seed_flag("--seed", r["seed"].as<std::string>());
  f.device = r["device"].as<std::string>();
  check_device_flag(f.device);
  f.explicit_device = r.count("device") > 0;
  if (r.count("json")) {
    f.json_path = r["json"].as<std::string>();
    check_result_path("--json", f.json_path, "JSON file");
  }
  if (r.count("dump-batch")) {
    f.dump_path = r["dump-batch"].as<std::string>();
    check_output_path("--dump-batch", f.dump_path, ".safetensors file");
  }
  f.dump_images = int(parse_int_flag("--dump-images", r["dump-images"].as<std::string>(), 1, 4096));
  return f;
}

// What eval runs: the model on its engine and the split, with the engine's defaults filled in.
struct EvalJob {
  std::string model_path;
  LoadedModel m;
  Dataset data;
  std::unique_ptr<Inference> engine;
  bool on_ref = false, on_cpu = false;  // the engine is cpu-ref / a CPU engine
  int k = 0;                            // importance samples per image (0: no IWAE)
  int64_t n = 0;                        // images evaluated, the first of the split
};

EvalJob open_eval(const EvalFlags& f) {
  EvalJob job;
  job.model_path = find_run_model(f.run).model;
  job.m = load_model(job.model_path);
  job.data = load_dataset_noted(f.data_dir, f.split, std::cerr);
  job.engine = make_engine(job.m, f.device, f.explicit_device);
  job.on_ref = job.engine->device() == "cpu-ref";
  job.on_cpu = job.on_ref || job.engine->device() == "cpu";
  job.k = f.samples >= 0 ? f.samples
          : job.on_ref   ? kCpuRefDefaultSamples
          : job.on_cpu   ? kCpuDefaultSamples
                         : kGpuDefaultSamples;
  const int64_t size = job.data.size();
  job.n = f.limit >= 0
              ? limited_count("--limit", f.limit, size, std::string(split_name(f.split)) + " image",
                              " of " + f.data_dir, std::cerr)
          : job.on_ref ? std::min(kCpuRefDefaultLimit, size)
                       : size;
  return job;
}

void print_eval_start(const EvalFlags& f, const EvalJob& job) {
  const int64_t n = job.n, size = job.data.size();
  std::cerr << "cuvae: model " << job.model_path << " (latent dim " << job.m.desc.latent_dim
            << "), " << split_name(f.split) << " split of " << f.data_dir << ": " << with_commas(n)
            << (n < size ? " of " + with_commas(size) : std::string())
            << (n == 1 && size == 1 ? " image" : " images")
            << (job.k > 0 ? ", IWAE K=" + std::to_string(job.k) : std::string(", no IWAE"))
            << ", device " << job.engine->device()
            << (job.on_ref && (f.samples < 0 || f.limit < 0)
                    ? " (cpu-ref defaults: --iw-samples 50 --limit 1000)"
                : job.on_cpu && f.samples < 0 ? " (CPU default: --iw-samples 100)"
                                              : "")
            << "\n";
}

// The one-sample negative ELBO: its mean over the images and standard error, and the means of
// its parts.
struct ElboResult {
  double neg_elbo = 0, recon = 0, kl = 0;
  std::optional<double> std_error;  // none for one image (undefined)
  double seconds = 0;
};

ElboResult measure_elbo(Inference& model, const ImageSet& images, uint64_t seed, int64_t n) {
  const auto t0 = std::chrono::steady_clock::now();
  double recon_sum = 0, kl_sum = 0;
  std::vector<double> neg_elbos;
  neg_elbos.reserve(size_t(n));
  {
    ImageProgress progress("negative ELBO:");
    evaluate_elbo_chunks(model, images, seed, n,
                         [&](int64_t first, int count, const float*, const float*, const float*,
                             const float*, const double* recon, const double* kl) {
                           for (int i = 0; i < count; ++i) {
                             recon_sum += recon[i];
                             kl_sum += kl[i];
                             neg_elbos.push_back(recon[i] + kl[i]);
                           }
                           progress.show(first + count, n);
                         });
  }
  ElboResult e;
  e.seconds = seconds_since(t0);
  e.recon = recon_sum / double(n), e.kl = kl_sum / double(n);
  double ss = 0;
  for (const double v : neg_elbos) e.neg_elbo += v;
  e.neg_elbo /= double(n);
  for (const double v : neg_elbos) ss += (v - e.neg_elbo) * (v - e.neg_elbo);
  if (n > 1) e.std_error = std::sqrt(ss / double(n - 1) / double(n));
  if (!std::isfinite(e.neg_elbo))
    throw Error("eval: the negative ELBO is not finite (the model's outputs are not finite)");
  return e;
}

// IWAE_K over the images (k > 0; k == 0 gives an empty result).
struct IwaeResult {
  IwaeStats stats;
  double seconds = 0;
};

IwaeResult measure_iwae(Inference& model, const ImageSet& images, int k, uint64_t seed, int64_t n) {
  IwaeResult w;
  if (k == 0) return w;
  const auto t0 = std::chrono::steady_clock::now();
  ImageProgress progress("IWAE K=" + std::to_string(k) + ":");
  w.stats = evaluate_iwae(model, images, k, seed, n, kIwaeRows,
                          [&](int64_t done, int64_t total) { progress.show(done, total); });
  w.seconds = seconds_since(t0);
  return w;
}

// The readable result line and the JSON object.
std::string result_line(const EvalFlags& f, const EvalJob& job, const ElboResult& e,
                        const IwaeResult& w) {
  std::string line = std::string(split_name(f.split)) + ": negative ELBO " + fixed(e.neg_elbo, 2) +
                     " nats/image (reconstruction " + fixed(e.recon, 2) + ", KL " + fixed(e.kl, 2) +
                     ")";
  if (job.k > 0)
    line += ", IWAE(K=" + std::to_string(job.k) + ") -log p(x) <= " + fixed(w.stats.mean, 2) +
            " \u00b1 " + (w.stats.std_error ? fixed(*w.stats.std_error, 2) : "n/a");
  line += ", " +
          (job.n < job.data.size()
               ? with_commas(job.n) + " of " + with_commas(job.data.size()) + " images"
               : counted(job.n, "image")) +
          ", device " + job.engine->device();
  return line;
}

// A number, or null where it is undefined (a standard error of one image) or not computed.
nlohmann::json optional_json(const std::optional<double>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

nlohmann::json result_json(const EvalFlags& f, const EvalJob& job, const ElboResult& e,
                           const IwaeResult& w) {
  const bool iwae = job.k > 0;
  return {{"model", job.model_path},
          {"data", f.data_dir},
          {"split", split_name(f.split)},
          {"images", job.n},
          {"split_images", job.data.size()},
          {"seed", f.seed},
          {"device", job.engine->device()},
          {"latent_dim", job.m.desc.latent_dim},
          {"beta", job.m.beta},
          {"neg_elbo", e.neg_elbo},
          {"neg_elbo_std_error", optional_json(e.std_error)},
          {"reconstruction", e.recon},
          {"kl", e.kl},
          {"training_loss", e.recon + job.m.beta * e.kl},
          {"iw_samples", job.k},
          {"iwae", iwae ? nlohmann::json(w.stats.mean) : nlohmann::json(nullptr)},
          {"iwae_std_error", optional_json(w.stats.std_error)},
          {"units", "nats per image; log p(x|z) = -BCE summed over the 784 pixels"},
          {"seconds", {{"elbo", e.seconds}, {"iwae", w.seconds}}},
          {"version", kVersion}};
}

// stdout: the line, then the JSON object unless --json sends it to a file; with --json - the
// JSON object alone (the line on stderr).
void write_result(const std::string& line, const nlohmann::json& j, const std::string& json_path) {
  summary_stream(json_path) << line << "\n";
  if (json_path.empty()) {
    std::cout << j.dump(2) << "\n";
    return;
  }
  write_result_text("--json", json_path, j.dump(2) + "\n");
  if (!is_stdout_path(json_path)) std::cerr << "cuvae: wrote " << json_path << "\n";
}

}  // namespace

int cmd_eval(int argc, char** argv) {
  cxxopts::Options options = eval_options();
  const cxxopts::ParseResult r = parse_or_throw(options, argc, argv);
  if (r.count("help")) {
    std::cout << options.help() << kEvalHelpNotes;
    return 0;
  }
  const EvalFlags f = parse_eval_flags(r);
  const EvalJob job = open_eval(f);
  print_eval_start(f, job);
  if (!f.dump_path.empty()) {
    const int count = int(std::min<int64_t>(f.dump_images, job.n));
    write_eval_batch(f.dump_path, *job.engine, job.m, job.data.images, count, f.seed,
                     split_name(f.split));
    std::cerr << "cuvae: wrote " << f.dump_path << " (" << counted(count, "image") << ")\n";
  }
  const ElboResult elbo = measure_elbo(*job.engine, job.data.images, f.seed, job.n);
  const IwaeResult iwae = measure_iwae(*job.engine, job.data.images, job.k, f.seed, job.n);
  write_result(result_line(f, job, elbo, iwae), result_json(f, job, elbo, iwae), f.json_path);
  return 0;
}

}  // namespace cuvae
