// Batched inference with a trained model: encode images to (mu, logvar), decode latents to
// logits. Used by the pictures, eval, encode and the per-epoch test loss. Three engines stand
// behind the interface: the GPU's (host/gpu/inference_gpu.h), the fast CPU engine and the CPU
// reference (host/cpu/inference_cpu.h).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "host/core/model.h"

namespace cuvae {

class Inference {
 public:
  virtual ~Inference() = default;
  virtual const ModelDesc& desc() const = 0;
  virtual std::string device() const = 0;  // "cpu", "cpu-ref" or the GPU's name
  // mu, logvar (count, D) for x (count, 784) in [0, 1]; any count >= 1.
  virtual void encode(float* mu, float* logvar, const float* x, int count) = 0;
  // logits (count, 784) for z (count, D); any count >= 1.
  virtual void decode(float* logits, const float* z, int count) = 0;
  // Replaces the weights (desc().num_params floats), e.g. after a training epoch.
  virtual void set_params(const float* params) = 0;
};

}  // namespace cuvae
