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
  auto out = [&](LayerId id) { return b * size_t(desc.layer(id).out_size()); };
  x.resize(b * kImagePixels);
  eps.resize(b * d);
  h1.resize(out(kEncConv1));
  h2.resize(out(kEncConv2));
  h3.resize(out(kEncFc));
  mu.resize(b * d);
  logvar.resize(b * d);
  z.resize(b * d);
  d0.resize(out(kDecFc));
  d1.resize(out(kDecDeconv1));
  d2.resize(out(kDecDeconv2));
  logits.resize(out(kDecOut));
  dlogits.resize(out(kDecOut));
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

// From g_z: the reparameterization and the KL term, then both heads, which read h3: their
// input gradients add up into g_h3.
template <typename T>
void latent_backward(const ModelDesc& d, const T* params, const Activations<T>& a, double beta,
                     const std::vector<T>& g_z, std::vector<T>& g_h3, T* grads) {
  const int b = a.batch;
  std::vector<T> g_mu(a.mu.size()), g_lv(a.logvar.size()), g_h3_lv(a.h3.size());
  reparam_backward(g_mu.data(), g_lv.data(), g_z.data(), a.mu.data(), a.logvar.data(), a.eps.data(),
                   b, d.latent_dim, beta);
  layer_backward(d, params, kEncMu, g_h3.data(), g_mu, a.mu.data(), a.h3.data(), b, grads);
  layer_backward(d, params, kEncLogvar, g_h3_lv.data(), g_lv, a.logvar.data(), a.h3.data(), b,
                 grads);
  for (size_t i = 0; i < g_h3.size(); ++i) g_h3[i] += g_h3_lv[i];
}

}  // namespace

template <typename T>
void model_encode(const ModelDesc& d, const T* params, Activations<T>& a) {
  const int b = a.batch;
  layer_forward(d, params, kEncConv1, a.h1.data(), a.x.data(), b);
  layer_forward(d, params, kEncConv2, a.h2.data(), a.h1.data(), b);
  layer_forward(d, params, kEncFc, a.h3.data(), a.h2.data(), b);
  layer_forward(d, params, kEncMu, a.mu.data(), a.h3.data(), b);
  layer_forward(d, params, kEncLogvar, a.logvar.data(), a.h3.data(), b);
}

template <typename T>
void model_decode(const ModelDesc& d, const T* params, Activations<T>& a) {
  const int b = a.batch;
  layer_forward(d, params, kDecFc, a.d0.data(), a.z.data(), b);
  layer_forward(d, params, kDecDeconv1, a.d1.data(), a.d0.data(), b);
  layer_forward(d, params, kDecDeconv2, a.d2.data(), a.d1.data(), b);
  layer_forward(d, params, kDecOut, a.logits.data(), a.d2.data(), b);
}

template <typename T>
LossParts model_forward(const ModelDesc& d, const T* params, Activations<T>& a, double beta) {
  if (a.latent_dim != d.latent_dim) throw Error("model_forward: activations sized for another D");
  const int b = a.batch;
  model_encode(d, params, a);
  reparam_forward(a.z.data(), a.mu.data(), a.logvar.data(), a.eps.data(), a.z.size());
  model_decode(d, params, a);
  return bce_kl_loss(a.dlogits.data(), a.recon.data(), a.kl.data(), a.logits.data(), a.x.data(),
                     a.mu.data(), a.logvar.data(), b, kImagePixels, d.latent_dim, beta);
}

template <typename T>
void model_backward(const ModelDesc& d, const T* params, const Activations<T>& a, double beta,
                    T* grads) {
  const int b = a.batch;
  std::vector<T> g_logits(a.dlogits), g_d2(a.d2.size()), g_d1(a.d1.size()), g_d0(a.d0.size());
  std::vector<T> g_z(a.z.size()), g_h3(a.h3.size()), g_h2(a.h2.size()), g_h1(a.h1.size());
  // Decoder.
  layer_backward(d, params, kDecOut, g_d2.data(), g_logits, a.logits.data(), a.d2.data(), b, grads);
  layer_backward(d, params, kDecDeconv2, g_d1.data(), g_d2, a.d2.data(), a.d1.data(), b, grads);
  layer_backward(d, params, kDecDeconv1, g_d0.data(), g_d1, a.d1.data(), a.d0.data(), b, grads);
  layer_backward(d, params, kDecFc, g_z.data(), g_d0, a.d0.data(), a.z.data(), b, grads);
  latent_backward(d, params, a, beta, g_z, g_h3, grads);
  // Encoder.
  layer_backward(d, params, kEncFc, g_h2.data(), g_h3, a.h3.data(), a.h2.data(), b, grads);
  layer_backward(d, params, kEncConv2, g_h1.data(), g_h2, a.h2.data(), a.h1.data(), b, grads);
  layer_backward<T>(d, params, kEncConv1, nullptr, g_h1, a.h1.data(), a.x.data(), b, grads);
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

bool runs_bf16(const ModelDesc& d, LayerId id) {
  return d.layer(id).kind != LayerKind::Linear || id == kEncFc;
}

// The parameters with the bf16 layers' weights rounded (their biases stay fp32).
template <typename T>
std::vector<T> params_lo(const ModelDesc& d, const T* params) {
  std::vector<T> p(params, params + d.num_params);
  for (int i = 0; i < kNumLayers; ++i)
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

}  // namespace

template <typename T>
LossParts model_forward_mixed(const ModelDesc& d, const T* params, Activations<T>& a, double beta) {
  if (a.latent_dim != d.latent_dim)
    throw Error("model_forward_mixed: activations sized for another D");
  const int b = a.batch;
  const std::vector<T> p_lo = params_lo(d, params), x_lo = rounded(a.x);
  conv_forward_lo(d, p_lo.data(), kEncConv1, a.h1.data(), x_lo.data(), b, true);
  conv_forward_lo(d, p_lo.data(), kEncConv2, a.h2.data(), a.h1.data(), b, true);
  layer_forward(d, p_lo.data(), kEncFc, a.h3.data(), a.h2.data(), b);
  layer_forward(d, params, kEncMu, a.mu.data(), a.h3.data(), b);
  layer_forward(d, params, kEncLogvar, a.logvar.data(), a.h3.data(), b);
  reparam_forward(a.z.data(), a.mu.data(), a.logvar.data(), a.eps.data(), a.z.size());
  layer_forward(d, params, kDecFc, a.d0.data(), a.z.data(), b);
  round_all(a.d0.data(), a.d0.size());
  conv_forward_lo(d, p_lo.data(), kDecDeconv1, a.d1.data(), a.d0.data(), b, true);
  conv_forward_lo(d, p_lo.data(), kDecDeconv2, a.d2.data(), a.d1.data(), b, true);
  conv_forward_lo(d, p_lo.data(), kDecOut, a.logits.data(), a.d2.data(), b, false);
  const LossParts parts =
      bce_kl_loss(a.dlogits.data(), a.recon.data(), a.kl.data(), a.logits.data(), a.x.data(),
                  a.mu.data(), a.logvar.data(), b, kImagePixels, d.latent_dim, beta);
  round_all(a.dlogits.data(), a.dlogits.size());
  return parts;
}

template <typename T>
void model_backward_mixed(const ModelDesc& d, const T* params, const Activations<T>& a, double beta,
                          T* grads) {
  const int b = a.batch;
  const std::vector<T> p_lo = params_lo(d, params), x_lo = rounded(a.x);
  std::vector<T> g_logits(a.dlogits), g_d2(a.d2.size()), g_d1(a.d1.size()), g_d0(a.d0.size());
  std::vector<T> g_z(a.z.size()), g_h3(a.h3.size()), g_h2(a.h2.size()), g_h1(a.h1.size());
  // Decoder: the convolutions in bf16, decoder.fc in fp32.
  conv_backward_lo(d, p_lo.data(), kDecOut, g_d2.data(), g_logits, a.logits.data(), a.d2.data(), b,
                   grads);
  conv_backward_lo(d, p_lo.data(), kDecDeconv2, g_d1.data(), g_d2, a.d2.data(), a.d1.data(), b,
                   grads);
  conv_backward_lo(d, p_lo.data(), kDecDeconv1, g_d0.data(), g_d1, a.d1.data(), a.d0.data(), b,
                   grads);
  layer_backward(d, params, kDecFc, g_z.data(), g_d0, a.d0.data(), a.z.data(), b, grads);
  latent_backward(d, params, a, beta, g_z, g_h3, grads);  // in fp32
  // encoder.fc: the masked gradient's bias sum in fp32, its products from its bf16 copy.
  const Layer& fc = d.layer(kEncFc);
  relu_backward(g_h3.data(), g_h3.data(), a.h3.data(), g_h3.size());
  std::vector<double> db(size_t(fc.out_channels), 0.0);  // in double, as the GPU's
  for (int i = 0; i < b; ++i)
    for (int c = 0; c < fc.out_channels; ++c)
      db[size_t(c)] += double(g_h3[size_t(i) * fc.out_channels + c]);
  round_all(g_h3.data(), g_h3.size());
  linear_backward(g_h2.data(), grads + d.weight(kEncFc).offset, grads + d.bias(kEncFc).offset,
                  g_h3.data(), a.h2.data(), weight(d, p_lo.data(), kEncFc), b, fc.in_channels,
                  fc.out_channels);
  for (int c = 0; c < fc.out_channels; ++c)
    grads[d.bias(kEncFc).offset + size_t(c)] = T(db[size_t(c)]);
  round_all(g_h2.data(), g_h2.size());
  conv_backward_lo(d, p_lo.data(), kEncConv2, g_h1.data(), g_h2, a.h2.data(), a.h1.data(), b,
                   grads);
  conv_backward_lo<T>(d, p_lo.data(), kEncConv1, nullptr, g_h1, a.h1.data(), x_lo.data(), b, grads);
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
