// Writes a parity dump (parity_dump.h): the weights, one batch and its noise, and what one CPU
// engine computes on them in fp32, the reference (cpu_model.h) or the fast engine (cpu_fast.h).
// Weights, images and noise are Philox draws keyed by the seed, the same for either engine, so
// two dumps at one seed differ only in what their engines computed.
#include "host/eval/parity_dump.h"

#include <algorithm>
#include <vector>

#include "host/core/batch.h"
#include "host/core/error.h"
#include "host/core/philox.h"
#include "host/core/text.h"
#include "host/cpu/cpu_fast.h"
#include "host/cpu/cpu_model.h"
#include "host/io/idx.h"
#include "host/io/safetensors.h"

namespace cuvae {
namespace {

// The layers followed by a ReLU, in execution order: the dump records their outputs (after
// the ReLU) so that the oracle can align the ReLU masks.
std::vector<LayerId> relu_layers(const ModelDesc& desc) {
  std::vector<LayerId> ids;
  for (size_t id = 0; id < desc.layers.size(); ++id)
    if (desc.layers[id].relu) ids.push_back(LayerId(id));
  return ids;
}

// The shape of a layer's output: (B, C, H, W) for a convolution, (B, F) for a dense layer.
std::vector<int64_t> output_shape(const Layer& l, int batch) {
  if (l.kind == LayerKind::Linear) return {batch, l.out_channels};
  return {batch, l.out_channels, l.out_h, l.out_w};
}

// Uniform draws in [lo, hi) from Philox stream Data, slot 0, numbered in the order drawn.
struct UniformDraws {
  uint64_t seed;
  uint32_t next = 0;
  float operator()(float lo, float hi) {
    const Philox4 r = random_words(seed, Stream::Data, 0, next++);
    return lo + (hi - lo) * (uniform01(r.v[0]) - 0.5f / 16777216.0f);
  }
};

// Glorot weights (init_params); Glorot leaves biases at zero, so they get uniform values in
// [-0.1, 0.1) to exercise their paths too.
std::vector<float> make_params(const ModelDesc& desc, uint64_t seed, UniformDraws& uniform) {
  std::vector<float> params(desc.num_params);
  init_params(desc, seed, params.data());
  for (const ParamTensor& p : desc.params)
    if (p.fan_in == 0)
      for (size_t i = 0; i < p.numel; ++i) params[p.offset + i] = uniform(-0.1f, 0.1f);
  return params;
}

// x (B, 784): images from the MNIST test split, or synthetic MNIST-like ones (mostly
// background, some full ink, the rest in between). eps (B, D): standard normal noise.
void make_batch(const ParityDumpConfig& cfg, UniformDraws& uniform, std::vector<float>& x,
                std::vector<float>& eps) {
  x.resize(size_t(cfg.batch_size) * kImagePixels);
  eps.resize(size_t(cfg.batch_size) * size_t(cfg.latent_dim));
  if (!cfg.data_dir.empty()) {
    const Dataset ds = load_dataset(cfg.data_dir, Split::Test);
    std::vector<int32_t> index(size_t(cfg.batch_size));
    for (int b = 0; b < cfg.batch_size; ++b)
      index[size_t(b)] =
          int32_t(random_words(cfg.seed, Stream::Data, 1, uint32_t(b)).v[0] % uint32_t(ds.size()));
    gather_batch(x.data(), ds.images.pixels.data(), index.data(), cfg.batch_size, kImagePixels);
  } else {
    for (float& v : x) {
      const float u = uniform(0.0f, 1.0f);
      v = u < 0.5f ? 0.0f : u < 0.6f ? 1.0f : uniform(0.0f, 1.0f);
    }
  }
  for (size_t i = 0; i < eps.size(); ++i) {
    const Philox4 r = random_words(cfg.seed, Stream::Data, 2, uint32_t(i));
    eps[i] = normal_from(r.v[0], r.v[1]);
  }
}

// What an engine computed on the batch.
struct EngineResult {
  LossParts loss;
  std::vector<float> grads;                      // (desc.num_params) in PyTorch order
  std::vector<std::vector<float>> relu_outputs;  // one per relu_layers(), plain layout
};

EngineResult run_reference(const ModelDesc& desc, const std::vector<float>& params,
                           const std::vector<float>& x, const std::vector<float>& eps, int batch,
                           double beta) {
  cpu::Activations<float> a;
  a.resize(desc, batch);
  std::copy(x.begin(), x.end(), a.x.begin());
  std::copy(eps.begin(), eps.end(), a.eps.begin());
  EngineResult r;
  r.loss = cpu::model_forward(desc, params.data(), a, beta);
  r.grads.resize(desc.num_params);
  cpu::model_backward(desc, params.data(), a, beta, r.grads.data());
  for (const LayerId id : relu_layers(desc)) r.relu_outputs.push_back(a.out[id]);
  return r;
}

EngineResult run_fast(const ModelDesc& desc, const std::vector<float>& params,
                      const std::vector<float>& x, const std::vector<float>& eps, int batch,
                      double beta) {
  cpu::FastModel m(desc, batch);
  std::copy(x.begin(), x.end(), m.x());
  std::copy(eps.begin(), eps.end(), m.eps());
  EngineResult r;
  r.loss = m.forward(params.data(), beta);
  r.grads.resize(desc.num_params);
  m.backward(params.data(), beta, r.grads.data());
  for (const LayerId id : relu_layers(desc)) r.relu_outputs.push_back(m.read(id));
  return r;
}

void write_dump(const ParityDumpConfig& cfg, const ModelDesc& desc,
                const std::vector<float>& params, const std::vector<float>& x,
                const std::vector<float>& eps, const EngineResult& r) {
  const int64_t b = cfg.batch_size, d = cfg.latent_dim;
  std::vector<TensorOut> out;
  for (const ParamTensor& p : desc.params)
    out.push_back({p.name, DType::F32, p.shape, params.data() + p.offset});
  for (const ParamTensor& p : desc.params)
    out.push_back({"ref.grad." + p.name, DType::F32, p.shape, r.grads.data() + p.offset});
  const std::vector<LayerId> relus = relu_layers(desc);
  for (size_t i = 0; i < relus.size(); ++i) {
    const Layer& l = desc.layer(relus[i]);
    if (int64_t(r.relu_outputs[i].size()) != b * l.out_size())
      throw Error("parity dump: the engine's output of " + l.name + " holds " +
                  std::to_string(r.relu_outputs[i].size()) + " values, expected " +
                  std::to_string(b * l.out_size()));
    out.push_back({"ref.act." + l.name, DType::F32, output_shape(l, cfg.batch_size),
                   r.relu_outputs[i].data()});
  }
  out.push_back({"batch.x", DType::F32, {b, 1, kImageSide, kImageSide}, x.data()});
  out.push_back({"batch.eps", DType::F32, {b, d}, eps.data()});
  out.push_back({"ref.loss", DType::F64, {1}, &r.loss.loss});
  out.push_back({"ref.recon", DType::F64, {1}, &r.loss.recon});
  out.push_back({"ref.kl", DType::F64, {1}, &r.loss.kl});
  write_safetensors(cfg.out, out,
                    {{"format", "cuvae-parity-2"},
                     {"device", cfg.device},
                     {"latent_dim", std::to_string(cfg.latent_dim)},
                     {"beta", exact_text(cfg.beta)},
                     {"batch_size", std::to_string(cfg.batch_size)},
                     {"seed", std::to_string(cfg.seed)}});
}

}  // namespace

void write_parity_dump(const ParityDumpConfig& cfg) {
  if (cfg.device != "cpu" &&
      cfg.device != "cpu-ref")  // cmd_parity_dump turns 'gpu' away with a one-line message
    throw Error("write_parity_dump: device " + quote_arg(cfg.device) + " is not a CPU engine");
  const ModelDesc desc = make_vae(cfg.latent_dim);
  UniformDraws uniform{cfg.seed};
  const std::vector<float> params = make_params(desc, cfg.seed, uniform);
  std::vector<float> x, eps;
  make_batch(cfg, uniform, x, eps);
  const EngineResult r = cfg.device == "cpu"
                             ? run_fast(desc, params, x, eps, cfg.batch_size, cfg.beta)
                             : run_reference(desc, params, x, eps, cfg.batch_size, cfg.beta);
  write_dump(cfg, desc, params, x, eps, r);
}

}  // namespace cuvae
