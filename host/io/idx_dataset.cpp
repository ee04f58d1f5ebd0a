// The MNIST files of a dataset folder (idx.h): their names, their lookup, and the checks that
// the two files of a split belong together (28x28 images, as many labels as images).
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "host/core/text.h"
#include "host/io/idx.h"
#include "host/io/idx_source.h"

namespace cuvae {
namespace {

namespace fs = std::filesystem;

using idx_detail::fail;

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

// True when the folder holds an entry of that name, whatever it is: a file, a folder, a
// symlink that loops or dangles. The loader then says what is wrong with it, where
// fs::exists() would call it missing.
bool has_entry(const std::string& path) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(path, ec));
}

// The raw file if it exists (the .gz one, if there too, goes into `unread`), else the .gz one,
// else nothing.
std::optional<std::string> find_idx_file(const std::string& dir, const std::string& name,
                                         std::vector<std::string>& unread) {
  const std::string raw = join_path(dir, name);
  const std::string gz = raw + ".gz";
  if (has_entry(raw)) {
    if (has_entry(gz)) unread.push_back(gz);
    return raw;
  }
  if (has_entry(gz)) return gz;
  return std::nullopt;
}

}  // namespace

const char* split_name(Split s) {
  return s == Split::Train ? "train" : "test";
}

std::string idx_images_name(Split s) {
  return s == Split::Train ? "train-images-idx3-ubyte" : "t10k-images-idx3-ubyte";
}

std::string idx_labels_name(Split s) {
  return s == Split::Train ? "train-labels-idx1-ubyte" : "t10k-labels-idx1-ubyte";
}

Dataset load_dataset(const std::string& dir, Split split) {
  const std::string where = dir.empty() ? "." : dir;
  const std::string fetch_hint =
      "run tools/fetch_mnist.sh --dest " + where + " to download MNIST there";
  std::error_code ec;
  const fs::file_status st = fs::status(where, ec);
  if (!fs::exists(st)) fail(where, "no such dataset folder (" + fetch_hint + ")");
  if (!fs::is_directory(st)) fail(where, "not a folder; --data expects the dataset folder");

  const std::string images_name = idx_images_name(split);
  const std::string labels_name = idx_labels_name(split);
  std::vector<std::string> unread;
  const std::optional<std::string> images_path = find_idx_file(where, images_name, unread);
  const std::optional<std::string> labels_path = find_idx_file(where, labels_name, unread);
  if (!images_path || !labels_path) {
    std::string missing;
    if (!images_path) missing = images_name + "[.gz]";
    if (!labels_path) missing += (missing.empty() ? "" : " and ") + labels_name + "[.gz]";
    fail(where, std::string("missing ") + missing + " (the MNIST " + split_name(split) +
                    " files; " + fetch_hint + ")");
  }

  Dataset data;
  data.unread_gz = std::move(unread);
  data.images = load_idx_images(*images_path);
  if (data.images.rows != 28 || data.images.cols != 28) {
    fail(*images_path, "images are " + std::to_string(data.images.rows) + "x" +
                           std::to_string(data.images.cols) + ", expected 28x28 (MNIST)");
  }
  data.labels = load_idx_labels(*labels_path);
  const auto label_count = static_cast<int64_t>(data.labels.labels.size());
  if (label_count != data.images.count) {
    fail(*images_path, "holds " + counted(data.images.count, "image") + " but " + *labels_path +
                           " holds " + counted(label_count, "label") + "; the counts must match");
  }
  return data;
}

}  // namespace cuvae
