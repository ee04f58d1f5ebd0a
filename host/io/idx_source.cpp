// The byte sources of the IDX loader (idx_source.h): a file, memory, gzip over either.
#include "host/io/idx_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include "host/core/error.h"
#include "host/core/interrupt.h"

namespace cuvae {
namespace idx_detail {

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
// ---- memory and files --------------------------------------------------------------------

size_t MemorySource::read(uint8_t* dst, size_t n) {
  const size_t take = std::min(n, size_ - pos_);
  if (take > 0) std::memcpy(dst, data_ + pos_, take);
  pos_ += take;
  return take;
}

Fd::~Fd() {
  if (fd >= 0) ::close(fd);
}

// What a path that is not a regular file is, for the message; nullptr for a regular file.
const char* not_a_regular_file(const struct stat& st) {
  if (S_ISREG(st.st_mode)) return nullptr;
  if (S_ISDIR(st.st_mode)) return "is a directory, expected an IDX file";
  if (S_ISFIFO(st.st_mode)) return "is a named pipe (FIFO); expected a regular IDX file";
  if (S_ISSOCK(st.st_mode)) return "is a socket; expected a regular IDX file";
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
    return "is a device file; expected a regular IDX file";
  return "is not a regular file; expected an IDX file";
}

FileSource::FileSource(const std::string& path) : path_(path) {
  // Regular files only: reading a FIFO may block for ever. Checked before opening, and opened
  // without blocking (opening a FIFO would wait for a writer; a regular file's reads are the
  // same either way), then checked again on what was opened.
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0)
    if (const char* what = not_a_regular_file(st)) fail(path, what);
  fd_.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd_.fd < 0) {
    const int err = errno;
    fail(path, std::string("cannot open: ") + std::strerror(err));
  }
  if (::fstat(fd_.fd, &st) != 0) {
    const int err = errno;
    fail(path, std::string("cannot stat: ") + std::strerror(err));
  }
  if (const char* what = not_a_regular_file(st)) fail(path, what);
  size_ = static_cast<uint64_t>(st.st_size);
}

size_t FileSource::peek(uint8_t* dst, size_t n) {
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

size_t FileSource::read(uint8_t* dst, size_t n) {
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

size_t FileSource::raw_read(uint8_t* dst, size_t n) {
  n = std::min<size_t>(n, size_t{1} << 30);
  for (;;) {
    const ssize_t r = ::read(fd_.fd, dst, n);
    if (r >= 0) return static_cast<size_t>(r);
    if (errno == EINTR) {
      check_interrupt();
      continue;
    }
    const int err = errno;
    fail(path_, std::string("read error: ") + std::strerror(err));
  }
}

// ---- gzip --------------------------------------------------------------------------------

GzipSource::GzipSource(ByteSource& in, const std::string& path)
    : in_(in), path_(path), buf_(size_t{1} << 16) {
  const int ret = inflateInit2(&zs_, 15 + 16);  // gzip wrapper only
  if (ret == Z_MEM_ERROR) throw std::bad_alloc();
  if (ret != Z_OK) throw Error("zlib inflateInit2 failed (" + std::to_string(ret) + ")");
}

GzipSource::~GzipSource() {
  inflateEnd(&zs_);
}

size_t GzipSource::read(uint8_t* dst, size_t n) {
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

void GzipSource::refill() {
  const size_t got = in_.read(buf_.data(), buf_.size());
  if (got < buf_.size()) in_eof_ = true;
  zs_.next_in = buf_.data();
  zs_.avail_in = static_cast<uInt>(got);
}

}  // namespace idx_detail
}  // namespace cuvae
