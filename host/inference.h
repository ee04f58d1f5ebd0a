// Batched inference with a trained model: encode images to (mu, logvar), decode latents to
// logits. Used by the pictures, eval, encode and the per-epoch test loss. Three engines stand
// behind the interface: the GPU's, the fast CPU engine (cpu_fast.h) and the CPU reference.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "host/model.h"

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

// The fast CPU engine (device "cpu") or the CPU reference (device "cpu-ref") over `params`
// (desc.num_params floats, copied).
std::unique_ptr<Inference> make_cpu_inference(const ModelDesc& desc,
                                              const std::vector<float>& params,
                                              const std::string& device);

// The GPU engine (cuDNN/cuBLAS forward passes, strict fp32, deterministic algorithms) on
// device 0; throws if no GPU is usable.
std::unique_ptr<Inference> make_gpu_inference(const ModelDesc& desc,
                                              const std::vector<float>& params);

// The engine of a device resolve_device() chose (cli_util.h): "gpu" the GPU engine (which
// throws if no GPU is usable), "cpu" or "cpu-ref" that CPU engine.
std::unique_ptr<Inference> make_inference(const ModelDesc& desc, const std::vector<float>& params,
                                          const std::string& device);

}  // namespace cuvae
