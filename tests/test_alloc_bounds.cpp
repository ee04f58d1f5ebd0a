// Malformed file headers are refused before anything is allocated for what they declare: the
// IDX reader checks a declared payload against the file's size (and grows its buffer only as
// gzip data arrives), the safetensors reader checks the header length and every tensor's
// extent against the file. The messages alone cannot tell (the read loop would report the same
// truncation after allocating the declared size), so this executable replaces the global
// operator new and records the largest single allocation made while a file is read: a 10-byte
// file declaring 2 GB must be refused without a large one.
#include <zlib.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <new>
#include <string>
#include <vector>

#include "host/core/error.h"
#include "host/io/idx.h"
#include "host/io/safetensors.h"
#include "tests/test_support.h"

namespace {
std::atomic<bool> g_watching{false};
std::atomic<size_t> g_largest{0};

void* counted_alloc(size_t size) {
  if (g_watching.load(std::memory_order_relaxed)) {
    size_t seen = g_largest.load(std::memory_order_relaxed);
    while (size > seen && !g_largest.compare_exchange_weak(seen, size)) {
    }
  }
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
}  // namespace

// The replaceable allocation functions (the aligned forms keep their defaults, which this code
// does not reach for byte buffers).
void* operator new(size_t size) {
  return counted_alloc(size);
}
void* operator new[](size_t size) {
  return counted_alloc(size);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, size_t) noexcept {
  std::free(p);
}

using namespace cuvae;
namespace fs = std::filesystem;

namespace {

// The largest single allocation made by f(), which must throw cuvae's InputError whose message
// contains `words`.
template <typename F>
size_t largest_allocation_of_refusal(F&& f, const std::string& words) {
  g_largest = 0;
  g_watching = true;
  std::string message;
  try {
    f();
  } catch (const InputError& e) {
    message = e.what();
  }
  g_watching = false;
  INFO("message: " << message);
  CHECK(message.find(words) != std::string::npos);
  return g_largest.load();
}

// Far below what the files declare (2 GB, 90 MB, 1 GB) and above what reading a small file
// takes: the gzip reader's 1 MiB chunk and 64 KiB buffer, zlib's state, the messages.
constexpr size_t kSmallBound = size_t{16} << 20;

std::vector<uint8_t> be32(uint32_t v) {
  return {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)};
}

std::vector<uint8_t> gzip(const std::vector<uint8_t>& raw) {
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::vector<uint8_t> out(deflateBound(&zs, uLong(raw.size())) + 32);
  zs.next_in = const_cast<uint8_t*>(raw.data());
  zs.avail_in = uInt(raw.size());
  zs.next_out = out.data();
  zs.avail_out = uInt(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

void write_bytes(const fs::path& p, const std::vector<uint8_t>& bytes) {
  test::write_file(p.string(), std::string(bytes.begin(), bytes.end()));
}

}  // namespace

TEST_CASE("an IDX header declaring 2 GB in a tiny file is refused without allocating it",
          "[idx][alloc]") {
  const fs::path dir = test::temp_dir("cuvae_alloc_");
  // 2,739,088 images of 28 x 28: 2,147,444,992 bytes, just under the 2^31 - 1 payload limit;
  // the file holds the 16-byte header and 10 bytes.
  std::vector<uint8_t> images = {0, 0, 0x08, 3};
  for (uint32_t v : {2739088u, 28u, 28u})
    for (uint8_t b : be32(v)) images.push_back(b);
  images.resize(images.size() + 10, 7);
  // 2^31 - 1 labels in a file of the 8-byte header and 10 bytes.
  std::vector<uint8_t> labels = {0, 0, 0x08, 1};
  for (uint8_t b : be32(0x7fffffffu)) labels.push_back(b);
  labels.resize(labels.size() + 10, 1);

  for (const bool gz : {false, true}) {
    INFO((gz ? "gzip" : "raw"));
    const std::vector<uint8_t> img = gz ? gzip(images) : images;
    const std::vector<uint8_t> lab = gz ? gzip(labels) : labels;
    const fs::path ip = dir / (gz ? "images.gz" : "images"), lp = dir / (gz ? "labels.gz" : "labels");
    write_bytes(ip, img);
    write_bytes(lp, lab);
    CHECK(largest_allocation_of_refusal([&] { load_idx_images(ip.string()); }, "truncated") <
          kSmallBound);
    CHECK(largest_allocation_of_refusal([&] { load_idx_labels(lp.string()); }, "truncated") <
          kSmallBound);
    CHECK(largest_allocation_of_refusal([&] { parse_idx_images(ip.string(), img); }, "truncated") <
          kSmallBound);
    CHECK(largest_allocation_of_refusal([&] { parse_idx_labels(lp.string(), lab); }, "truncated") <
          kSmallBound);
  }
  fs::remove_all(dir);
}

TEST_CASE("a safetensors header declaring more than the file holds is refused without "
          "allocating it",
          "[safetensors][alloc]") {
  const fs::path dir = test::temp_dir("cuvae_alloc_");
  auto file = [](uint64_t header_len, const std::string& header, size_t data_bytes) {
    std::vector<uint8_t> b;
    for (int i = 0; i < 8; ++i) b.push_back(uint8_t(header_len >> (8 * i)));
    b.insert(b.end(), header.begin(), header.end());
    b.resize(b.size() + data_bytes, 0);
    return b;
  };
  // A header length of 90 MB (under the 100 MB header limit) in a 30-byte file.
  const std::vector<uint8_t> long_header = file(90u << 20, std::string(22, ' '), 0);
  // A well-formed header whose one tensor spans 1 GiB of data the file does not have.
  const std::string big = R"({"w":{"dtype":"F32","shape":[268435456],"data_offsets":[0,1073741824]}})";
  const std::vector<uint8_t> big_tensor = file(big.size(), big, 16);

  const fs::path a = dir / "long_header.safetensors", b = dir / "big_tensor.safetensors";
  write_bytes(a, long_header);
  write_bytes(b, big_tensor);
  CHECK(largest_allocation_of_refusal([&] { read_safetensors(a.string()); }, "header length") <
        kSmallBound);
  CHECK(largest_allocation_of_refusal(
            [&] { parse_safetensors(a.string(), long_header.data(), long_header.size()); },
            "header length") < kSmallBound);
  CHECK(largest_allocation_of_refusal([&] { read_safetensors(b.string()); }, b.string()) <
        kSmallBound);
  CHECK(largest_allocation_of_refusal(
            [&] { parse_safetensors(b.string(), big_tensor.data(), big_tensor.size()); },
            b.string()) < kSmallBound);
  fs::remove_all(dir);
}

TEST_CASE("the allocation watch sees a large allocation", "[alloc]") {
  // The watch itself: without this, a broken replacement would pass the tests above.
  g_largest = 0;
  g_watching = true;
  std::vector<uint8_t>* v = new std::vector<uint8_t>(size_t{32} << 20);
  g_watching = false;
  CHECK(g_largest.load() >= size_t{32} << 20);
  delete v;
}
