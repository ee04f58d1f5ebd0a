// The run folder: the names of the files `cuvae train` keeps there, writing them, and finding a
// run's model from a RUN argument (every command that reads a run: eval, encode, the pictures).
//
// A run folder (`cuvae train --out DIR`, or the folder given to --resume) holds:
//   train_state.safetensors  weights, Adam moments, step, epoch and the run's settings: all a
//                            resume needs, one atomically written file (checkpoint.h)
//   model.safetensors        the weights for PyTorch and the other subcommands
//   metrics.csv              one row per epoch (epoch,loss,reconstruction,kl,test_loss,images,
//                            steps,images_per_s,seconds,kl_weight; loss = reconstruction +
//                            kl_weight * kl, kl_weight is beta but during a KL warm-up;
//                            host/io/metrics_csv.h reads it)
//   config.json              the settings of the latest invocation
//   *.png                    write_run_pictures() (pictures.h): at the end of training and, with
//                            a suffix _epochN, every --snapshot-every epochs; curves.png
//                            (curves.h, from metrics.csv) at the end and at every snapshot
// Every file is written atomically (atomic_file.h); after each epoch train_state goes first,
// then model, then the metrics row, so a crash leaves at worst a metrics.csv one row short of
// the state it resumes from.
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <utility>

#include "host/core/inference.h"
#include "host/core/model.h"
#include "host/core/train_types.h"
#include "host/io/checkpoint.h"
#include "host/io/idx.h"
#include "host/io/metrics_csv.h"

namespace cuvae {

// Whether there is an entry at `path`, even a broken or looping symlink (which the loaders
// then report for what it is, rather than as missing).
bool entry_exists(const std::string& path);

// metrics.csv: created with its header for a new run; on resume, the rows of the epochs the
// state has completed are kept (any later ones, from a state that was replaced, dropped, and a
// row cut short by a kill too) and new rows are appended. A file whose first line is not the
// header is refused (InputError) and left as it is; a missing one is started afresh with a
// note on stdout.
class MetricsCsv {
 public:
  static constexpr const char* kHeader = kMetricsCsvHeader;
  // The header before the kl_weight column: a resumed run's file of that form is rewritten in
  // the new one, its rows given kl_weight `beta` (those runs had no warm-up).
  static constexpr const char* kHeaderNoWeight = kMetricsCsvHeaderNoWeight;

  MetricsCsv(const std::string& path, int64_t keep_through_epoch, bool resume, double beta);
  // One row, written whole. test_loss: NaN when there is no test split (the column stays
  // empty).
  void add(const EpochMetrics& m, double test_loss);

 private:
  std::string path_;
  std::ofstream out_;
};

class RunFolder {
 public:
  static constexpr const char* kStateFile = "train_state.safetensors";
  static constexpr const char* kModelFile = "model.safetensors";
  static constexpr const char* kMetricsFile = "metrics.csv";
  static constexpr const char* kConfigFile = "config.json";
  static constexpr const char* kCurvesFile = "curves.png";

  RunFolder() = default;
  explicit RunFolder(std::string dir) : dir_(std::move(dir)) {}

  const std::string& dir() const { return dir_; }
  std::string state_path() const { return file(kStateFile); }
  std::string model_path() const { return file(kModelFile); }
  std::string metrics_path() const { return file(kMetricsFile); }
  std::string config_path() const { return file(kConfigFile); }
  std::string curves_path() const { return file(kCurvesFile); }
  bool has_state() const { return entry_exists(state_path()); }

  // Before any training time is spent. create(): makes the folder and checks that it takes
  // files. require_free_space(): refuses a folder without room for a checkpoint, the state and
  // model files each written beside the previous copy before the rename (so twice), and the
  // pictures; a folder whose free space cannot be read passes (a write then tells). Both throw
  // InputErrors naming --out.
  void create() const;
  void require_free_space(size_t num_params) const;
  static uint64_t checkpoint_bytes(size_t num_params);  // what require_free_space() asks for
  // Refuses a file-size limit (RLIMIT_FSIZE, `ulimit -f`) below the state file's size: the
  // write would fail at the first checkpoint (EFBIG; SIGXFSZ is ignored, interrupt.h).
  void require_file_size_limit(size_t num_params) const;
  static uint64_t state_file_bytes(size_t num_params);  // an upper bound
  // Clears the temporary files of killed runs (atomic_file.h) and says so on `log`.
  void clear_stale_temporaries(std::ostream& log) const;
  // --overwrite: removes what a previous run left that a new one would not rewrite at once (its
  // state, model and pictures), so a crash early in the new run cannot mix the two.
  void clear_old_run() const;

  void write_config(const nlohmann::json& config) const;
  MetricsCsv open_metrics(int64_t keep_through_epoch, bool resume, double beta) const {
    return MetricsCsv(metrics_path(), keep_through_epoch, resume, beta);
  }
  // train_state first: it alone is what a resume reads.
  void save_checkpoint(const ModelDesc& desc, const TrainRun& run, const TrainState& state,
                       double beta) const;
  // `shown`: images of `split` (the titles name it) for the scatter and the reconstructions.
  void write_pictures(Inference& model, const Dataset& shown, Split split,
                      const std::string& suffix, uint64_t seed) const;
  // Copies the pictures write_pictures() drew without a suffix to their names with `suffix`.
  void copy_pictures(const std::string& suffix) const;
  // curves.png from metrics.csv (curves.h). A picture is not worth a run: any failure is a
  // warning on `log` and false, never an exception.
  bool write_curves(std::ostream& log) const;

 private:
  std::string file(const char* name) const { return dir_ + "/" + name; }
  std::string dir_;
};

// A RUN argument: a run folder (its model.safetensors) or the path of a model file.
struct RunModel {
  std::string model;  // the .safetensors file
  std::string dir;    // the run folder, or the model file's folder: where pictures go by default
};
// InputError when RUN is empty, does not exist, or is a folder without model.safetensors.
// The model file is watched (watch_run_model).
RunModel find_run_model(const std::string& run);

// A command that reads a run does not lock it (run_lock.h): a training may be writing it, which
// replaces model.safetensors atomically after every epoch. watch_run_model() remembers the
// file's identity (inode, size, modification time) as the command starts reading it;
// note_replaced_run_models() writes a note on `log` for each watched file replaced since (main
// calls it when a command has finished), so results from an older model do not go unnoticed.
void watch_run_model(const std::string& model_path);
void note_replaced_run_models(std::ostream& log);

}  // namespace cuvae
