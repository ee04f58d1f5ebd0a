// Shared test helpers: fresh seeds, poisoned buffers, tensor comparison with a report, and
// the location of the real MNIST files.
#pragma once

#include <cmath>
#include <cstdint>
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
  size_t worst = 0;    // index of max_abs
  double got_at_worst = 0, want_at_worst = 0;
  bool non_finite = false;  // any NaN/Inf in got or want
  std::string report(const std::string& name) const;
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
      d.max_abs = d.max_rel = d.rel_l2 = std::numeric_limits<double>::infinity();
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
  return d;
}

// A fresh folder under the system temp directory, named prefix + a random number.
std::string temp_dir(const std::string& prefix);
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
