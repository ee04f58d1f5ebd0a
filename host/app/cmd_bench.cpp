// `cuvae bench`: times training epochs for tools/bench/bench.py, with nothing else around them
// (no checkpoints, no test loss, no pictures).
//
// It trains a fresh model (Glorot-uniform init from --seed) for --warmup-epochs + --epochs
// epochs and reports each epoch's time, loss parts and the peak memory as a JSON object
// (--json FILE, "-" for standard output, the human lines then on stderr) plus one human line per
// epoch:
//   GPU: ms = device time between CUDA events recorded on the compute stream at the start of
//        the epoch (before its permutation is drawn) and after its last step
//        (EpochMetrics::device_ms); peak memory = the most device memory in use after any
//        epoch minus what was in use before the trainer was built (the CUDA context is
//        excluded; buffers, cuDNN/cuBLAS handles, workspaces and lazily loaded kernels count).
//   CPU: ms = wall clock of the epoch; peak memory = the process's peak resident set. Before
//        training, the processor's single-precision GEMM rate is measured with the library
//        the fast engine links (oneDNN's sgemm, 2048^3, median of 5), as the denominator of
//        a FLOP fraction (sgemm_gflops in the JSON). With --device cpu, cpu_primitives names
//        the oneDNN implementation of every primitive of the step ("ref:" ones are slow).
// The median is over the timed epochs only; images/s = images per epoch / median time.
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>

#include "host/app/cli.h"
#include "host/app/cli_util.h"
#include "host/app/commands.h"
#include "host/core/error.h"
#include "host/core/interrupt.h"
#include "host/core/model.h"
#include "host/cpu/cpu_fast.h"
#include "host/cpu/trainer_cpu.h"
#include "host/gpu/trainer_gpu.h"
#include "host/io/idx.h"

namespace cuvae {
namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

size_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return size_t(u.ru_maxrss) * 1024;  // Linux reports KiB
}

cxxopts::Options bench_options() {
  cxxopts::Options options("cuvae bench",
                           "Time training epochs (no checkpoints, test loss or pictures) and "
                           "report them as JSON, for tools/bench/bench.py.");
  // clang-format off
  options.add_options()
    ("data", "folder with the MNIST-format training files",
       cxxopts::value<std::string>()->default_value("data/mnist"), "DIR")
    ("device", kDeviceOptionHelp, cxxopts::value<std::string>()->default_value("gpu"), "DEV")
    ("tf32", "allow TF32 tensor cores in cuDNN and cuBLAS")
    ("bf16", "mixed precision: bf16 activations and tensor-core convolutions (GPU only)")
    ("no-cuda-graph", "launch every kernel of every step instead of replaying a CUDA graph")
    ("no-fusion", "the unfused kernels (separate bias, loss-sum and latent-head launches), to "
                  "measure what fusing them gains")
    ("layout", "convolution layout on the GPU: nchw, nhwc (channels last) or auto (timed)",
       cxxopts::value<std::string>()->default_value("nchw"), "L")
    ("algo", "cuDNN algorithm choice: deterministic or fastest",
       cxxopts::value<std::string>()->default_value("deterministic"), "MODE")
    ("epochs", "timed epochs (1-1000)", cxxopts::value<std::string>()->default_value("3"), "N")
    ("warmup-epochs", "untimed epochs first (0-1000)",
       cxxopts::value<std::string>()->default_value("1"), "N")
    ("batch-size", "images per step (1-65536)",
       cxxopts::value<std::string>()->default_value("128"), "N")
    ("latent-dim", "latent dimension D (1-" + std::to_string(kMaxLatentDim) + ")",
       cxxopts::value<std::string>()->default_value("2"), "D")
    ("lr", "Adam learning rate (0 < lr <= 10, a normal float)", cxxopts::value<std::string>()->default_value("0.001"), "X")
    ("beta", "weight of the KL term (0 <= beta <= 1e6; 0 or a normal float)",
       cxxopts::value<std::string>()->default_value("1"), "X")
    ("seed", "seed of the initialisation, shuffling and noise",
       cxxopts::value<std::string>()->default_value("0"), "N")
    ("limit", "use the first N training images (0: all)",
       cxxopts::value<std::string>()->default_value("0"), "N")
    ("json", "write the result as JSON to FILE ('-': stdout, the other lines then on stderr)",
       cxxopts::value<std::string>(), "FILE")
    ("h,help", "show this help");
  // clang-format on
  return options;
}

// bench's flags, validated.
struct BenchFlags {
  TrainConfig cfg;  // epochs: warm-up + timed
  int timed = 0, warmup = 0;
  GpuOptions gpu_opts;
  std::string json_path;  // empty: no JSON; "-": standard output
};

BenchFlags parse_bench_flags(const cxxopts::ParseResult& r) {
  BenchFlags f;
  TrainConfig& cfg = f.cfg;
  cfg.data_dir = r["data"].as<std::string>();
  cfg.device = r["device"].as<std::string>();
  f.timed = int(parse_int_flag("--epochs", r["epochs"].as<std::string>(), 1, 1000));
  f.warmup = int(parse_int_flag("--warmup-epochs", r["warmup-epochs"].as<std::string>(), 0, 1000));
  cfg.epochs = f.warmup + f.timed;
  cfg.batch_size =
      int(parse_int_flag("--batch-size", r["batch-size"].as<std::string>(), kBatchSizeRange));
  cfg.latent_dim =
      int(parse_int_flag("--latent-dim", r["latent-dim"].as<std::string>(), 1, kMaxLatentDim));
  cfg.adam.lr = float(parse_real_flag("--lr", r["lr"].as<std::string>(), kLrRange));
  cfg.beta = parse_real_flag("--beta", r["beta"].as<std::string>(), kBetaRange);
  cfg.seed = parse_seed_flag("--seed", r["seed"].as<std::string>());
  cfg.limit = parse_int_flag("--limit", r["limit"].as<std::string>(), kImageLimitRange);
  if (cfg.data_dir.empty()) throw InputError("--data: empty folder name");
  check_device_flag(cfg.device);
  f.gpu_opts = parse_gpu_flags(r);
  f.json_path = r.count("json") ? r["json"].as<std::string>() : "";
  if (r.count("json")) check_result_path("--json", f.json_path, "JSON file");
  return f;
}

// The training images of --data, the first --limit of them.
ImageSet load_bench_images(const TrainConfig& cfg) {
  ImageSet images = load_dataset_noted(cfg.data_dir, Split::Train, std::cerr).images;
  const int64_t n = limited_count("--limit", cfg.limit, images.count, "training image",
                                  " of " + cfg.data_dir, std::cerr);
  images.count = n;
  images.pixels.resize(size_t(n) * kImagePixels);
  return images;
}

// What the trainer's epochs measured.
struct BenchRun {
  std::vector<EpochMetrics> epochs;
  size_t peak = 0;  // bytes
  std::string peak_what;
  bool graph_used = false, nhwc_used = false;
};

// A fresh model trained for the warm-up and timed epochs, one line per epoch.
BenchRun run_bench(const BenchFlags& f, const ModelDesc& desc, const ImageSet& images) {
  const TrainConfig& cfg = f.cfg;
  TrainState state;
  state.params.resize(desc.num_params);
  state.adam_m.assign(desc.num_params, 0.0f);
  state.adam_v.assign(desc.num_params, 0.0f);
  init_params(desc, cfg.seed, state.params.data());
  BenchRun b;
  std::ostream& lines = summary_stream(f.json_path);
  const auto report = [&](const EpochMetrics& m) {
    const double ms = cfg.device == "gpu" ? m.device_ms : m.seconds * 1e3;
    lines << "epoch " << m.epoch << (m.epoch <= f.warmup ? " (warm-up)" : "") << "  "
          << fixed(ms, 2) << " ms  " << with_commas(int64_t(double(m.images) / ms * 1e3))
          << " images/s  loss " << fixed(m.loss, 4) << "\n"
          << std::flush;
    b.epochs.push_back(m);
    check_interrupt();  // a signal stops the benchmark after the epoch (GPU epochs are short)
  };
  if (cfg.device == "gpu") {
    const GpuBenchReport g = bench_gpu(cfg, f.gpu_opts, desc, images, state, report);
    b.graph_used = g.cuda_graph;
    b.nhwc_used = g.nhwc;
    b.peak = g.peak_memory;
    b.peak_what =
        "device memory in use after any epoch minus before the trainer was built "
        "(cudaMemGetInfo; excludes the CUDA context)";
  } else {
    const StopCheck stop = [] { return interrupt_signal() != 0; };
    if (!train_cpu(cfg, desc, images, state, report, nullptr, stop)) check_interrupt();
    b.peak = peak_rss_bytes();
    b.peak_what = "peak resident set of the process (getrusage)";
  }
  return b;
}

// The JSON result; `timed_ms` gets the timed epochs' times.
nlohmann::json bench_json(const BenchFlags& f, const std::string& device_name,
                          const ModelDesc& desc, const ImageSet& images, const BenchRun& b,
                          std::vector<double>& timed_ms) {
  const TrainConfig& cfg = f.cfg;
  const GpuOptions& o = f.gpu_opts;
  nlohmann::json rows = nlohmann::json::array();
  for (const EpochMetrics& m : b.epochs) {
    const double ms = cfg.device == "gpu" ? m.device_ms : m.seconds * 1e3;
    if (m.epoch > f.warmup) timed_ms.push_back(ms);
    rows.push_back({{"epoch", m.epoch},
                    {"warmup", m.epoch <= f.warmup},
                    {"ms", ms},
                    {"wall_ms", m.seconds * 1e3},
                    {"loss", m.loss},
                    {"recon", m.recon},
                    {"kl", m.kl}});
  }
  const double med = median(timed_ms);
  const EpochMetrics& last = b.epochs.back();
  nlohmann::json out = {{"system", "cuvae"},
                        {"version", kVersion},
                        {"device", device_name},
                        {"device_kind", cfg.device},
                        {"batch_size", cfg.batch_size},
                        {"precision", cfg.device == "gpu" ? precision_key(o) : "fp32"},
                        {"algo", algo_name(o)},
                        {"layout", b.nhwc_used ? "nhwc" : "nchw"},
                        {"layout_auto", cfg.device == "gpu" && o.layout_auto},
                        {"cuda_graph", b.graph_used},
                        {"fused", cfg.device == "gpu" && o.fused},
                        {"latent_dim", cfg.latent_dim},
                        {"images", images.count},
                        {"seed", cfg.seed},
                        {"warmup_epochs", f.warmup},
                        {"epochs", rows},
                        {"ms_per_epoch_median", med},
                        {"images_per_s", double(images.count) / med * 1e3},
                        {"peak_memory_bytes", b.peak},
                        {"peak_memory_what", b.peak_what},
                        {"final_loss", last.loss},
                        {"final_recon", last.recon},
                        {"final_kl", last.kl}};
  if (cfg.device == "cpu") {
    // Which oneDNN implementation runs each primitive (a "ref:" one is unoptimised code).
    out["cpu_primitives"] =
        cpu::FastModel(desc, int(std::min<int64_t>(cfg.batch_size, images.count)))
            .implementations();
  }
  return out;
}

// The summary line, then the JSON where --json asks for it.
void write_bench_result(const std::string& json_path, const nlohmann::json& out,
                        const std::vector<double>& timed_ms, int64_t images, size_t peak) {
  const double med = median(timed_ms);
  summary_stream(json_path) << "median " << fixed(med, 2) << " ms per epoch over "
                            << counted(int64_t(timed_ms.size()), "timed epoch") << ", "
                            << with_commas(int64_t(double(images) / med * 1e3))
                            << " images/s, peak memory " << fixed(double(peak) / (1 << 20), 1)
                            << " MiB\n";
  if (!json_path.empty()) write_result_text("--json", json_path, out.dump(2) + "\n");
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  cxxopts::Options options = bench_options();
  const cxxopts::ParseResult r = parse_or_throw(options, argc, argv);
  if (r.count("help")) {
    std::cout << options.help();
    return 0;
  }
  BenchFlags f = parse_bench_flags(r);
  TrainConfig& cfg = f.cfg;
  // The note of a fallback goes to stderr: `--json -` writes the result to stdout.
  const DeviceChoice choice = resolve_device(cfg.device, r.count("device") > 0, std::cerr);
  cfg.device = choice.device;
  print_cpu_notes(cfg.device, f.gpu_opts, std::cerr);
  const std::string device_name =
      cfg.device == "gpu" ? choice.gpu.name : cpu_device_line(cfg.device);
  // The processor's GEMM rate, measured before training so that nothing else runs beside it.
  const double sgemm_gflops = is_cpu_device(cfg.device) ? cpu::measure_sgemm_gflops(2048, 5) : 0;

  const ModelDesc desc = make_vae(cfg.latent_dim);
  const ImageSet images = load_bench_images(cfg);
  std::ostream& lines = summary_stream(f.json_path);  // stdout, unless the JSON goes there
  lines << "cuvae bench: " << device_name << ", "
        << (is_cpu_device(cfg.device) ? "fp32" : precision_name(f.gpu_opts)) << ", batch "
        << cfg.batch_size << ", " << counted(images.count, "image") << ", " << f.warmup
        << " warm-up + " << counted(f.timed, "timed epoch") << "\n"
        << std::flush;
  const BenchRun b = run_bench(f, desc, images);
  std::vector<double> timed_ms;
  nlohmann::json out = bench_json(f, device_name, desc, images, b, timed_ms);
  if (is_cpu_device(cfg.device)) {
    out["sgemm_gflops"] = sgemm_gflops;
    out["sgemm_what"] = "oneDNN sgemm, 2048 x 2048 x 2048, median of 5, on " +
                        std::to_string(omp_get_max_threads()) + " OpenMP threads";
  }
  write_bench_result(f.json_path, out, timed_ms, images.count, b.peak);
  return 0;
}

}  // namespace cuvae
