// The whole cuvae model on the CPU: forward (with the fused loss) and backward, built from
// the reference layers in cpu_ref.h and driven by the model description in model.h.
//
// forward:  the description's walk (model.h): the encoder chain x -> conv1+ReLU -> conv2+ReLU
//           -> fc+ReLU -> the heads (mu, logvar), z = mu + exp(lv/2) eps, the decoder chain
//           z -> dec.fc+ReLU -> deconv1+ReLU -> deconv2+ReLU -> out -> logits
//           loss = mean_b (BCE_b(x, logits) + beta KL_b(mu, logvar))
// backward: the gradient of that batch-mean loss w.r.t. every parameter, into one flat
//           buffer laid out like the parameters, walking the same steps in reverse.
#pragma once

#include <vector>

#include "host/core/model.h"
#include "host/cpu/cpu_ref.h"

namespace cuvae::cpu {

template <typename T>
struct Activations {
  int batch = 0;
  int latent_dim = 0;
  std::vector<T> x;    // (B, 1, 28, 28) input in [0, 1]; filled by the caller
  std::vector<T> eps;  // (B, D) standard normal noise; filled by the caller
  std::vector<T> z;    // (B, D)
  // out[id]: (B, layer id's out_size) the output of layer id after its ReLU, indexed by LayerId:
  // out[kEncConv1] (B, 32, 14, 14), out[kEncConv2] (B, 64, 7, 7) read as (B, 3136) by
  // encoder.fc, out[kEncFc] (B, 16), out[kEncMu] and out[kEncLogvar] (B, D), out[kDecFc]
  // (B, 3136) read as (B, 64, 7, 7), out[kDecDeconv1] (B, 64, 14, 14), out[kDecDeconv2]
  // (B, 32, 28, 28), out[kDecOut] the logits (B, 1, 28, 28).
  std::vector<std::vector<T>> out;
  std::vector<T> dlogits;         // (B, 784) gradient of the batch loss, from the fused loss
  std::vector<double> recon, kl;  // (B) per-image BCE and KL

  void resize(const ModelDesc& desc, int batch_size);
  // A slot (model.h): x, z or a layer's output.
  std::vector<T>& slot(int s) {
    return s == kImageSlot ? x : s == kLatentSlot ? z : out.at(size_t(s));
  }
  const std::vector<T>& slot(int s) const {
    return s == kImageSlot ? x : s == kLatentSlot ? z : out.at(size_t(s));
  }
};

// Runs the model on a.x with noise a.eps; fills every activation and returns the batch means.
template <typename T>
LossParts model_forward(const ModelDesc& desc, const T* params, Activations<T>& a, double beta);

// Gradient of the batch loss of the last model_forward(a) into grads (desc.num_params).
template <typename T>
void model_backward(const ModelDesc& desc, const T* params, const Activations<T>& a, double beta,
                    T* grads);

// Encoder only: mu and logvar (B, D) for a.x (fills the encoder's outputs).
template <typename T>
void model_encode(const ModelDesc& desc, const T* params, Activations<T>& a);

// Decoder only: logits (B, 784) for a.z (fills the decoder's outputs).
template <typename T>
void model_decode(const ModelDesc& desc, const T* params, Activations<T>& a);

// The GPU's bf16 mixed-precision step (GpuOptions::bf16) modelled on the CPU: the layers above,
// with every value rounded to bf16 (round_bf16) where the mixed step stores one. The
// convolutions and the dense layer reading a convolution (encoder.fc) read bf16 copies of their
// weights and inputs; a convolution's sum is rounded before its bias is added (a float add),
// and after the ReLU again (every convolution's output, and the logits before their bias, hold
// bf16 values); a dense layer feeding a convolution (decoder.fc) runs in fp32 and its output
// is rounded after the ReLU; encoder.fc's output, the heads, z and the loss stay fp32.
// Backward: dlogits is rounded, the convolutions' input and weight gradients are rounded,
// encoder.fc's masked gradient is rounded before its two products (its bias gradient sums the
// unrounded one) and so is its input gradient; decoder.fc, the heads and the
// reparameterization run in fp32.
// T is the accumulation type of the layers (float, or double to see how much the order and
// precision of the sums alone move the result); the roundings are to bf16 either way.
template <typename T>
LossParts model_forward_mixed(const ModelDesc& desc, const T* params, Activations<T>& a,
                              double beta);
template <typename T>
void model_backward_mixed(const ModelDesc& desc, const T* params, const Activations<T>& a,
                          double beta, T* grads);

}  // namespace cuvae::cpu
