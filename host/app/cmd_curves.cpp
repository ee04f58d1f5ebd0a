// `cuvae curves`: the training curves of one run, or of several side by side, from their
// metrics.csv (curves.h draws them; `cuvae train` writes RUN/curves.png itself at the end).
// RUN is a run folder. One line on stdout naming the file written; every bad flag or file is an
// InputError (exit 2) before anything is written.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "host/app/cli.h"
#include "host/app/cli_util.h"
#include "host/app/commands.h"
#include "host/app/run_folder.h"
#include "host/core/error.h"
#include "host/eval/curves.h"
#include "host/io/metrics_csv.h"

namespace cuvae {
namespace {

namespace fs = std::filesystem;

cxxopts::Options curves_options() {
  cxxopts::Options options(
      "cuvae curves",
      "Draw the training curves (loss, reconstruction, test loss and KL per epoch) of a run from "
      "its metrics.csv, or compare several runs.");
  // clang-format off
  options.add_options()
    ("run", "run folder(s) holding metrics.csv", cxxopts::value<std::string>(), "RUN")
    ("out", "PNG file to write (default: RUN/curves.png; required with several runs)",
       cxxopts::value<std::string>(), "FILE")
    ("h,help", "show this help");
  // clang-format on
  options.parse_positional({"run"});
  options.positional_help("RUN [RUN2 ...]");
  return options;
}

constexpr const char* kCurvesHelpNotes =
    "\nOne run: a panel with the loss, the reconstruction and the test loss, and one with the "
    "KL term\n(about 20x smaller, on its own scale). Several runs (at most 10): a panel per "
    "quantity and one\ncolour per run, named after its folder.\n";

// The metrics file of a RUN argument: RUN/metrics.csv.
std::string metrics_of(const std::string& run) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(run, ec))) throw InputError(run + ": no such run folder");
  if (!fs::is_directory(run, ec)) throw InputError(run + ": not a run folder (expected a folder)");
  const std::string path = (fs::path(run) / RunFolder::kMetricsFile).string();
  if (!entry_exists(path))
    throw InputError(run + ": no " + std::string(RunFolder::kMetricsFile) +
                     " in this folder (not a cuvae run folder, or no epoch trained yet?)");
  return path;
}

}  // namespace

int cmd_curves(int argc, char** argv) {
  cxxopts::Options options = curves_options();
  const cxxopts::ParseResult r = parse_or_throw(options, argc, argv, true);
  if (r.count("help")) {
    std::cout << options.help() << kCurvesHelpNotes;
    return 0;
  }
  if (!r.count("run"))
    throw InputError(
        "RUN: missing the run folder (usage: cuvae curves RUN [RUN2 ...] [--out FILE], see "
        "--help)");
  std::vector<std::string> runs = {r["run"].as<std::string>()};
  for (const std::string& more : r.unmatched()) runs.push_back(more);
  if (int(runs.size()) > kMaxCurveRuns)
    throw InputError("RUN: at most " + std::to_string(kMaxCurveRuns) + " runs, got " +
                     std::to_string(runs.size()));
  for (const std::string& run : runs)
    if (run.empty()) throw InputError("RUN: empty path");
  std::string out;
  if (r.count("out")) {
    out = r["out"].as<std::string>();
  } else {
    if (runs.size() > 1)
      throw InputError("--out: required when comparing " + std::to_string(runs.size()) +
                       " runs (the PNG file to write)");
    out = (fs::path(runs[0]) / "curves.png").string();
  }
  std::vector<std::string> paths;
  for (const std::string& run : runs) paths.push_back(metrics_of(run));
  check_output_path("--out", out, "PNG file");

  // Named by their folders; where two share a name, by the paths as given.
  std::set<std::string> names, repeated;
  for (const std::string& run : runs)
    if (!names.insert(folder_name(run)).second) repeated.insert(folder_name(run));
  std::vector<CurveRun> curves;
  int64_t epochs = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    const std::string name = folder_name(runs[i]);
    curves.push_back({repeated.count(name) ? runs[i] : name, read_metrics_csv(paths[i])});
    if (curves.back().log.rows.empty())
      throw InputError(paths[i] + ": no epochs yet (only the header): no curves to draw");
    epochs = std::max<int64_t>(epochs, int64_t(curves.back().log.rows.size()));
  }
  write_curves_png(out, curves);
  std::cout << "cuvae: wrote " << out << " (training curves of "
            << (runs.size() == 1 ? curves[0].name : std::to_string(runs.size()) + " runs") << ", "
            << with_commas(epochs) << (epochs == 1 ? " epoch" : " epochs")
            << (runs.size() > 1 ? " at most" : "") << ")\n";
  return 0;
}

}  // namespace cuvae
