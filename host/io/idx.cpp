// IDX loader implementation: the header and the payload.
//
// Owns IDX header validation (magic, element type, dimension count, dimensions), payload reading
// that never allocates more than the data can justify, label range checks and the four public
// loaders. The bytes come from idx_source.h (a file, memory, gzip over either); the lookup of
// the MNIST files in a dataset folder is idx_dataset.cpp.
#include "host/io/idx.h"

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "host/core/error.h"
#include "host/core/interrupt.h"
#include "host/io/idx_source.h"

namespace cuvae {
namespace {

using idx_detail::ByteSource;
using idx_detail::fail;
using idx_detail::FileSource;
using idx_detail::GzipSource;
using idx_detail::MemorySource;

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", v);
  return buf;
}

std::string hex8(uint8_t v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", v);
  return buf;
}

const char* element_type_name(uint8_t t) {
  switch (t) {
    case 0x08:
      return "unsigned byte";
    case 0x09:
      return "signed byte";
    case 0x0B:
      return "short";
    case 0x0C:
      return "int";
    case 0x0D:
      return "float";
    case 0x0E:
      return "double";
    default:
      return "unknown type";
  }
}

struct IdxSpec {
  uint8_t ndims;
  const char* description;  // e.g. "IDX3 unsigned-byte images"
  const char* unit;         // "pixels" / "labels"
  const char* other_kind;   // hint when the dimension count matches the other file kind
  uint8_t other_ndims;
};

constexpr IdxSpec kImagesSpec{3, "IDX3 unsigned-byte images", "pixels", "a label file", 1};
constexpr IdxSpec kLabelsSpec{1, "IDX1 unsigned-byte labels", "labels", "an image file", 3};

struct IdxContent {
  std::vector<uint32_t> dims;
  std::vector<uint8_t> data;
};

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

std::string dims_text(const std::vector<uint32_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) s += " x ";
    s += std::to_string(dims[i]);
  }
  return s;
}

// "an IDX3 header is 16 bytes": the note truncated-header messages carry.
std::string header_note(const IdxSpec& spec) {
  const size_t header_size = 4 + 4 * size_t{spec.ndims};
  return "an IDX" + std::to_string(spec.ndims) + " header is " + std::to_string(header_size) +
         " bytes";
}

// The magic number: two zero bytes, the unsigned-byte element type, spec's dimension count.
// data_word names what ran short ("file" or "decompressed data").
void read_magic(ByteSource& src, const std::string& path, const IdxSpec& spec, bool gzip,
                const std::string& data_word) {
  uint8_t head[4];
  const size_t got_magic = src.read(head, 4);
  if (got_magic == 0) {
    fail(path, gzip ? "empty: the gzip data decompresses to 0 bytes" : "empty file (0 bytes)");
  }
  if (got_magic < 4) {
    fail(path, "truncated header: " + data_word + " ends after " + std::to_string(got_magic) +
                   " bytes, inside the magic number (" + header_note(spec) + ")");
  }
  const uint32_t magic = read_be32(head);
  const uint32_t expected_magic = 0x00000800u | spec.ndims;
  const std::string bad_magic = "bad magic " + hex32(magic) + ", expected " +
                                hex32(expected_magic) + " (" + spec.description + ")";
  if (head[0] != 0 || head[1] != 0) {
    fail(path, bad_magic + ": the first two bytes must be zero; not an IDX file");
  }
  if (head[2] != 0x08) {
    fail(path, bad_magic + ": element type " + hex8(head[2]) + " (" + element_type_name(head[2]) +
                   "), expected 0x08 (unsigned byte)");
  }
  if (head[3] != spec.ndims) {
    std::string what = bad_magic + ": " + std::to_string(head[3]) + " dimension" +
                       (head[3] == 1 ? "" : "s") + ", expected " + std::to_string(spec.ndims);
    if (head[3] == spec.other_ndims) what += std::string(" (is this ") + spec.other_kind + "?)";
    fail(path, what);
  }
}

// The header's dimensions after the magic, each non-zero.
std::vector<uint32_t> read_dims(ByteSource& src, const std::string& path, const IdxSpec& spec,
                                const std::string& data_word) {
  uint8_t dim_bytes[12];
  const size_t dims_size = 4 * size_t{spec.ndims};
  const size_t got_dims = src.read(dim_bytes, dims_size);
  if (got_dims < dims_size) {
    fail(path, "truncated header: " + data_word + " ends after " + std::to_string(4 + got_dims) +
                   " bytes, inside dimension " + std::to_string(got_dims / 4 + 1) + " of " +
                   std::to_string(spec.ndims) + " (" + header_note(spec) + ")");
  }
  std::vector<uint32_t> dims(spec.ndims);
  for (size_t i = 0; i < spec.ndims; ++i) dims[i] = read_be32(dim_bytes + 4 * i);

  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == 0) {
      fail(path, "dimension " + std::to_string(i + 1) + " is zero (header declares " +
                     dims_text(dims) + ")");
    }
  }
  return dims;
}

// The payload's byte count (the product of the dimensions), at most kMaxIdxPayloadBytes.
uint64_t declared_bytes(const std::string& path, const IdxSpec& spec,
                        const std::vector<uint32_t>& dims) {
  uint64_t declared = 1;
  bool overflow = false;
  for (uint32_t d : dims) overflow |= __builtin_mul_overflow(declared, uint64_t{d}, &declared);
  if (overflow) {
    fail(path, "header declares " + dims_text(dims) + " " + spec.unit +
                   ", whose byte count overflows 64 bits");
  }
  if (declared > static_cast<uint64_t>(kMaxIdxPayloadBytes)) {
    const std::string product = dims.size() > 1 ? " = " + std::to_string(declared) : "";
    fail(path, "header declares " + dims_text(dims) + product + " bytes of " + spec.unit +
                   ", over the limit of " + std::to_string(kMaxIdxPayloadBytes) + " bytes");
  }
  return declared;
}

// Exactly `declared` payload bytes and then the end of the data; a source that knows its size
// is checked before anything is allocated.
std::vector<uint8_t> read_payload(ByteSource& src, const std::string& path, const IdxSpec& spec,
                                  uint64_t declared, const std::string& data_word) {
  const std::string declares =
      "header declares " + std::to_string(declared) + " bytes of " + spec.unit;
  const std::optional<uint64_t> known = src.remaining();
  if (known && *known < declared) {
    fail(path, "truncated: " + declares + ", " + data_word + " has " + std::to_string(*known));
  }
  if (known && *known > declared) {
    fail(path, "trailing data: " + declares + ", " + data_word + " has " + std::to_string(*known) +
                   " (" + std::to_string(*known - declared) + " extra)");
  }

  // When the size is unknown (gzip), grow the buffer only as data actually arrives.
  std::vector<uint8_t> data;
  const uint64_t chunk = known ? declared : uint64_t{1} << 20;
  while (data.size() < declared) {
    check_interrupt();  // between megabytes of a gzip file
    const size_t old = data.size();
    const size_t want = static_cast<size_t>(std::min<uint64_t>(chunk, declared - old));
    data.resize(old + want);
    const size_t got = src.read(data.data() + old, want);
    if (got < want) {
      fail(path, "truncated: " + declares + ", " + data_word + " has " + std::to_string(old + got));
    }
  }
  uint8_t extra;
  if (src.read(&extra, 1) != 0) {
    fail(path, "trailing data: " + data_word + " holds more than the " + std::to_string(declared) +
                   " bytes of " + spec.unit + " the header declares");
  }
  return data;
}

IdxContent read_idx(ByteSource& src, const std::string& path, const IdxSpec& spec, bool gzip) {
  const std::string data_word = gzip ? "decompressed data" : "file";
  read_magic(src, path, spec, gzip, data_word);
  IdxContent out;
  out.dims = read_dims(src, path, spec, data_word);
  const uint64_t declared = declared_bytes(path, spec, out.dims);
  out.data = read_payload(src, path, spec, declared, data_word);
  return out;
}

IdxContent read_idx_source(FileSource& file, const std::string& path, const IdxSpec& spec) {
  uint8_t magic[2];
  if (file.peek(magic, 2) == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
    GzipSource gz(file, path);
    return read_idx(gz, path, spec, true);
  }
  return read_idx(file, path, spec, false);
}

IdxContent read_idx_memory(const std::vector<uint8_t>& bytes, const std::string& path,
                           const IdxSpec& spec) {
  MemorySource mem(bytes.data(), bytes.size());
  if (bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b) {
    GzipSource gz(mem, path);
    return read_idx(gz, path, spec, true);
  }
  return read_idx(mem, path, spec, false);
}

ImageSet to_images(const std::string& path, IdxContent content) {
  ImageSet set;
  set.path = path;
  set.count = content.dims[0];
  set.rows = static_cast<int>(content.dims[1]);
  set.cols = static_cast<int>(content.dims[2]);
  set.pixels = std::move(content.data);
  return set;
}

LabelSet to_labels(const std::string& path, IdxContent content) {
  for (size_t i = 0; i < content.data.size(); ++i) {
    if (content.data[i] > 9) {
      fail(path, "label at index " + std::to_string(i) + " is " + std::to_string(content.data[i]) +
                     ", expected 0..9");
    }
  }
  LabelSet set;
  set.path = path;
  set.labels = std::move(content.data);
  return set;
}

}  // namespace

ImageSet load_idx_images(const std::string& path) {
  FileSource file(path);
  return to_images(path, read_idx_source(file, path, kImagesSpec));
}

LabelSet load_idx_labels(const std::string& path) {
  FileSource file(path);
  return to_labels(path, read_idx_source(file, path, kLabelsSpec));
}

ImageSet parse_idx_images(const std::string& path, const std::vector<uint8_t>& bytes) {
  return to_images(path, read_idx_memory(bytes, path, kImagesSpec));
}

LabelSet parse_idx_labels(const std::string& path, const std::vector<uint8_t>& bytes) {
  return to_labels(path, read_idx_memory(bytes, path, kLabelsSpec));
}

}  // namespace cuvae
