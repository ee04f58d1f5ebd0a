// `cuvae parity-dump`: writes one batch with a CPU engine's loss, gradients and ReLU outputs.
#include <iostream>

#include "host/app/cli.h"
#include "host/app/cli_util.h"
#include "host/app/commands.h"
#include "host/core/error.h"
#include "host/core/model.h"
#include "host/eval/parity_dump.h"

namespace cuvae {

int cmd_parity_dump(int argc, char** argv) {
  ParityDumpConfig cfg;
  cxxopts::Options options("cuvae parity-dump",
                           "Write weights, one batch, its noise and a CPU engine's loss, gradients "
                           "and ReLU outputs to a safetensors file for tools/parity/parity.py.");
  // clang-format off
  options.add_options()
    ("out", "output file (.safetensors)", cxxopts::value<std::string>(), "FILE")
    ("device", "the engine under test: cpu-ref (the CPU reference) or cpu (the fast CPU engine)",
       cxxopts::value<std::string>()->default_value("cpu-ref"), "DEV")
    ("batch-size", "images in the batch (1-4096)", cxxopts::value<std::string>()->default_value("5"), "N")
    ("latent-dim", "latent dimension D", cxxopts::value<std::string>()->default_value("2"), "D")
    ("beta", "weight of the KL term (0 <= beta <= 1e6; 0 or a normal float)", cxxopts::value<std::string>()->default_value("1"), "X")
    ("seed", "seed of the weights, images and noise", cxxopts::value<std::string>()->default_value("0"), "N")
    ("data", "take the images from this MNIST folder's test split (without it: synthetic "
             "images)", cxxopts::value<std::string>(), "DIR")
    ("h,help", "show this help");
  // clang-format on
  const cxxopts::ParseResult r = parse_or_throw(options, argc, argv);
  if (r.count("help")) {
    std::cout << options.help();
    return 0;
  }
  if (!r.count("out")) throw InputError("--out: required (the file to write)");
  cfg.out = r["out"].as<std::string>();
  check_output_path("--out", cfg.out, ".safetensors file");
  cfg.device = r["device"].as<std::string>();
  check_device_flag(cfg.device);
  if (!is_cpu_device(cfg.device))
    throw InputError("--device " + cfg.device +
                     ": parity-dump runs a CPU engine, 'cpu' or 'cpu-ref'");
  cfg.batch_size = int(parse_int_flag("--batch-size", r["batch-size"].as<std::string>(), 1, 4096));
  cfg.latent_dim =
      int(parse_int_flag("--latent-dim", r["latent-dim"].as<std::string>(), 1, kMaxLatentDim));
  cfg.beta = parse_real_flag("--beta", r["beta"].as<std::string>(), kBetaRange);
  cfg.seed = parse_seed_flag("--seed", r["seed"].as<std::string>());
  if (r.count("data")) {
    cfg.data_dir = r["data"].as<std::string>();
    if (cfg.data_dir.empty()) throw InputError("--data: empty folder name");
  }
  write_parity_dump(cfg);
  std::cout << "cuvae: wrote " << cfg.out << " (" << cpu_device_line(cfg.device) << ")\n";
  return 0;
}

}  // namespace cuvae
