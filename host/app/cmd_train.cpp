// `cuvae train`: its options, and the command as a sequence of steps: parse the flags, resolve
// the run (a new one, or --resume), choose the device, load the data, print the start-up lines,
// train with an epoch reporter, finish (the steps after the flags: train_job.h). The run
// folder's files: run_folder.h; config.json has train_split and test_images_trained_on (see
// below).
//
// Epochs are numbered globally and every random draw is a function of (seed, epoch) or
// (seed, step) (philox.h), so `--epochs 2` followed by `--resume DIR --epochs 4` gives the
// same bits as `--epochs 4` straight, on the same device.
//
// One run per folder: the folder's lock (run_lock.h) is taken before anything in it is looked
// at and held to the exit; a folder the run made and left empty is removed again.
//
// Faults: SIGINT or SIGTERM (interrupt.h) while the data loads stops at once without a
// checkpoint; during training it lets the current step finish, writes train_state (with the
// position inside the epoch) and model atomically, says how to resume and exits with
// 128 + the signal (130, 143); during an epoch's test loss the epoch is saved without it;
// during the final pictures the drawing stops. A second signal ends the process at once, which
// the atomic writes make safe. A kill -9 at any moment leaves the previous checkpoint loadable, and
// the next run in the folder clears the temporary file the killed one may have left. A NaN or
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
#include <ctime>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>

#include "host/app/cli.h"
#include "host/app/cli_util.h"
#include "host/app/commands.h"
#include "host/app/run_folder.h"
#include "host/app/run_lock.h"
#include "host/app/train_job.h"
#include "host/core/error.h"
#include "host/core/interrupt.h"
#include "host/core/model.h"
#include "host/io/checkpoint.h"

namespace cuvae {
namespace {

namespace fs = std::filesystem;

// The CPU reference evaluates about 200 images/s: by default it scores the first 1,000 test
// images per epoch (a few seconds); the GPU and the fast CPU engine score all of them.
constexpr int64_t kCpuRefTestLimit = 1000;

cxxopts::Options train_options() {
  const TrainConfig cfg;  // the defaults
  cxxopts::Options options("cuvae train", "Train the convolutional VAE (Keras-example defaults).");
  // clang-format off
  options.add_options()
    ("data", "folder with the MNIST-format IDX files (train-images-idx3-ubyte[.gz], ...; "
             "t10k-* for the test loss); on --resume, the run's folder",
       cxxopts::value<std::string>()->default_value(cfg.data_dir), "DIR")
    ("device", kDeviceOptionHelp, cxxopts::value<std::string>()->default_value("gpu"), "DEV")
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
               "reach (when not given, the run's)",
       cxxopts::value<std::string>()->default_value(std::to_string(cfg.epochs)), "N")
    ("batch-size", "images per step (1-65536)",
       cxxopts::value<std::string>()->default_value(std::to_string(cfg.batch_size)), "N")
    ("lr", "Adam learning rate (0 < lr <= 10, a normal float)", cxxopts::value<std::string>()->default_value("0.001"), "X")
    ("latent-dim", "latent dimension D (1-" + std::to_string(kMaxLatentDim) + ")",
       cxxopts::value<std::string>()->default_value(std::to_string(cfg.latent_dim)), "D")
    ("beta", "weight of the KL term (0 <= beta <= 1e6; 0 or a normal float)", cxxopts::value<std::string>()->default_value("1"), "X")
    ("beta-warmup", "KL warm-up: the KL weight rises linearly per step from 0 to --beta over the "
                    "first E epochs (0: off, 0-100000; on --resume, the run's)",
       cxxopts::value<std::string>()->default_value("0"), "E")
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
               "its settings come from DIR/train_state.safetensors (which may stand for DIR)",
       cxxopts::value<std::string>(), "DIR")
    ("overwrite", "start a new run even if --out already holds one (its files are replaced)")
    ("h,help", "show this help");
  // clang-format on
  return options;
}

constexpr const char* kTrainHelpNotes =
    "\nThe loss is the batch mean of BCE summed over the 784 pixels plus beta * "
    "KL(q(z|x) || N(0, I));\ntest_loss is the same quantity on the test split "
    "(one z sample per image; with --train-split train+test, images trained "
    "on).\nWith --beta-warmup E the KL weight of step t is beta (t - 1) / W over the W steps of "
    "the first E\nepochs, then beta; the training loss is BCE + that weight * KL (metrics.csv "
    "column kl_weight:\nthe epoch's effective weight, so loss = reconstruction + kl_weight * kl), "
    "the test loss\nalways BCE + beta * KL.\n";

// runs/YYYYmmdd-HHMMSS (local time): the name of the fresh folder of a run started without
// --out (RunLock::take_new adds -2, -3, ... when a run started in the same second has it).
std::string default_run_dir() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char name[32];
  std::strftime(name, sizeof name, "runs/%Y%m%d-%H%M%S", &local);
  return name;
}

// The flags as given, validated (even those a resume then ignores).
struct TrainFlags {
  TrainConfig cfg;  // epochs: --epochs as given; out_dir: --out or default_run_dir()
  bool out_given = false;
  GpuOptions gpu_opts;
  TrainSplit split = TrainSplit::Train;
  std::string split_text;
  std::optional<int64_t> test_limit;
  int snapshot_every = 0;
  bool resume = false, overwrite = false;
};

// --profile-steps A:B into gpu_opts.
void parse_profile_steps(const std::string& spec, GpuOptions& gpu_opts) {
  const size_t colon = spec.find(':');
  if (colon == std::string::npos)
    throw InputError("--profile-steps: expected A:B (first and last step), got " + quote_arg(spec));
  gpu_opts.profile_first = parse_int_flag("--profile-steps", spec.substr(0, colon), 1, INT64_MAX);
  gpu_opts.profile_last = parse_int_flag("--profile-steps", spec.substr(colon + 1), 1, INT64_MAX);
  if (gpu_opts.profile_last < gpu_opts.profile_first)
    throw InputError("--profile-steps: the last step " + std::to_string(gpu_opts.profile_last) +
                     " comes before the first " + std::to_string(gpu_opts.profile_first));
}

TrainFlags parse_train_flags(const cxxopts::ParseResult& r) {
  TrainFlags f;
  TrainConfig& cfg = f.cfg;
  cfg.data_dir = r["data"].as<std::string>();
  cfg.device = r["device"].as<std::string>();
  cfg.epochs = int(parse_int_flag("--epochs", r["epochs"].as<std::string>(), kEpochsRange));
  cfg.batch_size =
      int(parse_int_flag("--batch-size", r["batch-size"].as<std::string>(), kBatchSizeRange));
  cfg.adam.lr = float(parse_real_flag("--lr", r["lr"].as<std::string>(), kLrRange));
  cfg.latent_dim =
      int(parse_int_flag("--latent-dim", r["latent-dim"].as<std::string>(), 1, kMaxLatentDim));
  cfg.beta = parse_real_flag("--beta", r["beta"].as<std::string>(), kBetaRange);
  cfg.beta_warmup =
      int(parse_int_flag("--beta-warmup", r["beta-warmup"].as<std::string>(), kBetaWarmupRange));
  cfg.seed = parse_seed_flag("--seed", r["seed"].as<std::string>());
  cfg.limit = parse_int_flag("--limit", r["limit"].as<std::string>(), kImageLimitRange);
  f.split_text = r["train-split"].as<std::string>();
  const std::optional<TrainSplit> split = train_split_from_name(f.split_text);
  if (!split)
    throw InputError("--train-split: expected 'train' or 'train+test', got " +
                     quote_arg(f.split_text));
  f.split = *split;
  if (r.count("test-limit"))
    f.test_limit =
        parse_int_flag("--test-limit", r["test-limit"].as<std::string>(), kImageLimitRange);
  f.snapshot_every =
      int(parse_int_flag("--snapshot-every", r["snapshot-every"].as<std::string>(), 0, 100000));
  f.out_given = r.count("out") > 0;
  cfg.out_dir = f.out_given ? r["out"].as<std::string>() : default_run_dir();
  f.resume = r.count("resume") > 0;
  f.overwrite = r.count("overwrite") > 0;
  if (cfg.data_dir.empty()) throw InputError("--data: empty folder name");
  if (cfg.out_dir.empty()) throw InputError("--out: empty folder name");
  check_device_flag(cfg.device);
  f.gpu_opts = parse_gpu_flags(r);
  if (r.count("profile-steps"))
    parse_profile_steps(r["profile-steps"].as<std::string>(), f.gpu_opts);
  return f;
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

void require_same_settings(const cxxopts::ParseResult& r, const TrainFlags& f, const TrainRun& run,
                           const std::string& dir) {
  const TrainConfig &cfg = f.cfg, &saved = run.cfg;
  require_same(r, "latent-dim", cfg.latent_dim, saved.latent_dim, dir);
  require_same(r, "batch-size", cfg.batch_size, saved.batch_size, dir);
  require_same_real(r, "lr", cfg.adam.lr, saved.adam.lr, dir);
  require_same_real(r, "beta", cfg.beta, saved.beta, dir);
  require_same(r, "beta-warmup", cfg.beta_warmup, saved.beta_warmup, dir);
  require_same(r, "seed", cfg.seed, saved.seed, dir);
  require_same(r, "limit", cfg.limit, saved.limit, dir);
  require_same(r, "train-split", f.split_text, train_split_name(run.train_split),
               f.split == run.train_split, dir);
  // metrics.csv's test_loss column is over one image count for the whole run.
  if (f.test_limit) require_same(r, "test-limit", *f.test_limit, run.test_limit, dir);
}

// A resume to `total` epochs of a run that has completed `done` is refused when there is
// nothing left to train.
void refuse_finished_run(const RunFolder& folder, bool epochs_given, int total, int64_t done) {
  if (total > done) return;
  // A run killed while it drew its final pictures has finished but may have left a picture's
  // temporary file, which no later training run would clear: cleared here.
  folder.clear_stale_temporaries(std::cout);
  const std::string& dir = folder.dir();
  if (epochs_given)
    throw InputError("--epochs " + std::to_string(total) + ": the run in " + dir +
                     " has already completed " + counted(done, "epoch") +
                     "; --epochs is the total to reach, so pass more than " + std::to_string(done));
  throw InputError("--resume " + dir + ": the run has finished its " + counted(done, "epoch") +
                   "; pass --epochs TOTAL (more than " + std::to_string(done) +
                   ") to train further");
}

// The run folder of --resume: the folder as given, or the folder of a state file given in its
// place; another file is an InputError that asks for the folder.
std::string resume_folder(const std::string& given) {
  std::error_code ec;
  if (given.empty() || !fs::is_regular_file(given, ec)) return given;
  const fs::path p(given);
  if (p.filename() == RunFolder::kStateFile)
    return p.has_parent_path() ? p.parent_path().string() : ".";
  throw InputError("--resume " + given + ": a file; give the run folder (the one holding " +
                   RunFolder::kStateFile + ")");
}

// --resume DIR: the run's settings come from its state file; explicit flags must agree.
TrainJob resume_run(const cxxopts::ParseResult& r, const TrainFlags& f) {
  const std::string dir = resume_folder(r["resume"].as<std::string>());
  if (dir.empty()) throw InputError("--resume: empty folder name");
  if (f.overwrite) throw InputError("--overwrite: cannot be combined with --resume");
  if (r.count("out") &&
      fs::path(f.cfg.out_dir).lexically_normal() != fs::path(dir).lexically_normal())
    throw InputError("--out " + f.cfg.out_dir + ": a resumed run writes into its own folder (" +
                     dir + "); drop --out");
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw InputError("--resume " + dir + ": no such folder");
  TrainJob job;
  // Owned from before the state is read to the exit: no other training can replace it.
  job.lock = RunLock::take(dir, "--resume", false);
  job.folder = RunFolder(dir);
  if (!job.folder.has_state())
    throw InputError(job.folder.state_path() + ": missing, so " + dir + " cannot be resumed");
  LoadedTrainState loaded = load_train_state(job.folder.state_path());
  require_same_settings(r, f, loaded.run, dir);
  const int total = r.count("epochs") ? f.cfg.epochs : loaded.run.cfg.epochs;
  refuse_finished_run(job.folder, r.count("epochs") > 0, total, loaded.state.epoch);
  job.cfg = loaded.run.cfg;
  job.cfg.epochs = total;
  job.cfg.device = f.cfg.device;
  job.cfg.out_dir = dir;
  if (r.count("data")) job.cfg.data_dir = f.cfg.data_dir;
  job.test_limit = loaded.run.test_limit;
  job.run = loaded.run;
  job.state = std::move(loaded.state);
  job.resume = true;
  return job;
}

// A new run in --out, which must not hold one already unless --overwrite says so.
TrainJob new_run(const TrainFlags& f) {
  TrainJob job;
  // Owned from before the folder is looked at to the exit: no other training can start there.
  job.lock =
      f.out_given ? RunLock::take(f.cfg.out_dir, "--out", true) : RunLock::take_new(f.cfg.out_dir);
  job.folder = RunFolder(job.lock.dir());
  if (job.folder.has_state() && !f.overwrite)
    throw InputError("--out " + f.cfg.out_dir + ": already holds a training run (" +
                     RunFolder::kStateFile + "); pass --resume " + f.cfg.out_dir +
                     " to continue it, --overwrite to replace it, or another --out");
  job.cfg = f.cfg;
  job.cfg.out_dir = job.lock.dir();
  job.run.train_split = f.split;
  if (f.test_limit) job.test_limit = *f.test_limit;
  return job;
}

// The run of this invocation: a new one or the resumed one, with the flags that apply to both.
TrainJob resolve_run(const cxxopts::ParseResult& r, const TrainFlags& f) {
  TrainJob job = f.resume ? resume_run(r, f) : new_run(f);
  job.gpu_opts = f.gpu_opts;
  job.overwrite = f.overwrite;
  job.split_given = r.count("train-split") > 0;
  job.data_given = r.count("data") > 0;
  job.test_limit_given = f.test_limit.has_value();
  job.snapshot_every = f.snapshot_every;
  job.start_step = job.state.step;
  return job;
}

// The device by the shared policy (its note on stdout); the cpu-ref default of --test-limit.
void choose_device(TrainJob& job, bool explicit_device) {
  const DeviceChoice choice = resolve_device(job.cfg.device, explicit_device, std::cout);
  job.cfg.device = choice.device;
  job.gpu = choice.gpu;
  if (job.test_limit < 0) job.test_limit = job.cfg.device == "cpu-ref" ? kCpuRefTestLimit : 0;
  job.desc = make_vae(job.cfg.latent_dim);
}

}  // namespace

int cmd_train(int argc, char** argv) {
  cxxopts::Options options = train_options();
  const cxxopts::ParseResult r = parse_or_throw(options, argc, argv);
  if (r.count("help")) {
    std::cout << options.help() << kTrainHelpNotes;
    return 0;
  }
  const TrainFlags flags = parse_train_flags(r);
  TrainJob job = resolve_run(r, flags);
  try {
    choose_device(job, r.count("device") > 0);
    const TrainData data = load_train_data(job);  // a signal stops the loading (Interrupted)
    prepare_run_folder(job);
    print_banner(job, data);
    start_run(job, data);
    EpochReporter reporter(job, data);
    print_cpu_notes(job.cfg.device, job.gpu_opts, std::cout);
    check_interrupt();
    // From here on a signal lets the current step finish and writes a checkpoint.
    set_interrupt_note(kTrainingInterruptNote);
    const bool finished = run_training(job, data, reporter);
    return finish_training(job, reporter, finished);
  } catch (const Interrupted& e) {
    if (job.state.step > job.start_step) throw;  // training had begun: finish_training's word
    throw Interrupted(e.signal(), signal_name(e.signal()) +
                                      ": stopped before training started; no checkpoint written");
  }
}

}  // namespace cuvae
