// Builds the model description (see model.h) and the seeded Glorot-uniform initialisation.
#include "host/core/model.h"

#include <cmath>
#include <sstream>

#include "host/core/error.h"
#include "host/core/philox.h"

namespace cuvae {
namespace {

int conv_out(int in, int k, int s, int p) {
  return (in + 2 * p - k) / s + 1;
}
int deconv_out(int in, int k, int s, int p, int op) {
  return (in - 1) * s - 2 * p + k + op;
}

// Adds the layers in execution order, each to the current chain (the encoder or the decoder),
// each reading the previous one's output unless read() names another slot.
class Builder {
 public:
  explicit Builder(ModelDesc& d) : d_(d) {}

  // The layers from here on form `chain`, its first one reading `slot`.
  void start(std::vector<LayerId>& chain, int slot) {
    chain_ = &chain;
    next_input_ = slot;
  }
  // The next layer reads `slot` instead of the previous layer's output.
  void read(int slot) { next_input_ = slot; }

  int add_param(const std::string& name, std::vector<int64_t> shape, int fan_in, int fan_out) {
    ParamTensor t;
    t.name = name;
    t.numel = 1;
    for (int64_t s : shape) t.numel *= static_cast<size_t>(s);
    t.shape = std::move(shape);
    t.offset = d_.num_params;
    t.fan_in = fan_in;
    t.fan_out = fan_out;
    d_.num_params += t.numel;
    d_.params.push_back(std::move(t));
    return static_cast<int>(d_.params.size()) - 1;
  }

  void conv(const std::string& name, int cin, int cout, int in_hw, int stride, bool relu) {
    Layer l{name, LayerKind::Conv2d, cin, cout};
    l.kernel = 3, l.stride = stride, l.pad = 1;
    l.in_h = l.in_w = in_hw;
    l.out_h = l.out_w = conv_out(in_hw, 3, stride, 1);
    l.relu = relu;
    l.weight = add_param(name + ".weight", {cout, cin, 3, 3}, cin * 9, cout * 9);
    l.bias = add_param(name + ".bias", {cout}, 0, 0);
    push(l);
  }

  void deconv(const std::string& name, int cin, int cout, int in_hw, int stride, bool relu) {
    Layer l{name, LayerKind::ConvTranspose2d, cin, cout};
    l.kernel = 3, l.stride = stride, l.pad = 1, l.out_pad = stride - 1;
    l.in_h = l.in_w = in_hw;
    l.out_h = l.out_w = deconv_out(in_hw, 3, stride, 1, l.out_pad);
    l.relu = relu;
    // Glorot fans of a transposed conv: the sum fan_in + fan_out is (cin + cout) * k * k
    // whichever way they are assigned, so the limit is unambiguous.
    l.weight = add_param(name + ".weight", {cin, cout, 3, 3}, cin * 9, cout * 9);
    l.bias = add_param(name + ".bias", {cout}, 0, 0);
    push(l);
  }

  // Returns the layer's LayerId (its output slot).
  int linear(const std::string& name, int in, int out, bool relu) {
    Layer l{name, LayerKind::Linear, in, out};
    l.relu = relu;
    l.weight = add_param(name + ".weight", {out, in}, in, out);
    l.bias = add_param(name + ".bias", {out}, 0, 0);
    return push(l);
  }

 private:
  int push(Layer& l) {
    const int id = static_cast<int>(d_.layers.size());
    l.input = next_input_;
    d_.layers.push_back(l);
    chain_->push_back(LayerId(id));
    next_input_ = id;
    return id;
  }

  ModelDesc& d_;
  std::vector<LayerId>* chain_ = nullptr;
  int next_input_ = kImageSlot;
};

// Throws unless the topology is one the engines can walk: every LayerId built once, in order,
// in the encoder or the decoder; each layer reading an earlier slot of its own size; the heads
// (B, D) on one input and the logits (B, 784), read by no layer; z read by the decoder only.
void check_topology(const ModelDesc& d) {
  auto fail = [](const std::string& why) { throw Error("make_vae: " + why); };
  if (d.layers.size() != size_t(kNumLayers)) fail("the layers do not match LayerId");
  std::vector<LayerId> order(d.encoder);
  order.insert(order.end(), d.decoder.begin(), d.decoder.end());
  for (size_t i = 0; i < order.size(); ++i)
    if (order[i] != LayerId(i)) fail("the layers are not built in LayerId order");
  if (order.size() != d.layers.size()) fail("a layer is in neither chain");
  for (const LayerId id : order) {
    const Layer& l = d.layer(id);
    const bool in_decoder = id >= d.decoder.front();
    const bool reads_earlier =
        l.input < id || l.input == kImageSlot || (l.input == kLatentSlot && in_decoder);
    if (!reads_earlier || l.input < 0) fail(l.name + " reads a tensor not made before it");
    if (size_t(l.in_size()) != d.slot_size(l.input)) fail(l.name + "'s input has another size");
  }
  const Layer &mu = d.layer(d.mu_head), &logvar = d.layer(d.logvar_head);
  if (mu.input != logvar.input || mu.out_size() != d.latent_dim ||
      logvar.out_size() != d.latent_dim || d.mu_head >= d.decoder.front() ||
      d.logvar_head >= d.decoder.front())
    fail("the latent heads are not two (B, D) encoder layers on one input");
  if (d.layer(d.output).out_size() != kImagePixels || d.output != d.decoder.back())
    fail("the last decoder layer does not give the logits");
  for (const LayerId id : {d.mu_head, d.logvar_head, d.output})
    if (!d.readers(id).empty()) fail(d.layer(id).name + " is read by another layer");
  if (d.readers(kLatentSlot).empty()) fail("no layer reads z");
}

}  // namespace

ModelDesc make_vae(int latent_dim) {
  if (latent_dim < 1 || latent_dim > kMaxLatentDim)
    throw InputError("latent dimension must be between 1 and " + std::to_string(kMaxLatentDim) +
                     ", got " + std::to_string(latent_dim));
  ModelDesc d;
  d.latent_dim = latent_dim;
  Builder b(d);
  b.start(d.encoder, kImageSlot);
  b.conv("encoder.conv1", 1, 32, kImageSide, 2, true);  // 28 -> 14
  b.conv("encoder.conv2", 32, 64, 14, 2, true);         // 14 -> 7
  const int h = b.linear("encoder.fc", 64 * 7 * 7, 16, true);
  d.mu_head = LayerId(b.linear("encoder.mu", 16, latent_dim, false));
  b.read(h);  // both heads read encoder.fc's output
  d.logvar_head = LayerId(b.linear("encoder.logvar", 16, latent_dim, false));
  b.start(d.decoder, kLatentSlot);
  b.linear("decoder.fc", latent_dim, 64 * 7 * 7, true);
  b.deconv("decoder.deconv1", 64, 64, 7, 2, true);   // 7 -> 14
  b.deconv("decoder.deconv2", 64, 32, 14, 2, true);  // 14 -> 28
  b.deconv("decoder.out", 32, 1, kImageSide, 1, false);
  d.output = d.decoder.back();
  check_topology(d);
  return d;
}

std::vector<LayerId> ModelDesc::readers(int slot) const {
  std::vector<LayerId> r;
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i].input == slot) r.push_back(LayerId(i));
  return r;
}

size_t ModelDesc::slot_size(int slot) const {
  if (slot == kImageSlot) return kImagePixels;
  if (slot == kLatentSlot) return size_t(latent_dim);
  if (slot < 0 || slot >= int(layers.size())) throw Error("no slot " + std::to_string(slot));
  return size_t(layers[size_t(slot)].out_size());
}

std::vector<int> ModelDesc::forward_slots() const {
  std::vector<int> slots(encoder.begin(), encoder.end());
  slots.push_back(kLatentSlot);
  slots.insert(slots.end(), decoder.begin(), decoder.end());
  return slots;
}

std::string ModelDesc::slot_name(int slot) const {
  if (slot == kImageSlot) return "the image";
  if (slot == kLatentSlot) return "z";
  const std::string& name = layers.at(size_t(slot)).name;
  if (slot == mu_head) return "mu (" + name + ")";
  if (slot == logvar_head) return "logvar (" + name + ")";
  if (slot == output) return "the logits (" + name + ")";
  return "the output of " + name;
}

const ParamTensor& ModelDesc::param(const std::string& name) const {
  for (const ParamTensor& p : params)
    if (p.name == name) return p;
  throw Error("no parameter named '" + name + "' in the model description");
}

void init_params(const ModelDesc& desc, uint64_t seed, float* params) {
  for (const ParamTensor& p : desc.params) {
    float* w = params + p.offset;
    if (p.fan_in == 0) {  // bias
      for (size_t i = 0; i < p.numel; ++i) w[i] = 0.0f;
      continue;
    }
    const double limit = std::sqrt(6.0 / double(p.fan_in + p.fan_out));
    for (size_t i = 0; i < p.numel; ++i) {
      const Philox4 r = random_words(seed, Stream::Init, p.offset + i, 0);
      const double u = (double(r.v[0]) + 0.5) * (1.0 / 4294967296.0);  // (0, 1)
      w[i] = static_cast<float>((2.0 * u - 1.0) * limit);
    }
  }
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

namespace {

// Sets order[] over one (C, H, W) block starting at `first`: the device position of element
// (h, w, c) takes the host position of element (c, h, w). Each position is `stride` floats
// wide (a row of that many floats; 1 for single values), and order covers all of them.
void chw_to_hwc(uint32_t* order, size_t first, int c_n, int h_n, int w_n, size_t stride) {
  for (size_t r = 0; r < stride; ++r)
    for (int h = 0; h < h_n; ++h)
      for (int w = 0; w < w_n; ++w)
        for (int c = 0; c < c_n; ++c) {
          const size_t device = (size_t(h) * w_n + w) * c_n + c;
          const size_t host = (size_t(c) * h_n + h) * w_n + w;
          order[first + device * stride + r] = uint32_t(first + host * stride + r);
        }
}

}  // namespace

std::vector<uint32_t> channels_last_order(const ModelDesc& desc) {
  if (desc.num_params > size_t(UINT32_MAX)) throw Error("channels_last_order: too many parameters");
  std::vector<uint32_t> order(desc.num_params);
  for (size_t i = 0; i < order.size(); ++i) order[i] = uint32_t(i);
  for (const Layer& l : desc.layers) {
    if (l.kind == LayerKind::Linear) continue;
    const ParamTensor& w = desc.params[size_t(l.weight)];
    if (w.shape.size() != 4) throw Error("channels_last_order: " + w.name + " is not 4-d");
    // [A, B, kh, kw] -> [A, kh, kw, B]: each of the A slices is one (B, kh, kw) block.
    const size_t block = size_t(w.shape[1] * w.shape[2] * w.shape[3]);
    for (int64_t a = 0; a < w.shape[0]; ++a)
      chw_to_hwc(order.data(), w.offset + size_t(a) * block, int(w.shape[1]), int(w.shape[2]),
                 int(w.shape[3]), 1);
  }
  // The dense layers next to a convolution: each reads or writes a (C, H, W) block.
  for (size_t i = 0; i < desc.layers.size(); ++i) {
    const Layer& l = desc.layers[i];
    if (l.kind != LayerKind::Linear) continue;
    const ParamTensor& w = desc.params[size_t(l.weight)];
    if (l.input < int(desc.layers.size()) &&
        desc.layer(LayerId(l.input)).kind != LayerKind::Linear) {
      // Reads a convolution's output (encoder.fc): weight [out, C*H*W], row o's columns are
      // one (C, H, W) block.
      const Layer& conv = desc.layer(LayerId(l.input));
      for (int o = 0; o < l.out_channels; ++o)
        chw_to_hwc(order.data(), w.offset + size_t(o) * size_t(l.in_channels), conv.out_channels,
                   conv.out_h, conv.out_w, 1);
    }
    const std::vector<LayerId> readers = desc.readers(int(i));
    if (readers.size() == 1 && desc.layer(readers[0]).kind != LayerKind::Linear) {
      // Feeds a convolution (decoder.fc): weight [C*H*W, in], the rows are the block, each
      // `in` floats wide; its bias.
      const Layer& conv = desc.layer(readers[0]);
      chw_to_hwc(order.data(), w.offset, conv.in_channels, conv.in_h, conv.in_w,
                 size_t(l.in_channels));
      chw_to_hwc(order.data(), desc.params[size_t(l.bias)].offset, conv.in_channels, conv.in_h,
                 conv.in_w, 1);
    } else {
      for (const LayerId r : readers)
        if (desc.layer(r).kind != LayerKind::Linear)
          throw Error("channels_last_order: a dense layer feeds a convolution and another layer");
    }
  }
  return order;
}

std::string param_element_name(const ModelDesc& desc, size_t flat_index) {
  for (const ParamTensor& p : desc.params)
    if (flat_index >= p.offset && flat_index < p.offset + p.numel)
      return p.name + " (element " + std::to_string(flat_index - p.offset) + " of " +
             shape_string(p.shape) + ")";
  return "element " + std::to_string(flat_index) + " (outside the parameters)";
}

std::string first_nonfinite_param(const ModelDesc& desc, const float* flat) {
  for (size_t i = 0; i < desc.num_params; ++i)
    if (!std::isfinite(flat[i])) return param_element_name(desc, i);
  return "";
}

}  // namespace cuvae
