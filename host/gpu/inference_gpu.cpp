// GPU inference engine (inference_gpu.h): the forward passes of the trainer's layers (cuDNN
// convolutions, cuBLAS dense layers, the bias/ReLU kernel) in chunks of at most kChunk images,
// strict fp32 with deterministic algorithms. Convolution plans are made once per chunk size
// and cached (the full chunk and whatever remainders occur).
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
    x_ = DeviceBuffer<float>(b * kImagePixels, "activations");
    h1_ = act(kEncConv1);
    h2_ = act(kEncConv2);
    h3_ = act(kEncFc);
    mu_ = act(kEncMu);
    logvar_ = act(kEncLogvar);
    z_ = DeviceBuffer<float>(b * dim, "activations");
    d0_ = act(kDecFc);
    d1_ = act(kDecDeconv1);
    d2_ = act(kDecDeconv2);
    logits_ = act(kDecOut);
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
      layer(p, kEncConv1, h1_.data(), x_.data(), n);
      layer(p, kEncConv2, h2_.data(), h1_.data(), n);
      layer(p, kEncFc, h3_.data(), h2_.data(), n);
      layer(p, kEncMu, mu_.data(), h3_.data(), n);
      layer(p, kEncLogvar, logvar_.data(), h3_.data(), n);
      mu_.download(mu + size_t(first) * dim, size_t(n) * dim, stream_.get());
      logvar_.download(logvar + size_t(first) * dim, size_t(n) * dim, stream_.get());
      stream_.synchronize();
    });
  }

  void decode(float* logits, const float* z, int count) override {
    const size_t dim = size_t(desc_.latent_dim);
    for_chunks(count, [&](int first, int n, const Plan& p) {
      z_.upload(z + size_t(first) * dim, size_t(n) * dim, stream_.get());
      layer(p, kDecFc, d0_.data(), z_.data(), n);
      layer(p, kDecDeconv1, d1_.data(), d0_.data(), n);
      layer(p, kDecDeconv2, d2_.data(), d1_.data(), n);
      layer(p, kDecOut, logits_.data(), d2_.data(), n);
      logits_.download(logits + size_t(first) * kImagePixels, size_t(n) * kImagePixels,
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
      const int n = std::min(kChunk, count - first);
      f(first, n, plan(n));
    }
  }

  // y = act(layer(x) + bias)
  void layer(const Plan& p, LayerId id, float* y, const float* in, int n) {
    const Layer& l = desc_.layer(id);
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
  DeviceBuffer<float> x_, h1_, h2_, h3_, mu_, logvar_, z_, d0_, d1_, d2_, logits_;
};

}  // namespace

std::unique_ptr<Inference> make_gpu_inference(const ModelDesc& desc,
                                              const std::vector<float>& params) {
  if (params.size() != desc.num_params) throw Error("GPU inference: parameters of another model");
  return std::make_unique<GpuInference>(desc, params);
}

}  // namespace cuvae
