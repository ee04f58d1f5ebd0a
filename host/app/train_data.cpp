// `cuvae train` before the first step (train_job.h): the data of the run, its folder checked,
// the start-up lines, fresh weights and config.json.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "host/app/cli_util.h"
#include "host/app/train_job.h"
#include "host/core/error.h"

namespace cuvae {
namespace {

namespace fs = std::filesystem;

bool has_idx_file(const std::string& dir, const std::string& name) {
  const std::string base = dir + "/" + name;
  return entry_exists(base) || entry_exists(base + ".gz");
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

// Appends the images and labels of `more` (the test split) to `data` (the training split).
void append(Dataset& data, const Dataset& more) {
  data.images.count += more.images.count;
  data.images.pixels.insert(data.images.pixels.end(), more.images.pixels.begin(),
                            more.images.pixels.end());
  data.labels.labels.insert(data.labels.labels.end(), more.labels.labels.begin(),
                            more.labels.labels.end());
}

// A resumed run must train on the images it was trained on.
void require_run_images(const TrainJob& job, const TrainData& data) {
  const TrainConfig& cfg = job.cfg;
  const std::string source =
      job.data_given ? "--data " + cfg.data_dir : cfg.data_dir + " (the run's data folder)";
  const bool train_on_test = job.run.train_split == TrainSplit::TrainTest;
  if (data.train.images.count != job.run.train_images)
    throw InputError(source + ": " + counted(data.train.images.count, "training image") +
                     " (--limit " + std::to_string(cfg.limit) +
                     (train_on_test ? ", --train-split train+test" : "") + "), but the run in " +
                     cfg.out_dir + " was trained on " + counted(job.run.train_images, "image"));
  if (data.train_crc != job.run.train_crc32)
    throw InputError(source + ": the training images differ from those the run in " + cfg.out_dir +
                     " was trained on (another dataset of the same size?)");
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

// "cuvae: device ..." after the word device: the GPU and its settings, or the CPU engine.
std::string device_text(const TrainJob& job) {
  const GpuOptions& o = job.gpu_opts;
  if (job.cfg.device != "gpu") return cpu_device_line(job.cfg.device);
  return job.gpu.name + " (sm_" + std::to_string(job.gpu.compute_major) +
         std::to_string(job.gpu.compute_minor) + ", " + precision_name(o) + ", " + algo_name(o) +
         " cuDNN algorithms, " +
         (o.layout_auto ? "layout timed at start-up, "
          : o.nhwc      ? "NHWC convolutions, "
                        : "") +
         (o.cuda_graph ? "CUDA graph" : "eager") + " steps)";
}

// The line on the test loss, or the note that there is none.
void print_test_line(const TrainJob& job, const TrainData& data) {
  const TrainConfig& cfg = job.cfg;
  if (!data.have_test) {
    std::cout << "cuvae: note: " << cfg.data_dir << " has no " << idx_images_name(Split::Test)
              << "[.gz]: no test loss (the test_loss column stays empty); the pictures show "
                 "training images\n";
    return;
  }
  const int64_t scored = data.test_images, all = data.test.images.count;
  std::string notes;
  if (scored < all && cfg.device == "cpu-ref" && !job.test_limit_given && !job.resume)
    notes = "the cpu-ref default; --test-limit 0 for all";
  if (job.run.train_split == TrainSplit::TrainTest)
    notes += (notes.empty() ? "" : "; ") + trained_on_note(data.test_trained, scored, cfg.limit);
  std::cout << "cuvae: test loss each epoch on "
            << (scored == all
                    ? (all == 1 ? "the one test image" : "all " + counted(all, "test image"))
                : scored == 1
                    ? "the first of " + counted(all, "test image")
                    : "the first " + with_commas(scored) + " of " + counted(all, "test image"))
            << (notes.empty() ? "" : " (" + notes + ")") << "\n";
}

// The run's settings as config.json records them: the float settings in their shortest decimal
// form (0.9, not 0.8999999761581421), and the GPU's settings (TF32, bf16, layout, CUDA graph,
// cuDNN algorithms) only when the GPU trains; a CPU run records its precision only (the GPU
// flags it ignored are noted at start-up).
nlohmann::json run_config(const TrainJob& job, const TrainData& data) {
  const TrainConfig& cfg = job.cfg;
  const GpuOptions& o = job.gpu_opts;
  const bool gpu = cfg.device == "gpu";
  nlohmann::json config = {{"architecture", kArchitecture},
                           {"latent_dim", cfg.latent_dim},
                           {"beta", cfg.beta},
                           {"beta_warmup", cfg.beta_warmup},
                           {"epochs", cfg.epochs},
                           {"batch_size", cfg.batch_size},
                           {"lr", float_as_decimal(cfg.adam.lr)},
                           {"adam_beta1", float_as_decimal(cfg.adam.beta1)},
                           {"adam_beta2", float_as_decimal(cfg.adam.beta2)},
                           {"adam_eps", float_as_decimal(cfg.adam.eps)},
                           {"seed", cfg.seed},
                           {"limit", cfg.limit},
                           {"device", cfg.device},
                           {"precision", gpu ? precision_key(o) : "fp32"},
                           {"data", cfg.data_dir},
                           {"train_split", train_split_name(job.run.train_split)},
                           {"train_images", data.train.images.count},
                           {"test_images_trained_on", data.test_trained},
                           {"test_limit", job.test_limit},
                           {"test_images", data.test_images},
                           {"snapshot_every", job.snapshot_every},
                           {"parameters", job.desc.num_params},
                           {"version", kVersion}};
  if (gpu) {
    config["tf32"] = o.tf32;
    config["bf16"] = o.bf16;
    config["layout"] = layout_key(o);
    config["cuda_graph"] = o.cuda_graph;
    config["cudnn_algorithms"] = algo_name(o);
  }
  if (job.resume) config["resumed_after_epoch"] = job.resumed_from;
  return config;
}

}  // namespace

TrainData load_train_data(const TrainJob& job) {
  const TrainConfig& cfg = job.cfg;
  TrainData data;
  data.train = load_dataset_noted(cfg.data_dir, Split::Train, std::cout);
  const bool train_on_test = job.run.train_split == TrainSplit::TrainTest;
  if (train_on_test)
    require_test_split_files(cfg.data_dir,
                             std::string("--train-split ") + train_split_name(job.run.train_split) +
                                 (job.resume && !job.split_given ? " (the run's)" : ""));
  data.have_test = has_idx_file(cfg.data_dir, idx_images_name(Split::Test));
  if (data.have_test) data.test = load_dataset_noted(cfg.data_dir, Split::Test, std::cout);
  const int64_t train_split_images = data.train.images.count;
  if (train_on_test) append(data.train, data.test);
  Dataset& train = data.train;
  if (cfg.limit > 0 && cfg.limit < train.images.count) {
    train.images.count = cfg.limit;
    train.images.pixels.resize(size_t(cfg.limit) * kImagePixels);
    train.labels.labels.resize(size_t(cfg.limit));
  }
  data.test_trained = std::max<int64_t>(train.images.count - train_split_images, 0);
  data.train_crc = image_checksum(train.images);
  if (job.resume) require_run_images(job, data);
  const int64_t test_count = data.test.images.count;
  data.test_images =
      data.have_test ? (job.test_limit > 0 ? std::min(job.test_limit, test_count) : test_count) : 0;
  data.test_seen = std::min(data.test_trained, data.test_images);
  return data;
}

void prepare_run_folder(const TrainJob& job) {
  job.folder.create();
  job.folder.require_free_space(job.desc.num_params);
  job.folder.require_file_size_limit(job.desc.num_params);
  job.folder.clear_stale_temporaries(std::cout);
  if (!job.resume && job.overwrite) job.folder.clear_old_run();
}

void print_banner(const TrainJob& job, const TrainData& data) {
  const TrainConfig& cfg = job.cfg;
  const int64_t n_train = data.train.images.count;
  std::cout << "cuvae: model " << with_commas(int64_t(job.desc.num_params))
            << " parameters (latent dim " << job.desc.latent_dim << ")\n"
            << "cuvae: data " << cfg.data_dir << ": " << counted(n_train, "training image")
            << (job.run.train_split == TrainSplit::TrainTest
                    ? " (--train-split train+test: " + with_commas(n_train - data.test_trained) +
                          " from the training split, " + with_commas(data.test_trained) +
                          " from the test split)\n"
                    : "\n");
  // load_train_data keeps the first --limit images, all of them when there are fewer.
  if (cfg.limit > n_train)
    std::cout << "cuvae: note: --limit " << cfg.limit << " is more than the "
              << counted(n_train, "training image") << ": training on "
              << (n_train == 1 ? "it" : "all of them") << "\n";
  std::cout << "cuvae: device " << device_text(job) << ", batch " << cfg.batch_size << ", lr "
            << cfg.adam.lr << ", beta " << cfg.beta
            << (cfg.beta_warmup > 0 ? " (warm-up over " + std::to_string(cfg.beta_warmup) +
                                          (cfg.beta_warmup == 1 ? " epoch)" : " epochs)")
                                    : std::string())
            << ", seed " << cfg.seed << ", " << cfg.epochs
            << (cfg.epochs == 1 ? " epoch\n" : " epochs\n");
  print_test_line(job, data);
  const TrainState& state = job.state;
  if (job.resume && state.epoch_step > 0)
    std::cout << "cuvae: resuming " << cfg.out_dir << " inside epoch " << state.epoch + 1
              << ", after its step " << state.epoch_step << " (step " << with_commas(state.step)
              << " of the run)\n";
  else if (job.resume)
    std::cout << "cuvae: resuming " << cfg.out_dir << " after epoch " << state.epoch << " (step "
              << with_commas(state.step) << ")\n";
  if (cfg.device == "cpu-ref" && int64_t(cfg.epochs - state.epoch) * n_train > 100000)
    std::cout << "cuvae: note: --device cpu-ref is the slow reference model (about 130 images/s "
                 "on two cores); --device cpu is the fast CPU engine\n";
  std::cout << std::flush;
}

void start_run(TrainJob& job, const TrainData& data) {
  TrainState& state = job.state;
  job.resumed_from = state.epoch;
  if (!job.resume) {
    const size_t n = job.desc.num_params;
    state.params.resize(n);
    state.adam_m.assign(n, 0.0f);
    state.adam_v.assign(n, 0.0f);
    init_params(job.desc, job.cfg.seed, state.params.data());
  }
  job.run.cfg = job.cfg;
  // Absolute, so a resume from another working folder finds the data.
  job.run.cfg.data_dir = fs::absolute(job.cfg.data_dir).lexically_normal().string();
  job.run.train_images = data.train.images.count;
  job.run.train_crc32 = data.train_crc;
  job.run.test_limit = job.test_limit;
  job.folder.write_config(run_config(job, data));
}

}  // namespace cuvae
