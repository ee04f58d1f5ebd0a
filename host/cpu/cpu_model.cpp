// Whole-model forward/backward on the CPU (see cpu_model.h).
#include "host/cpu/cpu_model.h"

#include "host/core/bf16_round.h"
#include "host/core/error.h"

namespace cuvae::cpu {

template <typename T>
void Activations<T>::resize(const ModelDesc& desc, int batch_size) {
  if (batch_size < 1) throw Error("Activations::resize: batch size must be positive");
  batch = batch_size;
  latent_dim = desc.latent_dim;
  const size_t b = size_t(batch_size), d = size_t(latent_dim);
  x.resize(b * kImagePixels);
  eps.resize(b * d);
  z.resize(b * d);
  out.resize(desc.layers.size());
  for (size_t id = 0; id < out.size(); ++id) out[id].resize(b * size_t(desc.layers[id].out_size()));
  dlogits.resize(b * desc.slot_size(desc.output));
  recon.resize(b);
  kl.resize(b);
}

namespace {

template <typename T>
const T* weight(const ModelDesc& d, const T* params, LayerId id) {
  return params + d.weight(id).offset;
}
template <typename T>
const T* bias(const ModelDesc& d, const T* params, LayerId id) {
  return params + d.bias(id).offset;
}

// The layer's product plus the bias b, without its ReLU.
template <typename T>
void layer_apply(const ModelDesc& d, LayerId id, T* y, const T* x, const T* w, const T* b,
                 int batch) {
  const Layer& l = d.layer(id);
  switch (l.kind) {
    case LayerKind::Conv2d:
      conv2d_forward(y, x, w, b, batch, l);
      break;
    case LayerKind::ConvTranspose2d:
      conv_transpose2d_forward(y, x, w, b, batch, l);
      break;
    case LayerKind::Linear:
      linear_forward(y, x, w, b, batch, l.in_channels, l.out_channels);
      break;
  }
}

// Forward of one layer (conv, transposed conv or linear) including its ReLU.
template <typename T>
void layer_forward(const ModelDesc& d, const T* params, LayerId id, T* y, const T* x, int batch) {
  const Layer& l = d.layer(id);
  layer_apply(d, id, y, x, weight(d, params, id), bias(d, params, id), batch);
  if (l.relu) relu_forward(y, y, size_t(batch) * size_t(l.out_size()));
}

// Backward of one layer. dy is the gradient w.r.t. the layer's output *after* its ReLU and is
// consumed (overwritten by the pre-ReLU gradient); y is the post-ReLU output. dx may be null.
template <typename T>
void layer_backward(const ModelDesc& d, const T* params, LayerId id, T* dx, std::vector<T>& dy,
                    const T* y, const T* x, int batch, T* grads) {
  const Layer& l = d.layer(id);
  if (l.relu) relu_backward(dy.data(), dy.data(), y, dy.size());
  const T* w = weight(d, params, id);
  T* dw = grads + d.weight(id).offset;
  T* db = grads + d.bias(id).offset;
  switch (l.kind) {
    case LayerKind::Conv2d:
      conv2d_backward(dx, dw, db, dy.data(), x, w, batch, l);
      break;
    case LayerKind::ConvTranspose2d:
      conv_transpose2d_backward(dx, dw, db, dy.data(), x, w, batch, l);
      break;
    case LayerKind::Linear:
      linear_backward(dx, dw, db, dy.data(), x, w, batch, l.in_channels, l.out_channels);
      break;
  }
}

// The gradients of one backward pass, indexed by slot (model.h): g[s] is the gradient w.r.t.
// slot s, empty until a layer reading s has written it.
template <typename T>
using SlotGradients = std::vector<std::vector<T>>;

// Walks `chain` in reverse. A layer's output gradient g[id] is complete when its turn comes (its
// readers run after it); step(id, dx, g[id]) consumes it and writes the input gradient dx,
// which the first reader of a slot writes into g[input] and a later one adds to it (the heads
// into encoder.fc's output). The image gets no gradient: dx is null there.
template <typename T, typename Step>
void backward_chain(const ModelDesc& d, const std::vector<LayerId>& chain, const Activations<T>& a,
                    SlotGradients<T>& g, const Step& step) {
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    const LayerId id = *it;
    const int in = d.layer(id).input;
    if (g[size_t(id)].empty())
      throw Error("model_backward: " + d.layer(id).name + " has no gradient");
    if (in == kImageSlot) {
      step(id, static_cast<T*>(nullptr), g[size_t(id)]);
      continue;
    }
    std::vector<T>& g_in = g[size_t(in)];
    if (g_in.empty()) {
      g_in.resize(a.slot(in).size());
      step(id, g_in.data(), g[size_t(id)]);
    } else {
      std::vector<T> dx(g_in.size());
      step(id, dx.data(), g[size_t(id)]);
      for (size_t i = 0; i < g_in.size(); ++i) g_in[i] += dx[i];
    }
  }
}

// From g_z: the reparameterization and the KL term into the heads' output gradients.
template <typename T>
void latent_backward(const ModelDesc& d, const Activations<T>& a, double beta,
                     SlotGradients<T>& g) {
  std::vector<T>& g_mu = g[size_t(d.mu_head)];
  std::vector<T>& g_lv = g[size_t(d.logvar_head)];
  g_mu.resize(a.z.size());
  g_lv.resize(a.z.size());
  reparam_backward(g_mu.data(), g_lv.data(), g[kLatentSlot].data(), a.out[d.mu_head].data(),
                   a.out[d.logvar_head].data(), a.eps.data(), a.batch, d.latent_dim, beta);
}

template <typename T>
void forward_chain(const ModelDesc& d, const T* params, const std::vector<LayerId>& chain,
                   Activations<T>& a) {
  for (const LayerId id : chain)
    layer_forward(d, params, id, a.out[id].data(), a.slot(d.layer(id).input).data(), a.batch);
}

}  // namespace

template <typename T>
void model_encode(const ModelDesc& d, const T* params, Activations<T>& a) {
  forward_chain(d, params, d.encoder, a);
}

template <typename T>
void model_decode(const ModelDesc& d, const T* params, Activations<T>& a) {
  forward_chain(d, params, d.decoder, a);
}

template <typename T>
LossParts model_forward(const ModelDesc& d, const T* params, Activations<T>& a, double beta) {
  if (a.latent_dim != d.latent_dim) throw Error("model_forward: activations sized for another D");
  model_encode(d, params, a);
  reparam_forward(a.z.data(), a.out[d.mu_head].data(), a.out[d.logvar_head].data(), a.eps.data(),
                  a.z.size());
  model_decode(d, params, a);
  return bce_kl_loss(a.dlogits.data(), a.recon.data(), a.kl.data(), a.out[d.output].data(),
                     a.x.data(), a.out[d.mu_head].data(), a.out[d.logvar_head].data(), a.batch,
                     kImagePixels, d.latent_dim, beta);
}

template <typename T>
void model_backward(const ModelDesc& d, const T* params, const Activations<T>& a, double beta,
                    T* grads) {
  SlotGradients<T> g(kNumSlots);
  g[size_t(d.output)] = a.dlogits;
  auto step = [&](LayerId id, T* dx, std::vector<T>& dy) {
    layer_backward(d, params, id, dx, dy, a.out[id].data(), a.slot(d.layer(id).input).data(),
                   a.batch, grads);
  };
  backward_chain(d, d.decoder, a, g, step);
  latent_backward(d, a, beta, g);
  backward_chain(d, d.encoder, a, g, step);
}

namespace {

// ---- the mixed-precision step's model (cpu_model.h) ----

template <typename T>
T to_bf16(T v) {
  return T(round_bf16(float(v)));
}
template <typename T>
void round_all(T* v, size_t n) {
  for (size_t i = 0; i < n; ++i) v[i] = to_bf16(v[i]);
}
template <typename T>
std::vector<T> rounded(const std::vector<T>& v) {
  std::vector<T> r(v);
  round_all(r.data(), r.size());
  return r;
}

bool is_conv(const ModelDesc& d, LayerId id) {
  return d.layer(id).kind != LayerKind::Linear;
}
bool is_conv_slot(const ModelDesc& d, int slot) {
  return slot >= 0 && slot < int(d.layers.size()) && is_conv(d, LayerId(slot));
}
// The layers that run on bf16 weights: the convolutions and a dense layer reading one.
bool runs_bf16(const ModelDesc& d, LayerId id) {
  return is_conv(d, id) || is_conv_slot(d, d.layer(id).input);
}
// A dense layer whose output a convolution reads stores it in bf16.
bool feeds_conv(const ModelDesc& d, LayerId id) {
  for (const LayerId r : d.readers(id))
    if (is_conv(d, r)) return true;
  return false;
}

// The parameters with the bf16 layers' weights rounded (their biases stay fp32).
template <typename T>
std::vector<T> params_lo(const ModelDesc& d, const T* params) {
  std::vector<T> p(params, params + d.num_params);
  for (size_t i = 0; i < d.layers.size(); ++i)
    if (runs_bf16(d, LayerId(i))) {
      const ParamTensor& w = d.weight(LayerId(i));
      round_all(p.data() + w.offset, w.numel);
    }
  return p;
}

// A bf16 convolution: the sum rounded, then with `epilogue` the bias (a float add), the ReLU
// and another rounding; without, the bias added to the rounded sum (the output layer, whose
// logits stay float).
template <typename T>
void conv_forward_lo(const ModelDesc& d, const T* p_lo, LayerId id, T* y, const T* x, int batch,
                     bool epilogue) {
  const Layer& l = d.layer(id);
  const std::vector<T> zero(size_t(l.out_channels), T(0));
  layer_apply(d, id, y, x, weight(d, p_lo, id), zero.data(), batch);
  const T* b = bias(d, p_lo, id);
  const size_t plane = size_t(l.out_h) * size_t(l.out_w), n = size_t(batch) * l.out_size();
  for (size_t i = 0; i < n; ++i) {
    T v = to_bf16(y[i]) + b[(i / plane) % size_t(l.out_channels)];
    if (epilogue) {
      if (l.relu) v = v > T(0) ? v : T(0);
      v = to_bf16(v);
    }
    y[i] = v;
  }
}

// A bf16 convolution's backward (dy masked in place), its weight and input gradients rounded.
template <typename T>
void conv_backward_lo(const ModelDesc& d, const T* p_lo, LayerId id, T* dx, std::vector<T>& dy,
                      const T* y, const T* x, int batch, T* grads) {
  layer_backward(d, p_lo, id, dx, dy, y, x, batch, grads);
  const ParamTensor& w = d.weight(id);
  round_all(grads + w.offset, w.numel);
  if (dx) round_all(dx, size_t(batch) * size_t(d.layer(id).in_size()));
}

// A bf16 dense layer's backward (encoder.fc): the masked gradient's bias sum in fp32 (in
// double, as the GPU's), its products from its bf16 copy, the input gradient rounded.
template <typename T>
void dense_backward_lo(const ModelDesc& d, const T* p_lo, LayerId id, T* dx, std::vector<T>& dy,
                       const T* y, const T* x, int batch, T* grads) {
  const Layer& fc = d.layer(id);
  if (fc.relu) relu_backward(dy.data(), dy.data(), y, dy.size());
  std::vector<double> db(size_t(fc.out_channels), 0.0);
  for (int i = 0; i < batch; ++i)
    for (int c = 0; c < fc.out_channels; ++c)
      db[size_t(c)] += double(dy[size_t(i) * fc.out_channels + c]);
  round_all(dy.data(), dy.size());
  T* g_b = grads + d.bias(id).offset;
  linear_backward(dx, grads + d.weight(id).offset, g_b, dy.data(), x, weight(d, p_lo, id), batch,
                  fc.in_channels, fc.out_channels);
  for (int c = 0; c < fc.out_channels; ++c) g_b[c] = T(db[size_t(c)]);
  if (dx) round_all(dx, size_t(batch) * size_t(fc.in_size()));
}

// The mixed step's precision choices for one model: the bf16 copies of the weights and of x.
template <typename T>
struct MixedPass {
  const ModelDesc& d;
  const T* params;
  std::vector<T> p_lo, x_lo;
  MixedPass(const ModelDesc& desc, const T* p, const std::vector<T>& x)
      : d(desc), params(p), p_lo(params_lo(desc, p)), x_lo(rounded(x)) {}

  // A layer's input: the bf16 copy of x for the image, else the slot as the forward left it.
  const T* input(const Activations<T>& a, LayerId id) const {
    const int s = d.layer(id).input;
    return s == kImageSlot ? x_lo.data() : a.slot(s).data();
  }

  void forward(Activations<T>& a, LayerId id) const {
    T* y = a.out[id].data();
    if (is_conv(d, id)) {
      conv_forward_lo(d, p_lo.data(), id, y, input(a, id), a.batch, id != d.output);
      return;
    }
    layer_forward(d, runs_bf16(d, id) ? p_lo.data() : params, id, y, input(a, id), a.batch);
    if (feeds_conv(d, id)) round_all(y, a.out[id].size());
  }

  void backward(const Activations<T>& a, LayerId id, T* dx, std::vector<T>& dy, T* grads) const {
    const T* y = a.out[id].data();
    if (is_conv(d, id))
      conv_backward_lo(d, p_lo.data(), id, dx, dy, y, input(a, id), a.batch, grads);
    else if (runs_bf16(d, id))
      dense_backward_lo(d, p_lo.data(), id, dx, dy, y, input(a, id), a.batch, grads);
    else
      layer_backward(d, params, id, dx, dy, y, input(a, id), a.batch, grads);
  }
};

}  // namespace

template <typename T>
LossParts model_forward_mixed(const ModelDesc& d, const T* params, Activations<T>& a, double beta) {
  if (a.latent_dim != d.latent_dim)
    throw Error("model_forward_mixed: activations sized for another D");
  const MixedPass<T> pass(d, params, a.x);
  for (const LayerId id : d.encoder) pass.forward(a, id);
  reparam_forward(a.z.data(), a.out[d.mu_head].data(), a.out[d.logvar_head].data(), a.eps.data(),
                  a.z.size());
  for (const LayerId id : d.decoder) pass.forward(a, id);
  const LossParts parts =
      bce_kl_loss(a.dlogits.data(), a.recon.data(), a.kl.data(), a.out[d.output].data(), a.x.data(),
                  a.out[d.mu_head].data(), a.out[d.logvar_head].data(), a.batch, kImagePixels,
                  d.latent_dim, beta);
  round_all(a.dlogits.data(), a.dlogits.size());
  return parts;
}

template <typename T>
void model_backward_mixed(const ModelDesc& d, const T* params, const Activations<T>& a, double beta,
                          T* grads) {
  const MixedPass<T> pass(d, params, a.x);
  SlotGradients<T> g(kNumSlots);
  g[size_t(d.output)] = a.dlogits;
  auto step = [&](LayerId id, T* dx, std::vector<T>& dy) { pass.backward(a, id, dx, dy, grads); };
  backward_chain(d, d.decoder, a, g, step);
  latent_backward(d, a, beta, g);  // in fp32
  backward_chain(d, d.encoder, a, g, step);
}

template LossParts model_forward_mixed<float>(const ModelDesc&, const float*, Activations<float>&,
                                              double);
template LossParts model_forward_mixed<double>(const ModelDesc&, const double*,
                                               Activations<double>&, double);
template void model_backward_mixed<float>(const ModelDesc&, const float*, const Activations<float>&,
                                          double, float*);
template void model_backward_mixed<double>(const ModelDesc&, const double*,
                                           const Activations<double>&, double, double*);

template struct Activations<float>;
template struct Activations<double>;
template LossParts model_forward<float>(const ModelDesc&, const float*, Activations<float>&,
                                        double);
template LossParts model_forward<double>(const ModelDesc&, const double*, Activations<double>&,
                                         double);
template void model_backward<float>(const ModelDesc&, const float*, const Activations<float>&,
                                    double, float*);
template void model_backward<double>(const ModelDesc&, const double*, const Activations<double>&,
                                     double, double*);
template void model_encode<float>(const ModelDesc&, const float*, Activations<float>&);
template void model_encode<double>(const ModelDesc&, const double*, Activations<double>&);
template void model_decode<float>(const ModelDesc&, const float*, Activations<float>&);
template void model_decode<double>(const ModelDesc&, const double*, Activations<double>&);

}  // namespace cuvae::cpu
