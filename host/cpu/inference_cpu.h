// The CPU inference engines behind host/core/inference.h: the fast engine (cpu_fast.h) and the
// reference (cpu_model.h), each encoding and decoding in chunks.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "host/core/inference.h"
#include "host/core/model.h"

namespace cuvae {

// The fast CPU engine (device "cpu") or the CPU reference (device "cpu-ref") over `params`
// (desc.num_params floats, copied).
std::unique_ptr<Inference> make_cpu_inference(const ModelDesc& desc,
                                              const std::vector<float>& params,
                                              const std::string& device);

}  // namespace cuvae
