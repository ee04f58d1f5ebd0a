// The GPU engines' device memory plan (gpu_plan.h).
#include "host/gpu/gpu_plan.h"

#include <algorithm>

#include "cuda/kernels/activations.cuh"
#include "host/core/error.h"

namespace cuvae {

DeviceParamLayout device_param_layout(const ModelDesc& desc, bool channels_last) {
  constexpr size_t kAlign = DeviceParamLayout::kAlignFloats;
  DeviceParamLayout l;
  l.channels_last = channels_last;
  l.offset.reserve(desc.params.size());
  for (const ParamTensor& p : desc.params) {
    l.offset.push_back(l.size);
    l.size += (p.numel + kAlign - 1) / kAlign * kAlign;
  }
  if (l.size >= size_t(DeviceParamLayout::kPadding))
    throw Error("device_param_layout: too many parameters");
  l.host_index.assign(l.size, DeviceParamLayout::kPadding);
  const std::vector<uint32_t> order =
      channels_last ? channels_last_order(desc) : std::vector<uint32_t>();
  for (size_t t = 0; t < desc.params.size(); ++t) {
    const ParamTensor& p = desc.params[t];
    for (size_t j = 0; j < p.numel; ++j)
      l.host_index[l.offset[t] + j] = order.empty() ? uint32_t(p.offset + j) : order[p.offset + j];
  }
  return l;
}

void to_device_order(const DeviceParamLayout& layout, const float* host, float* device) {
  for (size_t i = 0; i < layout.size; ++i) {
    const uint32_t h = layout.host_index[i];
    device[i] = h == DeviceParamLayout::kPadding ? 0.0f : host[h];
  }
}

void to_host_order(const DeviceParamLayout& layout, const float* device, float* host) {
  for (size_t i = 0; i < layout.size; ++i) {
    const uint32_t h = layout.host_index[i];
    if (h != DeviceParamLayout::kPadding) host[h] = device[i];
  }
}

BiasActShape bias_act_shape(const Layer& layer, int batch, bool channels_last) {
  const int64_t plane = int64_t(layer.out_h) * layer.out_w;
  if (channels_last && layer.kind != LayerKind::Linear && layer.out_channels > 1)
    return {int(batch * plane), layer.out_channels, 1};
  return {batch, layer.out_channels, plane};
}

size_t bias_grad_scratch_for_run(const ModelDesc& desc, bool channels_last, int full,
                                 int remainder) {
  size_t doubles = 0;
  for (const int batch : {full, remainder}) {
    if (batch < 1) continue;
    for (const Layer& layer : desc.layers) {
      const BiasActShape s = bias_act_shape(layer, batch, channels_last);
      doubles = std::max(doubles, bias_grad_scratch_doubles(s.rows, s.channels, s.plane));
    }
  }
  return doubles;
}

}  // namespace cuvae
