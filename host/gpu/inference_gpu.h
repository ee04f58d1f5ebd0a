// The GPU inference engine behind host/core/inference.h.
#pragma once

#include <memory>
#include <vector>

#include "host/core/inference.h"
#include "host/core/model.h"

namespace cuvae {

// The GPU engine (cuDNN/cuBLAS forward passes, strict fp32, deterministic algorithms) on
// device 0; throws if no GPU is usable (always, in a build without CUDA).
std::unique_ptr<Inference> make_gpu_inference(const ModelDesc& desc,
                                              const std::vector<float>& params);

}  // namespace cuvae
