// Epoch permutations, batch gathering and reparameterization noise on the host (batch.h).
#include "host/core/batch.h"

#include <algorithm>
#include <utility>

#include "host/core/error.h"
#include "host/core/philox.h"

namespace cuvae {

std::vector<int32_t> epoch_permutation(uint64_t seed, int64_t epoch, int64_t n) {
  if (n < 0 || n > INT32_MAX) throw Error("epoch_permutation: bad dataset size");
  std::vector<std::pair<uint64_t, int32_t>> keyed(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    keyed[size_t(i)] = {shuffle_key(seed, uint64_t(epoch), uint32_t(i)), int32_t(i)};
  std::sort(keyed.begin(), keyed.end());  // by key, then by index
  std::vector<int32_t> perm(static_cast<size_t>(n));
  for (size_t i = 0; i < perm.size(); ++i) perm[i] = keyed[i].second;
  return perm;
}

void gather_batch(float* x, const uint8_t* pixels, const int32_t* index, int count,
                  int pixels_per_image) {
  for (int b = 0; b < count; ++b) {
    const uint8_t* src = pixels + int64_t(index[b]) * pixels_per_image;
    float* dst = x + int64_t(b) * pixels_per_image;
    for (int p = 0; p < pixels_per_image; ++p) dst[p] = float(src[p]) / 255.0f;
  }
}

void fill_eps(float* eps, uint64_t seed, uint64_t step, int count, int latent_dim) {
  const int n = count * latent_dim;
  for (int i = 0; i < n; ++i) eps[i] = eps_normal(seed, step, uint32_t(i));
}

}  // namespace cuvae
