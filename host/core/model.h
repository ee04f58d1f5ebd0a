// The one description of the cuvae model: layers, activation shapes and parameter tensors.
//
// Architecture (the classic Keras-example convolutional VAE, PyTorch conventions):
//   x (B,1,28,28) -> encoder.conv1 3x3 s2 p1 +ReLU (B,32,14,14) -> encoder.conv2 3x3 s2 p1
//   +ReLU (B,64,7,7) -> flatten (C,H,W) 3136 -> encoder.fc +ReLU (B,16) -> encoder.mu,
//   encoder.logvar (B,D) -> z = mu + exp(logvar/2) * eps -> decoder.fc +ReLU (B,3136) ->
//   reshape (B,64,7,7) -> decoder.deconv1 3x3 s2 p1 op1 +ReLU (B,64,14,14) -> decoder.deconv2
//   3x3 s2 p1 op1 +ReLU (B,32,28,28) -> decoder.out 3x3 s1 p1 -> logits (B,1,28,28).
// Parameter names and shapes are those of the equivalent PyTorch module (tools/parity/
// cuvae_torch.py): Conv2d weight [out,in,kh,kw], ConvTranspose2d weight [in,out,kh,kw],
// Linear weight [out,in]. All parameters live in one flat float buffer; each tensor is a
// named view (offset, numel) into it. The description also holds the topology: which tensor
// each layer reads and the order the layers run in (the encoder chain, the two latent heads on
// one input, the reparameterization, the decoder chain); the CPU engines and the inference
// engines walk it. The CPU engines, the GPU trainer, inference and checkpoints all read this
// description.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cuvae {

constexpr int kImageSide = 28;
constexpr int kImagePixels = kImageSide * kImageSide;  // 784
constexpr const char* kArchitecture = "cuvae-conv-vae-keras";

struct ParamTensor {
  std::string name;            // PyTorch state_dict key, e.g. "encoder.conv1.weight"
  std::vector<int64_t> shape;  // PyTorch layout
  size_t offset = 0;           // into the flat parameter buffer, in floats
  size_t numel = 0;
  int fan_in = 0;  // Glorot fans (weights only; 0 for biases)
  int fan_out = 0;
};

enum class LayerKind { Conv2d, ConvTranspose2d, Linear };

struct Layer {
  std::string name;  // module name, e.g. "decoder.deconv1"
  LayerKind kind;
  int in_channels, out_channels;  // for Linear: in_features, out_features
  int kernel = 1, stride = 1, pad = 0, out_pad = 0;
  int in_h = 1, in_w = 1, out_h = 1, out_w = 1;  // spatial sizes (1 for Linear)
  bool relu = false;                             // ReLU after the layer
  int weight = -1, bias = -1;                    // indices into ModelDesc::params
  int input = -1;  // the slot it reads: kImageSlot, kLatentSlot or an earlier layer's LayerId

  int64_t in_size() const { return int64_t(in_channels) * in_h * in_w; }      // per image
  int64_t out_size() const { return int64_t(out_channels) * out_h * out_w; }  // per image
};

// Layer indices, in execution order (make_vae builds them in this order).
enum LayerId : int {
  kEncConv1 = 0,
  kEncConv2,
  kEncFc,
  kEncMu,
  kEncLogvar,
  kDecFc,
  kDecDeconv1,
  kDecDeconv2,
  kDecOut,
  kNumLayers
};

// The tensors a pass moves between layers, each (B, per-image size) and called a slot: a
// layer's output after its ReLU is the slot numbered by its LayerId; the image x (B, 784) and
// the latent z (B, D) have slots of their own. Engines keep their activations (and gradients)
// in arrays indexed by slot.
constexpr int kImageSlot = kNumLayers;
constexpr int kLatentSlot = kNumLayers + 1;
constexpr int kNumSlots = kNumLayers + 2;

struct ModelDesc {
  int latent_dim = 2;
  std::vector<Layer> layers;        // indexed by LayerId
  std::vector<ParamTensor> params;  // in state_dict order
  size_t num_params = 0;            // floats in the flat buffer

  // The topology. A forward pass runs the encoder in order (x -> ... -> the two heads), then the
  // reparameterization z = mu + exp(logvar / 2) * eps on the heads' outputs, then the decoder in
  // order (z -> ... -> the logits); the loss reads the logits, x, mu and logvar. A backward pass
  // walks the same steps in reverse, and a slot read by several layers (the heads' input) gets
  // the sum of their input gradients.
  std::vector<LayerId> encoder;      // the layers from x to the heads, in execution order
  std::vector<LayerId> decoder;      // the layers from z to the logits, in execution order
  LayerId mu_head = kEncMu;          // (B, D) mu
  LayerId logvar_head = kEncLogvar;  // (B, D) logvar, reading the same slot as mu_head
  LayerId output = kDecOut;          // (B, 784) the logits

  const Layer& layer(LayerId id) const { return layers[static_cast<size_t>(id)]; }
  const ParamTensor& weight(LayerId id) const { return params[layer(id).weight]; }
  const ParamTensor& bias(LayerId id) const { return params[layer(id).bias]; }
  // Throws cuvae::Error for an unknown name.
  const ParamTensor& param(const std::string& name) const;

  // The layers that read `slot`, in execution order.
  std::vector<LayerId> readers(int slot) const;
  // Floats per image in `slot`: 784 for the image, D for the latent, a layer's out_size().
  size_t slot_size(int slot) const;
  // The slots a forward pass fills, in the order it fills them: the encoder's outputs, z, the
  // decoder's outputs.
  std::vector<int> forward_slots() const;
  // How an error message names a slot: "the output of encoder.conv1", "mu (encoder.mu)",
  // "logvar (encoder.logvar)", "z", "the logits (decoder.out)", "the image".
  std::string slot_name(int slot) const;
};

// The VAE for latent dimension D (1 <= D <= kMaxLatentDim).
constexpr int kMaxLatentDim = 4096;
ModelDesc make_vae(int latent_dim);

// Glorot-uniform weights (limit sqrt(6 / (fan_in + fan_out))), zero biases. Draws come from
// Philox keyed by `seed`, one per flat parameter index, so the result does not depend on
// the order of the loop or the machine.
void init_params(const ModelDesc& desc, uint64_t seed, float* params);

std::string shape_string(const std::vector<int64_t>& shape);  // "[32, 1, 3, 3]"

// The order in which a channels-last (NHWC) GPU trainer keeps the flat parameter vector on the
// device: device element i is host (PyTorch-order) element order[i], a permutation of
// [0, num_params). Each tensor stays in its own span; within it
//   convolution weights   [A, B, kh, kw] -> [A, kh, kw, B]  (cuDNN's KRSC: Conv2d [out,kh,kw,in],
//                                                           ConvTranspose2d [in,kh,kw,out])
//   encoder.fc weight     columns (C, H, W) -> (H, W, C) of encoder.conv2's output
//   decoder.fc weight     rows (C, H, W) -> (H, W, C) of decoder.deconv1's input, and its bias
// so that the dense layers read and write channels-last activations with the same GEMMs; every
// other tensor keeps its order. Adam is elementwise, so training in this order and permuting
// back is training in PyTorch's.
std::vector<uint32_t> channels_last_order(const ModelDesc& desc);

// Names element `flat_index` of a flat buffer laid out like the parameters, as
// "decoder.out.bias (element 0 of [1])"; "element N (outside the parameters)" past the end.
std::string param_element_name(const ModelDesc& desc, size_t flat_index);

// The first element of `flat` (desc.num_params) that is a NaN or an infinity, named as
// param_element_name() does; empty when every element is finite.
std::string first_nonfinite_param(const ModelDesc& desc, const float* flat);

}  // namespace cuvae
