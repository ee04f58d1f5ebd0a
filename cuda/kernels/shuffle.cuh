// The epoch permutation drawn on the device: every image gets its 64-bit Philox key
// (shuffle_key, host/core/philox.h) and a stable radix sort of (key, index) pairs orders them by
// key, ties by index: exactly the order epoch_permutation (host/core/batch.h) computes on the host,
// so the GPU trainer visits the images in the CPU trainer's order without a host round trip.
// Owns: DeviceShuffle (the keys, the index column and the sort's scratch for one dataset size).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda/runtime/device_buffer.cuh"

namespace cuvae {

class DeviceShuffle {
 public:
  // Allocates the buffers for n images, 1 <= n <= INT32_MAX.
  explicit DeviceShuffle(int64_t n);

  // perm (n, device) = the permutation of epoch `epoch`; enqueued on s, nothing allocated.
  void draw(int32_t* perm, uint64_t seed, int64_t epoch, cudaStream_t s);

  int64_t size() const { return n_; }

 private:
  int64_t n_;
  DeviceBuffer<uint64_t> keys_, sorted_keys_;  // (n)
  DeviceBuffer<int32_t> index_;                // (n) 0, 1, ..., n - 1; the sort's values
  DeviceBuffer<unsigned char> scratch_;        // the radix sort's temporary storage
};

}  // namespace cuvae
