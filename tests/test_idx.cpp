// Tests of the IDX loader (host/io/idx.h).
//
// Owns table-driven checks that valid IDX image/label files round-trip, raw and gzip, and
// that every kind of malformed file (bad header, bad payload, broken gzip, missing or odd
// files) is rejected with a one-line InputError naming the file and the reason, plus the
// dataset-folder lookup of load_dataset. Content is random, seeded per run (see INFO).
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "host/core/error.h"
#include "host/io/idx.h"
#include "tests/test_support.h"

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

// One seed per run (CUVAE_TEST_SEED pins it), printed with INFO by every test so a failure
// can be replayed.
uint64_t run_seed() {
  static const uint64_t seed = cuvae::test::fresh_seed();
  return seed;
}

void put_be32(Bytes& b, uint32_t v) {
  b.push_back(static_cast<uint8_t>(v >> 24));
  b.push_back(static_cast<uint8_t>(v >> 16));
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}

// An IDX header: 0x00 0x00 <type> <ndims> then ndims big-endian 32-bit dims.
Bytes idx_header(uint8_t type, const std::vector<uint32_t>& dims) {
  Bytes b = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) put_be32(b, d);
  return b;
}

// Pixels that look a bit like MNIST: about half zeros, so deflate has something to do.
Bytes random_pixels(std::mt19937_64& rng, size_t n) {
  std::uniform_int_distribution<int> byte(0, 255);
  Bytes p(n);
  for (auto& v : p) v = (byte(rng) < 128) ? 0 : static_cast<uint8_t>(byte(rng));
  return p;
}

Bytes random_labels(std::mt19937_64& rng, size_t n) {
  std::uniform_int_distribution<int> digit(0, 9);
  Bytes l(n);
  for (auto& v : l) v = static_cast<uint8_t>(digit(rng));
  return l;
}

Bytes concat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Bytes images_file(uint32_t count, uint32_t rows, uint32_t cols, const Bytes& pixels) {
  return concat(idx_header(0x08, {count, rows, cols}), pixels);
}

Bytes labels_file(const Bytes& labels) {
  return concat(idx_header(0x08, {static_cast<uint32_t>(labels.size())}), labels);
}

// gzip-compresses with zlib (deflateInit2, windowBits 31 = gzip wrapper).
Bytes gzip_bytes(const Bytes& raw, int level = 6) {
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, level, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  Bytes out(deflateBound(&zs, raw.size()) + 64);
  zs.next_in = const_cast<Bytes::value_type*>(raw.data());
  zs.avail_in = static_cast<uInt>(raw.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  const int ret = deflate(&zs, Z_FINISH);
  deflateEnd(&zs);
  REQUIRE(ret == Z_STREAM_END);
  out.resize(zs.total_out);
  return out;
}

// True when zlib decodes `gz` (all gzip members, nothing after them) to exactly `expected`.
bool gunzip_is(const Bytes& gz, const Bytes& expected) {
  Bytes out(expected.size() + 1);
  size_t got = 0;
  size_t used = 0;
  while (used < gz.size()) {
    z_stream zs{};
    if (inflateInit2(&zs, 31) != Z_OK) return false;
    zs.next_in = const_cast<Bytes::value_type*>(gz.data() + used);
    zs.avail_in = static_cast<uInt>(gz.size() - used);
    zs.next_out = out.data() + got;
    zs.avail_out = static_cast<uInt>(out.size() - got);
    const int ret = inflate(&zs, Z_FINISH);
    used += zs.total_in;
    got += zs.total_out;
    inflateEnd(&zs);
    if (ret != Z_STREAM_END) return false;
  }
  return got == expected.size() && std::equal(expected.begin(), expected.end(), out.begin());
}

// "3 x 4294967295 x 2", as the loader names a header's dimensions.
std::string dims_text(const std::vector<uint32_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? " x " : "") + std::to_string(dims[i]);
  return s;
}

Bytes head(const Bytes& b, size_t n) {
  return Bytes(b.begin(), b.begin() + std::min(n, b.size()));
}

// A fresh folder under the system temp dir, removed again at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    for (int attempt = 0;; ++attempt) {
      path_ = fs::temp_directory_path() /
              ("cuvae_test_idx_" + std::to_string(::getpid()) + "_" + std::to_string(rd()));
      std::error_code ec;
      if (fs::create_directory(path_, ec)) break;
      REQUIRE(attempt < 100);
    }
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

void write_file(const std::string& path, const Bytes& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  REQUIRE(f.good());
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

// "1 image", "3 images": the count as the messages write it, spelled out here on its own.
std::string count_words(uint32_t n, const std::string& noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

enum class Kind { Images, Labels };

const char* kind_name(Kind k) {
  return k == Kind::Images ? "images" : "labels";
}

// Runs `fn`, which must throw InputError; returns its message ("" and a failed check if not).
std::string input_error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const cuvae::InputError& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL_CHECK("expected cuvae::InputError, got another exception: " << e.what());
    return "";
  }
  FAIL_CHECK("expected cuvae::InputError, nothing was thrown");
  return "";
}

std::string load_error(Kind kind, const std::string& path) {
  return input_error_of([&] {
    if (kind == Kind::Images) {
      cuvae::load_idx_images(path);
    } else {
      cuvae::load_idx_labels(path);
    }
  });
}

std::string parse_error(Kind kind, const std::string& name, const Bytes& bytes) {
  return input_error_of([&] {
    if (kind == Kind::Images) {
      cuvae::parse_idx_images(name, bytes);
    } else {
      cuvae::parse_idx_labels(name, bytes);
    }
  });
}

// The message contract: one line, "<path>: <reason>", reason mentions every keyword.
void check_message(const std::string& msg, const std::string& path,
                   const std::vector<std::string>& keywords) {
  INFO("message: " << msg);
  CHECK(msg.find('\n') == std::string::npos);
  CHECK(msg.find('\r') == std::string::npos);
  CHECK(msg.rfind(path + ": ", 0) == 0);
  CHECK(msg.size() > path.size() + 2);
  for (const auto& k : keywords) {
    INFO("keyword: " << k);
    CHECK(contains(msg, k));
  }
}

// A malformed IDX content; checked raw and wrapped in gzip, from a file and from memory.
struct BadCase {
  std::string name;
  Kind kind;
  Bytes bytes;
  std::vector<std::string> keywords;
};

std::vector<BadCase> bad_idx_cases(std::mt19937_64& rng) {
  std::uniform_int_distribution<uint32_t> small(1, 6);
  const uint32_t count = small(rng), rows = small(rng), cols = small(rng);
  const uint32_t pixel_bytes = count * rows * cols;
  const Bytes images = images_file(count, rows, cols, random_pixels(rng, pixel_bytes));
  const Bytes labels_payload = random_labels(rng, small(rng) + 3);
  const Bytes labels = labels_file(labels_payload);
  const std::string px = std::to_string(pixel_bytes);

  std::vector<BadCase> cases;
  cases.push_back({"empty images", Kind::Images, {}, {"empty"}});
  cases.push_back({"empty labels", Kind::Labels, {}, {"empty"}});

  // Header cut short at every byte.
  for (size_t len = 1; len < 16; ++len) {
    const std::string where = len < 4 ? "inside the magic number"
                                      : "inside dimension " + std::to_string((len - 4) / 4 + 1);
    cases.push_back({"images header cut at " + std::to_string(len),
                     Kind::Images,
                     head(images, len),
                     {"truncated header", "ends after " + std::to_string(len) + " bytes", where}});
  }
  for (size_t len = 1; len < 8; ++len) {
    cases.push_back({"labels header cut at " + std::to_string(len),
                     Kind::Labels,
                     head(labels, len),
                     {"truncated header"}});
  }

  // Payload cut short: none of it, one byte, all but one, somewhere random.
  std::uniform_int_distribution<uint32_t> cut(0, pixel_bytes - 1);
  for (uint32_t have : {0u, std::min(1u, pixel_bytes - 1), pixel_bytes - 1, cut(rng)}) {
    cases.push_back(
        {"images payload cut to " + std::to_string(have),
         Kind::Images,
         head(images, 16 + have),
         {"truncated: header declares " + px + " bytes of pixels", "has " + std::to_string(have)}});
  }
  cases.push_back({"labels payload cut",
                   Kind::Labels,
                   head(labels, labels.size() - 1),
                   {"truncated: header declares " + std::to_string(labels_payload.size()) +
                    " bytes of labels"}});

  // Trailing bytes after the payload.
  std::uniform_int_distribution<int> extra(2, 100);
  for (int n : {1, extra(rng)}) {
    cases.push_back({"images + " + std::to_string(n) + " trailing",
                     Kind::Images,
                     concat(images, random_pixels(rng, n)),
                     {"trailing data"}});
    cases.push_back({"labels + " + std::to_string(n) + " trailing",
                     Kind::Labels,
                     concat(labels, random_labels(rng, n)),
                     {"trailing data"}});
  }

  // Wrong magic: the first two bytes must be zero.
  for (auto [b0, b1] : {std::pair{0x12, 0x34}, std::pair{0x00, 0x01}, std::pair{0x80, 0x00},
                        std::pair{0x89, 0x50}}) {
    Bytes b = images;
    b[0] = static_cast<uint8_t>(b0);
    b[1] = static_cast<uint8_t>(b1);
    cases.push_back({"images magic " + std::to_string(b0) + "," + std::to_string(b1),
                     Kind::Images,
                     b,
                     {"bad magic", "expected 0x00000803", "first two bytes"}});
    Bytes l = labels;
    l[0] = static_cast<uint8_t>(b0);
    l[1] = static_cast<uint8_t>(b1);
    cases.push_back({"labels magic", Kind::Labels, l, {"bad magic", "expected 0x00000801"}});
  }

  // Wrong element type, named in the message.
  const std::vector<std::pair<uint8_t, std::string>> types = {
      {0x09, "0x09 (signed byte)"},  {0x0B, "0x0B (short)"},       {0x0C, "0x0C (int)"},
      {0x0D, "0x0D (float)"},        {0x0E, "0x0E (double)"},      {0x00, "0x00 (unknown type)"},
      {0x0A, "0x0A (unknown type)"}, {0xFF, "0xFF (unknown type)"}};
  for (const auto& [type, text] : types) {
    Bytes b = images;
    b[2] = type;
    cases.push_back({"images type " + text,
                     Kind::Images,
                     b,
                     {"bad magic", "element type " + text, "expected 0x08 (unsigned byte)"}});
    Bytes l = labels;
    l[2] = type;
    cases.push_back({"labels type " + text, Kind::Labels, l, {"element type " + text}});
  }

  // Wrong dimension count.
  cases.push_back({"images with 1 dim",
                   Kind::Images,
                   labels,
                   {"bad magic 0x00000801", "1 dimension, expected 3", "label file"}});
  cases.push_back(
      {"images with 0 dims", Kind::Images, Bytes{0, 0, 8, 0}, {"0 dimensions, expected 3"}});
  cases.push_back({"images with 2 dims",
                   Kind::Images,
                   concat(idx_header(8, {count, rows * cols}), random_pixels(rng, pixel_bytes)),
                   {"2 dimensions, expected 3"}});
  cases.push_back({"images with 4 dims",
                   Kind::Images,
                   concat(idx_header(8, {count, 1, rows, cols}), random_pixels(rng, pixel_bytes)),
                   {"bad magic 0x00000804", "4 dimensions, expected 3"}});
  cases.push_back({"labels with 3 dims",
                   Kind::Labels,
                   images,
                   {"bad magic 0x00000803", "3 dimensions, expected 1", "image file"}});

  // Zero dimensions.
  for (int i = 0; i < 3; ++i) {
    std::vector<uint32_t> dims = {count, rows, cols};
    dims[i] = 0;
    cases.push_back({"images dim " + std::to_string(i) + " zero",
                     Kind::Images,
                     concat(idx_header(8, dims), random_pixels(rng, pixel_bytes)),
                     {"dimension " + std::to_string(i + 1) + " is zero"}});
  }
  cases.push_back({"labels dim zero", Kind::Labels, idx_header(8, {0}), {"dimension 1 is zero"}});

  // Huge dimensions: 64-bit overflow, over the size cap, or far more than the file holds.
  const Bytes tiny = random_pixels(rng, 10);
  cases.push_back({"images dims overflow",
                   Kind::Images,
                   concat(idx_header(8, {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}), tiny),
                   {"4294967295 x 4294967295 x 4294967295", "overflows 64 bits"}});
  cases.push_back({"images dims over cap",
                   Kind::Images,
                   concat(idx_header(8, {0xFFFFFFFFu, 1, 1}), tiny),
                   {"over the limit"}});
  // 2^32 - 1 in each position alone and in each pair (over the limit, or past 64 bits when the
  // third dimension is 2 or more), and next to a zero (the zero is reported first).
  for (int i = 0; i < 3; ++i) {
    for (int j = i; j < 3; ++j) {
      std::vector<uint32_t> dims = {count, rows, cols};
      dims[i] = dims[j] = 0xFFFFFFFFu;
      // In double the product is off by far less than its distance to 2^64.
      const double product = double(dims[0]) * double(dims[1]) * double(dims[2]);
      const bool overflows = product >= 18446744073709551616.0;
      cases.push_back({"images dims " + std::to_string(i) + "," + std::to_string(j) + " = 2^32-1",
                       Kind::Images,
                       concat(idx_header(8, dims), tiny),
                       {"header declares " + dims_text(dims),
                        overflows ? "overflows 64 bits" : "over the limit"}});
      const int zero = i == j ? (i + 1) % 3 : 3 - i - j;  // a position that is not 2^32 - 1
      dims[zero] = 0;
      cases.push_back({"images dims 2^32-1 and a zero",
                       Kind::Images,
                       concat(idx_header(8, dims), tiny),
                       {"dimension " + std::to_string(zero + 1) + " is zero"}});
    }
  }
  cases.push_back({"images 2^31 bytes",
                   Kind::Images,
                   concat(idx_header(8, {1u << 31, 1, 1}), tiny),
                   {"over the limit"}});
  cases.push_back({"images 65536^2 x 1",
                   Kind::Images,
                   concat(idx_header(8, {65536, 65536, 1}), tiny),
                   {"over the limit"}});
  cases.push_back({"labels dims over cap",
                   Kind::Labels,
                   concat(idx_header(8, {0xFFFFFFFFu}), random_labels(rng, 10)),
                   {"4294967295", "over the limit"}});
  cases.push_back({"images huge dims tiny file",
                   Kind::Images,
                   concat(idx_header(8, {1000000, 28, 28}), tiny),
                   {"truncated: header declares 784000000 bytes of pixels", "has 10"}});
  cases.push_back({"images at the cap, tiny file",
                   Kind::Images,
                   concat(idx_header(8, {0x7FFFFFFFu, 1, 1}), tiny),
                   {"truncated: header declares 2147483647 bytes", "has 10"}});
  cases.push_back({"labels huge count tiny file",
                   Kind::Labels,
                   concat(idx_header(8, {100000000}), random_labels(rng, 5)),
                   {"truncated: header declares 100000000 bytes of labels", "has 5"}});

  // Labels out of range: the first bad one is named with its index and value.
  for (int bad : {10, 11, 128, 255}) {
    Bytes payload = labels_payload;
    std::uniform_int_distribution<size_t> at(0, payload.size() - 1);
    const size_t index = at(rng);
    payload[index] = static_cast<uint8_t>(bad);
    for (size_t j = index + 1; j < payload.size(); ++j) payload[j] = 200;  // later ones too
    cases.push_back({"label " + std::to_string(bad),
                     Kind::Labels,
                     labels_file(payload),
                     {"label at index " + std::to_string(index) + " is " + std::to_string(bad),
                      "expected 0..9"}});
  }
  return cases;
}

}  // namespace

TEST_CASE("valid IDX files round-trip, raw and gzip", "[idx]") {
  const uint64_t seed = run_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  TempDir dir;
  std::uniform_int_distribution<uint32_t> dim(1, 40);

  for (int round = 0; round < 6; ++round) {
    const uint32_t count = round == 0 ? 1 : dim(rng);
    const uint32_t rows = round == 1 ? 28 : dim(rng);
    const uint32_t cols = round == 1 ? 28 : dim(rng);
    const Bytes pixels = random_pixels(rng, size_t{count} * rows * cols);
    const Bytes labels = random_labels(rng, count);
    const Bytes img = images_file(count, rows, cols, pixels);
    const Bytes lab = labels_file(labels);
    INFO("round " << round << ": " << count << " x " << rows << " x " << cols);

    const std::vector<std::pair<std::string, std::function<Bytes(const Bytes&)>>> forms = {
        {"raw", [](const Bytes& b) { return b; }},
        {"gz", [](const Bytes& b) { return gzip_bytes(b); }},
        {"gz level 0", [](const Bytes& b) { return gzip_bytes(b, 0); }},
        {"gz level 9", [](const Bytes& b) { return gzip_bytes(b, 9); }},
        // Two gzip members back to back (what `cat a.gz b.gz` gives) decode as one stream.
        {"gz two members",
         [](const Bytes& b) {
           const Bytes first(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(b.size() / 2));
           const Bytes second(b.begin() + static_cast<std::ptrdiff_t>(b.size() / 2), b.end());
           return concat(gzip_bytes(first), gzip_bytes(second));
         }},
    };
    for (const auto& [form, encode] : forms) {
      INFO("form " << form);
      // The name never says .gz: gzip is detected from the content.
      const std::string img_path = dir.file("images-" + form + "-" + std::to_string(round));
      const std::string lab_path = dir.file("labels-" + form + "-" + std::to_string(round));
      write_file(img_path, encode(img));
      write_file(lab_path, encode(lab));

      const cuvae::ImageSet is = cuvae::load_idx_images(img_path);
      CHECK(is.path == img_path);
      CHECK(is.count == count);
      CHECK(is.rows == static_cast<int>(rows));
      CHECK(is.cols == static_cast<int>(cols));
      CHECK(is.pixels == pixels);
      const cuvae::LabelSet ls = cuvae::load_idx_labels(lab_path);
      CHECK(ls.path == lab_path);
      CHECK(ls.labels == labels);

      const cuvae::ImageSet im = cuvae::parse_idx_images("mem", encode(img));
      CHECK(im.path == "mem");
      CHECK(im.count == count);
      CHECK(im.pixels == pixels);
      CHECK(cuvae::parse_idx_labels("mem", encode(lab)).labels == labels);
    }
  }
}

TEST_CASE("malformed IDX content is rejected with a one-line error", "[idx]") {
  const uint64_t seed = run_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  TempDir dir;
  int index = 0;
  for (const BadCase& c : bad_idx_cases(rng)) {
    INFO("case: " << c.name << " (" << kind_name(c.kind) << ")");
    const std::string raw_path = dir.file("bad" + std::to_string(index) + "-raw");
    const std::string gz_path = dir.file("bad" + std::to_string(index) + ".gz");
    ++index;
    write_file(raw_path, c.bytes);
    const Bytes gz = gzip_bytes(c.bytes);
    write_file(gz_path, gz);
    {
      INFO("raw file");
      check_message(load_error(c.kind, raw_path), raw_path, c.keywords);
    }
    {
      INFO("gzip file");
      check_message(load_error(c.kind, gz_path), gz_path, c.keywords);
    }
    {
      INFO("raw bytes in memory");
      check_message(parse_error(c.kind, "buffer", c.bytes), "buffer", c.keywords);
    }
    {
      INFO("gzip bytes in memory");
      check_message(parse_error(c.kind, "buffer.gz", gz), "buffer.gz", c.keywords);
    }
  }
}

TEST_CASE("the raw payload size is checked against the file size", "[idx]") {
  const uint64_t seed = run_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  TempDir dir;
  const Bytes pixels = random_pixels(rng, 5 * 4 * 3);
  const std::string path = dir.file("short");
  write_file(path, head(images_file(5, 4, 3, pixels), 16 + 7));
  const std::string msg = load_error(Kind::Images, path);
  CHECK(msg == path + ": truncated: header declares 60 bytes of pixels, file has 7");
  const std::string gz = dir.file("short.gz");
  write_file(gz, gzip_bytes(head(images_file(5, 4, 3, pixels), 16 + 7)));
  CHECK(load_error(Kind::Images, gz) ==
        gz + ": truncated: header declares 60 bytes of pixels, decompressed data has 7");
  const std::string longer = dir.file("long");
  write_file(longer, concat(images_file(5, 4, 3, pixels), Bytes(3, 0)));
  CHECK(load_error(Kind::Images, longer) ==
        longer + ": trailing data: header declares 60 bytes of pixels, file has 63 (3 extra)");
}

TEST_CASE("broken gzip streams are rejected with a one-line error", "[idx]") {
  const uint64_t seed = run_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  TempDir dir;
  std::uniform_int_distribution<uint32_t> dim(2, 30);
  const uint32_t count = dim(rng), rows = dim(rng), cols = dim(rng);
  const Bytes img = images_file(count, rows, cols, random_pixels(rng, size_t{count} * rows * cols));
  const Bytes gz = gzip_bytes(img);
  const Bytes lab_gz = gzip_bytes(labels_file(random_labels(rng, count)));

  struct GzCase {
    std::string name;
    Kind kind;
    Bytes bytes;
    std::vector<std::vector<std::string>> any_of;  // the message matches one keyword set
  };
  std::vector<GzCase> cases;
  const std::vector<std::vector<std::string>> cut_short = {{"gzip stream cut short"}};
  std::uniform_int_distribution<size_t> cut(2, gz.size() - 1);
  for (size_t len :
       {size_t{2}, size_t{3}, size_t{5}, size_t{9}, size_t{10}, size_t{12}, gz.size() / 2,
        gz.size() - 9, gz.size() - 8, gz.size() - 5, gz.size() - 4, gz.size() - 1, cut(rng)}) {
    cases.push_back({"gzip cut to " + std::to_string(len), Kind::Images, head(gz, len), cut_short});
  }
  cases.push_back({"labels gzip cut", Kind::Labels, head(lab_gz, lab_gz.size() - 3), cut_short});

  Bytes bad_crc = gz;
  bad_crc[bad_crc.size() - 8] ^= 0x01;  // CRC-32 field of the trailer
  cases.push_back(
      {"gzip bad CRC", Kind::Images, bad_crc, {{"corrupt gzip data", "incorrect data check"}}});
  Bytes bad_crc2 = gz;
  bad_crc2[bad_crc2.size() - 5] ^= 0x80;
  cases.push_back({"gzip bad CRC high byte", Kind::Images, bad_crc2, {{"corrupt gzip data"}}});
  Bytes bad_len = gz;
  bad_len[bad_len.size() - 4] ^= 0x01;  // ISIZE field of the trailer
  cases.push_back({"gzip bad length",
                   Kind::Images,
                   bad_len,
                   {{"corrupt gzip data", "incorrect length check"}}});
  Bytes bad_method = gz;
  bad_method[2] = 7;  // compression method must be 8 (deflate)
  cases.push_back({"gzip bad method", Kind::Images, bad_method, {{"corrupt gzip data"}}});

  // A flipped byte inside the deflate data: usually bad deflate data or a CRC mismatch, but it
  // may also garble the IDX header or the length first, so any one-line InputError will do.
  // (A flip that only touches ignored padding bits leaves a valid stream; zlib itself is asked.)
  for (int i = 0; i < 4; ++i) {
    Bytes flipped = gz;
    std::uniform_int_distribution<size_t> at(10, gz.size() - 9);
    flipped[at(rng)] ^= 0xFF;
    if (gunzip_is(flipped, img)) continue;
    const std::vector<std::string> anything;  // no keyword required
    cases.push_back({"gzip flipped data byte", Kind::Images, flipped, {anything}});
  }

  // Garbage that starts with the gzip magic bytes.
  for (size_t n : {size_t{0}, size_t{1}, size_t{8}, size_t{64}, size_t{1000}}) {
    Bytes garbage = {0x1f, 0x8b};
    const Bytes rest = random_pixels(rng, n);
    garbage.insert(garbage.end(), rest.begin(), rest.end());
    cases.push_back({"gzip magic + " + std::to_string(n) + " garbage bytes",
                     Kind::Images,
                     garbage,
                     {{"gzip"}}});
  }

  // A valid gzip stream followed by junk that is not another gzip member.
  for (size_t n : {size_t{1}, size_t{2}, size_t{50}}) {
    Bytes junk = random_pixels(rng, n);
    junk[0] = 0x42;
    cases.push_back({"gzip + " + std::to_string(n) + " junk bytes",
                     Kind::Images,
                     concat(gz, junk),
                     {{"unexpected data after the end of the gzip stream"}}});
  }

  // Two members (what `cat a.gz b.gz` gives) where the second one is broken: its CRC, its
  // length field, cut short. The first member alone is a valid but incomplete IDX file, so
  // only the end of the second member can tell; the loader must check zlib's final status.
  const size_t half = img.size() / 2;
  const Bytes first = gzip_bytes(head(img, half));
  const Bytes second =
      gzip_bytes(Bytes(img.begin() + static_cast<std::ptrdiff_t>(half), img.end()));
  REQUIRE(gunzip_is(concat(first, second), img));
  Bytes second_crc = second;
  second_crc[second_crc.size() - 7] ^= 0x10;
  cases.push_back({"second member bad CRC",
                   Kind::Images,
                   concat(first, second_crc),
                   {{"corrupt gzip data", "incorrect data check"}}});
  Bytes second_len = second;
  second_len[second_len.size() - 1] ^= 0x01;
  cases.push_back({"second member bad length",
                   Kind::Images,
                   concat(first, second_len),
                   {{"corrupt gzip data", "incorrect length check"}}});
  for (size_t keep : {size_t{1}, size_t{10}, second.size() - 8, second.size() - 1}) {
    cases.push_back({"second member cut to " + std::to_string(keep),
                     Kind::Images,
                     concat(first, head(second, keep)),
                     {{"gzip stream cut short"}}});
  }
  Bytes lab_crc = lab_gz;  // a label file: the CRC of a few bytes
  lab_crc[lab_crc.size() - 8] ^= 0xFF;
  cases.push_back({"labels gzip bad CRC",
                   Kind::Labels,
                   lab_crc,
                   {{"corrupt gzip data", "incorrect data check"}}});

  int index = 0;
  for (const GzCase& c : cases) {
    INFO("case: " << c.name);
    const std::string path = dir.file("broken" + std::to_string(index++) + ".gz");
    write_file(path, c.bytes);
    for (int from_memory = 0; from_memory < 2; ++from_memory) {
      INFO((from_memory ? "from memory" : "from file"));
      const std::string name = from_memory ? std::string("mem.gz") : path;
      const std::string msg =
          from_memory ? parse_error(c.kind, name, c.bytes) : load_error(c.kind, name);
      INFO("message: " << msg);
      bool matched = false;
      for (const auto& set : c.any_of) {
        matched = matched || std::all_of(set.begin(), set.end(),
                                         [&](const std::string& k) { return contains(msg, k); });
      }
      CHECK(matched);
      check_message(msg, name, {});
    }
  }
}

TEST_CASE("missing, directory and unreadable files are rejected", "[idx]") {
  INFO("seed " << run_seed());
  TempDir dir;
  const std::string missing = dir.file("no-such-file");
  check_message(load_error(Kind::Images, missing), missing, {"cannot open", "No such file"});
  check_message(load_error(Kind::Labels, missing), missing, {"cannot open", "No such file"});

  const std::string sub = dir.file("a-directory");
  REQUIRE(fs::create_directory(sub));
  check_message(load_error(Kind::Images, sub), sub, {"is a directory"});
  check_message(load_error(Kind::Labels, sub + "/"), sub + "/", {"is a directory"});

  const std::string in_missing_dir = dir.file("nope/train-images-idx3-ubyte");
  check_message(load_error(Kind::Images, in_missing_dir), in_missing_dir, {"cannot open"});

  // A file name with a newline still gives a one-line message.
  const std::string odd = dir.file("odd\nname");
  write_file(odd, {});
  const std::string msg = load_error(Kind::Images, odd);
  CHECK(msg.find('\n') == std::string::npos);
  CHECK(contains(msg, "odd\\x0Aname"));
  CHECK(contains(msg, "empty"));

  // Unreadable files. Root reads a chmod 000 file anyway, so that case runs only for other
  // users; the constructs after it are unreadable for everyone.
  const std::string locked = dir.file("locked");
  write_file(locked, labels_file({1, 2, 3}));
  REQUIRE(::chmod(locked.c_str(), 0) == 0);
  if (::geteuid() != 0) {
    check_message(load_error(Kind::Labels, locked), locked, {"cannot open", "Permission denied"});
  } else {
    WARN("running as root: the chmod 000 case is skipped (root can read the file)");
  }
  const std::string loop = dir.file("loop");  // a symlink to itself
  REQUIRE(::symlink("loop", loop.c_str()) == 0);
  check_message(load_error(Kind::Images, loop), loop, {"cannot open", "symbolic links"});
  const std::string dangling = dir.file("dangling");
  REQUIRE(::symlink("no-such-target", dangling.c_str()) == 0);
  check_message(load_error(Kind::Labels, dangling), dangling, {"cannot open", "No such file"});
  const std::string under_file = locked + "/x";  // a path through a file
  check_message(load_error(Kind::Images, under_file), under_file,
                {"cannot open", "Not a directory"});
  // A file that opens but cannot be read: /proc/self/mem fails read(2) at offset 0 with EIO.
  if (fs::exists("/proc/self/mem")) {
    check_message(load_error(Kind::Images, "/proc/self/mem"), "/proc/self/mem", {"read error"});
  }
}

TEST_CASE("load_dataset finds raw and gzip files and checks them", "[idx]") {
  const uint64_t seed = run_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<uint32_t> small(1, 12);
  CHECK(std::string(cuvae::split_name(cuvae::Split::Train)) == "train");
  CHECK(std::string(cuvae::split_name(cuvae::Split::Test)) == "test");

  for (const cuvae::Split split : {cuvae::Split::Train, cuvae::Split::Test}) {
    const std::string prefix = split == cuvae::Split::Train ? "train" : "t10k";
    const std::string img_name = prefix + "-images-idx3-ubyte";
    const std::string lab_name = prefix + "-labels-idx1-ubyte";
    INFO("split " << cuvae::split_name(split));
    CHECK(cuvae::idx_images_name(split) == img_name);
    CHECK(cuvae::idx_labels_name(split) == lab_name);

    const uint32_t n = small(rng);
    const Bytes pixels = random_pixels(rng, size_t{n} * 28 * 28);
    const Bytes labels = random_labels(rng, n);
    const Bytes img = images_file(n, 28, 28, pixels);
    const Bytes lab = labels_file(labels);

    // Every combination of raw / .gz names.
    for (int mask = 0; mask < 4; ++mask) {
      TempDir dir;
      const bool img_gz = mask & 1, lab_gz = mask & 2;
      INFO("images " << (img_gz ? ".gz" : "raw") << ", labels " << (lab_gz ? ".gz" : "raw"));
      const std::string img_path = dir.file(img_name + (img_gz ? ".gz" : ""));
      const std::string lab_path = dir.file(lab_name + (lab_gz ? ".gz" : ""));
      write_file(img_path, img_gz ? gzip_bytes(img) : img);
      write_file(lab_path, lab_gz ? gzip_bytes(lab) : lab);
      // The other split's files are not needed.
      const cuvae::Dataset d = cuvae::load_dataset(dir.str(), split);
      CHECK(d.size() == n);
      CHECK(d.images.path == img_path);
      CHECK(d.labels.path == lab_path);
      CHECK(d.images.pixels == pixels);
      CHECK(d.labels.labels == labels);
      // A trailing slash on the folder is fine.
      CHECK(cuvae::load_dataset(dir.str() + "/", split).size() == n);
    }

    {  // Both forms present: the raw file wins.
      TempDir dir;
      const uint32_t m = n + 1;
      write_file(dir.file(img_name), img);
      write_file(dir.file(lab_name), lab);
      write_file(dir.file(img_name + ".gz"),
                 gzip_bytes(images_file(m, 28, 28, random_pixels(rng, size_t{m} * 784))));
      write_file(dir.file(lab_name + ".gz"), gzip_bytes(labels_file(random_labels(rng, m))));
      const cuvae::Dataset d = cuvae::load_dataset(dir.str(), split);
      CHECK(d.size() == n);
      CHECK(d.images.path == dir.file(img_name));
      CHECK(d.labels.path == dir.file(lab_name));
    }

    {  // Missing files: the message names the folder, the files and the fetch script.
      TempDir dir;
      std::string msg = input_error_of([&] { cuvae::load_dataset(dir.str(), split); });
      check_message(msg, dir.str(), {"missing", img_name, lab_name, "tools/fetch_mnist.sh"});
      write_file(dir.file(img_name + ".gz"), gzip_bytes(img));
      msg = input_error_of([&] { cuvae::load_dataset(dir.str(), split); });
      check_message(msg, dir.str(), {"missing " + lab_name, "fetch_mnist.sh"});
      CHECK_FALSE(contains(msg, img_name));
      fs::remove(dir.file(img_name + ".gz"));
      write_file(dir.file(lab_name), lab);
      msg = input_error_of([&] { cuvae::load_dataset(dir.str(), split); });
      check_message(msg, dir.str(), {"missing " + img_name, "fetch_mnist.sh"});
      // The other split's files do not count.
      const std::string other = split == cuvae::Split::Train ? "t10k" : "train";
      TempDir other_dir;
      write_file(other_dir.file(other + "-images-idx3-ubyte"), img);
      write_file(other_dir.file(other + "-labels-idx1-ubyte"), lab);
      msg = input_error_of([&] { cuvae::load_dataset(other_dir.str(), split); });
      check_message(msg, other_dir.str(), {"missing", img_name, lab_name});
    }

    {  // Missing folder, and a file where the folder should be.
      TempDir dir;
      const std::string nowhere = dir.file("no-such-folder");
      std::string msg = input_error_of([&] { cuvae::load_dataset(nowhere, split); });
      check_message(msg, nowhere, {"no such dataset folder", "fetch_mnist.sh"});
      const std::string a_file = dir.file("plain-file");
      write_file(a_file, img);
      msg = input_error_of([&] { cuvae::load_dataset(a_file, split); });
      check_message(msg, a_file, {"not a folder"});
    }

    {  // Count mismatch: both files and both counts are named.
      TempDir dir;
      write_file(dir.file(img_name), img);
      write_file(dir.file(lab_name + ".gz"), gzip_bytes(labels_file(random_labels(rng, n + 2))));
      const std::string msg = input_error_of([&] { cuvae::load_dataset(dir.str(), split); });
      check_message(msg, dir.file(img_name),
                    {"holds " + count_words(n, "image") + " but ", dir.file(lab_name + ".gz"),
                     "holds " + count_words(n + 2, "label") + ";", "must match"});
      // Fewer labels than images, gzip images.
      fs::remove(dir.file(img_name));
      fs::remove(dir.file(lab_name + ".gz"));
      write_file(dir.file(img_name + ".gz"),
                 gzip_bytes(images_file(n + 1, 28, 28, random_pixels(rng, size_t{n + 1} * 784))));
      write_file(dir.file(lab_name), lab);
      const std::string msg2 = input_error_of([&] { cuvae::load_dataset(dir.str(), split); });
      check_message(msg2, dir.file(img_name + ".gz"),
                    {"holds " + count_words(n + 1, "image") + " but ", dir.file(lab_name),
                     "holds " + count_words(n, "label") + ";", "must match"});
    }

    {  // An entry that cannot be opened is named as such, not reported missing.
      TempDir dir;
      write_file(dir.file(lab_name), lab);
      REQUIRE(::symlink(img_name.c_str(), dir.file(img_name).c_str()) == 0);  // loops
      std::string msg = input_error_of([&] { cuvae::load_dataset(dir.str(), split); });
      check_message(msg, dir.file(img_name), {"cannot open", "symbolic links"});
      fs::remove(dir.file(img_name));
      write_file(dir.file(img_name + ".gz"), gzip_bytes(img));
      REQUIRE(::symlink("gone", dir.file(lab_name + ".gz").c_str()) == 0);  // dangles
      fs::remove(dir.file(lab_name));
      msg = input_error_of([&] { cuvae::load_dataset(dir.str(), split); });
      check_message(msg, dir.file(lab_name + ".gz"), {"cannot open", "No such file"});
    }

    // Images that are not 28x28.
    for (auto [rows, cols] :
         {std::pair{27u, 28u}, std::pair{28u, 29u}, std::pair{32u, 32u}, std::pair{1u, 784u}}) {
      TempDir dir;
      write_file(dir.file(img_name),
                 images_file(n, rows, cols, random_pixels(rng, size_t{n} * rows * cols)));
      write_file(dir.file(lab_name), lab);
      const std::string msg = input_error_of([&] { cuvae::load_dataset(dir.str(), split); });
      check_message(msg, dir.file(img_name),
                    {std::to_string(rows) + "x" + std::to_string(cols), "expected 28x28"});
    }

    {  // A bad file inside the folder is reported with its own path.
      TempDir dir;
      write_file(dir.file(img_name + ".gz"), head(gzip_bytes(img), 20));
      write_file(dir.file(lab_name), lab);
      const std::string msg = input_error_of([&] { cuvae::load_dataset(dir.str(), split); });
      check_message(msg, dir.file(img_name + ".gz"), {"gzip stream cut short"});
      Bytes bad = labels;
      bad[0] = 10;
      write_file(dir.file(img_name + ".gz"), gzip_bytes(img));
      write_file(dir.file(lab_name), labels_file(bad));
      const std::string msg2 = input_error_of([&] { cuvae::load_dataset(dir.str(), split); });
      check_message(msg2, dir.file(lab_name), {"label at index 0 is 10"});
    }
  }
}
