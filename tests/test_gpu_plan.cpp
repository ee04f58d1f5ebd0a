// The GPU engines' device memory plan (host/gpu/gpu_plan.h), checked on the host: the parameter
// layout (aligned tensors, a bijection with PyTorch's order) and the bias-gradient scratch
// reserved for every batch size a run launches.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/kernels/activations.cuh"
#include "host/core/model.h"
#include "host/gpu/gpu_plan.h"
#include "tests/test_support.h"

using namespace cuvae;

TEST_CASE(
    "device parameter layout: every tensor 256-byte aligned, a bijection with PyTorch's "
    "order, round trip bit for bit",
    "[gpu_plan]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (int dim = 1; dim <= 17; ++dim) {
    const ModelDesc desc = make_vae(dim);
    for (const bool channels_last : {false, true}) {
      INFO("D = " << dim << (channels_last ? ", channels last" : ", NCHW"));
      const DeviceParamLayout l = device_param_layout(desc, channels_last);
      REQUIRE(l.offset.size() == desc.params.size());
      REQUIRE(l.host_index.size() == l.size);
      REQUIRE(l.size % DeviceParamLayout::kAlignFloats == 0);
      // Aligned starts, in PyTorch's order of tensors, no overlap, inside the buffer.
      size_t end = 0;
      for (size_t t = 0; t < desc.params.size(); ++t) {
        INFO(desc.params[t].name);
        CHECK(l.offset[t] * sizeof(float) % 256 == 0);
        CHECK(l.offset[t] >= end);
        end = l.offset[t] + desc.params[t].numel;
        CHECK(end <= l.size);
      }
      // Each host index exactly once; inside a tensor, the engine's element order.
      const std::vector<uint32_t> order =
          channels_last ? channels_last_order(desc) : std::vector<uint32_t>();
      std::vector<int> seen(desc.num_params, 0);
      size_t padding = 0;
      for (size_t i = 0; i < l.size; ++i) {
        const uint32_t h = l.host_index[i];
        if (h == DeviceParamLayout::kPadding) {
          ++padding;
          continue;
        }
        REQUIRE(h < desc.num_params);
        ++seen[h];
      }
      for (size_t h = 0; h < desc.num_params; ++h) REQUIRE(seen[h] == 1);
      CHECK(padding == l.size - desc.num_params);
      for (size_t t = 0; t < desc.params.size(); ++t) {
        const ParamTensor& p = desc.params[t];
        for (size_t j = 0; j < p.numel; ++j) {
          const size_t host = channels_last ? order[p.offset + j] : p.offset + j;
          REQUIRE(l.host_index[l.offset[t] + j] == host);
        }
      }
      // The named views the engines take (weight and bias of every layer) are aligned.
      for (int id = 0; id < kNumLayers; ++id) {
        CHECK(l.weight(desc, LayerId(id)) % DeviceParamLayout::kAlignFloats == 0);
        CHECK(l.bias(desc, LayerId(id)) % DeviceParamLayout::kAlignFloats == 0);
      }
      // Random bit patterns (NaN payloads and signed zeros included) round-trip exactly; the
      // padding comes out zero.
      std::vector<uint32_t> bits(desc.num_params);
      for (uint32_t& b : bits) b = uint32_t(rng());
      std::vector<float> host(desc.num_params), device(l.size), back(desc.num_params);
      std::memcpy(host.data(), bits.data(), bits.size() * sizeof(float));
      test::poison(device);
      test::poison(back);
      to_device_order(l, host.data(), device.data());
      for (size_t i = 0; i < l.size; ++i)
        if (l.host_index[i] == DeviceParamLayout::kPadding) REQUIRE(device[i] == 0.0f);
      to_host_order(l, device.data(), back.data());
      REQUIRE(std::memcmp(back.data(), host.data(), host.size() * sizeof(float)) == 0);
    }
  }
}

namespace {

// What the bias/ReLU backward launcher is asked to reduce for `layer` at `batch` images,
// written out from the kernels' convention (cuda/kernels/activations.cuh): rows of (channels,
// plane); a channels-last convolution output with more than one channel is (batch*H*W, C, 1).
BiasActShape launched_shape(const Layer& layer, int batch, bool channels_last) {
  const int64_t plane = int64_t(layer.out_h) * layer.out_w;
  if (channels_last && layer.kind != LayerKind::Linear && layer.out_channels > 1)
    return {int(batch * plane), layer.out_channels, 1};
  return {batch, layer.out_channels, plane};
}

// The doubles of scratch the launcher checks for (slices * channels when it slices).
size_t launched_need(const BiasActShape& s) {
  if (s.plane != 1) return 0;
  const int slices = bias_grad_slices(s.rows);
  return slices > 1 ? size_t(slices) * size_t(s.channels) : 0;
}

}  // namespace

TEST_CASE("bias-gradient scratch covers the full batch and the remainder of every run",
          "[gpu_plan]") {
  // The example that overflowed when the scratch was sized from the full batch alone:
  // channels-last, batch 698 on 60,000 images, remainder 670. decoder.deconv2's output is
  // (698*784 = 547,232 rows, 32 channels) in 1023 slices for the full batch, but (525,280
  // rows) in 1024 slices for the remainder.
  const ModelDesc d2 = make_vae(2);
  const Layer& deconv2 = d2.layer(kDecDeconv2);
  CHECK(launched_need(launched_shape(deconv2, 698, true)) == 1023 * 32);
  CHECK(launched_need(launched_shape(deconv2, 670, true)) == 1024 * 32);
  CHECK(bias_grad_scratch_for_run(d2, true, 698, 60000 % 698) >= 1024 * 32);

  // Every batch size 1..4096 on the training and test splits, both layouts; a small and a
  // wide latent (the unfused heads' bias kernels are D wide).
  size_t cases = 0, remainder_larger = 0;
  for (const int dim : {2, 17}) {
    const ModelDesc desc = make_vae(dim);
    for (const int64_t images : {int64_t(60000), int64_t(10000)}) {
      for (int asked = 1; asked <= 4096; ++asked) {
        const int batch = int(std::min<int64_t>(asked, images));  // as train_gpu sizes them
        const int remainder = int(images % batch);
        for (const bool channels_last : {false, true}) {
          const size_t reserved = bias_grad_scratch_for_run(desc, channels_last, batch, remainder);
          size_t need_full = 0, need_rem = 0;
          for (const Layer& layer : desc.layers) {
            need_full =
                std::max(need_full, launched_need(launched_shape(layer, batch, channels_last)));
            if (remainder > 0)
              need_rem = std::max(need_rem,
                                  launched_need(launched_shape(layer, remainder, channels_last)));
          }
          if (need_full > reserved || need_rem > reserved) {
            INFO("D = " << dim << ", " << images << " images, batch " << batch << ", remainder "
                        << remainder << (channels_last ? ", channels last" : ", NCHW")
                        << ": reserved " << reserved << " doubles, full batch needs " << need_full
                        << ", remainder " << need_rem);
            REQUIRE(false);
          }
          remainder_larger += need_rem > need_full;
          ++cases;
        }
      }
    }
  }
  CHECK(cases == 2 * 2 * 4096 * 2);
  // The sweep met the case the fix is for (the remainder needing more than the full batch).
  CHECK(remainder_larger > 0);
}
