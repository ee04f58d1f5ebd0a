// Counter-based random numbers shared by the CPU reference and the CUDA kernels.
//
// Philox4x32-10 (Salmon et al., "Parallel Random Numbers: As Easy as 1, 2, 3", SC'11): a
// keyed bijection of a 128-bit counter, so the value for (seed, stream, index) is a pure
// function of those numbers: the same every run, on every thread layout and on every GPU.
// Every random draw in cuvae names its purpose (a Stream) so that, say, the weight
// initialisation never shares numbers with the reparameterization noise.
//   uniform01(): 24-bit mantissa in (0, 1], never 0 so log() is finite.
//   normal pair: Box-Muller on two uniforms, computed in float.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define CUVAE_HD __host__ __device__ __forceinline__
#else
#define CUVAE_HD inline
#endif

namespace cuvae {

// What a draw is for; part of the counter so streams never overlap.
enum class Stream : uint32_t {
  Init = 1,     // weight initialisation: index = flat parameter offset
  Eps = 2,      // reparameterization noise: (step, batch_row * D + j)
  Shuffle = 3,  // per-epoch permutation: (epoch, image index)
  Data = 4,     // synthetic data in tests and parity dumps
  Eval = 5,     // evaluation noise: (seed, image index, sample * D + j)
  Labels = 6,   // labelled subsets of `cuvae classify`: (draw, image index)
};

struct Philox4 {
  uint32_t v[4];
};

CUVAE_HD uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// Philox4x32 with 10 rounds; counter c, key k (64-bit seed split in two words).
CUVAE_HD Philox4 philox4x32_10(Philox4 c, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo32(kM0, c.v[0], &hi0);
    const uint32_t lo1 = mulhilo32(kM1, c.v[2], &hi1);
    c = Philox4{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
    k0 += kW0;
    k1 += kW1;
  }
  return c;
}

// Four 32-bit words for (seed, stream, a, b).
CUVAE_HD Philox4 random_words(uint64_t seed, Stream stream, uint64_t a, uint32_t b) {
  const Philox4 counter{
      {static_cast<uint32_t>(a), static_cast<uint32_t>(a >> 32), b, static_cast<uint32_t>(stream)}};
  return philox4x32_10(counter, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Uniform in (0, 1]: top 24 bits, offset by one so the value is never zero.
CUVAE_HD float uniform01(uint32_t word) {
  return (static_cast<float>(word >> 8) + 1.0f) * (1.0f / 16777216.0f);
}

// Standard normal from two words (Box-Muller, first of the pair).
CUVAE_HD float normal_from(uint32_t w0, uint32_t w1) {
  const float u1 = uniform01(w0);
  const float u2 = uniform01(w1);
  const float r = sqrtf(-2.0f * logf(u1));
  return r * cosf(6.28318530717958647692f * u2);
}

// The sort key of image i in epoch `epoch`'s order: 64 random bits. An epoch visits the images
// by ascending key, ties by index (host/core/batch.h epoch_permutation, cuda/kernels/shuffle.cuh).
CUVAE_HD uint64_t shuffle_key(uint64_t seed, uint64_t epoch, uint32_t i) {
  const Philox4 w = random_words(seed, Stream::Shuffle, epoch, i);
  return (static_cast<uint64_t>(w.v[0]) << 32) | w.v[1];
}

// The reparameterization noise for training step `step`, element `i` of the (B, D) batch.
CUVAE_HD float eps_normal(uint64_t seed, uint64_t step, uint32_t i) {
  const Philox4 w = random_words(seed, Stream::Eps, step, i);
  return normal_from(w.v[0], w.v[1]);
}

}  // namespace cuvae
