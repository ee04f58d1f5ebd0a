// The fast CPU engine on oneDNN (cpu_fast.h): the model as a walk over the description's
// topology (model.h), its forward pass with the fused loss and its backward pass. The building
// blocks (primitives, conversions, the plain loops) are in cpu_fast_prims.h; oneDNN's headers
// appear in these files only.
//
// Each layer (model.h) becomes three primitives, made once per batch size: forward (bias and
// ReLU fused), backward-data (omitted for a layer reading the image, whose input needs no
// gradient) and backward-weights. Every primitive chooses its own memory formats; a Converter
// reorders a tensor into the format a primitive asked for where it differs from the one at
// hand, and is free where they agree. Weights are reordered from the flat PyTorch-order
// parameter buffer on every pass (they change with every Adam step), weight gradients back into
// the flat gradient buffer; biases and their gradients are bound in place.
//
// Plain arrays, in the reference's layouts: x, eps, z, mu, logvar (B, D), a dense layer's
// output a convolution reads (decoder.fc: (B, 3136) seen as (B, 64, 7, 7)), the logits and
// their gradient (B, 784).
#include "host/cpu/cpu_fast.h"

#include <algorithm>
#include <cmath>

#include "host/core/error.h"
#include "host/cpu/cpu_fast_prims.h"

namespace cuvae::cpu {

using namespace fast;

struct FastModel::Impl {
  // One layer at run time: its primitives, its output, the converters into the formats its
  // primitives asked for, and the gradient buffers of its backward pass.
  struct Node {
    LayerId id{};
    const Layer* layer = nullptr;
    Prims p;
    md user_w;
    memory w_user, b_user;          // bound to the flat parameter buffer at each call
    Converter in_fwd, w_fwd, w_bd;  // input -> p.src; user weights -> p.weights, p.bd_weights
    memory src_used;                // the input as the forward read it (for backward-weights)
    memory dst;                     // output after the ReLU, in p.dst
    md out_view;                    // p.dst as the next layer (or the caller) sees it
    Converter g_in;                 // incoming gradient (out_view's dims) -> out_view
    Converter g_bd, g_bw, src_bw;   // into p.bd_diff_dst, p.bw_diff_dst, p.bw_src
    memory diff_w;                  // p.bw_diff_weights (or bound to the flat buffer)
    bool diff_w_in_place = false;
    Writer write_dw;
    memory diff_src;               // p.bd_diff_src
    std::vector<LayerId> readers;  // the layers reading its output (model.h)
    // With several readers: each one's input gradient -> p.dst, and their sum, in p.dst.
    std::vector<Converter> sum_in;
    memory g_sum;
  };

  const ModelDesc desc;
  const int batch;
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  memory scratch;
  std::vector<Node> nodes;  // indexed by LayerId
  // Plain arrays shared with the caller.
  memory x, eps, z, dlogits, g_mu, g_lv;
  std::vector<double> recon, kl;

  Impl(const ModelDesc& d, int b) : desc(d), batch(b), nodes(d.layers.size()) {
    if (batch < 1) throw Error("FastModel: batch size must be positive");
    const memory::dims image{b, 1, kImageSide, kImageSide}, latent{b, desc.latent_dim};
    x = memory(plain(image), eng);
    eps = memory(plain(latent), eng);
    z = memory(plain(latent), eng);
    dlogits = memory(plain(image), eng);
    g_mu = memory(plain(latent), eng);
    g_lv = memory(plain(latent), eng);
    recon.resize(size_t(b));
    kl.resize(size_t(b));

    // Forward, in execution order: each layer reads its input slot as it is.
    for (const std::vector<LayerId>* chain : {&desc.encoder, &desc.decoder})
      for (const LayerId id : *chain) build(id);
    // The loops of the reparameterization and the loss read plain arrays.
    for (const LayerId id : {desc.mu_head, desc.logvar_head, desc.output})
      if (nodes[id].p.dst != plain(out_dims(id)))
        throw Error("FastModel: oneDNN did not keep the plain layout of mu, logvar or the logits");
    const std::vector<LayerId> z_readers = desc.readers(kLatentSlot);
    if (z_readers.size() != 1 || nodes[z_readers[0]].p.bd_diff_src != plain(latent))
      throw Error("FastModel: z's gradient is not one plain array");

    // Backward wiring: each layer's incoming gradient is its readers' input gradient.
    for (size_t id = 0; id < nodes.size(); ++id) wire_gradient(LayerId(id));

    size_t scratch_bytes = 0;
    for (const Node& n : nodes) scratch_bytes = std::max(scratch_bytes, n.p.scratch);
    scratch = memory(md({memory::dim(scratch_bytes)}, memory::data_type::u8, tag::x), eng);
  }

  memory::dims out_dims(LayerId id) const {
    const Layer& l = desc.layer(id);
    if (l.kind == LayerKind::Linear) return {batch, l.out_channels};
    return {batch, l.out_channels, l.out_h, l.out_w};
  }
  memory::dims in_dims(LayerId id) const {
    const Layer& l = desc.layer(id);
    if (l.kind == LayerKind::Linear) return {batch, l.in_channels};
    return {batch, l.in_channels, l.in_h, l.in_w};
  }

  // A dense layer whose output a convolution reads: written plain, seen with the reader's dims.
  bool feeds_conv(LayerId id) const {
    if (desc.layer(id).kind != LayerKind::Linear) return false;
    for (const LayerId r : desc.readers(id))
      if (desc.layer(r).kind != LayerKind::Linear) return true;
    return false;
  }

  // The format layer `id` writes: plain where a loop reads it (the heads; the logits, measured
  // faster than a blocked output reordered) or where a convolution reads a dense layer's output
  // (decoder.fc's (B, 3136) is deconv1's (B, 64, 7, 7)); the primitive's choice elsewhere.
  md output_format(LayerId id) const {
    if (id == desc.mu_head || id == desc.logvar_head || id == desc.output || feeds_conv(id))
      return plain(out_dims(id));
    return any(out_dims(id));
  }

  // A slot's format as its readers see it.
  md slot_desc(int slot) const {
    if (slot == kImageSlot) return x.get_desc();
    if (slot == kLatentSlot) return z.get_desc();
    return nodes[size_t(slot)].out_view;
  }
  // A slot's memory as its readers see it.
  memory slot_memory(int slot) const {
    if (slot == kImageSlot) return x;
    if (slot == kLatentSlot) return z;
    const Node& n = nodes[size_t(slot)];
    if (n.out_view == n.p.dst) return n.dst;
    return memory(n.out_view, eng, n.dst.get_data_handle());
  }

  // Makes layer `id`'s primitives for its input slot's format, its output buffer and the
  // converters of its forward pass.
  void build(LayerId id) {
    Node& n = nodes[id];
    n.id = id;
    n.layer = &desc.layer(id);
    n.readers = desc.readers(id);
    const Layer& l = *n.layer;
    const md in = slot_desc(l.input);
    const bool need_dx = l.input != kImageSlot;
    n.p = layer_prims(l, in, output_format(id), need_dx, eng);
    n.user_w = user_weights(l, n.p.src);
    n.w_user = memory(n.user_w, eng, DNNL_MEMORY_NONE);
    n.b_user = memory(plain({l.out_channels}), eng, DNNL_MEMORY_NONE);
    if (n.p.bias != plain({l.out_channels}))
      throw Error("FastModel: oneDNN asked for a bias format other than a plain vector");
    n.in_fwd = Converter(in, n.p.src, eng);
    n.w_fwd = Converter(n.user_w, n.p.weights, eng);
    if (need_dx) n.w_bd = Converter(n.user_w, n.p.bd_weights, eng);
    n.dst = memory(n.p.dst, eng);
    n.out_view = feeds_conv(id) ? n.p.dst.reshape(in_dims(n.readers.front())) : n.p.dst;
    n.diff_w_in_place = n.p.bw_diff_weights == n.user_w;
    if (n.diff_w_in_place) {
      n.diff_w = memory(n.user_w, eng, DNNL_MEMORY_NONE);
    } else {
      n.diff_w = memory(n.p.bw_diff_weights, eng);
      n.write_dw = Writer(n.p.bw_diff_weights, n.user_w, eng);
    }
    if (need_dx) n.diff_src = memory(n.p.bd_diff_src, eng);
    n.src_bw = Converter(n.p.src, n.p.bw_src, eng);
  }

  // The converters of layer `id`'s backward pass. Its incoming gradient: the loop's array for a
  // head or the logits, its reader's input gradient, or with several readers (encoder.fc, read
  // by both heads) the sum of theirs, in its own output format.
  void wire_gradient(LayerId id) {
    Node& n = nodes[id];
    md g;
    if (n.readers.empty()) {
      g = terminal_gradient(id).get_desc();
    } else if (n.readers.size() == 1) {
      g = nodes[n.readers[0]].p.bd_diff_src;
    } else {
      for (const LayerId r : n.readers) n.sum_in.emplace_back(nodes[r].p.bd_diff_src, n.p.dst, eng);
      n.g_sum = memory(n.p.dst, eng);
      g = n.p.dst;
    }
    n.g_in = Converter(g, n.out_view, eng);
    n.g_bw = Converter(n.p.dst, n.p.bw_diff_dst, eng);
    if (n.diff_src) n.g_bd = Converter(n.p.dst, n.p.bd_diff_dst, eng);
  }

  // The gradient of a layer no layer reads: mu's and logvar's from the reparameterization, the
  // logits' from the loss.
  const memory& terminal_gradient(LayerId id) const {
    if (id == desc.mu_head) return g_mu;
    if (id == desc.logvar_head) return g_lv;
    if (id == desc.output) return dlogits;
    throw Error("FastModel: the output of " + desc.layer(id).name + " is read by nothing");
  }

  std::string impl_line(const char* what, const Node& n, const std::string& impl) const {
    return n.layer->name + " " + what + ": " + impl;
  }

  // ---- forward ----

  void forward_layer(LayerId id, const memory& in, const float* params) {
    Node& n = nodes[id];
    n.src_used = n.in_fwd(strm, in);
    n.w_user.set_data_handle(const_cast<float*>(params + desc.weight(id).offset));
    n.b_user.set_data_handle(const_cast<float*>(params + desc.bias(id).offset));
    const memory w = n.w_fwd(strm, n.w_user);
    n.p.fwd.execute(strm, {{DNNL_ARG_SRC, n.src_used},
                           {DNNL_ARG_WEIGHTS, w},
                           {DNNL_ARG_BIAS, n.b_user},
                           {DNNL_ARG_DST, n.dst},
                           {DNNL_ARG_SCRATCHPAD, scratch}});
    if (n.layer->relu && !fused_relu(*n.layer)) relu_inplace(data(n.dst), floats(n.dst));
  }

  void run_chain(const std::vector<LayerId>& chain, const float* params) {
    for (const LayerId id : chain) forward_layer(id, slot_memory(desc.layer(id).input), params);
    strm.wait();
  }
  void encode(const float* params) { run_chain(desc.encoder, params); }
  void decode(const float* params) { run_chain(desc.decoder, params); }

  LossParts forward(const float* params, double beta) {
    encode(params);
    reparam_forward(data(z), data(nodes[desc.mu_head].dst), data(nodes[desc.logvar_head].dst),
                    data(eps), size_t(batch) * desc.latent_dim);
    decode(params);
    return loss(beta);
  }

  // The fused BCE + KL of every image and the logits' gradient (cpu_ref.h's bce_kl_loss):
  // one exp and one log1p per pixel in float, each image's sums in double, the batch sum in
  // image order, so the result does not depend on the thread count.
  LossParts loss(double beta) {
    const float* logits = data(nodes[desc.output].dst);
    const float* target = data(x);
    const float* mu = data(nodes[desc.mu_head].dst);
    const float* logvar = data(nodes[desc.logvar_head].dst);
    float* g = data(dlogits);
    const int dim = desc.latent_dim;
    const float inv_b = float(1.0 / double(batch));
#pragma omp parallel for schedule(static)
    for (int b = 0; b < batch; ++b) {
      const float* l = logits + size_t(b) * kImagePixels;
      const float* t = target + size_t(b) * kImagePixels;
      float* gl = g + size_t(b) * kImagePixels;
      double r = 0;
      for (int p = 0; p < kImagePixels; ++p) {
        const float e = std::exp(-std::fabs(l[p]));  // no overflow for any logit
        r += double(std::max(l[p], 0.0f) - l[p] * t[p]) + double(std::log1p(e));
        const float sig = l[p] >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
        gl[p] = (sig - t[p]) * inv_b;
      }
      double k = 0;
      for (int j = 0; j < dim; ++j) {
        const double m = double(mu[size_t(b) * dim + j]), lv = double(logvar[size_t(b) * dim + j]);
        k += -0.5 * (1.0 + lv - m * m - std::exp(lv));
      }
      recon[size_t(b)] = r;
      kl[size_t(b)] = k;
    }
    LossParts sum;
    for (int b = 0; b < batch; ++b) sum.recon += recon[size_t(b)], sum.kl += kl[size_t(b)];
    sum.recon /= double(batch);
    sum.kl /= double(batch);
    sum.loss = sum.recon + beta * sum.kl;
    return sum;
  }

  // ---- backward ----

  // Backward of layer `id` from the gradient w.r.t. its output after the ReLU, `g` (in the
  // format wired for it; consumed). Writes the parameter gradients; returns the input
  // gradient (in p.bd_diff_src) unless the layer has none.
  memory backward_layer(LayerId id, const memory& g, const float* params, float* grads) {
    Node& n = nodes[id];
    memory gv = n.g_in(strm, g);  // the output's format, seen with the next layer's dims
    strm.wait();
    const memory gd(n.p.dst, eng, gv.get_data_handle());
    if (n.layer->relu) relu_mask(data(gd), data(n.dst), floats(n.dst));
    channel_sums(grads + desc.bias(id).offset, gd);
    float* dw = grads + desc.weight(id).offset;
    if (n.diff_w_in_place) n.diff_w.set_data_handle(dw);
    n.p.bwd_weights.execute(strm, {{DNNL_ARG_SRC, n.src_bw(strm, n.src_used)},
                                   {DNNL_ARG_DIFF_DST, n.g_bw(strm, gd)},
                                   {DNNL_ARG_DIFF_WEIGHTS, n.diff_w},
                                   {DNNL_ARG_SCRATCHPAD, scratch}});
    if (!n.diff_w_in_place) n.write_dw(strm, n.diff_w, dw);
    if (!n.diff_src) return memory();
    n.w_user.set_data_handle(const_cast<float*>(params + desc.weight(id).offset));
    n.p.bwd_data.execute(strm, {{DNNL_ARG_DIFF_DST, n.g_bd(strm, gd)},
                                {DNNL_ARG_WEIGHTS, n.w_bd(strm, n.w_user)},
                                {DNNL_ARG_DIFF_SRC, n.diff_src},
                                {DNNL_ARG_SCRATCHPAD, scratch}});
    return n.diff_src;
  }

  // The gradient w.r.t. layer `id`'s output once its readers' backward has run (see
  // wire_gradient); with several readers, their input gradients converted and summed in order.
  memory output_gradient(LayerId id) {
    Node& n = nodes[id];
    if (n.readers.empty()) return terminal_gradient(id);
    if (n.readers.size() == 1) return nodes[n.readers[0]].diff_src;
    std::vector<memory> parts;
    for (size_t k = 0; k < n.readers.size(); ++k)
      parts.push_back(n.sum_in[k](strm, nodes[n.readers[k]].diff_src));
    strm.wait();
    float* sum = data(n.g_sum);
    for (size_t i = 0, count = floats(n.g_sum); i < count; ++i) {
      float s = data(parts[0])[i];
      for (size_t k = 1; k < parts.size(); ++k) s += data(parts[k])[i];
      sum[i] = s;
    }
    return n.g_sum;
  }

  void backward_chain(const std::vector<LayerId>& chain, const float* params, float* grads) {
    for (auto it = chain.rbegin(); it != chain.rend(); ++it)
      backward_layer(*it, output_gradient(*it), params, grads);
    strm.wait();
  }

  void backward(const float* params, double beta, float* grads) {
    backward_chain(desc.decoder, params, grads);
    // The reparameterization and the KL term (the reference's loop: B x D terms).
    const memory g_z = nodes[desc.readers(kLatentSlot).front()].diff_src;
    reparam_backward(data(g_mu), data(g_lv), data(g_z), data(nodes[desc.mu_head].dst),
                     data(nodes[desc.logvar_head].dst), data(eps), batch, desc.latent_dim, beta);
    backward_chain(desc.encoder, params, grads);
  }

  // ---- reading back ----

  std::vector<float> read(const memory& m, const memory::dims& dims) {
    std::vector<float> out(m.get_desc().get_size() / sizeof(float));
    memory to(plain(dims), eng, out.data());
    dnnl::reorder(m, to).execute(strm, const_cast<memory&>(m), to);
    strm.wait();
    out.resize(to.get_desc().get_size() / sizeof(float));
    return out;
  }
};

FastModel::FastModel(const ModelDesc& desc, int batch) {
  try {
    impl_ = std::make_unique<Impl>(desc, batch);
  } catch (const dnnl::error& e) {
    throw Error(std::string("oneDNN could not set up the CPU engine: ") + e.what());
  }
}
FastModel::~FastModel() = default;

int FastModel::batch() const {
  return impl_->batch;
}
float* FastModel::x() {
  return data(impl_->x);
}
float* FastModel::eps() {
  return data(impl_->eps);
}
float* FastModel::z() {
  return data(impl_->z);
}
const float* FastModel::mu() const {
  return data(impl_->nodes[impl_->desc.mu_head].dst);
}
const float* FastModel::logvar() const {
  return data(impl_->nodes[impl_->desc.logvar_head].dst);
}
const float* FastModel::logits() const {
  return data(impl_->nodes[impl_->desc.output].dst);
}
const double* FastModel::recon() const {
  return impl_->recon.data();
}
const double* FastModel::kl() const {
  return impl_->kl.data();
}

LossParts FastModel::forward(const float* params, double beta) {
  return impl_->forward(params, beta);
}
void FastModel::backward(const float* params, double beta, float* grads) {
  impl_->backward(params, beta, grads);
}
void FastModel::encode(const float* params) {
  impl_->encode(params);
}
void FastModel::decode(const float* params) {
  impl_->decode(params);
}

std::vector<float> FastModel::read(int slot) const {
  Impl& m = *impl_;
  if (slot == kLatentSlot) return m.read(m.z, {m.batch, m.desc.latent_dim});
  if (slot < 0 || slot >= int(m.nodes.size())) throw Error("FastModel::read: no such slot");
  return m.read(m.nodes[size_t(slot)].dst, m.out_dims(LayerId(slot)));
}

std::vector<float> FastModel::read_dlogits() const {
  return impl_->read(impl_->dlogits, impl_->out_dims(impl_->desc.output));
}

std::string FastModel::first_nonfinite_activation() const {
  const Impl& m = *impl_;
  for (const int slot : m.desc.forward_slots()) {
    const memory& mem = slot == kLatentSlot ? m.z : m.nodes[size_t(slot)].dst;
    const float* v = data(mem);
    for (size_t i = 0, n = floats(mem); i < n; ++i)
      if (!std::isfinite(v[i])) return m.desc.slot_name(slot);
  }
  return "the loss";
}

std::vector<std::string> FastModel::implementations() const {
  std::vector<std::string> lines;
  for (const Impl::Node& n : impl_->nodes) {
    lines.push_back(impl_->impl_line("forward", n, n.p.impl_fwd));
    if (n.diff_src) lines.push_back(impl_->impl_line("backward-data", n, n.p.impl_bd));
    lines.push_back(impl_->impl_line("backward-weights", n, n.p.impl_bw));
  }
  return lines;
}

}  // namespace cuvae::cpu
