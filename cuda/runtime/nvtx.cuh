// NVTX annotations for Nsight Systems / Nsight Compute: an RAII range (pushed on construction,
// popped on destruction, so every exit path closes it) and stream naming. NVTX3 is header-only
// and costs a few nanoseconds per range when no tool is attached.
#pragma once

#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>
#include <nvtx3/nvToolsExtCudaRt.h>

namespace cuvae {

class NvtxRange {
 public:
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  ~NvtxRange() { nvtxRangePop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

inline void name_stream(cudaStream_t s, const char* name) {
  nvtxNameCudaStreamA(s, name);
}

}  // namespace cuvae
