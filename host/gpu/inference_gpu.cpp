// GPU inference engine (inference_gpu.h): the forward passes of the trainer's layers (cuDNN
// convolutions, cuBLAS dense layers, the bias/ReLU kernel) in chunks of at most kChunk images,
// strict fp32 with deterministic algorithms, walking the description's encoder and decoder
// chains (model.h). Convolution plans are made once per chunk size and cached (the full chunk
// and whatever remainders occur).
#include <algorithm>
#include <array>
#include <map>
#include <vector>

#include "cuda/kernels/activations.cuh"
#include "cuda/libs/conv.cuh"
#include "cuda/libs/dense.cuh"
#include "cuda/runtime/device_buffer.cuh"
#include "cuda/runtime/nvtx.cuh"
#include "host/core/error.h"
#include "host/core/interrupt.h"
#include "host/gpu/device_info.h"
#include "host/gpu/gpu_plan.h"
#include "host/gpu/inference_gpu.h"

namespace cuvae {
namespace {

class GpuInference final : public Inference {
 public:
  GpuInference(const ModelDesc& desc, const std::vector<float>& params)
      : desc_(desc),
        dev_(device_param_layout(desc, false)),
        cudnn_(stream_.get()),
        cublas_(stream_.get(), false) {
    const GpuInfo gpu = query_gpus();
    if (gpu.count == 0) throw Error("GPU inference: no usable CUDA device (" + gpu.reason + ")");
    name_ = gpu.name;
    name_stream(stream_.get(), "cuvae inference");
    params_ = DeviceBuffer<float>(dev_.size, "the parameters");
    set_params(params.data());
    const size_t b = kChunk, dim = size_t(desc_.latent_dim);
    auto act = [&](LayerId id) {
      return DeviceBuffer<float>(b * size_t(desc_.layer(id).out_size()), "activations");
    };
    out_.resize(desc_.layers.size());
    x_ = DeviceBuffer<float>(b * kImagePixels, "activations");
    for (const LayerId id : desc_.encoder) out_[id] = act(id);
    z_ = DeviceBuffer<float>(b * dim, "activations");
    for (const LayerId id : desc_.decoder) out_[id] = act(id);
  }

  const ModelDesc& desc() const override { return desc_; }
  std::string device() const override { return name_; }

  void set_params(const float* params) override {
    std::vector<float> staged(dev_.size);  // aligned tensors, zero padding (host/gpu/gpu_plan.h)
    to_device_order(dev_, params, staged.data());
    params_.upload(staged.data(), dev_.size, stream_.get());
    stream_.synchronize();
  }

  void encode(float* mu, float* logvar, const float* x, int count) override {
    const size_t dim = size_t(desc_.latent_dim);
    for_chunks(count, [&](int first, int n, const Plan& p) {
      x_.upload(x + size_t(first) * kImagePixels, size_t(n) * kImagePixels, stream_.get());
      for (const LayerId id : desc_.encoder) layer(p, id, n);
      out_[desc_.mu_head].download(mu + size_t(first) * dim, size_t(n) * dim, stream_.get());
      out_[desc_.logvar_head].download(logvar + size_t(first) * dim, size_t(n) * dim,
                                       stream_.get());
      stream_.synchronize();
    });
  }

  void decode(float* logits, const float* z, int count) override {
    const size_t dim = size_t(desc_.latent_dim);
    for_chunks(count, [&](int first, int n, const Plan& p) {
      z_.upload(z + size_t(first) * dim, size_t(n) * dim, stream_.get());
      for (const LayerId id : desc_.decoder) layer(p, id, n);
      out_[desc_.output].download(logits + size_t(first) * kImagePixels, size_t(n) * kImagePixels,
                                  stream_.get());
      stream_.synchronize();
    });
  }

 private:
  static constexpr int kChunk = 512;
  using Plan = std::array<std::unique_ptr<ConvOp>, kNumLayers>;

  const Plan& plan(int n) {
    auto it = plans_.find(n);
    if (it != plans_.end()) return it->second;
    Plan p;
    size_t ws = workspace_.size();
    for (int i = 0; i < kNumLayers; ++i) {
      const Layer& l = desc_.layers[size_t(i)];
      if (l.kind == LayerKind::Linear) continue;
      p[size_t(i)] = std::make_unique<ConvOp>(cudnn_, l, n, ConvMath::Fp32Strict,
                                              ConvAlgoPolicy::Deterministic);
      ws = std::max(ws, p[size_t(i)]->workspace_bytes());
    }
    if (ws > workspace_.size()) {
      stream_.synchronize();  // the old workspace may still be in use
      workspace_ = DeviceBuffer<unsigned char>(ws, "the cuDNN workspace");
    }
    return plans_.emplace(n, std::move(p)).first->second;
  }

  template <typename F>
  void for_chunks(int count, const F& f) {
    if (count < 1) throw Error("Inference: count must be positive");
    for (int first = 0; first < count; first += kChunk) {
      check_interrupt();  // a signal stops an evaluation, an encoding or a picture between chunks
      const int n = std::min(kChunk, count - first);
      f(first, n, plan(n));
    }
  }

  // A slot's device buffer (model.h): x, z or a layer's output.
  const float* slot(int s) const {
    if (s == kImageSlot) return x_.data();
    if (s == kLatentSlot) return z_.data();
    return out_[size_t(s)].data();
  }

  // Layer id's output y = act(layer(in) + bias), `in` its input slot.
  void layer(const Plan& p, LayerId id, int n) {
    const Layer& l = desc_.layer(id);
    float* y = out_[id].data();
    const float* in = slot(l.input);
    const float* w = params_.data() + dev_.weight(desc_, id);
    const float* b = params_.data() + dev_.bias(desc_, id);
    if (l.kind == LayerKind::Linear)
      dense_forward(cublas_, y, in, w, n, l.in_channels, l.out_channels);
    else
      p[size_t(id)]->forward(y, in, w, workspace_.data(), workspace_.size());
    bias_act_forward(y, b, n, l.out_channels, int64_t(l.out_h) * l.out_w, l.relu, stream_.get());
  }

  ModelDesc desc_;
  DeviceParamLayout dev_;  // where each tensor lies in params_
  std::string name_;
  CudaStream stream_;
  CudnnHandle cudnn_;
  CublasHandle cublas_;
  std::map<int, Plan> plans_;
  DeviceBuffer<unsigned char> workspace_;
  DeviceBuffer<float> params_;
  DeviceBuffer<float> x_, z_;             // (kChunk, 784), (kChunk, D)
  std::vector<DeviceBuffer<float>> out_;  // indexed by LayerId: (kChunk, out_size) each
};

}  // namespace

std::unique_ptr<Inference> make_gpu_inference(const ModelDesc& desc,
                                              const std::vector<float>& params) {
  if (params.size() != desc.num_params) throw Error("GPU inference: parameters of another model");
  return std::make_unique<GpuInference>(desc, params);
}

}  // namespace cuvae
