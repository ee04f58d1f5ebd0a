// Test helpers (test_support.h).
#include "tests/test_support.h"

#include <stdlib.h>  // mkdtemp

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <fstream>
#include <sstream>

namespace cuvae::test {

uint64_t fresh_seed() {
  if (const char* s = std::getenv("CUVAE_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  std::random_device rd;
  return (uint64_t(rd()) << 32) ^ rd();
}

std::string temp_dir(const std::string& prefix) {
  // mkdtemp: a folder of this call's own, whatever the seed. (Named from the seed, two test
  // processes run with one CUVAE_TEST_SEED shared a folder, and one deleted the other's files.)
  std::string path = (std::filesystem::temp_directory_path() / (prefix + "XXXXXX")).string();
  if (!::mkdtemp(path.data()))
    throw std::runtime_error("temp_dir: mkdtemp(" + path + "): " + std::strerror(errno));
  return path;
}

int catch_exit_code(int catch_result) {
  return catch_result == 0 ? 0 : 1;
}


std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string Diff::report(const std::string& name) const {
  std::ostringstream os;
  os.precision(4);
  os << name << ": max_abs " << max_abs << " at [" << worst << "] (got " << got_at_worst
     << ", want " << want_at_worst << "), max_rel " << max_rel << ", rel_l2 " << rel_l2
     << " (||got - want|| " << err_l2 << ", ||want|| " << want_l2 << ")"
     << (non_finite ? ", NON-FINITE VALUE" : "");
  return os.str();
}

namespace {
bool has_mnist(const std::string& dir) {
  namespace fs = std::filesystem;
  if (dir.empty()) return false;
  for (const char* f : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"})
    if (!fs::exists(dir + "/" + f) && !fs::exists(dir + "/" + f + ".gz")) return false;
  return true;
}
}  // namespace

const std::string& mnist_dir() {
  static const std::string dir = [] {
    if (const char* env = std::getenv("CUVAE_MNIST_DIR"); env && has_mnist(env))
      return std::string(env);
    const std::string in_tree = std::string(CUVAE_SOURCE_DIR) + "/data/mnist";
    return has_mnist(in_tree) ? in_tree : std::string();
  }();
  return dir;
}

}  // namespace cuvae::test
