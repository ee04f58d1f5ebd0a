// `cuvae parity-dump`: one batch, its noise, the weights and the CPU reference's loss and
// gradients in one safetensors file, for the PyTorch oracle (tools/parity/parity.py).
#pragma once

#include <cstdint>
#include <string>

namespace cuvae {

struct ParityDumpConfig {
  std::string out;
  int batch_size = 5;
  int latent_dim = 2;
  double beta = 1.0;
  uint64_t seed = 0;
  std::string data_dir;  // empty: synthetic MNIST-like images
};

// Tensors: parameters under their PyTorch names (F32); batch.x F32 [B,1,28,28]; batch.eps
// F32 [B,D]; ref.loss / ref.recon / ref.kl F64 [1]; ref.grad.<name> F32. Metadata: format
// "cuvae-parity-1", latent_dim, beta, batch_size, seed.
void write_parity_dump(const ParityDumpConfig& cfg);

}  // namespace cuvae
