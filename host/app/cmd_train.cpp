// `cuvae train`: options, the run folder and the choice between the GPU and the CPU trainer.
//
// The run folder (--out DIR, or the folder given to --resume):
//   train_state.safetensors  weights, Adam moments, step, epoch and the run's settings: all a
//                            resume needs, one atomically written file (checkpoint.h)
//   model.safetensors        the weights for PyTorch and the other subcommands
//   metrics.csv              one row per epoch (epoch,loss,reconstruction,kl,test_loss,images,
//                            steps,images_per_s,seconds)
//   config.json              the settings of the latest invocation, with train_split and
//                            test_images_trained_on (see below)
//   *.png                    write_run_pictures() at the end and every --snapshot-every epochs
// After every epoch the files are refreshed in that order (train_state first), so a crash
// leaves at worst a metrics.csv one row short of the state it resumes from.
//
// Epochs are numbered globally and every random draw is a function of (seed, epoch) or
// (seed, step) (philox.h), so `--epochs 2` followed by `--resume DIR --epochs 4` gives the
// same bits as `--epochs 4` straight, on the same device.
//
// Faults: SIGINT or SIGTERM lets the current step finish, writes train_state (with the
// position inside the epoch) and model atomically, says how to resume and exits with
// 128 + the signal (130, 143); a second signal ends the process at once, which the atomic
// writes make safe. A kill -9 at any moment leaves the previous checkpoint loadable, and the
// next run in the folder clears the temporary file the killed one may have left. A NaN or
// infinity stops training (TrainingDiverged, exit 3) naming the step and the tensor, before
// anything of the bad epoch is saved. A folder that cannot be written or lacks the space for
// a checkpoint is refused before training starts.
//
// test_loss is ElboStats::loss(beta) on the test split (t10k files of --data): the mean of
// the same per-image quantity as the training loss (BCE + beta * KL, one z sample per image,
// noise from the run's seed), so the two columns compare directly. It is evaluated with the
// weights at the end of the epoch, whereas the training loss averages over the epoch's steps.
//
// --train-split train+test trains on the training images followed by the test images (the
// Keras example's 70,000), --limit then taking the first N of those. The test loss is then
// measured on images the run trains on: the start-up line says so, each epoch line marks it
// "(seen in training)", and config.json has "train_split": "train+test" and
// "test_images_trained_on" (the first that many test images are in the training set).
// metrics.csv keeps its columns (its header is checked on resume and its readers go by column
// name or number), so config.json beside it is what tells a held-out test_loss from this one.
// The split is part of the run: saved in train_state, kept on resume.
#include <omp.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <csignal>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "host/app/cli.h"
#include "host/app/cli_util.h"
#include "host/app/commands.h"
#include "host/core/error.h"
#include "host/core/inference.h"
#include "host/core/model.h"
#include "host/cpu/trainer_cpu.h"
#include "host/eval/evaluate.h"
#include "host/eval/pictures.h"
#include "host/gpu/device_info.h"
#include "host/gpu/trainer_gpu.h"
#include "host/io/atomic_file.h"
#include "host/io/checkpoint.h"
#include "host/io/idx.h"

namespace cuvae {
namespace {

namespace fs = std::filesystem;

// The signal that asked training to stop (0: none). Set by the handler, read between steps.
volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) {
  g_stop_signal = sig;
  static const char msg[] =
      "\ncuvae: stopping after the current step to write a checkpoint (signal again to quit at "
      "once)\n";
  const ssize_t ignored = ::write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)ignored;
}

// SIGINT and SIGTERM ask training to stop between steps while this object lives; the
// handler resets itself (SA_RESETHAND), so a second signal has its default effect.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    // A process started with SIGINT ignored (nohup, a background job of a script) keeps
    // ignoring it, as shells and other tools do.
    sigaction(SIGINT, nullptr, &old_int_);
    if (old_int_.sa_handler != SIG_IGN) sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  int signal() const { return g_stop_signal; }
  static const char* name(int sig) { return sig == SIGINT ? "SIGINT" : "SIGTERM"; }

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

// Refuses a folder without room for a checkpoint: the state and model files, each written
// beside the previous copy before the rename (so twice), and the pictures.
void require_free_space(const std::string& dir, size_t num_params) {
  struct statvfs fs_info {};
  if (::statvfs(dir.c_str(), &fs_info) != 0) return;  // cannot tell: find out when writing
  const uint64_t free_bytes = uint64_t(fs_info.f_bavail) * fs_info.f_frsize;
  const uint64_t state_bytes = uint64_t(num_params) * sizeof(float) * 3 + (64 << 10);
  const uint64_t model_bytes = uint64_t(num_params) * sizeof(float) + (16 << 10);
  const uint64_t need = 2 * (state_bytes + model_bytes) + (4 << 20);
  if (free_bytes < need)
    throw InputError("--out " + dir + ": only " + with_commas(int64_t(free_bytes >> 10)) +
                     " KiB free; a checkpoint and the pictures need about " +
                     with_commas(int64_t(need >> 10)) + " KiB");
}

constexpr const char* kStateFile = "train_state.safetensors";
constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kMetricsHeader =
    "epoch,loss,reconstruction,kl,test_loss,images,steps,images_per_s,seconds";
// The CPU reference evaluates about 200 images/s: by default it scores the first 1,000 test
// images per epoch (a few seconds); the GPU and the fast CPU engine score all of them.
constexpr int64_t kCpuRefTestLimit = 1000;
// Picture families write_run_pictures() writes (pictures.h); --overwrite removes old ones.
constexpr const char* kPicturePrefixes[] = {"grid_15", "grid_30", "scatter", "reconstructions",
                                            "samples"};

// Creates the run folder and checks that it takes files, before any training time is spent.
// runs/YYYYmmdd-HHMMSS (local time): a fresh folder for every run started without --out.
std::string default_run_dir() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char name[32];
  std::strftime(name, sizeof name, "runs/%Y%m%d-%H%M%S", &local);
  return name;
}

void prepare_out_dir(const std::string& dir) {
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

// --overwrite: removes what a previous run left that this one would not rewrite at once (its
// state, model and pictures), so a crash early in the new run cannot mix the two.
void clear_old_run(const std::string& dir) {
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    bool ours = name == kStateFile || name == kModelFile;
    if (e.path().extension() == ".png")
      for (const char* prefix : kPicturePrefixes) ours = ours || name.rfind(prefix, 0) == 0;
    if (ours && e.is_regular_file()) fs::remove(e.path(), ec);
  }
}

// Whether there is an entry at `path`, even a broken or looping symlink (which the loaders
// then report for what it is, rather than as missing).
bool exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(path, ec));
}

bool is_folder(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

bool has_idx_file(const std::string& dir, const std::string& name) {
  const std::string base = dir + "/" + name;
  return exists(base) || exists(base + ".gz");
}

bool has_test_split(const std::string& dir) {
  return has_idx_file(dir, idx_images_name(Split::Test));
}

// --train-split train+test trains on the test split, so it must be there (a plain run goes
// without it and its test loss). `source`: how the split was chosen, for the message.
void require_test_split_files(const std::string& dir, const std::string& source) {
  std::string missing;
  for (const std::string& name : {idx_images_name(Split::Test), idx_labels_name(Split::Test)})
    if (!has_idx_file(dir, name)) missing += (missing.empty() ? "" : " and ") + name + "[.gz]";
  if (!missing.empty())
    throw InputError(source + ": " + dir + " has no " + missing +
                     " (the test split, which it also trains on)");
}

// The start-up line's note on the test loss under --train-split train+test: whether the
// `scored` test images (the first of the split) are among the first `trained`, which the run
// trains on (fewer than all when --limit cuts the concatenated set short).
std::string trained_on_note(int64_t trained, int64_t scored, int64_t limit) {
  const std::string flag = ": --train-split train+test";
  if (trained >= scored) return "also trained on" + flag;
  if (trained > 0) return "the first " + with_commas(trained) + " also trained on" + flag;
  return "none trained on: --limit " + std::to_string(limit) + " ends before the test split";
}

// Appends the images and labels of `more` (the test split) to `data` (the training split).
void append(Dataset& data, const Dataset& more) {
  data.images.count += more.images.count;
  data.images.pixels.insert(data.images.pixels.end(), more.images.pixels.begin(),
                            more.images.pixels.end());
  data.labels.labels.insert(data.labels.labels.end(), more.labels.labels.begin(),
                            more.labels.labels.end());
}

std::string value_text(int64_t v) {
  return std::to_string(v);
}
std::string value_text(uint64_t v) {
  return std::to_string(v);
}
std::string value_text(int v) {
  return std::to_string(v);
}
// The shortest of 6 or 17 significant digits that tells `v` from `other`.
std::string value_text(double v, double other) {
  std::ostringstream os;
  os << v;
  std::ostringstream o2;
  o2 << other;
  if (os.str() != o2.str()) return os.str();
  return exact_text(v);
}

// metrics.csv: created with its header for a new run; on resume, the rows of the epochs the
// state has completed are kept (any later ones, from a state that was replaced, dropped) and
// new rows are appended.
class MetricsCsv {
 public:
  MetricsCsv(const std::string& path, int64_t keep_through_epoch, bool resume) : path_(path) {
    std::string kept = std::string(kMetricsHeader) + "\n";
    if (resume) {
      std::ifstream in(path);
      if (!in) {
        std::cout << "cuvae: note: " << path << " is missing; starting it afresh\n";
      } else {
        std::string line;
        std::getline(in, line);
        if (line != kMetricsHeader)
          throw InputError(path + ": unexpected header '" + line + "', expected '" +
                           kMetricsHeader + "'");
        // A row cut short by a kill has fewer fields than the header: dropped.
        const auto fields = std::count(line.begin(), line.end(), ',');
        while (std::getline(in, line)) {
          const long epoch = std::strtol(line.c_str(), nullptr, 10);
          if (epoch >= 1 && epoch <= keep_through_epoch &&
              std::count(line.begin(), line.end(), ',') == fields)
            kept += line + "\n";
        }
      }
    }
    // Rewritten whole, then renamed over the old file: a crash keeps the old rows.
    write_text_atomically(path, kept);
    out_.open(path, std::ios::app);
    if (!out_) throw InputError(path + ": cannot open the metrics file");
  }

  // test_loss: NaN when there is no test split (the column stays empty).
  void add(const EpochMetrics& m, double test_loss) {
    // The row goes out in one write, so a kill leaves it whole or absent.
    std::ostringstream row;
    row.precision(9);
    row << m.epoch << ',' << m.loss << ',' << m.recon << ',' << m.kl << ',';
    if (std::isfinite(test_loss)) row << test_loss;
    row << ',' << m.images << ',' << m.steps << ',' << m.images_per_s << ',' << m.seconds << '\n';
    out_ << row.str();
    out_.flush();
    if (!out_) throw InputError(path_ + ": cannot write the metrics file");
  }

 private:
  std::string path_;
  std::ofstream out_;
};

// The live progress line: on a terminal, one line rewritten in place with '\r' at most every
// 0.2 s; elsewhere (a pipe, a file) nothing at all.
class ProgressLine {
 public:
  ProgressLine() : enabled_(::isatty(::fileno(stdout)) == 1) {}

  bool enabled() const { return enabled_; }

  // Whether an update now would be shown (at most one every 0.2 s).
  bool due() const {
    return enabled_ && (shown_ == 0 ||
                        std::chrono::steady_clock::now() - last_ >= std::chrono::milliseconds(200));
  }

  void show(const std::string& text) {
    if (!enabled_) return;
    last_ = std::chrono::steady_clock::now();
    std::cout << '\r' << text;
    if (text.size() < shown_) std::cout << std::string(shown_ - text.size(), ' ');
    std::cout << std::flush;
    shown_ = std::max(text.size(), size_t(1));
  }

  // Erases the line so that ordinary output starts at column 0.
  void clear() {
    if (shown_ == 0) return;
    std::cout << '\r' << std::string(shown_, ' ') << '\r' << std::flush;
    shown_ = 0;
  }

 private:
  bool enabled_;
  size_t shown_ = 0;  // width of what is on screen; 0: nothing
  std::chrono::steady_clock::time_point last_;
};

std::string clock_text(double seconds) {
  const auto s = int64_t(std::llround(std::max(seconds, 0.0)));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(s / 3600),
                  (long long)(s / 60 % 60), (long long)(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", (long long)(s / 60), (long long)(s % 60));
  return buf;
}

// On resume, a hyperparameter flag given explicitly (`name` without the dashes) must match
// the run's value.
void require_same(const cxxopts::ParseResult& r, const std::string& name, const std::string& given,
                  const std::string& saved, bool same, const std::string& run_dir) {
  if (!r.count(name) || same) return;
  throw InputError("--" + name + " " + given + " conflicts with the run in " + run_dir +
                   ", trained with --" + name + " " + saved +
                   " (a resumed run keeps its settings; drop the flag or start a new run)");
}
template <typename T>
void require_same(const cxxopts::ParseResult& r, const std::string& name, T given, T saved,
                  const std::string& run_dir) {
  require_same(r, name, value_text(given), value_text(saved), given == saved, run_dir);
}
void require_same_real(const cxxopts::ParseResult& r, const std::string& name, double given,
                       double saved, const std::string& run_dir) {
  require_same(r, name, value_text(given, saved), value_text(saved, given), given == saved,
               run_dir);
}

}  // namespace

int cmd_train(int argc, char** argv) {
  TrainConfig cfg;
  cxxopts::Options options("cuvae train", "Train the convolutional VAE (Keras-example defaults).");
  // clang-format off
  options.add_options()
    ("data", "folder with the MNIST-format IDX files (train-images-idx3-ubyte[.gz], ...; "
             "t10k-* for the test loss); on --resume, the run's folder",
       cxxopts::value<std::string>()->default_value(cfg.data_dir), "DIR")
    ("device", std::string(kDeviceHelp) + " (default gpu; falls back to cpu with a message "
               "when no GPU is usable)",
       cxxopts::value<std::string>()->default_value("gpu"), "DEV")
    ("tf32", "allow TF32 tensor cores in cuDNN and cuBLAS (faster, ~1e-3 relative error)")
    ("bf16", "mixed precision: bf16 activations and bf16 tensor-core convolutions, fp32 weights, "
             "Adam and loss (GPU only; not with --tf32)")
    ("layout", "convolution layout on the GPU: nchw, nhwc (channels last, which tensor-core "
               "convolutions read natively) or auto (the faster of the two, timed at start-up); "
               "checkpoints are the same in all",
       cxxopts::value<std::string>()->default_value("nchw"), "L")
    ("algo", "cuDNN algorithm choice: deterministic (bit-reproducible) or fastest (benchmarked)",
       cxxopts::value<std::string>()->default_value("deterministic"), "MODE")
    ("no-cuda-graph", "launch every kernel of every step instead of replaying the step from a "
                      "CUDA graph (slower; shows per-layer NVTX ranges in Nsight Systems)")
    ("profile-steps", "wrap training steps A..B (1-based over the run) in cudaProfilerStart/Stop "
                      "for a focused Nsight capture (GPU only)",
       cxxopts::value<std::string>(), "A:B")
    ("epochs", "total passes over the training images (1-100000); on --resume, the total to "
               "reach (default: the run's)",
       cxxopts::value<std::string>()->default_value(std::to_string(cfg.epochs)), "N")
    ("batch-size", "images per step (1-65536)",
       cxxopts::value<std::string>()->default_value(std::to_string(cfg.batch_size)), "N")
    ("lr", "Adam learning rate (0 < lr <= 10)", cxxopts::value<std::string>()->default_value("0.001"), "X")
    ("latent-dim", "latent dimension D (1-" + std::to_string(kMaxLatentDim) + ")",
       cxxopts::value<std::string>()->default_value(std::to_string(cfg.latent_dim)), "D")
    ("beta", "weight of the KL term (0 <= beta <= 1e6)", cxxopts::value<std::string>()->default_value("1"), "X")
    ("seed", "seed of every random draw (initialisation, shuffling, noise)",
       cxxopts::value<std::string>()->default_value("0"), "N")
    ("train-split", "images to train on: train (the training split) or train+test (the "
                    "training split followed by the test split, as the Keras example; the test "
                    "loss is then on images trained on); on --resume, the run's",
       cxxopts::value<std::string>()->default_value("train"), "S")
    ("limit", "train on the first N images of --train-split only (with train+test, of the "
              "training images followed by the test images; 0: all)",
       cxxopts::value<std::string>()->default_value("0"), "N")
    ("test-limit", "test loss on the first N test images (0: all; default all, but 1000 with "
                   "--device cpu-ref; on --resume, the run's)",
       cxxopts::value<std::string>(), "N")
    ("snapshot-every", "also write the pictures with suffix _epochN after every K-th epoch (0: off)",
       cxxopts::value<std::string>()->default_value("0"), "K")
    ("out", "run folder (train_state.safetensors, model.safetensors, metrics.csv, config.json, "
            "pictures); default runs/<date>-<time>, a new folder for every run",
       cxxopts::value<std::string>(), "DIR")
    ("resume", "continue the run in DIR from its last completed epoch up to --epochs (a total); "
               "its settings come from DIR/train_state.safetensors",
       cxxopts::value<std::string>(), "DIR")
    ("overwrite", "start a new run even if --out already holds one (its files are replaced)")
    ("h,help", "show this help");
  // clang-format on
  const cxxopts::ParseResult r = parse_or_throw(options, argc, argv);
  if (r.count("help")) {
    std::cout << options.help()
              << "\nThe loss is the batch mean of BCE summed over the 784 pixels plus beta * "
                 "KL(q(z|x) || N(0, I));\ntest_loss is the same quantity on the test split "
                 "(one z sample per image; with --train-split train+test, images trained "
                 "on).\n";
    return 0;
  }

  // From here on SIGINT/SIGTERM only ask training to stop: one arriving while the data loads
  // stops it before the first step, with a checkpoint of where it stood.
  const StopSignals signals;

  // Flags as given (validated even where a resume ignores them).
  cfg.data_dir = r["data"].as<std::string>();
  cfg.device = r["device"].as<std::string>();
  const int epochs_flag = int(parse_int_flag("--epochs", r["epochs"].as<std::string>(), 1, 100000));
  cfg.epochs = epochs_flag;
  cfg.batch_size = int(parse_int_flag("--batch-size", r["batch-size"].as<std::string>(), 1, 65536));
  cfg.adam.lr = float(parse_real_flag("--lr", r["lr"].as<std::string>(), 0.0, 10.0, false));
  cfg.latent_dim =
      int(parse_int_flag("--latent-dim", r["latent-dim"].as<std::string>(), 1, kMaxLatentDim));
  cfg.beta = parse_real_flag("--beta", r["beta"].as<std::string>(), 0.0, 1e6, true);
  cfg.seed = parse_seed_flag("--seed", r["seed"].as<std::string>());
  cfg.limit = parse_int_flag("--limit", r["limit"].as<std::string>(), 0, INT32_MAX);
  const std::string split_flag = r["train-split"].as<std::string>();
  const std::optional<TrainSplit> split_given = train_split_from_name(split_flag);
  if (!split_given)
    throw InputError("--train-split: expected 'train' or 'train+test', got " +
                     quote_arg(split_flag));
  std::optional<int64_t> test_limit_flag;
  if (r.count("test-limit"))
    test_limit_flag =
        parse_int_flag("--test-limit", r["test-limit"].as<std::string>(), 0, INT32_MAX);
  const int snapshot_every =
      int(parse_int_flag("--snapshot-every", r["snapshot-every"].as<std::string>(), 0, 100000));
  cfg.out_dir = r.count("out") ? r["out"].as<std::string>() : default_run_dir();
  const bool resume = r.count("resume") > 0;
  const bool overwrite = r.count("overwrite") > 0;
  if (cfg.data_dir.empty()) throw InputError("--data: empty folder name");
  if (cfg.out_dir.empty()) throw InputError("--out: empty folder name");
  check_device_flag(cfg.device);
  GpuOptions gpu_opts = parse_gpu_flags(r);
  const std::string algo = algo_name(gpu_opts);
  if (r.count("profile-steps")) {
    const std::string spec = r["profile-steps"].as<std::string>();
    const size_t colon = spec.find(':');
    if (colon == std::string::npos)
      throw InputError("--profile-steps: expected A:B (first and last step), got " +
                       quote_arg(spec));
    gpu_opts.profile_first = parse_int_flag("--profile-steps", spec.substr(0, colon), 1, INT64_MAX);
    gpu_opts.profile_last = parse_int_flag("--profile-steps", spec.substr(colon + 1), 1, INT64_MAX);
    if (gpu_opts.profile_last < gpu_opts.profile_first)
      throw InputError("--profile-steps: the last step " + std::to_string(gpu_opts.profile_last) +
                       " comes before the first " + std::to_string(gpu_opts.profile_first));
  }

  // A resume takes the run's settings from its state file; a new run refuses a folder that
  // already holds one unless --overwrite says so.
  TrainState state;
  TrainRun run;
  run.train_split = *split_given;
  int64_t test_limit = -1;  // -1: the device's default, decided below
  if (resume) {
    const std::string dir = r["resume"].as<std::string>();
    if (dir.empty()) throw InputError("--resume: empty folder name");
    if (overwrite) throw InputError("--overwrite: cannot be combined with --resume");
    if (r.count("out") &&
        fs::path(cfg.out_dir).lexically_normal() != fs::path(dir).lexically_normal())
      throw InputError("--out " + cfg.out_dir + ": a resumed run writes into its own folder (" +
                       dir + "); drop --out");
    if (!is_folder(dir)) throw InputError("--resume " + dir + ": no such folder");
    const std::string state_path = dir + "/" + kStateFile;
    if (!exists(state_path))
      throw InputError(state_path + ": missing, so " + dir + " cannot be resumed");
    LoadedTrainState loaded = load_train_state(state_path);
    const TrainConfig& saved = loaded.run.cfg;
    require_same(r, "latent-dim", cfg.latent_dim, saved.latent_dim, dir);
    require_same(r, "batch-size", cfg.batch_size, saved.batch_size, dir);
    require_same_real(r, "lr", cfg.adam.lr, saved.adam.lr, dir);
    require_same_real(r, "beta", cfg.beta, saved.beta, dir);
    require_same(r, "seed", cfg.seed, saved.seed, dir);
    require_same(r, "limit", cfg.limit, saved.limit, dir);
    require_same(r, "train-split", split_flag, train_split_name(loaded.run.train_split),
                 *split_given == loaded.run.train_split, dir);
    const int64_t done = loaded.state.epoch;
    const int total = r.count("epochs") ? epochs_flag : loaded.run.cfg.epochs;
    if (total <= done) {
      // A run killed while it drew its final pictures has finished but may have left a
      // picture's temporary file, which no later training run would clear: cleared here.
      if (const int stale = remove_stale_temporaries(dir))
        std::cout << "cuvae: removed " << stale << " temporary file" << (stale == 1 ? "" : "s")
                  << " an earlier, killed run left in " << dir << "\n";
      if (r.count("epochs"))
        throw InputError("--epochs " + std::to_string(total) + ": the run in " + dir +
                         " has already completed " + std::to_string(done) +
                         " epochs; --epochs is the total to reach, so pass more than " +
                         std::to_string(done));
      throw InputError("--resume " + dir + ": the run has finished its " + std::to_string(done) +
                       " epochs; pass --epochs TOTAL (more than " + std::to_string(done) +
                       ") to train further");
    }
    const std::string device = cfg.device;
    cfg = loaded.run.cfg;
    cfg.epochs = total;
    cfg.device = device;
    cfg.out_dir = dir;
    if (r.count("data")) cfg.data_dir = r["data"].as<std::string>();
    test_limit = test_limit_flag.value_or(loaded.run.test_limit);
    run = loaded.run;
    state = std::move(loaded.state);
  } else {
    const std::string state_path = cfg.out_dir + "/" + kStateFile;
    if (exists(state_path) && !overwrite)
      throw InputError("--out " + cfg.out_dir + ": already holds a training run (" + kStateFile +
                       "); pass --resume " + cfg.out_dir + " to continue it, --overwrite to " +
                       "replace it, or another --out");
    if (test_limit_flag) test_limit = *test_limit_flag;
  }

  const DeviceChoice choice = resolve_device(cfg.device, r.count("device") > 0, std::cout);
  cfg.device = choice.device;
  const GpuInfo& gpu = choice.gpu;
  if (test_limit < 0) test_limit = cfg.device == "cpu-ref" ? kCpuRefTestLimit : 0;

  const ModelDesc desc = make_vae(cfg.latent_dim);
  Dataset train = load_dataset(cfg.data_dir, Split::Train);
  const bool train_on_test = run.train_split == TrainSplit::TrainTest;
  if (train_on_test)
    require_test_split_files(cfg.data_dir,
                             std::string("--train-split ") + train_split_name(run.train_split) +
                                 (resume && !r.count("train-split") ? " (the run's)" : ""));
  const bool have_test = has_test_split(cfg.data_dir);
  Dataset test;
  if (have_test) test = load_dataset(cfg.data_dir, Split::Test);
  const int64_t train_split_images = train.images.count;
  if (train_on_test) append(train, test);
  if (cfg.limit > 0 && cfg.limit < train.images.count) {
    train.images.count = cfg.limit;
    train.images.pixels.resize(size_t(cfg.limit) * kImagePixels);
    train.labels.labels.resize(size_t(cfg.limit));
  }
  // The first test_trained test images are in the training set (train+test only).
  const int64_t test_trained = std::max<int64_t>(train.images.count - train_split_images, 0);
  const uint32_t train_crc = image_checksum(train.images);
  if (resume) {
    const std::string data =
        r.count("data") ? "--data " + cfg.data_dir : cfg.data_dir + " (the run's data folder)";
    if (train.images.count != run.train_images)
      throw InputError(data + ": " + with_commas(train.images.count) +
                       " training images (--limit " + std::to_string(cfg.limit) +
                       (train_on_test ? ", --train-split train+test" : "") + "), but the run in " +
                       cfg.out_dir + " was trained on " + with_commas(run.train_images));
    if (train_crc != run.train_crc32)
      throw InputError(data + ": the training images differ from those the run in " + cfg.out_dir +
                       " was trained on (another dataset of the same size?)");
  }
  const int64_t test_images =
      have_test ? (test_limit > 0 ? std::min(test_limit, test.images.count) : test.images.count)
                : 0;
  // Of the test images scored each epoch, the first test_seen were trained on.
  const int64_t test_seen = std::min(test_trained, test_images);
  prepare_out_dir(cfg.out_dir);
  require_free_space(cfg.out_dir, desc.num_params);
  if (const int stale = remove_stale_temporaries(cfg.out_dir))
    std::cout << "cuvae: removed " << stale << " temporary file" << (stale == 1 ? "" : "s")
              << " an earlier, killed run left in " << cfg.out_dir << "\n";
  if (!resume && overwrite) clear_old_run(cfg.out_dir);

  std::cout << "cuvae: model " << with_commas(int64_t(desc.num_params))
            << " parameters (latent dim " << desc.latent_dim << ")\n"
            << "cuvae: data " << cfg.data_dir << ": " << with_commas(train.images.count)
            << " training images"
            << (train_on_test ? " (--train-split train+test: " +
                                    with_commas(train.images.count - test_trained) +
                                    " from the training split, " + with_commas(test_trained) +
                                    " from the test split)\n"
                              : "\n")
            << "cuvae: device "
            << (cfg.device == "gpu"
                    ? gpu.name + " (sm_" + std::to_string(gpu.compute_major) +
                          std::to_string(gpu.compute_minor) + ", " + precision_name(gpu_opts) +
                          ", " + algo + " cuDNN algorithms, " +
                          (gpu_opts.layout_auto ? "layout timed at start-up, "
                           : gpu_opts.nhwc      ? "NHWC convolutions, "
                                                : "") +
                          (gpu_opts.cuda_graph ? "CUDA graph" : "eager") + " steps)"
                    : cpu_device_line(cfg.device))
            << ", batch " << cfg.batch_size << ", lr " << cfg.adam.lr << ", beta " << cfg.beta
            << ", seed " << cfg.seed << ", " << cfg.epochs
            << (cfg.epochs == 1 ? " epoch\n" : " epochs\n");
  if (have_test) {
    std::string notes;
    if (test_images < test.images.count && cfg.device == "cpu-ref" && !test_limit_flag && !resume)
      notes = "the cpu-ref default; --test-limit 0 for all";
    if (train_on_test)
      notes += (notes.empty() ? "" : "; ") + trained_on_note(test_trained, test_images, cfg.limit);
    std::cout << "cuvae: test loss each epoch on "
              << (test_images == test.images.count ? "all " + with_commas(test_images)
                                                   : "the first " + with_commas(test_images) +
                                                         " of " + with_commas(test.images.count))
              << " test images" << (notes.empty() ? "" : " (" + notes + ")") << "\n";
  } else
    std::cout << "cuvae: note: " << cfg.data_dir << " has no " << idx_images_name(Split::Test)
              << "[.gz]: no test loss (the test_loss column stays empty); the pictures show "
                 "training images\n";
  if (resume && state.epoch_step > 0)
    std::cout << "cuvae: resuming " << cfg.out_dir << " inside epoch " << state.epoch + 1
              << ", after its step " << state.epoch_step << " (step " << with_commas(state.step)
              << " of the run)\n";
  else if (resume)
    std::cout << "cuvae: resuming " << cfg.out_dir << " after epoch " << state.epoch << " (step "
              << with_commas(state.step) << ")\n";
  if (cfg.device == "cpu-ref" && int64_t(cfg.epochs - state.epoch) * train.images.count > 100000)
    std::cout << "cuvae: note: --device cpu-ref is the slow reference model (about 130 images/s "
                 "on two cores); --device cpu is the fast CPU engine\n";
  std::cout << std::flush;

  const int64_t resumed_from = state.epoch;
  if (!resume) {
    state.params.resize(desc.num_params);
    state.adam_m.assign(desc.num_params, 0.0f);
    state.adam_v.assign(desc.num_params, 0.0f);
    init_params(desc, cfg.seed, state.params.data());
  }
  run.cfg = cfg;
  // Absolute, so a resume from another working folder finds the data.
  run.cfg.data_dir = fs::absolute(cfg.data_dir).lexically_normal().string();
  run.train_images = train.images.count;
  run.train_crc32 = train_crc;
  run.test_limit = test_limit;

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
                           {"bf16", gpu_opts.bf16},
                           {"layout", layout_key(gpu_opts)},
                           {"cuda_graph", gpu_opts.cuda_graph},
                           {"cudnn_algorithms", algo},
                           {"data", cfg.data_dir},
                           {"train_split", train_split_name(run.train_split)},
                           {"train_images", train.images.count},
                           {"test_images_trained_on", test_trained},
                           {"test_limit", test_limit},
                           {"test_images", test_images},
                           {"snapshot_every", snapshot_every},
                           {"parameters", desc.num_params},
                           {"version", kVersion}};
  if (resume) config["resumed_after_epoch"] = resumed_from;
  write_text_atomically(cfg.out_dir + "/config.json", config.dump(2) + "\n");
  MetricsCsv csv(cfg.out_dir + "/metrics.csv", resumed_from, resume);

  // One inference engine for the test loss and the pictures; its weights are replaced after
  // every epoch.
  const std::unique_ptr<Inference> model = make_inference(desc, state.params, cfg.device);
  // The scatter and the reconstructions show the test split or, without one, the first
  // 10,000 training images (the scatter encodes all it is given).
  Dataset shown_train;
  if (!have_test) {
    shown_train = train;
    const int64_t n = std::min<int64_t>(shown_train.images.count, 10000);
    shown_train.images.count = n;
    shown_train.images.pixels.resize(size_t(n) * kImagePixels);
    shown_train.labels.labels.resize(size_t(n));
  }
  const Dataset& shown = have_test ? test : shown_train;
  const std::string state_path = cfg.out_dir + "/" + kStateFile;
  const std::string model_path = cfg.out_dir + "/" + kModelFile;

  ProgressLine progress;
  const int width = int(std::to_string(cfg.epochs).size());
  const std::string epochs_text = std::to_string(cfg.epochs);
  const int64_t n_train = train.images.count;
  const StepCallback on_step = [&](const StepProgress& p) {
    if (!progress.due() && p.step != p.steps) return;
    std::string line = "epoch " + std::to_string(p.epoch) + "/" + epochs_text + "  step " +
                       std::to_string(p.step) + "/" + std::to_string(p.steps);
    if (std::isfinite(p.loss)) line += "  loss " + fixed(p.loss, 1);
    if (p.seconds > 0) {
      const double rate = double(p.images) / p.seconds;
      const double left = double(n_train - p.images) + double(cfg.epochs - p.epoch) * n_train;
      line += "  " + with_commas(int64_t(std::llround(rate))) + " img/s  ETA " +
              clock_text(left / rate);
    }
    progress.show(line);
  };
  const EpochCallback on_epoch = [&](const EpochMetrics& m) {
    const bool snapshot = snapshot_every > 0 && m.epoch % snapshot_every == 0;
    double test_loss = std::nan("");
    if (have_test || snapshot) model->set_params(state.params.data());
    if (have_test) {
      progress.show("epoch " + std::to_string(m.epoch) + "/" + epochs_text + "  test loss on " +
                    with_commas(test_images) + " images ...");
      test_loss = evaluate_elbo(*model, test.images, cfg.seed, test_limit).loss(cfg.beta);
    }
    // train_state first: it alone is what a resume reads.
    save_train_state(state_path, desc, run, state);
    save_model(model_path, desc, state.params, cfg.beta);
    csv.add(m, test_loss);
    progress.clear();
    std::string e = std::to_string(m.epoch);
    e.insert(0, size_t(width) - std::min(e.size(), size_t(width)), ' ');
    std::cout << "epoch " << e << "/" << cfg.epochs << "  loss " << fixed(m.loss, 4)
              << "  reconstruction " << fixed(m.recon, 4) << "  kl " << fixed(m.kl, 4);
    if (have_test)
      std::cout << "  test_loss " << fixed(test_loss, 4)
                << (test_seen == 0             ? ""
                    : test_seen == test_images ? " (seen in training)"
                                               : " (partly seen in training)");
    std::cout << "  images/s " << fixed(m.images_per_s, 0) << "  (" << fixed(m.seconds, 1)
              << " s)\n"
              << std::flush;
    if (snapshot) {
      progress.show("epoch " + std::to_string(m.epoch) + "/" + epochs_text + "  pictures ...");
      write_run_pictures(cfg.out_dir, *model, shown, "_epoch" + std::to_string(m.epoch), cfg.seed);
      progress.clear();
    }
  };
  // No per-step callback at all when there is no terminal to show it on.
  const StepCallback step_cb = progress.enabled() ? on_step : StepCallback();
  if (is_cpu_device(cfg.device) && gpu_opts.profile_first > 0)
    std::cout
        << "cuvae: note: --profile-steps applies to the GPU trainer only; ignored on the CPU\n";
  if (is_cpu_device(cfg.device) && gpu_opts.bf16)
    std::cout << "cuvae: note: --bf16 applies to the GPU trainer only; the CPU trains in fp32\n";
  if (is_cpu_device(cfg.device) && (gpu_opts.nhwc || gpu_opts.layout_auto))
    std::cout << "cuvae: note: --layout " << layout_key(gpu_opts)
              << " applies to the GPU trainer only; the CPU computes in NCHW\n";
  const StopCheck stop = [&signals] { return signals.signal() != 0; };
  const int64_t good_epoch_at_start = state.epoch;
  bool finished = false;
  try {
    if (cfg.device == "gpu")
      finished = train_gpu(cfg, gpu_opts, desc, train.images, state, on_epoch, step_cb, stop);
    else
      finished = train_cpu(cfg, desc, train.images, state, on_epoch, step_cb, stop);
  } catch (const TrainingDiverged& e) {
    progress.clear();
    // on_epoch saved every completed epoch; nothing of the failing one reached the disk.
    const bool saved = exists(state_path);
    const int64_t good = saved ? std::max(good_epoch_at_start, state.epoch) : 0;
    throw TrainingDiverged(
        std::string(e.what()) + "; " +
        (saved ? "the last good checkpoint (" +
                     (good > 0 ? "after epoch " + std::to_string(good) : "the resumed state") +
                     ") stays in " + state_path
               : "no checkpoint was written"));
  }
  if (!finished) {
    // Stopped by a signal between steps: the state is consistent, save it and say how to
    // go on.
    progress.clear();
    save_train_state(state_path, desc, run, state);
    save_model(model_path, desc, state.params, cfg.beta);
    const int sig = signals.signal();
    const std::string where = state.epoch_step > 0
                                  ? "in epoch " + std::to_string(state.epoch + 1) +
                                        " after its step " + std::to_string(state.epoch_step)
                                  : "after epoch " + std::to_string(state.epoch);
    std::cerr << "cuvae: " << StopSignals::name(sig) << ": stopped " << where << " (step "
              << with_commas(state.step) << "); wrote " << state_path << " and " << model_path
              << "\ncuvae: resume with: cuvae train --resume " << cfg.out_dir << "\n";
    return 128 + sig;
  }
  if (const int sig = signals.signal()) {
    std::cerr << "cuvae: " << StopSignals::name(sig) << ": training had finished and " << state_path
              << " is complete; the final pictures were not drawn (cuvae grid, "
              << "scatter, reconstruct and sample draw them)\n";
    return 128 + sig;
  }

  model->set_params(state.params.data());
  progress.show("pictures ...");
  write_run_pictures(cfg.out_dir, *model, shown, "", cfg.seed);
  progress.clear();
  std::cout << "cuvae: wrote " << model_path << ", " << state_path << ", " << cfg.out_dir
            << "/metrics.csv, " << cfg.out_dir << "/config.json and the pictures\n";
  return 0;
}

}  // namespace cuvae
