// safetensors reading and atomic writing (see safetensors.h).
#include "host/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "host/error.h"
#include "host/model.h"

namespace cuvae {
namespace {

// Refuse headers larger than this: the metadata of any cuvae file is a few kilobytes.
constexpr uint64_t kMaxHeader = 100u << 20;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw InputError(path + ": " + what);
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

  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
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

SafetensorsFile read_safetensors(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail(path, "cannot open: " + errno_text());
  if (S_ISDIR(st.st_mode)) fail(path, "is a directory, expected a safetensors file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open: " + errno_text());
  const uint64_t file_size = uint64_t(st.st_size);
  if (file_size < 8)
    fail(path, "too short for a safetensors file (" + std::to_string(file_size) +
                   " bytes, the header length alone needs 8)");
  uint8_t len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= uint64_t(len[i]) << (8 * i);
  if (header_len > file_size - 8)
    fail(path, "header length " + std::to_string(header_len) + " runs past the end of the file (" +
                   std::to_string(file_size) + " bytes)");
  if (header_len > kMaxHeader)
    fail(path, "header length " + std::to_string(header_len) + " is beyond the limit of " +
                   std::to_string(kMaxHeader));
  std::string text(header_len, '\0');
  in.read(text.data(), std::streamsize(header_len));
  if (!in) fail(path, "cannot read the header");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception&) {
    fail(path, "header is not valid JSON");
  }
  if (!header.is_object()) fail(path, "header is not a JSON object");

  SafetensorsFile file;
  file.path = path;
  const uint64_t data_size = file_size - 8 - header_len;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::vector<std::pair<std::string, std::pair<uint64_t, uint64_t>>> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(path, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail(path, "metadata value of '" + m.key() + "' is not a string");
        file.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "': ";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
        !v.contains("data_offsets"))
      fail(path, where + "entry needs dtype, shape and data_offsets");
    TensorIn t;
    if (!v["dtype"].is_string() || !parse_dtype(v["dtype"].get<std::string>(), &t.dtype))
      fail(path, where + "unsupported dtype " + v["dtype"].dump());
    const nlohmann::json& shape = v["shape"];
    if (!shape.is_array() || shape.size() > 8) fail(path, where + "shape is not a short array");
    uint64_t bytes = dtype_size(t.dtype);
    for (const nlohmann::json& s : shape) {
      if (!s.is_number_unsigned()) fail(path, where + "shape holds a non-integer or negative");
      const uint64_t d = s.get<uint64_t>();
      if (d != 0 && bytes > data_size / d)
        fail(path, where + "shape " + shape.dump() + " is larger than the file's data");
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
    ranges.push_back({begin, end});
    entries.push_back({name, {begin, end}});
    file.tensors.emplace(name, std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) fail(path, "tensor data ranges overlap");
  for (const auto& [name, range] : entries) {
    TensorIn& t = file.tensors.at(name);
    t.bytes.resize(range.second - range.first);
    in.seekg(std::streamoff(8 + header_len + range.first));
    in.read(reinterpret_cast<char*>(t.bytes.data()), std::streamsize(t.bytes.size()));
    if (!in) fail(path, "cannot read the data of tensor '" + name + "'");
  }
  return file;
}

const TensorIn& SafetensorsFile::get(const std::string& name, DType dtype,
                                     const std::vector<int64_t>& shape) const {
  const auto it = tensors.find(name);
  if (it == tensors.end()) throw InputError(path + ": missing tensor '" + name + "'");
  const TensorIn& t = it->second;
  if (t.dtype != dtype)
    throw InputError(path + ": tensor '" + name + "' has dtype " + dtype_name(t.dtype) +
                     ", expected " + dtype_name(dtype));
  if (t.shape != shape)
    throw InputError(path + ": tensor '" + name + "' has shape " + shape_string(t.shape) +
                     ", expected " + shape_string(shape));
  return t;
}

}  // namespace cuvae
