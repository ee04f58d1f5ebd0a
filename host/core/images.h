// Images and labels in memory, as the IDX loader (host/io/idx.h) returns them and the trainers,
// checkpoints and pictures read them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cuvae {

// Images from an IDX3 file: count images of rows x cols unsigned bytes.
struct ImageSet {
  std::string path;
  int64_t count = 0;
  int rows = 0;
  int cols = 0;
  std::vector<uint8_t> pixels;  // count * rows * cols bytes, row-major, image after image
};

// Labels from an IDX1 file; every label is 0..9.
struct LabelSet {
  std::string path;
  std::vector<uint8_t> labels;
};

}  // namespace cuvae
