// `cuvae train` from the first step on (train_job.h): the epoch reporter (test loss,
// checkpoint, metrics row, epoch line, snapshots, the live progress line), the trainer call and
// the end of the run, after a signal or not.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "host/app/cli_util.h"
#include "host/app/train_job.h"
#include "host/core/error.h"
#include "host/core/interrupt.h"
#include "host/cpu/trainer_cpu.h"
#include "host/eval/evaluate.h"
#include "host/gpu/trainer_gpu.h"

namespace cuvae {
namespace {

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

// The scatter and the reconstructions show the test split or, without one, the first 10,000
// training images (the scatter encodes all it is given): those, or nothing with a test split.
Dataset shown_training_images(const TrainData& data) {
  if (data.have_test) return {};
  Dataset shown = data.train;
  const int64_t n = std::min<int64_t>(shown.images.count, 10000);
  shown.images.count = n;
  shown.images.pixels.resize(size_t(n) * kImagePixels);
  shown.labels.labels.resize(size_t(n));
  return shown;
}

}  // namespace

// One inference engine for the test loss and the pictures; its weights are replaced after
// every epoch.
EpochReporter::EpochReporter(const TrainJob& job, const TrainData& data)
    : job_(job),
      data_(data),
      csv_(job.folder.open_metrics(job.resumed_from, job.resume, job.cfg.beta)),
      model_(make_inference(job.desc, job.state.params, job.cfg.device)),
      shown_train_(shown_training_images(data)),
      shown_(data.have_test ? data.test : shown_train_),
      shown_split_(data.have_test ? Split::Test : Split::Train) {}

EpochCallback EpochReporter::on_epoch() {
  return [this](const EpochMetrics& m) { epoch_done(m); };
}

StepCallback EpochReporter::on_step() {
  // No per-step callback at all when there is no terminal to show it on.
  if (!progress_.enabled()) return StepCallback();
  return [this](const StepProgress& p) { step_done(p); };
}

void EpochReporter::step_done(const StepProgress& p) {
  if (!progress_.due() && p.step != p.steps) return;
  const int epochs = job_.cfg.epochs;
  std::string line = "epoch " + std::to_string(p.epoch) + "/" + std::to_string(epochs) + "  step " +
                     std::to_string(p.step) + "/" + std::to_string(p.steps);
  if (std::isfinite(p.loss)) line += "  loss " + fixed(p.loss, 1);
  if (p.seconds > 0) {
    const int64_t n_train = data_.train.images.count;
    const double rate = double(p.images) / p.seconds;
    const double left = double(n_train - p.images) + double(epochs - p.epoch) * n_train;
    line +=
        "  " + with_commas(int64_t(std::llround(rate))) + " img/s  ETA " + clock_text(left / rate);
  }
  progress_.show(line);
}

bool EpochReporter::snapshot_due(int64_t epoch) const {
  return job_.snapshot_every > 0 && epoch % job_.snapshot_every == 0;
}

void EpochReporter::epoch_done(const EpochMetrics& m) {
  // The last epoch's snapshot is a copy of the final pictures, drawn once after training.
  const bool snapshot = snapshot_due(m.epoch) && m.epoch < job_.cfg.epochs;
  const std::string epoch_of =
      "epoch " + std::to_string(m.epoch) + "/" + std::to_string(job_.cfg.epochs);
  double test_loss = std::nan("");
  if (data_.have_test || snapshot) model_->set_params(job_.state.params.data());
  if (data_.have_test) {
    progress_.show(epoch_of + "  test loss on " + counted(data_.test_images, "image") + " ...");
    try {
      test_loss = evaluate_elbo(*model_, data_.test.images, job_.cfg.seed, job_.test_limit)
                      .loss(job_.cfg.beta);
    } catch (const Interrupted&) {
      // A signal: the epoch is saved without its test loss (an empty column), then the trainer
      // stops before its next step.
    }
  }
  job_.folder.save_checkpoint(job_.desc, job_.run, job_.state, job_.cfg.beta);
  csv_.add(m, test_loss);
  progress_.clear();
  print_epoch_line(m, test_loss);
  if (snapshot && interrupt_signal() == 0) {
    progress_.show(epoch_of + "  pictures ...");
    try {
      job_.folder.write_pictures(*model_, shown_, shown_split_, "_epoch" + std::to_string(m.epoch),
                                 job_.cfg.seed);
    } catch (const Interrupted&) {
      progress_.clear();
      std::cerr << "cuvae: the pictures of epoch " << m.epoch << " were not all drawn\n";
      return;
    }
    progress_.clear();
    job_.folder.write_curves(std::cerr);  // the curves so far
  }
}

void EpochReporter::print_epoch_line(const EpochMetrics& m, double test_loss) {
  const size_t width = std::to_string(job_.cfg.epochs).size();
  std::string e = std::to_string(m.epoch);
  e.insert(0, width - std::min(e.size(), width), ' ');
  std::cout << "epoch " << e << "/" << job_.cfg.epochs << "  loss " << fixed(m.loss, 4)
            << "  reconstruction " << fixed(m.recon, 4) << "  kl " << fixed(m.kl, 4);
  if (m.kl_weight != job_.cfg.beta) std::cout << "  kl_weight " << fixed(m.kl_weight, 4);
  if (data_.have_test && !std::isfinite(test_loss))
    std::cout << "  test_loss not measured (stopped)";
  else if (data_.have_test)
    std::cout << "  test_loss " << fixed(test_loss, 4)
              << (data_.test_seen == 0                   ? ""
                  : data_.test_seen == data_.test_images ? " (seen in training)"
                                                         : " (partly seen in training)");
  std::cout << "  images/s " << fixed(m.images_per_s, 0) << "  (" << fixed(m.seconds, 1) << " s)\n"
            << std::flush;
}

bool EpochReporter::final_pictures() {
  model_->set_params(job_.state.params.data());
  progress_.show("pictures ...");
  // The curves first: they need no model, and a failure is only a warning.
  const bool curves = job_.folder.write_curves(std::cerr);
  job_.folder.write_pictures(*model_, shown_, shown_split_, "", job_.cfg.seed);
  if (snapshot_due(job_.cfg.epochs))
    job_.folder.copy_pictures("_epoch" + std::to_string(job_.cfg.epochs));
  progress_.clear();
  return curves;
}

bool run_training(TrainJob& job, const TrainData& data, EpochReporter& reporter) {
  const StopCheck stop = [] { return interrupt_signal() != 0; };
  const int64_t good_epoch_at_start = job.state.epoch;
  const EpochCallback on_epoch = reporter.on_epoch();
  const StepCallback on_step = reporter.on_step();
  try {
    if (job.cfg.device == "gpu")
      return train_gpu(job.cfg, job.gpu_opts, job.desc, data.train.images, job.state, on_epoch,
                       on_step, stop);
    return train_cpu(job.cfg, job.desc, data.train.images, job.state, on_epoch, on_step, stop);
  } catch (const TrainingDiverged& e) {
    reporter.progress().clear();
    // on_epoch saved every completed epoch; nothing of the failing one reached the disk.
    const bool saved = job.folder.has_state();
    const int64_t good = saved ? std::max(good_epoch_at_start, job.state.epoch) : 0;
    throw TrainingDiverged(
        std::string(e.what()) + "; " +
        (saved ? "the last good checkpoint (" +
                     (good > 0 ? "after epoch " + std::to_string(good) : "the resumed state") +
                     ") stays in " + job.folder.state_path()
               : "no checkpoint was written"));
  }
}

int finish_training(const TrainJob& job, EpochReporter& reporter, bool finished) {
  const RunFolder& folder = job.folder;
  const TrainState& state = job.state;
  const int sig = interrupt_signal();
  const std::string redraw =
      "(cuvae grid, scatter, reconstruct, sample and curves draw them from the run)";
  if (!finished) {
    reporter.progress().clear();
    if (state.step == job.start_step)  // stopped before its first step: nothing to save
      throw Interrupted(sig, signal_name(sig) + ": stopped before training started; " +
                                 (job.resume ? folder.state_path() + " is as it was"
                                             : std::string("no checkpoint written")));
    // Stopped by a signal between steps: the state is consistent, save it and say how to
    // go on.
    folder.save_checkpoint(job.desc, job.run, state, job.cfg.beta);
    const std::string where = state.epoch_step > 0
                                  ? "in epoch " + std::to_string(state.epoch + 1) +
                                        " after its step " + std::to_string(state.epoch_step)
                                  : "after epoch " + std::to_string(state.epoch);
    std::cerr << "cuvae: " << signal_name(sig) << ": stopped " << where << " (step "
              << with_commas(state.step) << "); wrote " << folder.state_path() << " and "
              << folder.model_path() << "\ncuvae: resume with: cuvae train --resume "
              << folder.dir() << "\n";
    return 128 + sig;
  }
  if (sig != 0) {
    std::cerr << "cuvae: " << signal_name(sig) << ": training had finished and "
              << folder.state_path() << " is complete; the final pictures were not drawn " << redraw
              << "\n";
    return 128 + sig;
  }
  bool curves = false;
  try {
    curves = reporter.final_pictures();
  } catch (const Interrupted& e) {
    reporter.progress().clear();
    std::cerr << "cuvae: " << signal_name(e.signal()) << ": training had finished and "
              << folder.state_path() << " is complete; stopped drawing the final pictures "
              << "(those written are whole) " << redraw << "\n";
    return 128 + e.signal();
  }
  std::cout << "cuvae: wrote " << folder.model_path() << ", " << folder.state_path() << ", "
            << folder.metrics_path() << ", " << folder.config_path() << " and the pictures"
            << (curves ? " (" + std::string(RunFolder::kCurvesFile) + " too)" : "") << "\n";
  return 0;
}

}  // namespace cuvae
