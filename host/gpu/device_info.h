// What the CUDA runtime can see: usable devices and their names, and what `cuvae --version`
// says of the CUDA side. The rest of the host asks here before choosing the GPU path; no CUDA
// header leaks out. In a build without CUDA (CUVAE_CUDA=OFF, no_cuda.cpp) there is never a
// usable device, and the reason says the build has no CUDA.
#pragma once

#include <string>

namespace cuvae {

struct GpuInfo {
  int count = 0;       // usable CUDA devices
  std::string reason;  // why none is usable (empty when count > 0)
  std::string name;    // device 0
  int compute_major = 0, compute_minor = 0;
  size_t total_memory = 0;  // bytes, device 0
};

// Never throws: a machine without a driver or device reports count 0 and the reason.
GpuInfo query_gpus();

// Bytes of device 0's memory in use (total - free, cudaMemGetInfo): every process's
// allocations plus this process's CUDA context. 0 when it cannot be read.
size_t device_memory_in_use();

// What `cuvae --version` says of the CUDA side. Never throw and need no GPU.
//   cuda_build_info():   "CUDA 13.0 runtime (linked statically); GPU code for sm_80, sm_90;
//                         PTX for compute_90"
//   cuda_driver_info():  "driver for CUDA 13.0", or "no CUDA driver"
//   cuda_library_info(): "cuBLAS 13.1.0, cuDNN 9.13.0" (the libraries this process loaded)
std::string cuda_build_info();
std::string cuda_driver_info();
std::string cuda_library_info();

}  // namespace cuvae
