// Writes a parity dump (parity_dump.h) from the float CPU reference.
#include "host/parity_dump.h"

#include <cmath>
#include <vector>

#include "host/batch.h"
#include "host/cli_util.h"
#include "host/cpu_model.h"
#include "host/idx.h"
#include "host/philox.h"
#include "host/safetensors.h"

namespace cuvae {

void write_parity_dump(const ParityDumpConfig& cfg) {
  const ModelDesc desc = make_vae(cfg.latent_dim);
  std::vector<float> params(desc.num_params);
  init_params(desc, cfg.seed, params.data());
  // Glorot leaves biases at zero; give them values so their paths are exercised too.
  uint32_t draw = 0;
  auto uniform = [&](float lo, float hi) {
    const Philox4 r = random_words(cfg.seed, Stream::Data, 0, draw++);
    return lo + (hi - lo) * (uniform01(r.v[0]) - 0.5f / 16777216.0f);
  };
  for (const ParamTensor& p : desc.params)
    if (p.fan_in == 0)
      for (size_t i = 0; i < p.numel; ++i) params[p.offset + i] = uniform(-0.1f, 0.1f);

  cpu::Activations<float> a;
  a.resize(desc, cfg.batch_size);
  if (!cfg.data_dir.empty()) {
    const Dataset ds = load_dataset(cfg.data_dir, Split::Test);
    std::vector<int32_t> index(size_t(cfg.batch_size));
    for (int b = 0; b < cfg.batch_size; ++b)
      index[size_t(b)] =
          int32_t(random_words(cfg.seed, Stream::Data, 1, uint32_t(b)).v[0] % uint32_t(ds.size()));
    gather_batch(a.x.data(), ds.images.pixels.data(), index.data(), cfg.batch_size, kImagePixels);
  } else {
    // MNIST-like: mostly background, some full ink, the rest in between.
    for (float& v : a.x) {
      const float u = uniform(0.0f, 1.0f);
      v = u < 0.5f ? 0.0f : u < 0.6f ? 1.0f : uniform(0.0f, 1.0f);
    }
  }
  for (size_t i = 0; i < a.eps.size(); ++i) {
    const Philox4 r = random_words(cfg.seed, Stream::Data, 2, uint32_t(i));
    a.eps[i] = normal_from(r.v[0], r.v[1]);
  }

  const cpu::LossParts loss = cpu::model_forward(desc, params.data(), a, cfg.beta);
  std::vector<float> grads(desc.num_params);
  cpu::model_backward(desc, params.data(), a, cfg.beta, grads.data());

  std::vector<TensorOut> out;
  std::vector<std::string> grad_names;
  grad_names.reserve(desc.params.size());
  for (const ParamTensor& p : desc.params)
    out.push_back({p.name, DType::F32, p.shape, params.data() + p.offset});
  for (const ParamTensor& p : desc.params) {
    grad_names.push_back("ref.grad." + p.name);
    out.push_back({grad_names.back(), DType::F32, p.shape, grads.data() + p.offset});
  }
  const int64_t b = cfg.batch_size, d = cfg.latent_dim;
  out.push_back({"batch.x", DType::F32, {b, 1, kImageSide, kImageSide}, a.x.data()});
  out.push_back({"batch.eps", DType::F32, {b, d}, a.eps.data()});
  out.push_back({"ref.loss", DType::F64, {1}, &loss.loss});
  out.push_back({"ref.recon", DType::F64, {1}, &loss.recon});
  out.push_back({"ref.kl", DType::F64, {1}, &loss.kl});
  write_safetensors(cfg.out, out,
                    {{"format", "cuvae-parity-1"},
                     {"latent_dim", std::to_string(cfg.latent_dim)},
                     {"beta", exact_text(cfg.beta)},
                     {"batch_size", std::to_string(cfg.batch_size)},
                     {"seed", std::to_string(cfg.seed)}});
}

}  // namespace cuvae
