// `cuvae train`: options, the run folder (config.json, metrics.csv, model.safetensors) and the
// choice between the GPU and the CPU trainer.
#include <omp.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cuda/device.cuh"
#include "host/checkpoint.h"
#include "host/cli.h"
#include "host/cli_util.h"
#include "host/commands.h"
#include "host/error.h"
#include "host/idx.h"
#include "host/model.h"
#include "host/trainer_cpu.h"
#include "host/trainer_gpu.h"

namespace cuvae {
namespace {

// Creates the run folder and checks that it takes files, before any training time is spent.
void prepare_out_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw InputError("--out " + dir + ": cannot create the folder: " + ec.message());
  if (!fs::is_directory(dir)) throw InputError("--out " + dir + ": exists and is not a folder");
  const std::string probe = dir + "/.cuvae-write-test";
  std::FILE* f = std::fopen(probe.c_str(), "wb");
  if (!f) throw InputError("--out " + dir + ": cannot write there: " + std::strerror(errno));
  std::fclose(f);
  std::remove(probe.c_str());
}

class MetricsCsv {
 public:
  explicit MetricsCsv(const std::string& path) : path_(path), out_(path, std::ios::trunc) {
    if (!out_) throw InputError(path + ": cannot create the metrics file");
    out_ << "epoch,loss,reconstruction,kl,images,steps,images_per_s,seconds\n";
    out_.flush();
  }
  void add(const EpochMetrics& m) {
    out_.precision(9);
    out_ << m.epoch << ',' << m.loss << ',' << m.recon << ',' << m.kl << ',' << m.images << ','
         << m.steps << ',' << m.images_per_s << ',' << m.seconds << '\n';
    out_.flush();
    if (!out_) throw InputError(path_ + ": cannot write the metrics file");
  }

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace

int cmd_train(int argc, char** argv) {
  TrainConfig cfg;
  cxxopts::Options options("cuvae train", "Train the convolutional VAE (Keras-example defaults).");
  // clang-format off
  options.add_options()
    ("data", "folder with the MNIST-format IDX files (train-images-idx3-ubyte[.gz], ...)",
       cxxopts::value<std::string>()->default_value(cfg.data_dir), "DIR")
    ("device", "gpu or cpu (default gpu; falls back to cpu with a message when no GPU is usable)",
       cxxopts::value<std::string>()->default_value("gpu"), "DEV")
    ("tf32", "allow TF32 tensor cores in cuDNN and cuBLAS (faster, ~1e-3 relative error)")
    ("algo", "cuDNN algorithm choice: deterministic (bit-reproducible) or fastest (benchmarked)",
       cxxopts::value<std::string>()->default_value("deterministic"), "MODE")
    ("epochs", "passes over the training images (1-100000)",
       cxxopts::value<std::string>()->default_value(std::to_string(cfg.epochs)), "N")
    ("batch-size", "images per step (1-65536)",
       cxxopts::value<std::string>()->default_value(std::to_string(cfg.batch_size)), "N")
    ("lr", "Adam learning rate (0 < lr <= 10)", cxxopts::value<std::string>()->default_value("0.001"), "X")
    ("latent-dim", "latent dimension D (1-" + std::to_string(kMaxLatentDim) + ")",
       cxxopts::value<std::string>()->default_value(std::to_string(cfg.latent_dim)), "D")
    ("beta", "weight of the KL term (0 <= beta <= 1e6)", cxxopts::value<std::string>()->default_value("1"), "X")
    ("seed", "seed of every random draw (initialisation, shuffling, noise)",
       cxxopts::value<std::string>()->default_value("0"), "N")
    ("limit", "train on the first N training images only (0: all)",
       cxxopts::value<std::string>()->default_value("0"), "N")
    ("out", "run folder for metrics.csv, config.json and model.safetensors",
       cxxopts::value<std::string>()->default_value(cfg.out_dir), "DIR")
    ("h,help", "show this help");
  // clang-format on
  const cxxopts::ParseResult r = parse_or_throw(options, argc, argv);
  if (r.count("help")) {
    std::cout << options.help()
              << "\nThe loss is the batch mean of BCE summed over the 784 "
                 "pixels plus beta * KL(q(z|x) || N(0, I)).\n";
    return 0;
  }
  cfg.data_dir = r["data"].as<std::string>();
  cfg.device = r["device"].as<std::string>();
  cfg.epochs = int(parse_int_flag("--epochs", r["epochs"].as<std::string>(), 1, 100000));
  cfg.batch_size = int(parse_int_flag("--batch-size", r["batch-size"].as<std::string>(), 1, 65536));
  cfg.adam.lr = float(parse_real_flag("--lr", r["lr"].as<std::string>(), 0.0, 10.0, false));
  cfg.latent_dim =
      int(parse_int_flag("--latent-dim", r["latent-dim"].as<std::string>(), 1, kMaxLatentDim));
  cfg.beta = parse_real_flag("--beta", r["beta"].as<std::string>(), 0.0, 1e6, true);
  cfg.seed = parse_seed_flag("--seed", r["seed"].as<std::string>());
  cfg.limit = parse_int_flag("--limit", r["limit"].as<std::string>(), 0, INT32_MAX);
  cfg.out_dir = r["out"].as<std::string>();
  if (cfg.data_dir.empty()) throw InputError("--data: empty folder name");
  if (cfg.out_dir.empty()) throw InputError("--out: empty folder name");
  if (cfg.device != "cpu" && cfg.device != "gpu")
    throw InputError("--device: expected 'cpu' or 'gpu', got " + quote_arg(cfg.device));
  GpuOptions gpu_opts;
  gpu_opts.tf32 = r.count("tf32") > 0;
  const std::string algo = r["algo"].as<std::string>();
  if (algo != "deterministic" && algo != "fastest")
    throw InputError("--algo: expected 'deterministic' or 'fastest', got " + quote_arg(algo));
  gpu_opts.deterministic = algo == "deterministic";
  GpuInfo gpu;
  if (cfg.device == "gpu") {
    gpu = query_gpus();
    if (gpu.count == 0) {
      if (r.count("device"))
        throw InputError("--device gpu: no usable CUDA device (" + gpu.reason + ")");
      std::cout << "cuvae: no usable GPU (" << gpu.reason
                << "); training on the CPU instead (slow reference path)\n";
      cfg.device = "cpu";
    }
  }

  const ModelDesc desc = make_vae(cfg.latent_dim);
  Dataset train = load_dataset(cfg.data_dir, Split::Train);
  if (cfg.limit > 0 && cfg.limit < train.images.count) {
    train.images.count = cfg.limit;
    train.images.pixels.resize(size_t(cfg.limit) * kImagePixels);
  }
  prepare_out_dir(cfg.out_dir);

  std::cout << "cuvae: model " << with_commas(int64_t(desc.num_params))
            << " parameters (latent dim " << desc.latent_dim << ")\n"
            << "cuvae: data " << cfg.data_dir << ": " << with_commas(train.images.count)
            << " training images\n"
            << "cuvae: device "
            << (cfg.device == "gpu" ? gpu.name + " (sm_" + std::to_string(gpu.compute_major) +
                                          std::to_string(gpu.compute_minor) + ", " +
                                          (gpu_opts.tf32 ? "TF32" : "strict fp32") + ", " + algo +
                                          " cuDNN algorithms)"
                                    : "cpu (" + std::to_string(omp_get_max_threads()) + " threads)")
            << ", batch " << cfg.batch_size << ", lr " << cfg.adam.lr << ", beta " << cfg.beta
            << ", seed " << cfg.seed << ", " << cfg.epochs
            << (cfg.epochs == 1 ? " epoch\n" : " epochs\n") << std::flush;
  if (cfg.device == "cpu" && int64_t(cfg.epochs) * train.images.count > 100000)
    std::cout << "cuvae: note: --device cpu is the slow reference path (about 100 images/s on "
                 "two cores); --limit and --epochs make a quick run\n"
              << std::flush;

  TrainState state;
  state.params.resize(desc.num_params);
  state.adam_m.assign(desc.num_params, 0.0f);
  state.adam_v.assign(desc.num_params, 0.0f);
  init_params(desc, cfg.seed, state.params.data());

  nlohmann::json config = {{"architecture", kArchitecture},
                           {"latent_dim", cfg.latent_dim},
                           {"beta", cfg.beta},
                           {"epochs", cfg.epochs},
                           {"batch_size", cfg.batch_size},
                           {"lr", cfg.adam.lr},
                           {"adam_beta1", cfg.adam.beta1},
                           {"adam_beta2", cfg.adam.beta2},
                           {"adam_eps", cfg.adam.eps},
                           {"seed", cfg.seed},
                           {"limit", cfg.limit},
                           {"device", cfg.device},
                           {"tf32", gpu_opts.tf32},
                           {"cudnn_algorithms", algo},
                           {"data", cfg.data_dir},
                           {"train_images", train.images.count},
                           {"parameters", desc.num_params},
                           {"version", kVersion}};
  {
    std::ofstream cf(cfg.out_dir + "/config.json", std::ios::trunc);
    cf << config.dump(2) << '\n';
    if (!cf) throw InputError(cfg.out_dir + "/config.json: cannot write");
  }

  MetricsCsv csv(cfg.out_dir + "/metrics.csv");
  const int width = int(std::to_string(cfg.epochs).size());
  const EpochCallback on_epoch = [&](const EpochMetrics& m) {
    std::string e = std::to_string(m.epoch);
    e.insert(0, size_t(width) - std::min(e.size(), size_t(width)), ' ');
    std::cout << "epoch " << e << "/" << cfg.epochs << "  loss " << fixed(m.loss, 4)
              << "  reconstruction " << fixed(m.recon, 4) << "  kl " << fixed(m.kl, 4)
              << "  images/s " << fixed(m.images_per_s, 0) << "  (" << fixed(m.seconds, 1)
              << " s)\n"
              << std::flush;
    csv.add(m);
  };
  if (cfg.device == "gpu")
    train_gpu(cfg, gpu_opts, desc, train.images, state, on_epoch);
  else
    train_cpu(cfg, desc, train.images, state, on_epoch);
  const std::string model_path = cfg.out_dir + "/model.safetensors";
  save_model(model_path, desc, state.params, cfg.beta);
  std::cout << "cuvae: wrote " << model_path << ", " << cfg.out_dir << "/metrics.csv, "
            << cfg.out_dir << "/config.json\n";
  return 0;
}

}  // namespace cuvae
