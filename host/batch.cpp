// Epoch permutations, batch gathering and reparameterization noise on the host (batch.h).
#include "host/batch.h"

#include <numeric>
#include <utility>

#include "host/error.h"
#include "host/philox.h"

namespace cuvae {

std::vector<int32_t> epoch_permutation(uint64_t seed, int64_t epoch, int64_t n) {
  if (n < 0 || n > INT32_MAX) throw Error("epoch_permutation: bad dataset size");
  std::vector<int32_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  for (int64_t i = n - 1; i > 0; --i) {
    const Philox4 r = random_words(seed, Stream::Shuffle, uint64_t(epoch), uint32_t(i));
    // 64 random bits reduced to [0, i]: the modulo bias is below 2^-32, irrelevant here.
    const uint64_t bits = (uint64_t(r.v[0]) << 32) | r.v[1];
    const auto j = int64_t(bits % uint64_t(i + 1));
    std::swap(perm[size_t(i)], perm[size_t(j)]);
  }
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
