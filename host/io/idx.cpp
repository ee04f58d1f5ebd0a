// IDX loader implementation.
//
// Owns the byte sources the loader reads from (a file, a memory buffer, a gzip stream over
// either), IDX header validation, payload reading that never allocates more than the data
// can justify, label range checks and the lookup of the MNIST files in a dataset folder.
#include "host/io/idx.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <new>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "host/core/error.h"

namespace cuvae {
namespace {

namespace fs = std::filesystem;

// Escapes control characters (a newline in a file name, say) so a message stays one line.
std::string one_line(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw InputError(one_line(path) + ": " + one_line(what));
}

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

// ---- byte sources ------------------------------------------------------------------------

class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Reads up to n bytes into dst; returns fewer than n only at the end of the data.
  // Throws InputError on read or decoding errors.
  virtual size_t read(uint8_t* dst, size_t n) = 0;
  // Bytes still to come, when known without reading them (raw files and memory).
  virtual std::optional<uint64_t> remaining() const { return std::nullopt; }
};

class MemorySource : public ByteSource {
 public:
  MemorySource(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  size_t read(uint8_t* dst, size_t n) override {
    const size_t take = std::min(n, size_ - pos_);
    if (take > 0) std::memcpy(dst, data_ + pos_, take);
    pos_ += take;
    return take;
  }
  std::optional<uint64_t> remaining() const override { return size_ - pos_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Owns a file descriptor.
struct Fd {
  int fd = -1;
  Fd() = default;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

class FileSource : public ByteSource {
 public:
  explicit FileSource(const std::string& path) : path_(path) {
    do {
      fd_.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    } while (fd_.fd < 0 && errno == EINTR);
    if (fd_.fd < 0) {
      const int err = errno;
      fail(path, std::string("cannot open: ") + std::strerror(err));
    }
    struct stat st {};
    if (::fstat(fd_.fd, &st) != 0) {
      const int err = errno;
      fail(path, std::string("cannot stat: ") + std::strerror(err));
    }
    if (S_ISDIR(st.st_mode)) fail(path, "is a directory, expected an IDX file");
    if (S_ISREG(st.st_mode)) size_ = static_cast<uint64_t>(st.st_size);
  }

  // Reads up to n bytes from the start of the file without consuming them.
  size_t peek(uint8_t* dst, size_t n) {
    n = std::min(n, sizeof peeked_);
    while (peeked_len_ < n) {
      const size_t got = raw_read(peeked_ + peeked_len_, n - peeked_len_);
      if (got == 0) break;
      peeked_len_ += got;
    }
    const size_t have = std::min(n, peeked_len_);
    std::memcpy(dst, peeked_, have);
    return have;
  }

  size_t read(uint8_t* dst, size_t n) override {
    size_t got = 0;
    while (got < n && peeked_pos_ < peeked_len_) dst[got++] = peeked_[peeked_pos_++];
    while (got < n) {
      const size_t r = raw_read(dst + got, n - got);
      if (r == 0) break;
      got += r;
    }
    consumed_ += got;
    return got;
  }

  std::optional<uint64_t> remaining() const override {
    if (!size_) return std::nullopt;
    return *size_ > consumed_ ? *size_ - consumed_ : 0;
  }

 private:
  // One read(2) call, retried on EINTR; 0 means end of file.
  size_t raw_read(uint8_t* dst, size_t n) {
    n = std::min<size_t>(n, size_t{1} << 30);
    for (;;) {
      const ssize_t r = ::read(fd_.fd, dst, n);
      if (r >= 0) return static_cast<size_t>(r);
      if (errno == EINTR) continue;
      const int err = errno;
      fail(path_, std::string("read error: ") + std::strerror(err));
    }
  }

  std::string path_;
  Fd fd_;
  std::optional<uint64_t> size_;  // known for regular files
  uint64_t consumed_ = 0;         // bytes handed out by read()
  uint8_t peeked_[2] = {0, 0};
  size_t peeked_len_ = 0;
  size_t peeked_pos_ = 0;
};

// Decompresses gzip data (one or more members) from another source.
class GzipSource : public ByteSource {
 public:
  GzipSource(ByteSource& in, const std::string& path)
      : in_(in), path_(path), buf_(size_t{1} << 16) {
    const int ret = inflateInit2(&zs_, 15 + 16);  // gzip wrapper only
    if (ret == Z_MEM_ERROR) throw std::bad_alloc();
    if (ret != Z_OK) throw Error("zlib inflateInit2 failed (" + std::to_string(ret) + ")");
  }
  GzipSource(const GzipSource&) = delete;
  GzipSource& operator=(const GzipSource&) = delete;
  ~GzipSource() override { inflateEnd(&zs_); }

  size_t read(uint8_t* dst, size_t n) override {
    size_t got = 0;
    while (got < n && !finished_) {
      if (zs_.avail_in == 0 && !in_eof_) refill();
      if (member_done_) {
        // A member ended: either the data ends too, or another gzip member follows.
        if (zs_.avail_in == 0) {
          finished_ = true;
          break;
        }
        inflateReset(&zs_);
        member_done_ = false;
        member_out_ = 0;
        ++members_done_;
        // What follows is another member if it starts with the gzip magic (a member cut
        // short), else junk after the end of the stream.
        member_magic_ = zs_.next_in[0] == 0x1f && (zs_.avail_in < 2 || zs_.next_in[1] == 0x8b);
      }
      const size_t want = std::min<size_t>(n - got, size_t{1} << 30);
      zs_.next_out = dst + got;
      zs_.avail_out = static_cast<uInt>(want);
      const int ret = inflate(&zs_, Z_NO_FLUSH);
      const size_t produced = want - zs_.avail_out;
      got += produced;
      member_out_ += produced;
      switch (ret) {
        case Z_OK:
          break;
        case Z_STREAM_END:
          member_done_ = true;
          break;
        case Z_BUF_ERROR:  // no progress possible: input exhausted mid-stream
          if (zs_.avail_in == 0 && in_eof_) {
            if (after_end()) fail(path_, "unexpected data after the end of the gzip stream");
            fail(path_, "gzip stream cut short: the .gz file is truncated");
          }
          break;
        case Z_NEED_DICT:
        case Z_DATA_ERROR:
          if (after_end()) fail(path_, "unexpected data after the end of the gzip stream");
          fail(path_, std::string("corrupt gzip data: ") + (zs_.msg ? zs_.msg : "data error"));
        case Z_MEM_ERROR:
          throw std::bad_alloc();
        default:
          throw Error(one_line(path_) + ": zlib inflate failed (" + std::to_string(ret) + ")");
      }
    }
    return got;
  }

 private:
  // True while decoding what follows a complete member, when that is not another member (no
  // gzip magic) and nothing has come out of it yet.
  bool after_end() const { return members_done_ > 0 && member_out_ == 0 && !member_magic_; }

  void refill() {
    const size_t got = in_.read(buf_.data(), buf_.size());
    if (got < buf_.size()) in_eof_ = true;
    zs_.next_in = buf_.data();
    zs_.avail_in = static_cast<uInt>(got);
  }

  ByteSource& in_;
  std::string path_;
  z_stream zs_{};
  std::vector<uint8_t> buf_;
  bool in_eof_ = false;
  bool member_done_ = false;
  bool finished_ = false;
  int members_done_ = 0;
  uint64_t member_out_ = 0;
  bool member_magic_ = true;  // the current member starts with 1f 8b
};

// ---- IDX parsing -------------------------------------------------------------------------

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

IdxContent read_idx(ByteSource& src, const std::string& path, const IdxSpec& spec, bool gzip) {
  const std::string data_word = gzip ? "decompressed data" : "file";
  const size_t header_size = 4 + 4 * size_t{spec.ndims};
  const std::string header_note = "an IDX" + std::to_string(spec.ndims) + " header is " +
                                  std::to_string(header_size) + " bytes";

  uint8_t head[4];
  const size_t got_magic = src.read(head, 4);
  if (got_magic == 0) {
    fail(path, gzip ? "empty: the gzip data decompresses to 0 bytes" : "empty file (0 bytes)");
  }
  if (got_magic < 4) {
    fail(path, "truncated header: " + data_word + " ends after " + std::to_string(got_magic) +
                   " bytes, inside the magic number (" + header_note + ")");
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

  uint8_t dim_bytes[12];
  const size_t dims_size = 4 * size_t{spec.ndims};
  const size_t got_dims = src.read(dim_bytes, dims_size);
  if (got_dims < dims_size) {
    fail(path, "truncated header: " + data_word + " ends after " + std::to_string(4 + got_dims) +
                   " bytes, inside dimension " + std::to_string(got_dims / 4 + 1) + " of " +
                   std::to_string(spec.ndims) + " (" + header_note + ")");
  }
  IdxContent out;
  out.dims.resize(spec.ndims);
  for (size_t i = 0; i < spec.ndims; ++i) out.dims[i] = read_be32(dim_bytes + 4 * i);

  for (size_t i = 0; i < out.dims.size(); ++i) {
    if (out.dims[i] == 0) {
      fail(path, "dimension " + std::to_string(i + 1) + " is zero (header declares " +
                     dims_text(out.dims) + ")");
    }
  }
  uint64_t declared = 1;
  bool overflow = false;
  for (uint32_t d : out.dims) overflow |= __builtin_mul_overflow(declared, uint64_t{d}, &declared);
  if (overflow) {
    fail(path, "header declares " + dims_text(out.dims) + " " + spec.unit +
                   ", whose byte count overflows 64 bits");
  }
  if (declared > static_cast<uint64_t>(kMaxIdxPayloadBytes)) {
    const std::string product = out.dims.size() > 1 ? " = " + std::to_string(declared) : "";
    fail(path, "header declares " + dims_text(out.dims) + product + " bytes of " + spec.unit +
                   ", over the limit of " + std::to_string(kMaxIdxPayloadBytes) + " bytes");
  }

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
  const uint64_t chunk = known ? declared : uint64_t{1} << 20;
  while (out.data.size() < declared) {
    const size_t old = out.data.size();
    const size_t want = static_cast<size_t>(std::min<uint64_t>(chunk, declared - old));
    out.data.resize(old + want);
    const size_t got = src.read(out.data.data() + old, want);
    if (got < want) {
      fail(path, "truncated: " + declares + ", " + data_word + " has " + std::to_string(old + got));
    }
  }
  uint8_t extra;
  if (src.read(&extra, 1) != 0) {
    fail(path, "trailing data: " + data_word + " holds more than the " + std::to_string(declared) +
                   " bytes of " + spec.unit + " the header declares");
  }
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

// The raw file if it exists, else the .gz one, else nothing.
std::optional<std::string> find_idx_file(const std::string& dir, const std::string& name) {
  const std::string raw = join_path(dir, name);
  if (has_entry(raw)) return raw;
  const std::string gz = raw + ".gz";
  if (has_entry(gz)) return gz;
  return std::nullopt;
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
  const std::optional<std::string> images_path = find_idx_file(where, images_name);
  const std::optional<std::string> labels_path = find_idx_file(where, labels_name);
  if (!images_path || !labels_path) {
    std::string missing;
    if (!images_path) missing = images_name + "[.gz]";
    if (!labels_path) missing += (missing.empty() ? "" : " and ") + labels_name + "[.gz]";
    fail(where, std::string("missing ") + missing + " (the MNIST " + split_name(split) +
                    " files; " + fetch_hint + ")");
  }

  Dataset data;
  data.images = load_idx_images(*images_path);
  if (data.images.rows != 28 || data.images.cols != 28) {
    fail(*images_path, "images are " + std::to_string(data.images.rows) + "x" +
                           std::to_string(data.images.cols) + ", expected 28x28 (MNIST)");
  }
  data.labels = load_idx_labels(*labels_path);
  const auto label_count = static_cast<int64_t>(data.labels.labels.size());
  if (label_count != data.images.count) {
    fail(*images_path, "holds " + std::to_string(data.images.count) + " images but " +
                           *labels_path + " holds " + std::to_string(label_count) +
                           " labels; the counts must match");
  }
  return data;
}

}  // namespace cuvae
