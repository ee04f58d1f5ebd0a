// IDX file loading (the MNIST container format).
//
// Owns reading IDX3 image files and IDX1 label files, raw or gzip-compressed, with full
// validation of the header and payload, and locating the four standard MNIST files in a
// dataset folder. Every problem with a file is reported as a one-line cuvae::InputError
// whose message reads "<file path>: <what is wrong>".
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "host/core/images.h"

namespace cuvae {

// Largest payload (pixel or label bytes) a file may declare, 2^31 - 1; larger headers are
// rejected before anything is allocated.
constexpr int64_t kMaxIdxPayloadBytes = (int64_t{1} << 31) - 1;

// Loads an IDX3 unsigned-byte image file (magic 0x00000803), raw or gzip-compressed
// (detected by the 1f 8b magic bytes, not by the name). Throws InputError.
ImageSet load_idx_images(const std::string& path);

// Loads an IDX1 unsigned-byte label file (magic 0x00000801) whose labels are all 0..9,
// raw or gzip-compressed. Throws InputError.
LabelSet load_idx_labels(const std::string& path);

// Same as the loaders above, but parse file content already in memory (raw or gzip bytes).
// `path` is only used to name the data in error messages and in the result.
ImageSet parse_idx_images(const std::string& path, const std::vector<uint8_t>& bytes);
LabelSet parse_idx_labels(const std::string& path, const std::vector<uint8_t>& bytes);

enum class Split { Train, Test };

struct Dataset {
  ImageSet images;
  LabelSet labels;
  // The .gz files left unread because the raw file of the same name is there too (the
  // commands say so in a note).
  std::vector<std::string> unread_gz;
  int64_t size() const { return images.count; }
};

// Finds <dir>/train-images-idx3-ubyte[.gz] and <dir>/train-labels-idx1-ubyte[.gz] (or the
// t10k-... files for Split::Test), preferring the raw file when both forms exist (the .gz one
// then goes into unread_gz). Requires 28x28 images and as many labels as images. Throws
// InputError.
Dataset load_dataset(const std::string& dir, Split split);

// "train" / "test".
const char* split_name(Split s);

// Standard file names (without .gz) of a split: "train-images-idx3-ubyte", ...
std::string idx_images_name(Split s);
std::string idx_labels_name(Split s);

}  // namespace cuvae
