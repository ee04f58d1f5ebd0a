// Owning handles for CUDA resources: DeviceBuffer<T> (move-only device memory), CudaStream,
// CudaEvent, CudaGraphExec. Allocation failures throw; destructors never throw (they log a failure
// to stderr instead). Out of device memory is an InputError naming what was being allocated, since
// the usual cause is a batch size the GPU cannot hold.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdio>
#include <string>
#include <utility>

#include "cuda/runtime/cuda_check.cuh"

namespace cuvae {

// Allocates `bytes` of device memory for `what` (used in the error message).
inline void* device_alloc(size_t bytes, const char* what) {
  void* p = nullptr;
  if (bytes == 0) return nullptr;
  const cudaError_t status = cudaMalloc(&p, bytes);
  if (status == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    throw TooLargeForDevice(std::string("out of GPU memory allocating ") +
                            std::to_string(bytes >> 20) + " MiB for " + what);
  }
  if (status != cudaSuccess) throw_cuda_error(status, "cudaMalloc", __FILE__, __LINE__);
  return p;
}

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count, const char* what = "a device buffer")
      : data_(static_cast<T*>(device_alloc(count * sizeof(T), what))), count_(count) {}
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

  void upload(const T* host, size_t count, cudaStream_t s) {
    if (count > count_) throw Error("DeviceBuffer::upload: more elements than the buffer holds");
    CUDA_CHECK(cudaMemcpyAsync(data_, host, count * sizeof(T), cudaMemcpyHostToDevice, s));
  }
  void download(T* host, size_t count, cudaStream_t s) const {
    if (count > count_) throw Error("DeviceBuffer::download: more elements than the buffer holds");
    CUDA_CHECK(cudaMemcpyAsync(host, data_, count * sizeof(T), cudaMemcpyDeviceToHost, s));
  }

 private:
  void release() noexcept {
    if (data_) {
      const cudaError_t status = cudaFree(data_);
      if (status != cudaSuccess)
        std::fprintf(stderr, "cuvae: warning: cudaFree failed: %s\n", cudaGetErrorString(status));
    }
    data_ = nullptr;
    count_ = 0;
  }
  T* data_ = nullptr;
  size_t count_ = 0;
};

class CudaStream {
 public:
  CudaStream() { CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~CudaStream() {
    if (s_ && cudaStreamDestroy(s_) != cudaSuccess)
      std::fprintf(stderr, "cuvae: warning: cudaStreamDestroy failed\n");
  }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  cudaStream_t get() const { return s_; }
  void synchronize() const { CUDA_CHECK(cudaStreamSynchronize(s_)); }

 private:
  cudaStream_t s_ = nullptr;
};

class CudaEvent {
 public:
  CudaEvent() { CUDA_CHECK(cudaEventCreate(&e_)); }
  ~CudaEvent() {
    if (e_ && cudaEventDestroy(e_) != cudaSuccess)
      std::fprintf(stderr, "cuvae: warning: cudaEventDestroy failed\n");
  }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  cudaEvent_t get() const { return e_; }
  void record(cudaStream_t s) { CUDA_CHECK(cudaEventRecord(e_, s)); }
  // Milliseconds from `start` to this event (both recorded and complete).
  float ms_since(const CudaEvent& start) const {
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start.e_, e_));
    return ms;
  }

 private:
  cudaEvent_t e_ = nullptr;
};

// An instantiated CUDA graph (cudaGraphExec_t), destroyed with its owner. Move-only.
class CudaGraphExec {
 public:
  CudaGraphExec() = default;
  explicit CudaGraphExec(cudaGraphExec_t g) : g_(g) {}
  ~CudaGraphExec() { release(); }
  CudaGraphExec(const CudaGraphExec&) = delete;
  CudaGraphExec& operator=(const CudaGraphExec&) = delete;
  CudaGraphExec(CudaGraphExec&& o) noexcept : g_(std::exchange(o.g_, nullptr)) {}
  CudaGraphExec& operator=(CudaGraphExec&& o) noexcept {
    if (this != &o) {
      release();
      g_ = std::exchange(o.g_, nullptr);
    }
    return *this;
  }
  explicit operator bool() const { return g_ != nullptr; }
  void launch(cudaStream_t s) const { CUDA_CHECK(cudaGraphLaunch(g_, s)); }

 private:
  void release() noexcept {
    if (g_ && cudaGraphExecDestroy(g_) != cudaSuccess)
      std::fprintf(stderr, "cuvae: warning: cudaGraphExecDestroy failed\n");
    g_ = nullptr;
  }
  cudaGraphExec_t g_ = nullptr;
};

}  // namespace cuvae
