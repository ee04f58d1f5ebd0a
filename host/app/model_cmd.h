// Helpers of the commands that use a trained model on a dataset split (eval, encode): the
// --split flag, the engine the device policy picks, a quantile and the images progress line.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "host/app/cli_util.h"
#include "host/core/inference.h"
#include "host/io/checkpoint.h"
#include "host/io/idx.h"

namespace cuvae {

double seconds_since(std::chrono::steady_clock::time_point t0);

// The options RUN (positional), --data DIR and --split, first in a model command's help.
void add_model_data_options(cxxopts::Options& options);

// --split: "test" or "train"; anything else is an InputError naming the flag.
Split split_of(const std::string& s);

// The engine for `device` as every command picks it (resolve_device); notes go to stderr, as
// stdout holds the results.
std::unique_ptr<Inference> make_engine(const LoadedModel& m, const std::string& device,
                                       bool explicit_device);

// Linear-interpolated quantile (numpy's default) of sorted, non-empty values; q in [0, 1].
double quantile(const std::vector<double>& sorted, double q);

// The progress of a pass over the images on the shared progress line (stderr: stdout holds
// the results): "<what> done/total images, R images/s, S s left".
class ImageProgress {
 public:
  explicit ImageProgress(std::string what);
  void show(int64_t done, int64_t total);

 private:
  std::string what_;
  ProgressLine line_{ProgressLine::Stream::Stderr};
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
};

}  // namespace cuvae
