// The byte sources the IDX loader reads from (private to host/io: idx*.cpp).
//
// Owns reading a file (with a two-byte peek to spot the gzip magic), a memory buffer, and a
// gzip stream (one or more members) over either, and the loader's one-line error helper: every
// problem is an InputError "<path>: <what is wrong>" with control characters escaped.
#pragma once

#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cuvae {
namespace idx_detail {

// Escapes control characters (a newline in a file name, say) so a message stays one line.
std::string one_line(const std::string& s);

// Throws InputError "<path>: <what>", both made one line.
[[noreturn]] void fail(const std::string& path, const std::string& what);

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
  size_t read(uint8_t* dst, size_t n) override;
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
  ~Fd();
};

class FileSource : public ByteSource {
 public:
  explicit FileSource(const std::string& path);

  // Reads up to n bytes from the start of the file without consuming them.
  size_t peek(uint8_t* dst, size_t n);

  size_t read(uint8_t* dst, size_t n) override;

  std::optional<uint64_t> remaining() const override {
    if (!size_) return std::nullopt;
    return *size_ > consumed_ ? *size_ - consumed_ : 0;
  }

 private:
  // One read(2) call, retried on EINTR; 0 means end of file.
  size_t raw_read(uint8_t* dst, size_t n);

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
  GzipSource(ByteSource& in, const std::string& path);
  GzipSource(const GzipSource&) = delete;
  GzipSource& operator=(const GzipSource&) = delete;
  ~GzipSource() override;

  size_t read(uint8_t* dst, size_t n) override;

 private:
  // True while decoding what follows a complete member, when that is not another member (no
  // gzip magic) and nothing has come out of it yet.
  bool after_end() const { return members_done_ > 0 && member_out_ == 0 && !member_magic_; }

  void refill();

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

}  // namespace idx_detail
}  // namespace cuvae
