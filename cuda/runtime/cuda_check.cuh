// Error checking for CUDA runtime calls: CUDA_CHECK(expr) throws cuvae::CudaError carrying
// the failing expression, file:line and the runtime's message. CUDA_CHECK_LAUNCH() follows
// every kernel launch. Never exits; main() turns the exception into a one-line message.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "host/core/error.h"

namespace cuvae {

class CudaError : public Error {
 public:
  using Error::Error;
};

[[noreturn]] inline void throw_cuda_error(cudaError_t status, const char* expr, const char* file,
                                          int line) {
  throw CudaError(std::string(expr) + " failed at " + file + ":" + std::to_string(line) + ": " +
                  cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
}

}  // namespace cuvae

#define CUDA_CHECK(expr)                                                   \
  do {                                                                     \
    const cudaError_t cuvae_status_ = (expr);                              \
    if (cuvae_status_ != cudaSuccess)                                      \
      ::cuvae::throw_cuda_error(cuvae_status_, #expr, __FILE__, __LINE__); \
  } while (0)

#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
