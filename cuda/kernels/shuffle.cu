// Epoch permutation on the device (shuffle.cuh): a key kernel, then cub's LSD radix sort,
// which is stable, so equal keys keep the index order of the values column.
#include <cub/device/device_radix_sort.cuh>

#include <climits>
#include <string>

#include "cuda/kernels/launch.cuh"
#include "cuda/kernels/shuffle.cuh"
#include "cuda/runtime/cuda_check.cuh"
#include "host/core/philox.h"

namespace cuvae {
namespace {

constexpr int kThreads = 256;

__global__ void iota_kernel(int32_t* __restrict__ index, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride)
    index[i] = int32_t(i);
}

__global__ void shuffle_key_kernel(uint64_t* __restrict__ keys, uint64_t seed, uint64_t epoch,
                                   int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride)
    keys[i] = shuffle_key(seed, epoch, uint32_t(i));
}

}  // namespace

DeviceShuffle::DeviceShuffle(int64_t n) : n_(n) {
  if (n < 1 || n > INT32_MAX) throw Error("DeviceShuffle: bad dataset size " + std::to_string(n));
  keys_ = DeviceBuffer<uint64_t>(size_t(n), "the shuffle keys");
  sorted_keys_ = DeviceBuffer<uint64_t>(size_t(n), "the shuffle keys");
  index_ = DeviceBuffer<int32_t>(size_t(n), "the shuffle index");
  size_t scratch_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, scratch_bytes, keys_.data(),
                                             sorted_keys_.data(), index_.data(),
                                             static_cast<int32_t*>(nullptr), int(n)));
  scratch_ = DeviceBuffer<unsigned char>(scratch_bytes, "the shuffle's sort scratch");
  iota_kernel<<<grid_stride_blocks(uint64_t(n), kThreads), kThreads>>>(index_.data(), n);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaDeviceSynchronize());  // the legacy stream: ready for any stream's draw
}

void DeviceShuffle::draw(int32_t* perm, uint64_t seed, int64_t epoch, cudaStream_t s) {
  if (!perm) throw Error("DeviceShuffle::draw: null pointer");
  shuffle_key_kernel<<<grid_stride_blocks(uint64_t(n_), kThreads), kThreads, 0, s>>>(
      keys_.data(), seed, uint64_t(epoch), n_);
  CUDA_CHECK_LAUNCH();
  size_t scratch_bytes = scratch_.size();
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(scratch_.data(), scratch_bytes, keys_.data(),
                                             sorted_keys_.data(), index_.data(), perm, int(n_), 0,
                                             64, s));
}

}  // namespace cuvae
