// The `cuvae` command line (cli.h): dispatch to the subcommands, strict flag parsing.
#include "host/app/cli.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "host/app/cli_util.h"
#include "host/app/commands.h"
#include "host/core/error.h"
#include "host/cpu/cpu_fast.h"
#include "host/gpu/device_info.h"

namespace cuvae {
namespace {

const char* kUsage =
    "usage: cuvae <command> [options]\n"
    "\n"
    "Trains a convolutional variational autoencoder on MNIST-format data and looks at it.\n"
    "\n"
    "commands:\n"
    "  train         train the VAE into a run folder, or --resume one\n"
    "  eval          test negative ELBO and an importance-weighted estimate of -log p(x)\n"
    "  encode        z_mean, z_log_var and the per-image anomaly score as CSV\n"
    "  anomaly       how well the anomaly score tells outliers from inliers: ROC AUC, TPR at\n"
    "                1% and 5% false positives, score histograms and ROC curve (PNG)\n"
    "  classify      test accuracy of classifiers on z_mean from few labels, against pixels\n"
    "  grid          the decoder's output over a grid of the latent plane (PNG)\n"
    "  scatter       z_mean of a labelled set coloured by class (PNG)\n"
    "  reconstruct   originals above their reconstructions (PNG)\n"
    "  sample        images decoded from the prior (PNG)\n"
    "  interpolate   decoded images along the latent path between two images (PNG)\n"
    "  curves        the training curves of one or more runs from metrics.csv (PNG)\n"
    "  bench         time training epochs and report them as JSON (tools/bench/bench.py)\n"
    "  parity-dump   one batch with a CPU engine's loss and gradients, for the\n"
    "                PyTorch parity check (tools/parity/parity.py)\n"
    "\n"
    "'cuvae <command> --help' lists a command's options.\n"
    "\n"
    "options:\n"
    "  -h, --help    show this help\n"
    "  --version     show the version, the CUDA libraries found, the CPU engine and the GPU\n";

// The version, what the build holds and what this machine offers it: the CUDA libraries the
// process loaded and the GPU (the one line scripts read: "GPU: none usable (...)" or the name).
void print_version(std::ostream& os) {
  os << "cuvae " << kVersion << "\n";
  os << "build: " << cuda_build_info() << "\n";
  os << "libraries: " << cuda_library_info() << "; " << cuda_driver_info() << "\n";
  os << "CPU engine: " << cpu::fast_engine_library() << "\n";
  const GpuInfo gpu = query_gpus();
  if (gpu.count == 0) {
    os << "GPU: none usable (" << gpu.reason << ")\n";
    return;
  }
  os << "GPU: " << gpu.name << " (sm_" << gpu.compute_major << gpu.compute_minor << ", "
     << fixed(double(gpu.total_memory) / double(1ull << 30), 1) << " GiB)";
  if (gpu.count > 1) os << ", device 0 of " << gpu.count;
  os << "\n";
}

}  // namespace

int64_t parse_int_flag(const std::string& flag, const std::string& text, int64_t lo, int64_t hi) {
  const std::string range = " between " + std::to_string(lo) + " and " + std::to_string(hi);
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || end != text.c_str() + text.size() || std::isspace((unsigned char)text[0]))
    throw InputError(flag + ": expected an integer" + range + ", got " + quote_arg(text));
  if (errno == ERANGE || v < lo || v > hi)
    throw InputError(flag + ": " + text + " is out of range, expected an integer" + range);
  return v;
}

uint64_t parse_seed_flag(const std::string& flag, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || end != text.c_str() + text.size() || !std::isdigit((unsigned char)text[0]))
    throw InputError(flag + ": expected a non-negative integer, got " + quote_arg(text));
  if (errno == ERANGE) throw InputError(flag + ": " + text + " does not fit in 64 bits");
  return v;
}

namespace {

// The number `text` as a finite double; otherwise an InputError that names the flag and, after
// "expected a number ", the accepted range.
double parse_finite(const std::string& flag, const std::string& text, const std::string& range) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || std::isspace((unsigned char)text[0]))
    throw InputError(flag + ": expected a number " + range + ", got " + quote_arg(text));
  if (!std::isfinite(v)) throw InputError(flag + ": " + text + " is not a finite number");
  return v;
}

}  // namespace

double parse_real_flag(const std::string& flag, const std::string& text, double lo, double hi,
                       bool lo_inclusive) {
  std::ostringstream range;
  range << (lo_inclusive ? ">= " : "> ") << lo << " and <= " << hi;
  const double v = parse_finite(flag, text, range.str());
  if ((lo_inclusive ? v < lo : v <= lo) || v > hi)
    throw InputError(flag + ": " + text + " is out of range, expected a number " + range.str());
  return v;
}

double parse_real_flag(const std::string& flag, const std::string& text, const RealRange& range) {
  const double v = parse_finite(flag, text, range.text());
  if (!range.holds(v))
    throw InputError(flag + ": " + text + " is out of range, expected a number " + range.text());
  return v;
}

int64_t parse_int_flag(const std::string& flag, const std::string& text, const IntRange& range) {
  return parse_int_flag(flag, text, range.lo, range.hi);
}

int run_cli(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string cmd = argv[1];
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    std::cout << kUsage;
    return 0;
  }
  if (cmd == "--version") {
    print_version(std::cout);
    return 0;
  }
  if (cmd == "train") return cmd_train(argc - 1, argv + 1);
  if (cmd == "parity-dump") return cmd_parity_dump(argc - 1, argv + 1);
  if (cmd == "grid") return cmd_grid(argc - 1, argv + 1);
  if (cmd == "scatter") return cmd_scatter(argc - 1, argv + 1);
  if (cmd == "reconstruct") return cmd_reconstruct(argc - 1, argv + 1);
  if (cmd == "sample") return cmd_sample(argc - 1, argv + 1);
  if (cmd == "eval") return cmd_eval(argc - 1, argv + 1);
  if (cmd == "encode") return cmd_encode(argc - 1, argv + 1);
  if (cmd == "interpolate") return cmd_interpolate(argc - 1, argv + 1);
  if (cmd == "classify") return cmd_classify(argc - 1, argv + 1);
  if (cmd == "bench") return cmd_bench(argc - 1, argv + 1);
  if (cmd == "anomaly") return cmd_anomaly(argc - 1, argv + 1);
  if (cmd == "curves") return cmd_curves(argc - 1, argv + 1);
  throw InputError("unknown command " + quote_arg(cmd) +
                   " (commands: train, eval, encode, anomaly, classify, grid, scatter, "
                   "reconstruct, sample, interpolate, curves, bench, parity-dump)");
}

}  // namespace cuvae
