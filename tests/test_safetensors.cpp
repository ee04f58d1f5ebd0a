// safetensors: round trip, atomic writes, and strict refusal of corrupt files (table-driven,
// each case read from a file and parsed from memory).
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "host/core/error.h"
#include "host/io/safetensors.h"
#include "tests/test_support.h"

using namespace cuvae;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir() {
  return test::temp_dir("cuvae_st_");
}
std::string slurp(const fs::path& p) {
  return test::read_file(p.string());
}
void spit(const fs::path& p, const std::string& bytes) {
  test::write_file(p.string(), bytes);
}

// A file made of a given header text and data bytes.
std::string make_file(const std::string& header, const std::string& data) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((uint64_t(header.size()) >> (8 * i)) & 0xff);
  return s + header + data;
}

// The error names the file and carries the expected words.
void require_refused(const fs::path& p, const std::string& words) {
  try {
    read_safetensors(p.string());
    FAIL("accepted " << p);
  } catch (const InputError& e) {
    const std::string msg = e.what();
    INFO(msg);
    REQUIRE(msg.find(p.string()) == 0);
    REQUIRE(msg.find('\n') == std::string::npos);
    REQUIRE(msg.find(words) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("safetensors round trip is bit-exact, with metadata", "[safetensors]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const fs::path dir = temp_dir();
  const std::string path = (dir / "t.safetensors").string();
  std::vector<float> a = test::random_vector<float>(rng, 31 * 3, -1e3, 1e3);
  a[0] = -0.0f, a[1] = std::numeric_limits<float>::denorm_min();
  const std::vector<double> b = {3.141592653589793, -1e300};
  const std::vector<uint8_t> c = {0, 255, 7};
  const int64_t d = -5;
  write_safetensors(path,
                    {{"w.a", DType::F32, {31, 3}, a.data()},
                     {"b", DType::F64, {2}, b.data()},
                     {"c", DType::U8, {3}, c.data()},
                     {"d", DType::I64, {}, &d},
                     {"empty", DType::F32, {0, 4}, nullptr}},
                    {{"latent_dim", "2"}, {"note", "a \"quoted\" value"}});
  const SafetensorsFile f = read_safetensors(path);
  REQUIRE(f.tensors.size() == 5);
  REQUIRE(f.metadata.at("latent_dim") == "2");
  REQUIRE(f.metadata.at("note") == "a \"quoted\" value");
  const TensorIn& ta = f.get("w.a", DType::F32, {31, 3});
  REQUIRE(std::memcmp(ta.bytes.data(), a.data(), a.size() * 4) == 0);
  REQUIRE(std::memcmp(f.get("b", DType::F64, {2}).bytes.data(), b.data(), 16) == 0);
  REQUIRE(f.get("c", DType::U8, {3}).bytes == c);
  REQUIRE(f.get("d", DType::I64, {}).numel() == 1);
  REQUIRE(f.get("empty", DType::F32, {0, 4}).bytes.empty());
  CHECK_THROWS_AS(f.get("w.a", DType::F64, {31, 3}), InputError);
  CHECK_THROWS_AS(f.get("w.a", DType::F32, {3, 31}), InputError);
  CHECK_THROWS_AS(f.get("missing", DType::F32, {1}), InputError);
  // The header is 8-byte aligned so the data is too.
  const std::string raw = slurp(path);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(raw[size_t(i)])) << (8 * i);
  CHECK(n % 8 == 0);
  // No temporary file is left behind.
  size_t files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++files;
  CHECK(files == 1);
  fs::remove_all(dir);
}

TEST_CASE("a failed write leaves the previous file intact", "[safetensors][atomic_file]") {
  const fs::path dir = temp_dir();
  const std::string path = (dir / "m.safetensors").string();
  const float one = 1.0f;
  write_safetensors(path, {{"x", DType::F32, {1}, &one}}, {});
  const std::string before = slurp(path);
  // A repeated name is refused before anything is written.
  CHECK_THROWS_AS(
      write_safetensors(path, {{"x", DType::F32, {1}, &one}, {"x", DType::F32, {1}, &one}}, {}),
      Error);
  REQUIRE(slurp(path) == before);
  // A folder that does not exist: InputError naming the file.
  CHECK_THROWS_AS(write_safetensors((dir / "no/such/dir/m.safetensors").string(),
                                    {{"x", DType::F32, {1}, &one}}, {}),
                  InputError);
  fs::remove_all(dir);
}

TEST_CASE("corrupt safetensors files are refused with the reason", "[safetensors]") {
  const fs::path dir = temp_dir();
  const fs::path p = dir / "bad.safetensors";
  const std::string good_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  spit(p, make_file(good_header, std::string(8, '\1')));
  REQUIRE_NOTHROW(read_safetensors(p.string()));

  spit(p, "");
  require_refused(p, "too short");
  spit(p, "abc");
  require_refused(p, "too short");
  const std::string full = make_file(good_header, std::string(8, '\1'));
  spit(p, full.substr(0, full.size() - 3));  // data cut short
  require_refused(p, "larger than the file");
  spit(p, full.substr(0, 20));  // header cut short: a safetensors file, truncated
  require_refused(p, "header length");
  require_refused(p, "runs past the end");
  CHECK_THROWS_WITH(read_safetensors(p.string()), !Catch::Contains("not a safetensors file"));
  // Another kind of file (a PNG given as a model): its first 8 bytes read as a length far past
  // the end, and no JSON object follows them.
  spit(p, std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16) + std::string(300, '\7'));
  require_refused(p, "not a safetensors file");
  require_refused(p, "runs past the end of the file (316 bytes)");
  std::string huge = full;
  huge[7] = '\x7f';  // header length ~ 2^63
  spit(p, huge);
  require_refused(p, "runs past the end");
  spit(p, make_file("{not json", ""));
  require_refused(p, "not valid JSON");
  spit(p, make_file("[1,2]", ""));
  require_refused(p, "not a JSON object");
  spit(p,
       make_file(R"({"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", std::string(4, 0)));
  require_refused(p, "unsupported dtype");
  spit(p,
       make_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(12, 0)));
  require_refused(p, "need 12");
  spit(p,
       make_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, 0)));
  require_refused(p, "non-integer or negative");
  spit(p,
       make_file(R"({"a":{"dtype":"F32","shape":[4294967295,4294967295,16],"data_offsets":[0,8]}})",
                 std::string(8, 0)));
  require_refused(p, "larger than the file");
  spit(p,
       make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", std::string(8, 0)));
  require_refused(p, "outside the data area");
  spit(p, make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                    std::string(12, 0)));
  require_refused(p, "overlap");
  spit(p, make_file(R"({"a":{"dtype":"F32","shape":[2]}})", std::string(8, 0)));
  require_refused(p, "needs dtype, shape and data_offsets");
  spit(p, make_file(R"({"__metadata__":{"k":3}})", ""));
  require_refused(p, "not a string");
  require_refused(dir / "missing.safetensors", "cannot open");
  require_refused(dir, "is a directory");
  fs::remove_all(dir);
}

namespace {

// The message of the InputError that fn throws ("" and a failed check if none).
std::string refusal_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const InputError& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL_CHECK("expected an InputError, got: " << e.what());
    return "";
  }
  FAIL_CHECK("accepted");
  return "";
}

// One line, "<name>: <reason>", the reason holding `words`.
void check_refusal(const std::string& msg, const std::string& name, const std::string& words) {
  INFO("message: " << msg);
  CHECK(msg.rfind(name + ": ", 0) == 0);
  CHECK(msg.find('\n') == std::string::npos);
  CHECK(msg.find(words) != std::string::npos);
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":" + dtype + ",\"shape\":" + shape +
         ",\"data_offsets\":" + offsets + "}";
}

}  // namespace

TEST_CASE("malformed safetensors are refused from a file and from memory", "[safetensors]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  const auto random_bytes = [&](size_t n) {
    std::string s(n, '\0');
    for (char& c : s) c = char(byte(rng));
    return s;
  };
  const fs::path dir = temp_dir();
  const std::string a = entry("a", "\"F32\"", "[2]", "[0,8]");
  const std::string good = make_file("{" + a + "}", random_bytes(8));
  const size_t header_end = good.size() - 8;

  struct Case {
    std::string name;
    std::string bytes;
    std::string words;
  };
  std::vector<Case> cases;
  // Cut short at every byte: in the length field, in the header, in the data.
  for (size_t len = 0; len < good.size(); ++len) {
    cases.push_back({"cut to " + std::to_string(len), good.substr(0, len),
                     len < 8            ? "too short for a safetensors file"
                     : len < header_end ? "runs past the end of the file"
                                        : "larger than the file's data"});
  }
  std::string huge_len = good;
  for (int i = 0; i < 8; ++i) huge_len[size_t(i)] = '\xff';
  cases.push_back({"header length 2^64-1", huge_len, "header length 18446744073709551615 runs"});
  // Headers that are not a JSON object.
  cases.push_back({"empty header", make_file("", ""), "not valid JSON"});
  cases.push_back({"blank header", make_file("        ", ""), "not valid JSON"});
  cases.push_back(
      {"JSON then garbage", make_file("{" + a + "}x", random_bytes(8)), "not valid JSON"});
  cases.push_back({"not UTF-8", make_file("{\"a\xff\xfe\":1}", ""), "not valid JSON"});
  cases.push_back({"a NUL in the header", make_file(std::string("{\0}", 3), ""), "not valid JSON"});
  cases.push_back(
      {"JSON, a NUL, garbage", make_file(std::string("{}\0garbage", 10), ""), "not valid JSON"});
  cases.push_back({"a string", make_file("\"a\"", ""), "not a JSON object"});
  cases.push_back({"a number", make_file("42", ""), "not a JSON object"});
  const std::string deep = "{\"a\":" + std::string(5000, '[') + std::string(5000, ']') + "}";
  cases.push_back({"nested 5000 deep", make_file(deep, ""), "nests deeper than"});
  // Entries that are not a tensor description.
  cases.push_back({"entry is a number", make_file("{\"a\":5}", ""), "needs dtype, shape"});
  cases.push_back({"entry lacks data_offsets",
                   make_file(R"({"a":{"dtype":"F32","shape":[2]}})", random_bytes(8)),
                   "needs dtype, shape and data_offsets"});
  for (const std::string dtype : {"4", "null", "[\"F32\"]", "\"BF16\"", "\"f32\"", "\"\""}) {
    cases.push_back({"dtype " + dtype,
                     make_file("{" + entry("a", dtype, "[2]", "[0,8]") + "}", random_bytes(8)),
                     "tensor 'a': unsupported dtype"});
  }
  for (const std::string shape : {"2", "\"2\"", "{}", "[1,1,1,1,1,1,1,1,2]"}) {
    cases.push_back({"shape " + shape,
                     make_file("{" + entry("a", "\"F32\"", shape, "[0,8]") + "}", random_bytes(8)),
                     "shape is not a short array"});
  }
  for (const std::string shape : {"[2.0]", "[-2]", "[true]", "[[2]]", "[\"2\"]"}) {
    cases.push_back({"shape " + shape,
                     make_file("{" + entry("a", "\"F32\"", shape, "[0,8]") + "}", random_bytes(8)),
                     "non-integer or negative"});
  }
  cases.push_back(
      {"shape overflows 64 bits",
       make_file("{" + entry("a", "\"F64\"", "[4294967296,4294967296,2]", "[0,8]") + "}",
                 random_bytes(8)),
       "larger than the file's data"});
  for (const std::string off :
       {"[0]", "[0,8,8]", "[-1,7]", "[0,8.0]", "\"0,8\"", "{}", "[0,null]"}) {
    cases.push_back({"data_offsets " + off,
                     make_file("{" + entry("a", "\"F32\"", "[2]", off) + "}", random_bytes(8)),
                     "data_offsets must be two non-negative integers"});
  }
  cases.push_back({"offsets beyond the data",
                   make_file("{" + entry("a", "\"F32\"", "[2]", "[8,16]") + "}", random_bytes(8)),
                   "data_offsets [8, 16] lie outside the data area of 8 bytes"});
  cases.push_back({"offsets reversed",
                   make_file("{" + entry("a", "\"U8\"", "[0]", "[8,0]") + "}", random_bytes(8)),
                   "lie outside the data area"});
  cases.push_back({"offsets 2^64-1",
                   make_file("{" + entry("a", "\"U8\"", "[1]", "[18446744073709551615,0]") + "}",
                             random_bytes(8)),
                   "lie outside the data area"});
  cases.push_back({"span does not match dtype and shape",
                   make_file("{" + entry("a", "\"F64\"", "[2]", "[0,8]") + "}", random_bytes(16)),
                   "data_offsets span 8 bytes but dtype and shape need 16"});
  // Tensors that do not tile the data area exactly.
  const std::string b_over = entry("b", "\"F32\"", "[2]", "[4,12]");
  cases.push_back({"overlapping tensors", make_file("{" + a + "," + b_over + "}", random_bytes(12)),
                   "tensor data ranges overlap: 'a' [0, 8] and 'b' [4, 12]"});
  cases.push_back(
      {"the same range twice",
       make_file("{" + a + "," + entry("b", "\"I64\"", "[1]", "[0,8]") + "}", random_bytes(8)),
       "overlap"});
  cases.push_back(
      {"an empty tensor inside another",
       make_file("{" + a + "," + entry("e", "\"F32\"", "[0]", "[4,4]") + "}", random_bytes(8)),
       "overlap"});
  cases.push_back(
      {"a hole between tensors",
       make_file("{" + a + "," + entry("b", "\"F32\"", "[2]", "[12,20]") + "}", random_bytes(20)),
       "bytes 8 to 12 of the data area belong to no tensor"});
  cases.push_back({"a hole before the first tensor",
                   make_file("{" + entry("a", "\"F32\"", "[2]", "[4,12]") + "}", random_bytes(12)),
                   "bytes 0 to 4 of the data area belong to no tensor"});
  cases.push_back({"bytes after the last tensor", make_file("{" + a + "}", random_bytes(13)),
                   "the data area holds 5 bytes after the last tensor's data"});
  cases.push_back({"data and no tensor", make_file("{}", random_bytes(8)),
                   "holds 8 bytes after the last tensor's data"});
  // Metadata.
  cases.push_back({"metadata is a list", make_file(R"({"__metadata__":["a"]})", ""),
                   "__metadata__ is not an object"});
  cases.push_back({"metadata value is a number", make_file(R"({"__metadata__":{"k":1.5}})", ""),
                   "metadata value of 'k' is not a string"});
  // Names from the file stay on one line and short in the message.
  cases.push_back(
      {"a name with a newline",
       make_file("{" + entry("x\\ny", "\"F16\"", "[2]", "[0,4]") + "}", random_bytes(4)),
       "tensor 'x\\x0Ay': unsupported dtype"});
  cases.push_back({"a 10000-byte name",
                   make_file("{" + entry(std::string(10000, 'n'), "\"F16\"", "[2]", "[0,4]") + "}",
                             random_bytes(4)),
                   "nnn...': unsupported dtype"});

  int index = 0;
  for (const Case& c : cases) {
    INFO("case: " << c.name);
    const std::string path = (dir / ("case" + std::to_string(index++) + ".safetensors")).string();
    spit(path, c.bytes);
    const std::string from_file = refusal_of([&] { read_safetensors(path); });
    check_refusal(from_file, path, c.words);
    CHECK(from_file.size() < path.size() + 400);
    const std::string from_memory = refusal_of([&] {
      parse_safetensors("mem", reinterpret_cast<const uint8_t*>(c.bytes.data()), c.bytes.size());
    });
    check_refusal(from_memory, "mem", c.words);
    // The same reason either way.
    CHECK(from_file.substr(path.size()) == from_memory.substr(3));
  }

  // Valid corner cases are still accepted, the same either way: tensors listed out of order,
  // a header padded with spaces, an empty tensor at the end, no tensor at all.
  const std::string b = entry("b", "\"U8\"", "[3]", "[8,11]");
  const std::string e = entry("e", "\"F32\"", "[0,5]", "[11,11]");
  for (const std::string& bytes :
       {make_file("{" + b + "," + e + "," + a + "}   ", random_bytes(11)), make_file("{}", ""),
        make_file("  {\"__metadata__\":{}}  ", "")}) {
    const std::string path = (dir / "ok.safetensors").string();
    spit(path, bytes);
    const SafetensorsFile f = read_safetensors(path);
    const SafetensorsFile m =
        parse_safetensors("mem", reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    REQUIRE(f.tensors.size() == m.tensors.size());
    for (const auto& [name, t] : f.tensors) {
      INFO("tensor " << name);
      CHECK(m.tensors.at(name).bytes == t.bytes);
      CHECK(t.bytes.size() == t.numel() * dtype_size(t.dtype));
    }
  }
  fs::remove_all(dir);
}

TEST_CASE("safetensors: a header over the size limit and files that cannot be read",
          "[safetensors]") {
  const fs::path dir = temp_dir();
  // A sparse file of 101 MiB whose header claims 101 MiB - 8: within the file, over the limit;
  // refused before the header is read or allocated.
  const std::string big = (dir / "big.safetensors").string();
  const uint64_t size = uint64_t(101) << 20;
  std::string head(8, '\0');
  for (int i = 0; i < 8; ++i) head[size_t(i)] = char(((size - 8) >> (8 * i)) & 0xff);
  spit(big, head + "{");
  fs::resize_file(big, size);
  check_refusal(refusal_of([&] { read_safetensors(big); }), big,
                "header length " + std::to_string(size - 8) + " is beyond the limit");

  const std::string fifo = (dir / "fifo.safetensors").string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);  // opening it would block: refused before
  check_refusal(refusal_of([&] { read_safetensors(fifo); }), fifo, "is not a regular file");
  const std::string loop = (dir / "loop.safetensors").string();
  REQUIRE(::symlink("loop.safetensors", loop.c_str()) == 0);
  check_refusal(refusal_of([&] { read_safetensors(loop); }), loop, "cannot open");
  const std::string locked = (dir / "locked.safetensors").string();
  spit(locked, make_file("{}", ""));
  REQUIRE(::chmod(locked.c_str(), 0) == 0);
  if (::geteuid() != 0) {
    check_refusal(refusal_of([&] { read_safetensors(locked); }), locked, "Permission denied");
  } else {
    WARN("running as root: the chmod 000 case is skipped (root can read the file)");
  }
  fs::remove_all(dir);
}
