// Shared test helpers: fresh seeds, poisoned buffers, tensor comparison with a report, and
// the location of the real MNIST files.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace cuvae::test {

// A fresh seed per test run (std::random_device), unless CUVAE_TEST_SEED pins one. Tests
// print it with INFO so a failure can be replayed.
uint64_t fresh_seed();

// Fills with NaN so an output a kernel forgot to write can never pass a comparison.
template <typename T>
void poison(std::vector<T>& v) {
  std::fill(v.begin(), v.end(), std::numeric_limits<T>::quiet_NaN());
}

template <typename T>
std::vector<T> random_vector(std::mt19937_64& rng, size_t n, double lo, double hi) {
  std::uniform_real_distribution<double> d(lo, hi);
  std::vector<T> v(n);
  for (T& x : v) x = static_cast<T>(d(rng));
  return v;
}

struct Diff {
  double max_abs = 0;  // max |got - want|
  double max_rel = 0;  // max |got - want| / max(|want|, floor)
  double rel_l2 = 0;   // ||got - want|| / ||want||
  double err_l2 = 0;   // ||got - want||
  double want_l2 = 0;  // ||want||
  size_t worst = 0;    // index of max_abs
  double got_at_worst = 0, want_at_worst = 0;
  bool non_finite = false;  // any NaN/Inf in got or want
  std::string report(const std::string& name) const;
  // A relative L2 bound with an absolute floor: rel_l2 <= rel_tol (REQUIRE_REL_L2's test) or
  // ||got - want|| <= abs_floor, and everything finite; that is ||got - want|| <=
  // max(rel_tol ||want||, abs_floor). The floor is for tensors whose elements are sums that can
  // cancel (a bias gradient of one or two elements, a single latent mean): there the error
  // scales with the magnitudes of the terms summed, not with the sum, and a relative bound alone
  // fails on correct code now and then. Each caller derives its floor from those magnitudes.
  bool within_l2(double rel_tol, double abs_floor) const {
    return !non_finite && (rel_l2 <= rel_tol || err_l2 <= abs_floor);
  }
};

// Element-wise comparison; `floor` keeps max_rel meaningful near zero.
template <typename A, typename B>
Diff compare(const A* got, const B* want, size_t n, double floor = 1e-12) {
  Diff d;
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double g = double(got[i]), w = double(want[i]);
    if (!std::isfinite(g) || !std::isfinite(w)) {
      d.non_finite = true;
      d.worst = i, d.got_at_worst = g, d.want_at_worst = w;
      d.max_abs = d.max_rel = d.rel_l2 = d.err_l2 = std::numeric_limits<double>::infinity();
      return d;
    }
    const double e = std::abs(g - w);
    if (e > d.max_abs || i == 0)
      d.max_abs = e, d.worst = i, d.got_at_worst = g, d.want_at_worst = w;
    d.max_rel = std::max(d.max_rel, e / std::max(std::abs(w), floor));
    num += e * e;
    den += w * w;
  }
  d.rel_l2 = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  d.err_l2 = std::sqrt(num);
  d.want_l2 = std::sqrt(den);
  return d;
}

// The L2 norm of v[offset, offset + n): with per-element magnitudes (sums of |term|), the scale
// of an absolute floor for Diff::within_l2.
inline double l2_norm(const std::vector<double>& v, size_t offset, size_t n) {
  double sq = 0;
  for (size_t i = offset; i < offset + n; ++i) sq += v[i] * v[i];
  return std::sqrt(sq);
}

// A new folder under the system temp directory, named prefix + six random characters
// (mkdtemp): never shared with another call or process, whatever CUVAE_TEST_SEED says.
std::string temp_dir(const std::string& prefix);

// A temp_dir(prefix) folder, removed with everything in it at the end of the test.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix) : path(temp_dir(prefix)) {}
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// The exit code CTest reads as "skipped" (SKIP_RETURN_CODE); reached only through run_or_skip's
// skip_reason, never through a test result.
constexpr int kSkipExitCode = 77;
// A Catch2 session's result (v2: the number of failed assertions, capped at 255) as an exit
// code: 0 when everything passed, else 1, so that no count of failures can read as a skip.
int catch_exit_code(int catch_result);
// (run_or_skip, the mains' common body, is in tests/test_main.h.)
// A whole file as bytes / a file replaced by bytes.
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& bytes);

// The folder with the real MNIST files: $CUVAE_MNIST_DIR if it holds them, else data/mnist in
// the source tree; empty when neither does.
const std::string& mnist_dir();

}  // namespace cuvae::test

// Catch2 assertions over a Diff, with the full report on failure. NaN never passes.
#define REQUIRE_REL_L2(diff, name, tol) \
  do {                                  \
    const auto& d_ = (diff);            \
    INFO(d_.report(name));              \
    REQUIRE_FALSE(d_.non_finite);       \
    REQUIRE(d_.rel_l2 <= (tol));        \
  } while (0)
// Diff::within_l2: relative L2 within tol, or the absolute L2 error within abs_floor.
#define REQUIRE_REL_L2_FLOOR(diff, name, tol, abs_floor)                                     \
  do {                                                                                       \
    const auto& d_ = (diff);                                                                 \
    INFO(d_.report(name) << "; tolerance rel L2 " << (tol) << " or abs L2 " << (abs_floor)); \
    REQUIRE_FALSE(d_.non_finite);                                                            \
    REQUIRE(d_.within_l2((tol), (abs_floor)));                                               \
  } while (0)
#define REQUIRE_MAX_ABS(diff, name, tol) \
  do {                                   \
    const auto& d_ = (diff);             \
    INFO(d_.report(name));               \
    REQUIRE_FALSE(d_.non_finite);        \
    REQUIRE(d_.max_abs <= (tol));        \
  } while (0)
#define REQUIRE_MAX_REL(diff, name, tol) \
  do {                                   \
    const auto& d_ = (diff);             \
    INFO(d_.report(name));               \
    REQUIRE_FALSE(d_.non_finite);        \
    REQUIRE(d_.max_rel <= (tol));        \
  } while (0)
