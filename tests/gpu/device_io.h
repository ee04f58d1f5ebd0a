// Host <-> device copies for the GPU tests, all synchronous: a kernel fault surfaces at the
// copy as a CudaError. poison_device sets every byte to 0xFF, a NaN in float, double and bf16
// (-1 in a signed integer), so an element a launch forgets to write cannot pass.
#pragma once

#include <catch2/catch.hpp>
#include <vector>

#include "cuda/runtime/device_buffer.cuh"

namespace cuvae::test {

template <typename T>
DeviceBuffer<T> to_device(const std::vector<T>& host, cudaStream_t s) {
  DeviceBuffer<T> d(host.size(), "test input");
  d.upload(host.data(), host.size(), s);
  CUDA_CHECK(cudaStreamSynchronize(s));
  return d;
}

template <typename T>
void upload(DeviceBuffer<T>& d, const std::vector<T>& host, cudaStream_t s) {
  REQUIRE(host.size() == d.size());
  d.upload(host.data(), host.size(), s);
  CUDA_CHECK(cudaStreamSynchronize(s));
}

template <typename T>
std::vector<T> to_host(const DeviceBuffer<T>& d, cudaStream_t s) {
  std::vector<T> host(d.size());
  d.download(host.data(), host.size(), s);
  CUDA_CHECK(cudaStreamSynchronize(s));
  return host;
}

template <typename T>
void poison_device(DeviceBuffer<T>& d, cudaStream_t s) {
  CUDA_CHECK(cudaMemsetAsync(d.data(), 0xFF, d.bytes(), s));
}

}  // namespace cuvae::test
