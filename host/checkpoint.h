// Checkpoints in safetensors: model.safetensors (the weights under their PyTorch names,
// float32, with metadata: format, architecture, latent_dim, beta) that PyTorch's
// load_state_dict(strict=True) accepts, written atomically (see safetensors.h).
#pragma once

#include <string>
#include <vector>

#include "host/model.h"

namespace cuvae {

constexpr const char* kModelFormat = "cuvae-model-1";

void save_model(const std::string& path, const ModelDesc& desc, const std::vector<float>& params,
                double beta);

struct LoadedModel {
  ModelDesc desc;
  std::vector<float> params;  // (desc.num_params), flat layout of the description
  double beta = 1.0;
};

// Reads and validates a model file: format, architecture, latent_dim, every tensor present
// with the right dtype and shape, no extra tensors, all values finite. InputError otherwise.
LoadedModel load_model(const std::string& path);

}  // namespace cuvae
