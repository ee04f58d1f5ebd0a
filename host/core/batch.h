// Mini-batch order and assembly, shared by the CPU and GPU trainers.
//
// Each epoch visits the training images in a seeded permutation: image i gets the 64-bit
// Philox key shuffle_key(seed, epoch, i) (philox.h) and the images go by ascending key, ties
// by index. A sort by independent uniform keys is a uniformly random permutation (a tie, which
// only keeps two images in index order, has a chance of about 1e-10 at N = 60,000), the order
// depends only on the seed and the epoch, and the GPU draws the same order with a radix sort
// (cuda/kernels/shuffle.cuh) without the host. An epoch is ceil(N / B) batches; the last one holds
// the N mod B remaining images, if any.
// Pixels are stored as uint8 and normalised to [0, 1] (x / 255) when a batch is gathered.
#pragma once

#include <cstdint>
#include <vector>

namespace cuvae {

std::vector<int32_t> epoch_permutation(uint64_t seed, int64_t epoch, int64_t n);

// x (count, 784) = pixels[index[i]] / 255 for i < count.
void gather_batch(float* x, const uint8_t* pixels, const int32_t* index, int count,
                  int pixels_per_image);

// Normal noise for step `step`, (count, D) row-major: eps_normal(seed, step, i).
void fill_eps(float* eps, uint64_t seed, uint64_t step, int count, int latent_dim);

}  // namespace cuvae
