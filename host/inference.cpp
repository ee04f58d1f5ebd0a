// CPU inference engine (inference.h): the reference model in chunks of at most kChunk images.
#include "host/inference.h"

#include <algorithm>
#include <cstring>

#include "cuda/device.cuh"
#include "host/cpu_model.h"
#include "host/error.h"

namespace cuvae {
namespace {

class CpuInference final : public Inference {
 public:
  CpuInference(const ModelDesc& desc, const std::vector<float>& params)
      : desc_(desc), params_(params) {
    if (params_.size() != desc_.num_params)
      throw Error("CpuInference: parameters of another model");
  }
  const ModelDesc& desc() const override { return desc_; }
  std::string device() const override { return "cpu"; }
  void set_params(const float* params) override {
    std::copy(params, params + desc_.num_params, params_.begin());
  }

  void encode(float* mu, float* logvar, const float* x, int count) override {
    const int dim = desc_.latent_dim;
    for_chunks(count, [&](int first, int n) {
      std::memcpy(a_.x.data(), x + size_t(first) * kImagePixels, size_t(n) * kImagePixels * 4);
      cpu::model_encode(desc_, params_.data(), a_);
      std::memcpy(mu + size_t(first) * dim, a_.mu.data(), size_t(n) * dim * 4);
      std::memcpy(logvar + size_t(first) * dim, a_.logvar.data(), size_t(n) * dim * 4);
    });
  }

  void decode(float* logits, const float* z, int count) override {
    const int dim = desc_.latent_dim;
    for_chunks(count, [&](int first, int n) {
      std::memcpy(a_.z.data(), z + size_t(first) * dim, size_t(n) * dim * 4);
      cpu::model_decode(desc_, params_.data(), a_);
      std::memcpy(logits + size_t(first) * kImagePixels, a_.logits.data(),
                  size_t(n) * kImagePixels * 4);
    });
  }

 private:
  static constexpr int kChunk = 256;  // bounds the activation memory

  template <typename F>
  void for_chunks(int count, const F& f) {
    if (count < 1) throw Error("Inference: count must be positive");
    for (int first = 0; first < count; first += kChunk) {
      const int n = std::min(kChunk, count - first);
      if (a_.batch != n) a_.resize(desc_, n);
      f(first, n);
    }
  }

  ModelDesc desc_;
  std::vector<float> params_;
  cpu::Activations<float> a_;
};

}  // namespace

std::unique_ptr<Inference> make_cpu_inference(const ModelDesc& desc,
                                              const std::vector<float>& params) {
  return std::make_unique<CpuInference>(desc, params);
}

std::unique_ptr<Inference> make_inference(const ModelDesc& desc, const std::vector<float>& params,
                                          const std::string& device, std::ostream& log) {
  if (device == "gpu") {
    const GpuInfo gpu = query_gpus();
    if (gpu.count > 0) return make_gpu_inference(desc, params);
    log << "cuvae: no usable GPU (" << gpu.reason << "); running the model on the CPU\n";
  } else if (device != "cpu") {
    throw InputError("--device: expected 'gpu' or 'cpu', got '" + device + "'");
  }
  return make_cpu_inference(desc, params);
}

}  // namespace cuvae
