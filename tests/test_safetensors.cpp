// safetensors: round trip, atomic writes, and strict refusal of corrupt files.
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "host/error.h"
#include "host/safetensors.h"
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

TEST_CASE("a failed write leaves the previous file intact", "[safetensors]") {
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
  spit(p, full.substr(0, 20));  // header cut short
  require_refused(p, "runs past the end");
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
