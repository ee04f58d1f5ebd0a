// Helpers of the commands that use a trained model (model_cmd.h).
#include "host/app/model_cmd.h"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <utility>

#include "host/app/device_policy.h"
#include "host/core/error.h"
#include "host/core/text.h"

namespace cuvae {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void add_model_data_options(cxxopts::Options& options) {
  // clang-format off
  options.add_options()
    ("run", "run folder (its model.safetensors) or a .safetensors model file",
       cxxopts::value<std::string>(), "RUN")
    ("data", "folder with the MNIST-format IDX files",
       cxxopts::value<std::string>()->default_value("data/mnist"), "DIR")
    ("split", "test (t10k-* files) or train", cxxopts::value<std::string>()->default_value("test"), "SPLIT");
  // clang-format on
}

Split split_of(const std::string& s) {
  if (s == "test") return Split::Test;
  if (s == "train") return Split::Train;
  throw InputError("--split: expected 'test' or 'train', got " + quote_arg(s));
}

std::unique_ptr<Inference> make_engine(const LoadedModel& m, const std::string& device,
                                       bool explicit_device) {
  return make_inference(m.desc, m.params,
                        resolve_device(device, explicit_device, std::cerr).device);
}

double quantile(const std::vector<double>& sorted, double q) {
  const double pos = q * double(sorted.size() - 1);
  const size_t lo = size_t(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - double(lo)) * (sorted[hi] - sorted[lo]);
}

ImageProgress::ImageProgress(std::string what) : what_(std::move(what)) {}

void ImageProgress::show(int64_t done, int64_t total) {
  if (!line_.enabled() || (done < total && !line_.due())) return;
  const double s = seconds_since(t0_);
  std::string text = what_ + " " + with_commas(done) + "/" + with_commas(total) + " images";
  if (done > 0 && s > 0)
    text += ", " + fixed(double(done) / s, 0) + " images/s, " +
            fixed(double(total - done) * s / double(done), 0) + " s left";
  line_.show(text);
}

}  // namespace cuvae
