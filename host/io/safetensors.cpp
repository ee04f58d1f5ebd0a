// safetensors reading and atomic writing (see safetensors.h).
#include "host/io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "host/core/error.h"
#include "host/core/model.h"
#include "host/io/atomic_file.h"

namespace cuvae {
namespace {

// Refuse headers larger than this: the metadata of any cuvae file is a few kilobytes.
constexpr uint64_t kMaxHeader = 100u << 20;
// JSON nesting allowed in the header (a cuvae header needs 3 levels).
constexpr int kMaxHeaderDepth = 8;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw InputError(printable(path) + ": " + what);
}

bool parse_dtype(const std::string& s, DType* t) {
  static const std::pair<const char*, DType> kNames[] = {{"F32", DType::F32},
                                                         {"F64", DType::F64},
                                                         {"I64", DType::I64},
                                                         {"I32", DType::I32},
                                                         {"U8", DType::U8}};
  for (const auto& [name, type] : kNames)
    if (s == name) return *t = type, true;
  return false;
}

std::string errno_text() {
  return std::strerror(errno);
}

// Writes all of buf to fd or throws.
void write_all(int fd, const void* buf, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(buf);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(path, "cannot write: " + errno_text());
    }
    p += w;
    n -= size_t(w);
  }
}

std::string parent_dir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "F32";
    case DType::F64:
      return "F64";
    case DType::I64:
      return "I64";
    case DType::I32:
      return "I32";
    case DType::U8:
      return "U8";
  }
  return "?";
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32:
      return 4;
    case DType::F64:
      return 8;
    case DType::I64:
      return 8;
    case DType::I32:
      return 4;
    case DType::U8:
      return 1;
  }
  return 0;
}

size_t TensorIn::numel() const {
  size_t n = 1;
  for (int64_t s : shape) n *= size_t(s);
  return n;
}

void write_safetensors(const std::string& path, const std::vector<TensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<uint64_t> sizes;
  for (const TensorOut& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__" || header.contains(t.name))
      throw Error("write_safetensors: bad or repeated tensor name '" + t.name + "'");
    uint64_t n = dtype_size(t.dtype);
    for (int64_t s : t.shape) {
      if (s < 0) throw Error("write_safetensors: negative dimension in " + t.name);
      n *= uint64_t(s);
    }
    header[t.name] = {
        {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + n}}};
    sizes.push_back(n);
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));

  const std::string tmp = temporary_path(path);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, "cannot create " + tmp + ": " + errno_text());
  try {
    write_all(fd, len, 8, path);
    write_all(fd, text.data(), text.size(), path);
    for (size_t i = 0; i < tensors.size(); ++i) write_all(fd, tensors[i].data, sizes[i], path);
    if (::fsync(fd) != 0) fail(path, "cannot sync: " + errno_text());
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    fail(path, "cannot close: " + errno_text());
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp.c_str());
    fail(path, "cannot rename the temporary file into place: " + why);
  }
  // Make the rename itself durable.
  const int dir = ::open(parent_dir(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

std::string printable(const std::string& text, size_t max) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (i == max) return out + "...";
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out;
}

namespace {

// A tensor's place in the data area, [begin, end) relative to its first byte.
struct Extent {
  uint64_t begin = 0, end = 0;
  std::string name;
};

// The header length from the first 8 bytes, checked against the file size and the limit.
// `next`: the byte after them (-1 if none), '{' in a safetensors file, whose header is a JSON
// object: an impossible length followed by anything else is another kind of file (a PNG given as
// a model, say), and the message says so first.
uint64_t header_length(const std::string& path, const uint8_t* len, uint64_t file_size, int next) {
  if (file_size < 8)
    fail(path, "too short for a safetensors file (" + std::to_string(file_size) +
                   " bytes, the header length alone needs 8)");
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= uint64_t(len[i]) << (8 * i);
  const std::string lead = next == '{' ? "header length "
                                       : "not a safetensors file: the header length in its "
                                         "first 8 bytes, ";
  if (header_len > file_size - 8)
    fail(path, lead + std::to_string(header_len) + (next == '{' ? "" : ",") +
                   " runs past the end of the file (" + std::to_string(file_size) + " bytes)");
  if (header_len > kMaxHeader)
    fail(path, lead + std::to_string(header_len) + (next == '{' ? "" : ",") +
                   " is beyond the limit of " + std::to_string(kMaxHeader));
  return header_len;
}

// Parses the JSON header and checks every entry against a data area of data_size bytes: the
// tensors (dtype and shape, no bytes yet) and metadata go into `file`, and the extents come
// back sorted by offset, after checking that they tile the data area exactly.
std::vector<Extent> parse_header(const std::string& path, const std::string& text,
                                 uint64_t data_size, SafetensorsFile& file) {
  // A cuvae header nests three deep ({name: {"shape": [..]}}); refusing deep nesting keeps the
  // recursive parts of the JSON library (dump, comparisons) away from hostile input.
  const auto depth_guard = [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
    if (depth > kMaxHeaderDepth)
      fail(path, "header nests deeper than " + std::to_string(kMaxHeaderDepth) + " levels");
    return true;
  };
  // The JSON library stops at a NUL byte as at the end of the text; anything after one would
  // go unread.
  if (text.find('\0') != std::string::npos) fail(path, "header is not valid JSON (a NUL byte)");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text, depth_guard);
  } catch (const nlohmann::json::exception&) {
    fail(path, "header is not valid JSON");
  }
  if (!header.is_object()) fail(path, "header is not a JSON object");

  std::vector<Extent> extents;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(path, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail(path, "metadata value of '" + printable(m.key()) + "' is not a string");
        file.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + printable(name) + "': ";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
        !v.contains("data_offsets"))
      fail(path, where + "entry needs dtype, shape and data_offsets");
    TensorIn t;
    const nlohmann::json& dtype = v["dtype"];
    if (!dtype.is_string())
      fail(path, where + "unsupported dtype " + printable(dtype.dump(), 40) + " (not a string)");
    if (!parse_dtype(dtype.get<std::string>(), &t.dtype))
      fail(path, where + "unsupported dtype '" + printable(dtype.get<std::string>(), 40) + "'");
    const nlohmann::json& shape = v["shape"];
    if (!shape.is_array() || shape.size() > 8) fail(path, where + "shape is not a short array");
    uint64_t bytes = dtype_size(t.dtype);
    for (const nlohmann::json& s : shape) {
      if (!s.is_number_unsigned()) fail(path, where + "shape holds a non-integer or negative");
      const uint64_t d = s.get<uint64_t>();
      if (d != 0 && bytes > data_size / d)
        fail(path,
             where + "shape " + printable(shape.dump(), 100) + " is larger than the file's data");
      bytes *= d;
      t.shape.push_back(int64_t(d));
    }
    const nlohmann::json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned())
      fail(path, where + "data_offsets must be two non-negative integers");
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > data_size)
      fail(path, where + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                     "] lie outside the data area of " + std::to_string(data_size) + " bytes");
    if (end - begin != bytes)
      fail(path, where + "data_offsets span " + std::to_string(end - begin) +
                     " bytes but dtype and shape need " + std::to_string(bytes));
    extents.push_back({begin, end, name});
    file.tensors.emplace(name, std::move(t));
  }

  // The tensors tile the data area: no overlap, no hole, nothing after the last one.
  std::sort(extents.begin(), extents.end(), [](const Extent& a, const Extent& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  const Extent* previous = nullptr;
  for (const Extent& e : extents) {
    const auto span = [](const Extent& x) {
      return "'" + printable(x.name) + "' [" + std::to_string(x.begin) + ", " +
             std::to_string(x.end) + "]";
    };
    if (e.begin < covered)
      fail(path, "tensor data ranges overlap: " + span(*previous) + " and " + span(e));
    if (e.begin > covered)
      fail(path, "bytes " + std::to_string(covered) + " to " + std::to_string(e.begin) +
                     " of the data area belong to no tensor (a hole before " + span(e) + ")");
    covered = e.end;
    previous = &e;
  }
  if (covered != data_size)
    fail(path, "the data area holds " + std::to_string(data_size - covered) +
                   " bytes after the last tensor's data (" + std::to_string(data_size) +
                   " bytes, tensors cover " + std::to_string(covered) + ")");
  return extents;
}

}  // namespace

SafetensorsFile read_safetensors(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail(path, "cannot open: " + errno_text());
  if (S_ISDIR(st.st_mode)) fail(path, "is a directory, expected a safetensors file");
  // Only a regular file has a size to check offsets against (and opening a FIFO would block).
  if (!S_ISREG(st.st_mode)) fail(path, "is not a regular file, expected a safetensors file");
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open: " + (errno != 0 ? errno_text() : std::string("unreadable")));
  const uint64_t file_size = uint64_t(st.st_size);
  uint8_t len[8] = {};
  if (file_size >= 8) in.read(reinterpret_cast<char*>(len), 8);
  const int next = file_size > 8 ? in.peek() : -1;
  const uint64_t header_len = header_length(path, len, file_size, next);
  std::string text(header_len, '\0');
  in.read(text.data(), std::streamsize(header_len));
  if (!in) fail(path, "cannot read the header");

  SafetensorsFile file;
  file.path = path;
  const std::vector<Extent> extents = parse_header(path, text, file_size - 8 - header_len, file);
  // The extents are sorted and contiguous, so the data is read front to back.
  for (const Extent& e : extents) {
    TensorIn& t = file.tensors.at(e.name);
    t.bytes.resize(e.end - e.begin);
    in.read(reinterpret_cast<char*>(t.bytes.data()), std::streamsize(t.bytes.size()));
    if (!in) fail(path, "cannot read the data of tensor '" + printable(e.name) + "'");
  }
  return file;
}

SafetensorsFile parse_safetensors(const std::string& path, const uint8_t* data, size_t size) {
  const uint64_t header_len = header_length(path, data, size, size > 8 ? int(data[8]) : -1);
  SafetensorsFile file;
  file.path = path;
  const std::string text(reinterpret_cast<const char*>(data) + 8, header_len);
  const uint8_t* area = data + 8 + header_len;
  for (const Extent& e : parse_header(path, text, size - 8 - header_len, file))
    file.tensors.at(e.name).bytes.assign(area + e.begin, area + e.end);
  return file;
}

const TensorIn& SafetensorsFile::get(const std::string& name, DType dtype,
                                     const std::vector<int64_t>& shape) const {
  const auto it = tensors.find(name);
  if (it == tensors.end()) fail(path, "missing tensor '" + printable(name) + "'");
  const TensorIn& t = it->second;
  if (t.dtype != dtype)
    fail(path, "tensor '" + printable(name) + "' has dtype " + dtype_name(t.dtype) + ", expected " +
                   dtype_name(dtype));
  if (t.shape != shape)
    fail(path, "tensor '" + printable(name) + "' has shape " + shape_string(t.shape) +
                   ", expected " + shape_string(shape));
  return t;
}

}  // namespace cuvae
