// Model checkpoints (checkpoint.h).
#include "host/checkpoint.h"

#include <cmath>
#include <cstring>

#include "host/cli_util.h"
#include "host/error.h"
#include "host/safetensors.h"

namespace cuvae {

void save_model(const std::string& path, const ModelDesc& desc, const std::vector<float>& params,
                double beta) {
  std::vector<TensorOut> tensors;
  for (const ParamTensor& p : desc.params)
    tensors.push_back({p.name, DType::F32, p.shape, params.data() + p.offset});
  write_safetensors(path, tensors,
                    {{"format", kModelFormat},
                     {"architecture", kArchitecture},
                     {"latent_dim", std::to_string(desc.latent_dim)},
                     {"beta", exact_text(beta)}});
}

LoadedModel load_model(const std::string& path) {
  const SafetensorsFile f = read_safetensors(path);
  auto meta = [&](const char* key) {
    const auto it = f.metadata.find(key);
    if (it == f.metadata.end())
      throw InputError(path + ": metadata has no '" + key + "' (not a cuvae model file)");
    return it->second;
  };
  if (meta("format") != kModelFormat)
    throw InputError(path + ": format '" + meta("format") + "', expected '" + kModelFormat + "'");
  if (meta("architecture") != kArchitecture)
    throw InputError(path + ": architecture '" + meta("architecture") + "', this build knows '" +
                     kArchitecture + "'");
  const std::string dim_text = meta("latent_dim");
  char* end = nullptr;
  const long dim = std::strtol(dim_text.c_str(), &end, 10);
  if (dim_text.empty() || *end != '\0' || dim < 1 || dim > kMaxLatentDim)
    throw InputError(path + ": bad latent_dim '" + dim_text + "'");
  LoadedModel m{make_vae(int(dim)), {}, 1.0};
  const std::string beta_text = meta("beta");
  m.beta = std::strtod(beta_text.c_str(), &end);
  if (beta_text.empty() || *end != '\0' || !std::isfinite(m.beta) || m.beta < 0)
    throw InputError(path + ": bad beta '" + beta_text + "'");
  m.params.resize(m.desc.num_params);
  for (const ParamTensor& p : m.desc.params) {
    const TensorIn& t = f.get(p.name, DType::F32, p.shape);
    std::memcpy(m.params.data() + p.offset, t.bytes.data(), p.numel * sizeof(float));
  }
  for (const auto& [name, t] : f.tensors) {
    (void)t;
    bool known = false;
    for (const ParamTensor& p : m.desc.params) known = known || p.name == name;
    if (!known) throw InputError(path + ": unexpected tensor '" + name + "'");
  }
  for (const ParamTensor& p : m.desc.params)
    for (size_t i = 0; i < p.numel; ++i)
      if (!std::isfinite(m.params[p.offset + i]))
        throw InputError(path + ": tensor '" + p.name + "' holds a non-finite value");
  return m;
}

}  // namespace cuvae
