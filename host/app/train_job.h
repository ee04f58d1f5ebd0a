// The steps of `cuvae train` once its flags are parsed (cmd_train.cpp parses them and resolves
// the run): load the data, prepare the run folder, print the start-up lines, start the run
// (fresh weights, config.json), train with an EpochReporter, finish. Private to host/app.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "host/app/cli_util.h"
#include "host/app/run_folder.h"
#include "host/app/run_lock.h"
#include "host/core/inference.h"
#include "host/core/model.h"
#include "host/core/train_types.h"
#include "host/gpu/device_info.h"
#include "host/io/checkpoint.h"
#include "host/io/idx.h"

namespace cuvae {

// One invocation of `cuvae train`: the run's settings (a resumed run's from its state file),
// where it runs and what it starts from.
struct TrainJob {
  TrainConfig cfg;  // device as chosen, out_dir the run folder
  GpuOptions gpu_opts;
  GpuInfo gpu;  // the GPU when cfg.device is "gpu"
  TrainRun run;
  TrainState state;
  RunLock lock;  // held from before the folder is looked at to the exit (run_lock.h)
  RunFolder folder;
  ModelDesc desc;
  bool resume = false;
  bool overwrite = false;         // --overwrite
  bool split_given = false;       // --train-split given (else the default or the run's)
  bool data_given = false;        // --data given (else the default or the run's)
  bool test_limit_given = false;  // --test-limit given
  int64_t test_limit = -1;        // test images scored per epoch (0: all; -1: device default)
  int snapshot_every = 0;         // --snapshot-every (0: off)
  int64_t resumed_from = 0;       // the epoch the state had completed when the run started
  int64_t start_step = 0;         // the state's step when this invocation started
};

// What a signal during training prints at once (interrupt.h): the step finishes first.
constexpr const char* kTrainingInterruptNote =
    "\ncuvae: stopping after the current step to write a checkpoint (signal again to quit at "
    "once)\n";

// The images of a run: trained on, and scored for the test loss.
struct TrainData {
  Dataset train;  // the training split (then the test split with train+test), cut to --limit
  Dataset test;   // the test split; empty without one
  bool have_test = false;
  int64_t test_trained = 0;  // the first test_trained test images are in the training set
  int64_t test_images = 0;   // test images scored each epoch
  int64_t test_seen = 0;     // of those, the ones trained on
  uint32_t train_crc = 0;    // image_checksum() of `train`
};

// Loads the data of --data (a resume: checks it is the run's) (train_data.cpp).
TrainData load_train_data(const TrainJob& job);
// Creates the run folder and checks it before any training time is spent; clears what killed
// runs left and, with --overwrite, the previous run's files (train_data.cpp).
void prepare_run_folder(const TrainJob& job);
// The start-up lines on stdout (train_data.cpp).
void print_banner(const TrainJob& job, const TrainData& data);
// Fresh weights for a new run, the run's record for train_state, config.json (train_data.cpp).
void start_run(TrainJob& job, const TrainData& data);

// After every epoch: the test loss, the checkpoint, the metrics row, the epoch line and the
// snapshot pictures; during it, the live progress line (train_epochs.cpp).
class EpochReporter {
 public:
  // Opens metrics.csv (keeping the rows of the epochs the state has completed) and the
  // inference engine for the test loss and the pictures.
  EpochReporter(const TrainJob& job, const TrainData& data);
  EpochCallback on_epoch();
  StepCallback on_step();  // empty when there is no terminal to show progress on
  ProgressLine& progress() { return progress_; }
  // The final pictures, with the weights at the end of training (copied to the _epochN names
  // when a snapshot is due after the last epoch), and curves.png; false when curves.png could
  // not be drawn (a warning said why). A signal stops the drawing (Interrupted).
  bool final_pictures();

 private:
  void epoch_done(const EpochMetrics& m);
  bool snapshot_due(int64_t epoch) const;  // --snapshot-every's pictures after this epoch
  void step_done(const StepProgress& p);
  void print_epoch_line(const EpochMetrics& m, double test_loss);

  const TrainJob& job_;
  const TrainData& data_;
  MetricsCsv csv_;
  std::unique_ptr<Inference> model_;
  Dataset shown_train_;  // without a test split, the first training images for the pictures
  const Dataset& shown_;
  Split shown_split_;  // the split shown_ comes from
  ProgressLine progress_;
};

// Trains to cfg.epochs; false when a signal (interrupt.h) stopped it between steps. A diverged
// run's error says which checkpoint stays (train_epochs.cpp).
bool run_training(TrainJob& job, const TrainData& data, EpochReporter& reporter);
// The end: after a stop, the checkpoint and how to resume (exit 128 + the signal); else the
// final pictures and the summary line (exit 0; a signal while they are drawn stops them, exit
// 128 + the signal) (train_epochs.cpp).
int finish_training(const TrainJob& job, EpochReporter& reporter, bool finished);

}  // namespace cuvae
