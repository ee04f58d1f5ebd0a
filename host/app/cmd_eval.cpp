// `cuvae eval` and `cuvae encode`: a trained model on a dataset split.
//
// eval:   the mean one-sample negative ELBO (reconstruction + KL, nats per image) and the
//         importance-weighted bound IWAE_K on -log p(x) with its standard error (evaluate.h),
//         as one readable line and a JSON object; optionally one batch (images, noise and
//         cuvae's per-image loss) for tools/parity/check_model.py.
// encode: one CSV row per image: index, label, z_mean, z_log_var and the one-sample negative
//         ELBO (the anomaly score), written atomically.
// stdout holds only the results (eval: the line, then the JSON unless --json FILE); notes and
// progress go to stderr. Every bad flag or file is an InputError before any work is done.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "host/app/cli.h"
#include "host/app/cli_util.h"
#include "host/app/commands.h"
#include "host/core/error.h"
#include "host/core/inference.h"
#include "host/eval/evaluate.h"
#include "host/gpu/device_info.h"
#include "host/io/atomic_file.h"
#include "host/io/checkpoint.h"
#include "host/io/idx.h"
#include "host/io/safetensors.h"

namespace cuvae {
namespace {

namespace fs = std::filesystem;

constexpr const char* kEvalBatchFormat = "cuvae-eval-batch-1";
// Defaults by engine: the GPU and the fast CPU engine score every image, the CPU reference
// (about 200 images/s) the first 1,000; importance samples per image by what each decodes in
// a few minutes on the test split.
constexpr int kGpuDefaultSamples = 1000;
constexpr int kCpuDefaultSamples = 100;
constexpr int kCpuRefDefaultSamples = 50;
constexpr int64_t kCpuRefDefaultLimit = 1000;
constexpr int kMaxSamples = 100000;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// RUN is a run folder (its model.safetensors) or a .safetensors file.
std::string model_path_of(const std::string& run) {
  if (run.empty()) throw InputError("RUN: empty path");
  std::error_code ec;
  if (fs::is_directory(run, ec)) {
    const std::string p = (fs::path(run) / "model.safetensors").string();
    if (!fs::exists(fs::symlink_status(p, ec)))
      throw InputError(run + ": no model.safetensors in this run folder");
    return p;
  }
  if (!fs::exists(fs::symlink_status(run, ec)))
    throw InputError(run + ": no such run folder or model file");
  return run;
}

Split split_of(const std::string& s) {
  if (s == "test") return Split::Test;
  if (s == "train") return Split::Train;
  throw InputError("--split: expected 'test' or 'train', got " + quote_arg(s));
}

// Checks that `path` can be created (its folder exists) before any time is spent.
void check_output_path(const std::string& flag, const std::string& path) {
  if (path.empty()) throw InputError(flag + ": empty file name");
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw InputError(flag + " " + path + ": is a folder");
  fs::path dir = fs::path(path).parent_path();
  if (dir.empty()) dir = ".";
  if (!fs::is_directory(dir, ec))
    throw InputError(flag + " " + path + ": folder " + dir.string() + " does not exist");
  if (::access(dir.c_str(), W_OK) != 0)
    throw InputError(flag + " " + path + ": cannot write in " + dir.string() + ": " +
                     std::strerror(errno));
}

// A progress line on stderr, only when stderr is a terminal, at most every half second.
class Progress {
 public:
  explicit Progress(std::string what)
      : what_(std::move(what)), on_(::isatty(::fileno(stderr)) == 1) {}
  void show(int64_t done, int64_t total) {
    if (!on_) return;
    const auto now = std::chrono::steady_clock::now();
    if (done < total && now - last_ < std::chrono::milliseconds(500)) return;
    last_ = now;
    const double s = seconds_since(t0_);
    std::string line = what_ + " " + with_commas(done) + "/" + with_commas(total) + " images";
    if (done > 0 && s > 0)
      line += ", " + fixed(double(done) / s, 0) + " images/s, " +
              fixed(double(total - done) * s / double(done), 0) + " s left";
    std::cerr << "\r" << line << "\033[K" << std::flush;
    shown_ = true;
  }
  ~Progress() {
    if (shown_) std::cerr << "\r\033[K" << std::flush;
  }

 private:
  std::string what_;
  bool on_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_{};
};

// Device choice as in every command (resolve_device); notes go to stderr, stdout holds the
// result.
std::unique_ptr<Inference> make_engine(const LoadedModel& m, const std::string& device,
                                       bool explicit_device) {
  return make_inference(m.desc, m.params,
                        resolve_device(device, explicit_device, std::cerr).device);
}

// Linear-interpolated quantile (numpy's default) of sorted values.
double quantile(const std::vector<double>& sorted, double q) {
  const double pos = q * double(sorted.size() - 1);
  const size_t lo = size_t(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - double(lo)) * (sorted[hi] - sorted[lo]);
}

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

}  // namespace

int cmd_eval(int argc, char** argv) {
  cxxopts::Options options(
      "cuvae eval",
      "Evaluate a trained model on a dataset split: the mean negative ELBO (one z sample per "
      "image) and the importance-weighted bound IWAE_K on -log p(x), in nats per image.");
  // clang-format off
  options.add_options()
    ("run", "run folder (its model.safetensors) or a .safetensors model file",
       cxxopts::value<std::string>(), "RUN")
    ("data", "folder with the MNIST-format IDX files",
       cxxopts::value<std::string>()->default_value("data/mnist"), "DIR")
    ("split", "test (t10k-* files) or train", cxxopts::value<std::string>()->default_value("test"), "SPLIT")
    ("iw-samples", "importance samples K per image (0: skip IWAE; default 1000 on the GPU, 100 "
                   "on the CPU, 50 with cpu-ref; at most " + std::to_string(kMaxSamples) + ")",
       cxxopts::value<std::string>(), "K")
    ("limit", "evaluate the first N images only (0: all; default all, but 1000 with cpu-ref)",
       cxxopts::value<std::string>(), "N")
    ("seed", "seed of the evaluation noise", cxxopts::value<std::string>()->default_value("0"), "N")
    ("device", std::string(kDeviceHelp) + " (default gpu; falls back to cpu with a note when "
               "no GPU is usable)",
       cxxopts::value<std::string>()->default_value("gpu"), "DEV")
    ("json", "write the JSON object to FILE instead of stdout", cxxopts::value<std::string>(), "FILE")
    ("dump-batch", "also write the first --dump-images images, their noise and cuvae's loss to "
                   "FILE (.safetensors) for tools/parity/check_model.py",
       cxxopts::value<std::string>(), "FILE")
    ("dump-images", "images in the --dump-batch file (1-4096)",
       cxxopts::value<std::string>()->default_value("16"), "N")
    ("h,help", "show this help");
  // clang-format on
  options.parse_positional({"run"});
  options.positional_help("RUN");
  const cxxopts::ParseResult r = parse_or_throw(options, argc, argv);
  if (r.count("help")) {
    std::cout
        << options.help()
        << "\nThe CPU reference runs about 200 images/s (200-350 decodes/s) on two cores, and "
           "IWAE_K decodes\nK latents per image: hence the CPU defaults, K = 50 on the "
           "first 1000 images (50,000\ndecodes, about 2.5 minutes). The GPU defaults are "
           "K = 1000 on the whole split.\nThe \u00b1 figure is the standard error of the "
           "mean over the images (their spread, not only\nthe Monte Carlo noise).\n"
           "log p(x|z) is the Bernoulli likelihood of the training loss (BCE summed over "
           "the pixels); for\ngrey-level images it is the usual VAE-example 'nats', not a "
           "normalized density.\n";
    return 0;
  }
  if (!r.count("run")) throw InputError("RUN: required (a run folder or a .safetensors file)");
  const std::string run = r["run"].as<std::string>();
  const std::string data_dir = r["data"].as<std::string>();
  if (data_dir.empty()) throw InputError("--data: empty folder name");
  const std::string split_text = r["split"].as<std::string>();
  const Split split = split_of(split_text);
  const int samples_flag =
      r.count("iw-samples")
          ? int(parse_int_flag("--iw-samples", r["iw-samples"].as<std::string>(), 0, kMaxSamples))
          : -1;
  const int64_t limit_flag =
      r.count("limit") ? parse_int_flag("--limit", r["limit"].as<std::string>(), 0, INT32_MAX) : -1;
  const uint64_t seed = parse_seed_flag("--seed", r["seed"].as<std::string>());
  const std::string device = r["device"].as<std::string>();
  check_device_flag(device);
  const std::string json_path = r.count("json") ? r["json"].as<std::string>() : "";
  if (r.count("json")) check_output_path("--json", json_path);
  const std::string dump_path = r.count("dump-batch") ? r["dump-batch"].as<std::string>() : "";
  if (r.count("dump-batch")) check_output_path("--dump-batch", dump_path);
  const int dump_images =
      int(parse_int_flag("--dump-images", r["dump-images"].as<std::string>(), 1, 4096));

  const std::string model_path = model_path_of(run);
  const LoadedModel m = load_model(model_path);
  const Dataset data = load_dataset(data_dir, split);
  const std::unique_ptr<Inference> model = make_engine(m, device, r.count("device") > 0);
  const bool on_ref = model->device() == "cpu-ref";
  const bool on_cpu = on_ref || model->device() == "cpu";
  const int k = samples_flag >= 0 ? samples_flag
                : on_ref          ? kCpuRefDefaultSamples
                : on_cpu          ? kCpuDefaultSamples
                                  : kGpuDefaultSamples;
  const int64_t limit = limit_flag >= 0 ? limit_flag : on_ref ? kCpuRefDefaultLimit : 0;
  const int64_t n = limit > 0 ? std::min(limit, data.size()) : data.size();
  std::cerr << "cuvae: model " << model_path << " (latent dim " << m.desc.latent_dim << "), "
            << split_name(split) << " split of " << data_dir << ": " << with_commas(n)
            << (n < data.size() ? " of " + with_commas(data.size()) : std::string()) << " images"
            << (k > 0 ? ", IWAE K=" + std::to_string(k) : std::string(", no IWAE")) << ", device "
            << model->device()
            << (on_ref && (samples_flag < 0 || limit_flag < 0)
                    ? " (cpu-ref defaults: --iw-samples 50 --limit 1000)"
                : on_cpu && samples_flag < 0 ? " (CPU default: --iw-samples 100)"
                                             : "")
            << "\n";

  if (!dump_path.empty()) {
    const int count = int(std::min<int64_t>(dump_images, n));
    write_eval_batch(dump_path, *model, m, data.images, count, seed, split_name(split));
    std::cerr << "cuvae: wrote " << dump_path << " (" << count << " images)\n";
  }

  // Negative ELBO: means and the standard error over the images.
  auto t0 = std::chrono::steady_clock::now();
  double recon_sum = 0, kl_sum = 0;
  std::vector<double> neg_elbos;
  neg_elbos.reserve(size_t(n));
  {
    Progress progress("negative ELBO:");
    evaluate_elbo_chunks(*model, data.images, seed, n,
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
  const double elbo_seconds = seconds_since(t0);
  const double recon = recon_sum / double(n), kl = kl_sum / double(n);
  double neg_elbo = 0, ss = 0;
  for (const double v : neg_elbos) neg_elbo += v;
  neg_elbo /= double(n);
  for (const double v : neg_elbos) ss += (v - neg_elbo) * (v - neg_elbo);
  const double neg_se = n > 1 ? std::sqrt(ss / double(n - 1) / double(n)) : 0.0;
  if (!std::isfinite(neg_elbo))
    throw Error("eval: the negative ELBO is not finite (the model's outputs are not finite)");

  IwaeStats iwae;
  double iwae_seconds = 0;
  if (k > 0) {
    t0 = std::chrono::steady_clock::now();
    Progress progress("IWAE K=" + std::to_string(k) + ":");
    iwae = evaluate_iwae(*model, data.images, k, seed, n, kIwaeRows,
                         [&](int64_t done, int64_t total) { progress.show(done, total); });
    iwae_seconds = seconds_since(t0);
  }

  std::string line = std::string(split_name(split)) + ": negative ELBO " + fixed(neg_elbo, 2) +
                     " nats/image (reconstruction " + fixed(recon, 2) + ", KL " + fixed(kl, 2) +
                     ")";
  if (k > 0)
    line += ", IWAE(K=" + std::to_string(k) + ") -log p(x) <= " + fixed(iwae.mean, 2) + " \u00b1 " +
            fixed(iwae.std_error, 2);
  line += ", " + with_commas(n) + (n < data.size() ? " of " + with_commas(data.size()) : "") +
          " images, device " + model->device();

  nlohmann::json j = {
      {"model", model_path},
      {"data", data_dir},
      {"split", split_name(split)},
      {"images", n},
      {"split_images", data.size()},
      {"seed", seed},
      {"device", model->device()},
      {"latent_dim", m.desc.latent_dim},
      {"beta", m.beta},
      {"neg_elbo", neg_elbo},
      {"neg_elbo_std_error", neg_se},
      {"reconstruction", recon},
      {"kl", kl},
      {"training_loss", recon + m.beta * kl},
      {"iw_samples", k},
      {"iwae", k > 0 ? nlohmann::json(iwae.mean) : nlohmann::json(nullptr)},
      {"iwae_std_error", k > 0 ? nlohmann::json(iwae.std_error) : nlohmann::json(nullptr)},
      {"units", "nats per image; log p(x|z) = -BCE summed over the 784 pixels"},
      {"seconds", {{"elbo", elbo_seconds}, {"iwae", iwae_seconds}}},
      {"version", kVersion}};
  std::cout << line << "\n";
  if (json_path.empty()) {
    std::cout << j.dump(2) << "\n";
  } else {
    AtomicTextFile f(json_path);
    const std::string text = j.dump(2) + "\n";
    std::fwrite(text.data(), 1, text.size(), f.get());
    f.commit();
    std::cerr << "cuvae: wrote " << json_path << "\n";
  }
  return 0;
}

int cmd_encode(int argc, char** argv) {
  cxxopts::Options options(
      "cuvae encode",
      "Write one CSV row per image: index, label, z_mean_*, z_log_var_* and neg_elbo, the "
      "one-sample negative ELBO (nats), usable as an anomaly score.");
  // clang-format off
  options.add_options()
    ("run", "run folder (its model.safetensors) or a .safetensors model file",
       cxxopts::value<std::string>(), "RUN")
    ("data", "folder with the MNIST-format IDX files",
       cxxopts::value<std::string>()->default_value("data/mnist"), "DIR")
    ("split", "test (t10k-* files) or train", cxxopts::value<std::string>()->default_value("test"), "SPLIT")
    ("csv", "output CSV file (written atomically)", cxxopts::value<std::string>(), "FILE")
    ("limit", "the first N images only (0: all)", cxxopts::value<std::string>()->default_value("0"), "N")
    ("seed", "seed of the noise of the neg_elbo sample", cxxopts::value<std::string>()->default_value("0"), "N")
    ("device", std::string(kDeviceHelp) + " (default gpu; falls back to cpu with a note when "
               "no GPU is usable)",
       cxxopts::value<std::string>()->default_value("gpu"), "DEV")
    ("h,help", "show this help");
  // clang-format on
  options.parse_positional({"run"});
  options.positional_help("RUN");
  const cxxopts::ParseResult r = parse_or_throw(options, argc, argv);
  if (r.count("help")) {
    std::cout
        << options.help()
        << "\nneg_elbo = BCE(x, decode(z)) summed over the pixels + KL(q(z|x) || N(0, I)) "
           "with one\nz sample (the same noise as `cuvae eval --seed`). A high value marks an "
           "image the model\nexplains badly. The CPU reference encodes about 200 images/s.\n";
    return 0;
  }
  if (!r.count("run")) throw InputError("RUN: required (a run folder or a .safetensors file)");
  const std::string run = r["run"].as<std::string>();
  const std::string data_dir = r["data"].as<std::string>();
  if (data_dir.empty()) throw InputError("--data: empty folder name");
  const Split split = split_of(r["split"].as<std::string>());
  if (!r.count("csv")) throw InputError("--csv: required (the file to write)");
  const std::string csv_path = r["csv"].as<std::string>();
  check_output_path("--csv", csv_path);
  const int64_t limit = parse_int_flag("--limit", r["limit"].as<std::string>(), 0, INT32_MAX);
  const uint64_t seed = parse_seed_flag("--seed", r["seed"].as<std::string>());
  const std::string device = r["device"].as<std::string>();
  check_device_flag(device);

  const std::string model_path = model_path_of(run);
  const LoadedModel m = load_model(model_path);
  const Dataset data = load_dataset(data_dir, split);
  const std::unique_ptr<Inference> model = make_engine(m, device, r.count("device") > 0);
  const int64_t n = limit > 0 ? std::min(limit, data.size()) : data.size();
  const int dim = m.desc.latent_dim;

  AtomicTextFile f(csv_path);
  std::FILE* out = f.get();
  std::fputs("index,label", out);
  for (int j = 0; j < dim; ++j) std::fprintf(out, ",z_mean_%d", j);
  for (int j = 0; j < dim; ++j) std::fprintf(out, ",z_log_var_%d", j);
  std::fputs(",neg_elbo\n", out);
  std::vector<double> scores;
  scores.reserve(size_t(n));
  {
    Progress progress("encode:");
    evaluate_elbo_chunks(*model, data.images, seed, n,
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
  std::cout << "cuvae: wrote " << csv_path << ": " << with_commas(n) << " " << split_name(split)
            << " images; neg_elbo median " << fixed(quantile(scores, 0.5), 2)
            << ", 99th percentile " << fixed(quantile(scores, 0.99), 2) << ", max "
            << fixed(scores.back(), 2) << " (device " << model->device() << ")\n";
  return 0;
}

}  // namespace cuvae
