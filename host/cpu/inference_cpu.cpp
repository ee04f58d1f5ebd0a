// CPU inference engines (inference_cpu.h): the fast engine and the reference model, each in
// chunks of at most kChunk images.
#include "host/cpu/inference_cpu.h"

#include <algorithm>
#include <memory>

#include "host/core/error.h"
#include "host/core/interrupt.h"
#include "host/cpu/cpu_fast.h"
#include "host/cpu/cpu_model.h"

namespace cuvae {
namespace {

constexpr int kChunk = 256;  // images per pass: bounds the activation memory

// Calls f(first, n) over [0, count) in chunks of at most kChunk.
template <typename F>
void for_chunks(int count, const F& f) {
  if (count < 1) throw Error("Inference: count must be positive");
  for (int first = 0; first < count; first += kChunk) {
    check_interrupt();  // a signal stops an evaluation, an encoding or a picture between chunks
    f(first, std::min(kChunk, count - first));
  }
}

// What the CPU engines share: the parameters, and encode/decode in chunks through a model
// that Derived::model(n) hands out for a chunk of n images (its x(), z(), mu(), logvar(),
// logits() arrays and its encode(params) / decode(params) passes).
template <typename Derived>
class ChunkedInference : public Inference {
 public:
  ChunkedInference(const ModelDesc& desc, const std::vector<float>& params)
      : desc_(desc), params_(params) {
    if (params_.size() != desc_.num_params) throw Error("Inference: parameters of another model");
  }
  const ModelDesc& desc() const override { return desc_; }
  void set_params(const float* params) override {
    std::copy(params, params + desc_.num_params, params_.begin());
  }

  void encode(float* mu, float* logvar, const float* x, int count) override {
    const size_t dim = size_t(desc_.latent_dim);
    for_chunks(count, [&](int first, int n) {
      auto& m = static_cast<Derived*>(this)->model(n);
      std::copy_n(x + size_t(first) * kImagePixels, size_t(n) * kImagePixels, m.x());
      m.encode(params_.data());
      std::copy_n(m.mu(), size_t(n) * dim, mu + size_t(first) * dim);
      std::copy_n(m.logvar(), size_t(n) * dim, logvar + size_t(first) * dim);
    });
  }

  void decode(float* logits, const float* z, int count) override {
    const size_t dim = size_t(desc_.latent_dim);
    for_chunks(count, [&](int first, int n) {
      auto& m = static_cast<Derived*>(this)->model(n);
      std::copy_n(z + size_t(first) * dim, size_t(n) * dim, m.z());
      m.decode(params_.data());
      std::copy_n(m.logits(), size_t(n) * kImagePixels, logits + size_t(first) * kImagePixels);
    });
  }

 protected:
  ModelDesc desc_;
  std::vector<float> params_;
};

// The reference model on activations sized for each chunk.
class RefModel {
 public:
  explicit RefModel(const ModelDesc& desc) : desc_(desc) {}
  void resize(int n) {
    if (a_.batch != n) a_.resize(desc_, n);
  }
  float* x() { return a_.x.data(); }
  float* z() { return a_.z.data(); }
  const float* mu() const { return a_.out[desc_.mu_head].data(); }
  const float* logvar() const { return a_.out[desc_.logvar_head].data(); }
  const float* logits() const { return a_.out[desc_.output].data(); }
  void encode(const float* params) { cpu::model_encode(desc_, params, a_); }
  void decode(const float* params) { cpu::model_decode(desc_, params, a_); }

 private:
  const ModelDesc& desc_;
  cpu::Activations<float> a_;
};

class RefInference final : public ChunkedInference<RefInference> {
 public:
  RefInference(const ModelDesc& desc, const std::vector<float>& params)
      : ChunkedInference(desc, params), m_(desc_) {}
  std::string device() const override { return "cpu-ref"; }
  RefModel& model(int n) {
    m_.resize(n);
    return m_;
  }

 private:
  RefModel m_;
};

// The fast engine: one FastModel, sized to the largest chunk asked for so far (at most
// kChunk); a shorter chunk runs in it with its rows after the chunk's left as they are. Each
// image's outputs depend on its own row only, so the padding costs time, never results, and
// a sequence of calls of changing sizes (the evaluation's IWAE groups) makes no new model.
class FastInference final : public ChunkedInference<FastInference> {
 public:
  using ChunkedInference::ChunkedInference;
  std::string device() const override { return "cpu"; }
  // A model with room for n images; a new one only for a chunk larger than any before. Its
  // inputs start at zero, so the rows a shorter chunk leaves hold finite values.
  cpu::FastModel& model(int n) {
    if (!m_ || m_->batch() < n) {
      m_ = std::make_unique<cpu::FastModel>(desc_, n);
      std::fill_n(m_->x(), size_t(n) * kImagePixels, 0.0f);
      std::fill_n(m_->z(), size_t(n) * size_t(desc_.latent_dim), 0.0f);
    }
    return *m_;
  }

 private:
  std::unique_ptr<cpu::FastModel> m_;
};

}  // namespace

std::unique_ptr<Inference> make_cpu_inference(const ModelDesc& desc,
                                              const std::vector<float>& params,
                                              const std::string& device) {
  if (device == "cpu-ref") return std::make_unique<RefInference>(desc, params);
  if (device == "cpu") return std::make_unique<FastInference>(desc, params);
  throw Error("make_cpu_inference: no CPU engine called '" + device + "'");
}

}  // namespace cuvae
