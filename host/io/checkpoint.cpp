// Model checkpoints and the training state (checkpoint.h).
#include "host/io/checkpoint.h"

#include <zlib.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>

#include "host/core/error.h"
#include "host/core/text.h"
#include "host/io/safetensors.h"

namespace cuvae {
namespace {

constexpr const char* kRngNote =
    "philox4x32-10, counter-based: the permutation of epoch e is a function of (seed, e), the "
    "noise of step s of (seed, s); seed, step and epoch are the whole RNG state";

std::string adam_name(const char* moment, const std::string& param) {
  return std::string("adam.") + moment + "." + param;
}

// Strict readers of a file's metadata; every failure names the file and the key.
class Meta {
 public:
  explicit Meta(const SafetensorsFile& f) : f_(f) {}

  const std::string& text(const char* key, const char* what) const {
    const auto it = f_.metadata.find(key);
    if (it == f_.metadata.end())
      throw InputError(printable(f_.path) + ": metadata has no '" + key + "' (not a " + what + ")");
    return it->second;
  }

  int64_t integer(const char* key, int64_t lo, int64_t hi, const char* what) const {
    const std::string& s = text(key, what);
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || errno == ERANGE || v < lo || v > hi ||
        !(std::isdigit(static_cast<unsigned char>(s[0])) || s[0] == '-'))
      throw bad(key, s);
    return v;
  }

  uint64_t unsigned64(const char* key, const char* what) const {
    const std::string& s = text(key, what);
    errno = 0;
    char* end = nullptr;
    const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || errno == ERANGE ||
        !std::isdigit(static_cast<unsigned char>(s[0])))
      throw bad(key, s);
    return v;
  }

  // A number the range holds: the same ranges as the flags (train_types.h).
  double real(const char* key, const RealRange& range, const char* what) const {
    const std::string& s = text(key, what);
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0' || std::isspace(static_cast<unsigned char>(s[0])) ||
        !range.holds(v))
      throw bad(key, s);
    return v;
  }
  int64_t integer(const char* key, const IntRange& range, const char* what) const {
    return integer(key, range.lo, range.hi, what);
  }

 private:
  InputError bad(const char* key, const std::string& value) const {
    return InputError(printable(f_.path) + ": bad " + key + " '" + printable(value) +
                      "' in the metadata");
  }
  const SafetensorsFile& f_;
};

// The model description named by the metadata, after checking format and architecture.
ModelDesc described_model(const SafetensorsFile& f, const Meta& meta, const char* what) {
  const std::string& arch = meta.text("architecture", what);
  if (arch != kArchitecture)
    throw InputError(printable(f.path) + ": architecture '" + printable(arch) +
                     "', this build knows '" + kArchitecture + "'");
  return make_vae(int(meta.integer("latent_dim", 1, kMaxLatentDim, what)));
}

// Copies the tensors `<prefix><param name>` (F32, parameter shapes) into the flat buffer and
// refuses non-finite values.
void read_flat(const SafetensorsFile& f, const ModelDesc& desc, const std::string& prefix,
               std::vector<float>& out) {
  out.resize(desc.num_params);
  for (const ParamTensor& p : desc.params) {
    const std::string name = prefix + p.name;
    const TensorIn& t = f.get(name, DType::F32, p.shape);
    float* dst = out.data() + p.offset;
    std::memcpy(dst, t.bytes.data(), p.numel * sizeof(float));
    for (size_t i = 0; i < p.numel; ++i)
      if (!std::isfinite(dst[i]))
        throw InputError(printable(f.path) + ": tensor '" + name + "' holds a non-finite value");
  }
}

void refuse_unknown_tensors(const SafetensorsFile& f, const std::set<std::string>& known) {
  for (const auto& entry : f.tensors)
    if (!known.count(entry.first))
      throw InputError(printable(f.path) + ": unexpected tensor '" + printable(entry.first) + "'");
}

int64_t read_i64_scalar(const SafetensorsFile& f, const char* name) {
  const TensorIn& t = f.get(name, DType::I64, {1});
  int64_t v = 0;
  std::memcpy(&v, t.bytes.data(), sizeof v);
  return v;
}

// The position inside an interrupted epoch (epoch_step, epoch_sums) into `st`; files written
// before interrupts were resumable lack both tensors and always stop at an epoch boundary.
void read_epoch_position(const SafetensorsFile& f, const std::string& path, TrainState& st) {
  if (!f.tensors.count("epoch_step") && !f.tensors.count("epoch_sums")) return;
  st.epoch_step = read_i64_scalar(f, "epoch_step");
  // (recon, KL, weighted KL) sums; files written before --beta-warmup hold the first two.
  const auto found = f.tensors.find("epoch_sums");
  const int64_t count =
      found != f.tensors.end() && found->second.shape == std::vector<int64_t>{2} ? 2 : 3;
  const TensorIn& sums = f.get("epoch_sums", DType::F64, {count});
  double v[3] = {0, 0, 0};
  std::memcpy(v, sums.bytes.data(), size_t(count) * sizeof(double));
  for (const double x : v)
    if (!std::isfinite(x) || x < 0 || (st.epoch_step == 0 && x != 0))
      throw InputError(path + ": tensor 'epoch_sums' holds impossible loss sums");
  st.epoch_recon_sum = v[0];
  st.epoch_kl_sum = v[1];
  st.epoch_weighted_kl_sum = v[2];
}

}  // namespace

void save_model(const std::string& path, const ModelDesc& desc, const std::vector<float>& params,
                double beta) {
  if (params.size() != desc.num_params) throw Error("save_model: parameters of another model");
  std::vector<TensorOut> tensors;
  for (const ParamTensor& p : desc.params)
    tensors.push_back({p.name, DType::F32, p.shape, params.data() + p.offset});
  write_safetensors(path, tensors,
                    {{"format", kModelFormat},
                     {"format_version", std::to_string(kCheckpointVersion)},
                     {"architecture", kArchitecture},
                     {"latent_dim", std::to_string(desc.latent_dim)},
                     {"beta", exact_text(beta)}});
}

LoadedModel load_model(const std::string& path) {
  return model_from_safetensors(read_safetensors(path));
}

LoadedModel model_from_safetensors(const SafetensorsFile& f) {
  constexpr const char* what = "cuvae model file";
  const std::string path = printable(f.path);  // names the file in messages
  const Meta meta(f);
  if (meta.text("format", what) != kModelFormat)
    throw InputError(path + ": format '" + printable(meta.text("format", what)) + "', expected '" +
                     kModelFormat + "'");
  // Files written before format_version existed carry the version in the format name only.
  if (f.metadata.count("format_version"))
    meta.integer("format_version", kCheckpointVersion, kCheckpointVersion, what);
  LoadedModel m{described_model(f, meta, what), {}, 1.0};
  m.beta = meta.real("beta", kBetaRange, what);
  read_flat(f, m.desc, "", m.params);
  std::set<std::string> known;
  for (const ParamTensor& p : m.desc.params) known.insert(p.name);
  refuse_unknown_tensors(f, known);
  return m;
}

const char* train_split_name(TrainSplit s) {
  return s == TrainSplit::TrainTest ? "train+test" : "train";
}

std::optional<TrainSplit> train_split_from_name(const std::string& name) {
  for (const TrainSplit s : {TrainSplit::Train, TrainSplit::TrainTest})
    if (name == train_split_name(s)) return s;
  return std::nullopt;
}

void save_train_state(const std::string& path, const ModelDesc& desc, const TrainRun& run,
                      const TrainState& state) {
  const size_t n = desc.num_params;
  if (state.params.size() != n || state.adam_m.size() != n || state.adam_v.size() != n)
    throw Error("save_train_state: state sized for another model");
  if (run.cfg.latent_dim != desc.latent_dim)
    throw Error("save_train_state: configuration of another latent size");
  std::vector<TensorOut> tensors;
  for (const ParamTensor& p : desc.params)
    tensors.push_back({p.name, DType::F32, p.shape, state.params.data() + p.offset});
  for (const ParamTensor& p : desc.params)
    tensors.push_back(
        {adam_name("m", p.name), DType::F32, p.shape, state.adam_m.data() + p.offset});
  for (const ParamTensor& p : desc.params)
    tensors.push_back(
        {adam_name("v", p.name), DType::F32, p.shape, state.adam_v.data() + p.offset});
  tensors.push_back({"step", DType::I64, {1}, &state.step});
  tensors.push_back({"epoch", DType::I64, {1}, &state.epoch});
  const double epoch_sums[3] = {state.epoch_recon_sum, state.epoch_kl_sum,
                                state.epoch_weighted_kl_sum};
  tensors.push_back({"epoch_step", DType::I64, {1}, &state.epoch_step});
  tensors.push_back({"epoch_sums", DType::F64, {3}, epoch_sums});
  const TrainConfig& c = run.cfg;
  char crc[16];
  std::snprintf(crc, sizeof crc, "%08x", unsigned(run.train_crc32));
  write_safetensors(path, tensors,
                    {{"format", kTrainStateFormat},
                     {"format_version", std::to_string(kCheckpointVersion)},
                     {"architecture", kArchitecture},
                     {"latent_dim", std::to_string(desc.latent_dim)},
                     {"batch_size", std::to_string(c.batch_size)},
                     {"lr", exact_text(c.adam.lr)},
                     {"beta", exact_text(c.beta)},
                     {"beta_warmup", std::to_string(c.beta_warmup)},
                     {"adam_beta1", exact_text(c.adam.beta1)},
                     {"adam_beta2", exact_text(c.adam.beta2)},
                     {"adam_eps", exact_text(c.adam.eps)},
                     {"seed", std::to_string(c.seed)},
                     {"rng", kRngNote},
                     {"epochs", std::to_string(c.epochs)},
                     {"data", c.data_dir},
                     {"train_split", train_split_name(run.train_split)},
                     {"limit", std::to_string(c.limit)},
                     {"train_images", std::to_string(run.train_images)},
                     {"train_crc32", crc},
                     {"test_limit", std::to_string(run.test_limit)}});
}

LoadedTrainState load_train_state(const std::string& path) {
  return train_state_from_safetensors(read_safetensors(path));
}

LoadedTrainState train_state_from_safetensors(const SafetensorsFile& f) {
  constexpr const char* what = "cuvae training state";
  const std::string path = printable(f.path);  // names the file in messages
  const Meta meta(f);
  const std::string& format = meta.text("format", what);
  if (format != kTrainStateFormat)
    throw InputError(path + ": format '" + printable(format) + "', expected '" + kTrainStateFormat +
                     "'");
  const int64_t version = meta.integer("format_version", 0, INT32_MAX, what);
  if (version != kCheckpointVersion)
    throw InputError(path + ": format_version " + std::to_string(version) +
                     ", this build reads version " + std::to_string(kCheckpointVersion));
  LoadedTrainState out{described_model(f, meta, what), {}, {}};
  TrainConfig& c = out.run.cfg;
  c.latent_dim = out.desc.latent_dim;
  c.batch_size = int(meta.integer("batch_size", kBatchSizeRange, what));
  c.adam.lr = float(meta.real("lr", kLrRange, what));
  c.beta = meta.real("beta", kBetaRange, what);
  // Written since --beta-warmup exists; the runs before it had none.
  if (f.metadata.count("beta_warmup"))
    c.beta_warmup = int(meta.integer("beta_warmup", kBetaWarmupRange, what));
  c.adam.beta1 = float(meta.real("adam_beta1", kAdamBetaRange, what));
  c.adam.beta2 = float(meta.real("adam_beta2", kAdamBetaRange, what));
  c.adam.eps = float(meta.real("adam_eps", kAdamEpsRange, what));
  if (c.adam.beta1 >= 1.0f || c.adam.beta2 >= 1.0f)
    throw InputError(path + ": Adam betas must be below 1");
  c.seed = meta.unsigned64("seed", what);
  c.epochs = int(meta.integer("epochs", kEpochsRange, what));
  c.data_dir = meta.text("data", what);
  // Written since --train-split exists; the runs before it trained on the training split.
  if (f.metadata.count("train_split")) {
    const std::string& split = meta.text("train_split", what);
    const std::optional<TrainSplit> parsed = train_split_from_name(split);
    if (!parsed)
      throw InputError(path + ": bad train_split '" + printable(split) + "' in the metadata");
    out.run.train_split = *parsed;
  }
  c.limit = meta.integer("limit", kImageLimitRange, what);
  out.run.train_images = meta.integer("train_images", 1, INT32_MAX, what);
  const std::string& crc = meta.text("train_crc32", what);
  char* end = nullptr;
  const unsigned long crc_value = std::strtoul(crc.c_str(), &end, 16);
  if (crc.size() != 8 || *end != '\0' || !std::isxdigit(static_cast<unsigned char>(crc[0])))
    throw InputError(path + ": bad train_crc32 '" + printable(crc) + "' in the metadata");
  out.run.train_crc32 = uint32_t(crc_value);
  out.run.test_limit = meta.integer("test_limit", kImageLimitRange, what);

  TrainState& st = out.state;
  read_flat(f, out.desc, "", st.params);
  read_flat(f, out.desc, "adam.m.", st.adam_m);
  read_flat(f, out.desc, "adam.v.", st.adam_v);
  for (const ParamTensor& p : out.desc.params)
    for (size_t i = 0; i < p.numel; ++i)
      if (st.adam_v[p.offset + i] < 0.0f)
        throw InputError(path + ": tensor '" + adam_name("v", p.name) +
                         "' holds a negative second moment");
  st.step = read_i64_scalar(f, "step");
  st.epoch = read_i64_scalar(f, "epoch");
  if (st.epoch < 0 || st.epoch > 100000)
    throw InputError(path + ": epoch " + std::to_string(st.epoch) + " is out of range");
  read_epoch_position(f, path, st);
  // Every epoch is ceil(N / B) steps, so the counters must agree.
  const int64_t steps_per_epoch = (out.run.train_images + c.batch_size - 1) / c.batch_size;
  if (st.epoch_step < 0 || st.epoch_step >= steps_per_epoch)
    throw InputError(path + ": epoch_step " + std::to_string(st.epoch_step) +
                     " is outside an epoch of " + counted(steps_per_epoch, "step"));
  if (st.step != st.epoch * steps_per_epoch + st.epoch_step)
    throw InputError(path + ": step " + std::to_string(st.step) + " does not match " +
                     counted(st.epoch, "epoch") + " of " + counted(steps_per_epoch, "step") +
                     " plus " + std::to_string(st.epoch_step));
  std::set<std::string> known = {"step", "epoch", "epoch_step", "epoch_sums"};
  for (const ParamTensor& p : out.desc.params) {
    known.insert(p.name);
    known.insert(adam_name("m", p.name));
    known.insert(adam_name("v", p.name));
  }
  refuse_unknown_tensors(f, known);
  return out;
}

uint32_t image_checksum(const ImageSet& images) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const uint8_t* p = images.pixels.data();
  size_t left = images.pixels.size();
  while (left > 0) {
    const uInt chunk = uInt(std::min<size_t>(left, size_t(1) << 30));
    crc = crc32(crc, p, chunk);
    p += chunk;
    left -= chunk;
  }
  return uint32_t(crc);
}

}  // namespace cuvae
