// The run folder's files and the RUN lookup (run_folder.h).
#include "host/app/run_folder.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>
#include <vector>

#include "host/app/cli_util.h"
#include "host/core/error.h"
#include "host/core/text.h"
#include "host/eval/curves.h"
#include "host/eval/pictures.h"
#include "host/io/atomic_file.h"

namespace cuvae {
namespace {

namespace fs = std::filesystem;

// Picture families write_run_pictures() writes (pictures.h); --overwrite removes old ones.
// The same for write_curves() and for `cuvae anomaly`'s default picture, drawn from the old run.
constexpr const char* kPicturePrefixes[] = {"grid_15", "grid_30", "scatter", "reconstructions",
                                            "samples", "curves",  "anomaly"};

// The pictures write_run_pictures() draws (pictures.h), without their suffix.
constexpr const char* kRunPictures[] = {"grid_15", "grid_30", "scatter", "reconstructions",
                                        "samples"};

}  // namespace

bool entry_exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(path, ec));
}

MetricsCsv::MetricsCsv(const std::string& path, int64_t keep_through_epoch, bool resume,
                       double beta)
    : path_(path) {
  std::string kept = std::string(kHeader) + "\n";
  if (resume) {
    std::ifstream in(path);
    if (!in) {
      std::cout << "cuvae: note: " << path << " is missing; starting it afresh\n";
    } else {
      std::string line;
      std::getline(in, line);
      const bool no_weight = line == kHeaderNoWeight;
      if (line != kHeader && !no_weight)
        throw InputError(path + ": unexpected header '" + line + "', expected '" + kHeader + "'");
      // A row cut short by a kill has fewer fields than the header: dropped.
      const auto fields = std::count(line.begin(), line.end(), ',');
      std::ostringstream weight;
      weight.precision(9);
      weight << ',' << beta;
      while (std::getline(in, line)) {
        const long epoch = std::strtol(line.c_str(), nullptr, 10);
        if (epoch >= 1 && epoch <= keep_through_epoch &&
            std::count(line.begin(), line.end(), ',') == fields)
          kept += line + (no_weight ? weight.str() : "") + "\n";
      }
    }
  }
  // Rewritten whole, then renamed over the old file: a crash keeps the old rows.
  write_text_atomically(path, kept);
  out_.open(path, std::ios::app);
  if (!out_) throw InputError(path + ": cannot open the metrics file");
}

void MetricsCsv::add(const EpochMetrics& m, double test_loss) {
  // The row goes out in one write, so a kill leaves it whole or absent.
  std::ostringstream row;
  row.precision(9);
  row << m.epoch << ',' << m.loss << ',' << m.recon << ',' << m.kl << ',';
  if (std::isfinite(test_loss)) row << test_loss;
  row << ',' << m.images << ',' << m.steps << ',' << m.images_per_s << ',' << m.seconds << ','
      << m.kl_weight << '\n';
  out_ << row.str();
  out_.flush();
  if (!out_) throw InputError(path_ + ": cannot write the metrics file");
}

void RunFolder::create() const {
  std::error_code ec;
  // A file where the folder or one of its parents should be: say so, not "Not a directory".
  for (fs::path p = fs::path(dir_).lexically_normal(); !p.empty(); p = p.parent_path()) {
    const fs::file_status st = fs::status(p, ec);
    if (fs::exists(st) && !fs::is_directory(st))
      throw InputError(
          "--out " + dir_ + ": " +
          (p == fs::path(dir_).lexically_normal() ? std::string("is") : p.string() + " is") +
          " a file, not a folder (--out names the run folder)");
    if (fs::exists(st) || p == p.parent_path()) break;
  }
  fs::create_directories(dir_, ec);
  if (ec) throw InputError("--out " + dir_ + ": cannot create the folder: " + ec.message());
  if (!fs::is_directory(dir_)) throw InputError("--out " + dir_ + ": exists and is not a folder");
  const std::string probe = dir_ + "/.cuvae-write-test";
  std::FILE* f = std::fopen(probe.c_str(), "wb");
  if (!f) throw InputError("--out " + dir_ + ": cannot write there: " + std::strerror(errno));
  std::fclose(f);
  std::remove(probe.c_str());
}

uint64_t RunFolder::state_file_bytes(size_t num_params) {
  return uint64_t(num_params) * sizeof(float) * 3 + (64 << 10);
}

uint64_t RunFolder::checkpoint_bytes(size_t num_params) {
  const uint64_t state_bytes = state_file_bytes(num_params);
  const uint64_t model_bytes = uint64_t(num_params) * sizeof(float) + (16 << 10);
  return 2 * (state_bytes + model_bytes) + (4 << 20);
}

void RunFolder::require_free_space(size_t num_params) const {
  struct statvfs fs_info {};
  if (::statvfs(dir_.c_str(), &fs_info) != 0) return;  // cannot tell: find out when writing
  const uint64_t free_bytes = uint64_t(fs_info.f_bavail) * fs_info.f_frsize;
  const uint64_t need = checkpoint_bytes(num_params);
  if (free_bytes < need)
    throw InputError("--out " + dir_ + ": only " + with_commas(int64_t(free_bytes >> 10)) +
                     " KiB free; a checkpoint and the pictures need about " +
                     with_commas(int64_t(need >> 10)) + " KiB");
}

void RunFolder::require_file_size_limit(size_t num_params) const {
  struct rlimit limit {};
  if (::getrlimit(RLIMIT_FSIZE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return;
  const uint64_t need = state_file_bytes(num_params);  // the largest file a run writes
  if (uint64_t(limit.rlim_cur) < need)
    throw InputError("--out " + dir_ + ": the file-size limit (ulimit -f) is " +
                     with_commas(int64_t(limit.rlim_cur >> 10)) + " KiB, but " + kStateFile +
                     " takes about " + with_commas(int64_t(need >> 10)) + " KiB; raise the limit");
}

void RunFolder::clear_stale_temporaries(std::ostream& log) const {
  if (const int stale = remove_stale_temporaries(dir_))
    log << "cuvae: removed " << stale << " temporary file" << (stale == 1 ? "" : "s")
        << " an earlier, killed run left in " << dir_ << "\n";
}

void RunFolder::clear_old_run() const {
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    bool ours = name == kStateFile || name == kModelFile;
    if (e.path().extension() == ".png")
      for (const char* prefix : kPicturePrefixes) ours = ours || name.rfind(prefix, 0) == 0;
    if (ours && e.is_regular_file()) fs::remove(e.path(), ec);
  }
}

void RunFolder::write_config(const nlohmann::json& config) const {
  write_text_atomically(config_path(), config.dump(2) + "\n");
}

void RunFolder::save_checkpoint(const ModelDesc& desc, const TrainRun& run, const TrainState& state,
                                double beta) const {
  save_train_state(state_path(), desc, run, state);
  save_model(model_path(), desc, state.params, beta);
}

void RunFolder::write_pictures(Inference& model, const Dataset& shown, Split split,
                               const std::string& suffix, uint64_t seed) const {
  write_run_pictures(dir_, model, shown, suffix, seed, split);
}

void RunFolder::copy_pictures(const std::string& suffix) const {
  for (const char* family : kRunPictures) {
    const std::string from = file(family) + ".png";
    std::error_code ec;
    if (!fs::is_regular_file(from, ec)) continue;  // no scatter without images to show, say
    std::ifstream in(from, std::ios::binary);
    std::ostringstream bytes;
    bytes << in.rdbuf();
    if (!in) throw InputError(from + ": cannot read the picture back to copy it");
    write_text_atomically(file(family) + suffix + ".png", bytes.str());
  }
}

bool RunFolder::write_curves(std::ostream& log) const {
  try {
    write_curves_png(curves_path(), {{folder_name(dir_), read_metrics_csv(metrics_path())}});
    return true;
  } catch (const std::exception& e) {
    log << "cuvae: warning: " << kCurvesFile << " not drawn (the run is saved): " << e.what()
        << "\n";
    return false;
  }
}

RunModel find_run_model(const std::string& run) {
  if (run.empty()) throw InputError("RUN: empty path");
  std::error_code ec;
  if (fs::is_directory(run, ec)) {
    const std::string model = (fs::path(run) / RunFolder::kModelFile).string();
    if (!entry_exists(model))
      throw InputError(run + ": no " + RunFolder::kModelFile +
                       " in this folder (not a cuvae run folder?)");
    watch_run_model(model);
    return {model, run};
  }
  if (!entry_exists(run)) throw InputError(run + ": no such run folder or model file");
  const std::string dir = fs::path(run).parent_path().string();
  watch_run_model(run);
  return {run, dir.empty() ? "." : dir};
}

namespace {

struct FileIdentity {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  timespec mtime{};
  bool operator==(const FileIdentity& o) const {
    return dev == o.dev && ino == o.ino && size == o.size && mtime.tv_sec == o.mtime.tv_sec &&
           mtime.tv_nsec == o.mtime.tv_nsec;
  }
};

std::optional<FileIdentity> identity(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return FileIdentity{st.st_dev, st.st_ino, st.st_size, st.st_mtim};
}

// The model files this process reads and what they were when it started reading them.
std::vector<std::pair<std::string, std::optional<FileIdentity>>>& watched_models() {
  static std::vector<std::pair<std::string, std::optional<FileIdentity>>> watched;
  return watched;
}

}  // namespace

void watch_run_model(const std::string& model_path) {
  watched_models().emplace_back(model_path, identity(model_path));
}

void note_replaced_run_models(std::ostream& log) {
  for (const auto& [path, then] : watched_models())
    if (then && !(identity(path) == then))
      log << "cuvae: note: " << path
          << " was replaced while this command ran (a training writes it after every epoch); "
             "the results are from the model as it was when the command read it\n";
}

}  // namespace cuvae
