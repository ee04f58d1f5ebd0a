// safetensors files: the checkpoint and interchange format (readable by PyTorch tooling).
//
// Layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value", ...}}
// padded with spaces to a multiple of 8, then the raw little-endian tensor data; offsets are
// relative to the first byte after the header. Writes are atomic: a temporary file in the
// same folder, fsync, rename, fsync of the folder; a reader never sees a half-written file.
// Reading is strict: every size, offset and dtype is checked against the file before any
// allocation, the tensors must tile the data area exactly (no overlap, no gap, nothing after
// the last one), and a corrupt file is a one-line InputError naming the file, never a crash.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace cuvae {

enum class DType { F32, F64, I64, I32, U8 };

const char* dtype_name(DType t);
size_t dtype_size(DType t);

struct TensorOut {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;  // shape product * dtype_size bytes, host memory
};

void write_safetensors(const std::string& path, const std::vector<TensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata);

struct TensorIn {
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  size_t numel() const;
};

struct SafetensorsFile {
  std::string path;
  std::map<std::string, TensorIn> tensors;
  std::map<std::string, std::string> metadata;

  // The tensor `name` with the given dtype and shape, else an InputError naming the file.
  const TensorIn& get(const std::string& name, DType dtype,
                      const std::vector<int64_t>& shape) const;
};

SafetensorsFile read_safetensors(const std::string& path);

// Same as read_safetensors, for file content already in memory; `path` only names the data in
// error messages and in the result.
SafetensorsFile parse_safetensors(const std::string& path, const uint8_t* data, size_t size);

// Text from a file (a tensor name, a metadata value) made fit for a one-line message: control
// characters escaped as \xNN, anything past `max` bytes cut and marked with "...".
std::string printable(const std::string& text, size_t max = 200);

}  // namespace cuvae
