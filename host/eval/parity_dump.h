// `cuvae parity-dump`: one batch, its noise, the weights and a CPU engine's loss, gradients and
// ReLU outputs in one safetensors file, for the PyTorch oracle (tools/parity/parity.py).
#pragma once

#include <cstdint>
#include <string>

namespace cuvae {

struct ParityDumpConfig {
  std::string out;
  std::string device = "cpu-ref";  // the engine under test: "cpu-ref" or "cpu" (cpu::FastModel)
  int batch_size = 5;
  int latent_dim = 2;
  double beta = 1.0;
  uint64_t seed = 0;
  std::string data_dir;  // empty: synthetic MNIST-like images
};

// Tensors: parameters under their PyTorch names (F32); batch.x F32 [B,1,28,28]; batch.eps
// F32 [B,D]; what the engine computed (the names predate the fast engine: `ref` is the engine
// under test, whichever it is): ref.loss / ref.recon / ref.kl F64 [1], ref.grad.<param> F32,
// and ref.act.<layer> F32 for every layer followed by a ReLU (encoder.conv1 [B,32,14,14],
// encoder.conv2 [B,64,7,7], encoder.fc [B,16], decoder.fc [B,3136], decoder.deconv1
// [B,64,14,14], decoder.deconv2 [B,32,28,28]): the layer's output after its ReLU, which tells
// the oracle on which side of 0 the engine put each unit. Metadata: format "cuvae-parity-2",
// device, latent_dim, beta, batch_size, seed.
void write_parity_dump(const ParityDumpConfig& cfg);

}  // namespace cuvae
