// Shared by the GPU tests of the bias gradient of bias_act_backward (cuda/kernels/activations.cuh,
// its float and bf16 forms in test_activations.cpp) and of the fused loss (test_loss.cpp): a
// per-channel reference sum in double (RefSum) and the bound a device sum of the same terms in
// another order must meet (require_sums), and device memory for the scratch of the sliced column
// reduction (plane == 1, see BiasGradScratch).
#pragma once

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/kernels/activations.cuh"
#include "cuda/runtime/device_buffer.cuh"
#include "tests/gpu/device_io.h"

namespace cuvae::test {

// ---- reference sums ----------------------------------------------------------------------------

// A sum in double, as the reference forms it (in order), with what its tolerance needs.
struct RefSum {
  double sum = 0, abs_sum = 0;
  int64_t terms = 0;
  void add(double t) { sum += t, abs_sum += std::abs(t), ++terms; }
};

// The per-channel sums of v (batch, channels, plane), each in element order; for plane == 1 (a
// (rows, channels) matrix) the column sums in row order.
inline std::vector<RefSum> channel_sums(const std::vector<float>& v, int channels, int64_t plane) {
  std::vector<RefSum> sums(static_cast<size_t>(channels));
  for (size_t i = 0; i < v.size(); ++i)
    sums[(i / size_t(plane)) % size_t(channels)].add(double(v[i]));
  return sums;
}

// Tolerance of a device float that is `r`'s terms summed in double in another order (such as
// per-thread strided sums, a tree, then the slices) and rounded once to float. Any order of n
// double additions is within (n - 1) 2^-53 sum|t| of the exact sum, so the two double sums differ
// by at most twice that, and rounding to float adds 2^-24 relative: 2^-23 |sum| + 3 n 2^-53 sum|t|
// (spare factors for second-order terms), plus the smallest float for a sum that is exactly 0. A
// missing or doubled term, or a term rounded to bf16 before it is summed (2^-8 relative), is far
// outside it: for 100352 rows of uniform [-1, 1] terms the bound is ~2e-5 on |sum| ~ 180, and a
// term of typical size is ~0.5.
inline double sum_bound(const RefSum& r) {
  return 0x1p-23 * std::abs(r.sum) + 3.0 * double(r.terms) * 0x1p-53 * r.abs_sum +
         double(std::numeric_limits<float>::denorm_min());
}

// got[c] within sum_bound(want[c]) of want[c].sum for every c, and finite. Reports the worst.
inline void require_sums(const std::vector<float>& got, const std::vector<RefSum>& want,
                         const std::string& name) {
  REQUIRE(got.size() == want.size());
  size_t worst = 0;
  double worst_ratio = -1, worst_bound = 0;
  bool finite = true;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) {
      finite = false, worst = i;
      break;
    }
    const double bound = sum_bound(want[i]);
    const double ratio = std::abs(double(got[i]) - want[i].sum) / bound;
    if (ratio > worst_ratio) worst_ratio = ratio, worst = i, worst_bound = bound;
  }
  uint32_t bits;
  std::memcpy(&bits, &got[worst], sizeof bits);
  std::ostringstream hex;
  hex << std::hex << std::setfill('0') << std::setw(8) << bits;
  INFO(name << ": worst [" << worst << "] of " << got.size() << " got " << std::setprecision(9)
            << got[worst] << " (0x" << hex.str() << "), want " << std::setprecision(17)
            << want[worst].sum << " (" << want[worst].terms << " terms, sum |t| "
            << want[worst].abs_sum << "), bound " << worst_bound << ", error / bound "
            << worst_ratio);
  REQUIRE(finite);
  REQUIRE(worst_ratio <= 1.0);
}

// ---- the scratch of the sliced reduction --------------------------------------------------------

// (rows, channels) of a plane == 1 bias gradient.
struct Rows {
  int rows, channels;
};

// The doubles of scratch the largest of `shapes` needs: one scratch then serves them all.
inline size_t scratch_capacity(const std::vector<Rows>& shapes) {
  size_t capacity = 0;
  for (const Rows& sh : shapes)
    capacity = std::max(capacity, bias_grad_scratch_doubles(sh.rows, sh.channels, 1));
  return capacity;
}

// A bias-gradient scratch in device memory: `capacity` partial sums and a zeroed ticket.
struct DeviceScratch {
  DeviceBuffer<double> partial;
  DeviceBuffer<unsigned> ticket;
  DeviceScratch(size_t capacity, cudaStream_t s)
      : partial(capacity, "bias-grad partial sums"), ticket(1, "bias-grad ticket") {
    CUDA_CHECK(cudaMemsetAsync(ticket.data(), 0, ticket.bytes(), s));
    CUDA_CHECK(cudaStreamSynchronize(s));
  }
  BiasGradScratch view() { return {partial.data(), ticket.data(), partial.size()}; }
  unsigned ticket_value(cudaStream_t s) const { return to_host(ticket, s)[0]; }
};

}  // namespace cuvae::test
