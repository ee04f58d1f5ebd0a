// The GPU engines' plan of their device memory, worked out on the host so that it can be tested
// without a GPU:
//  - DeviceParamLayout: where each parameter tensor lies in the flat parameter-sized device
//    buffers (parameters, gradients, Adam moments). PyTorch's order of tensors, each starting on
//    a 256-byte boundary (cuDNN and cuBLAS pick their fast kernels for aligned operands, and may
//    refuse misaligned ones), with zero padding between tensors; inside a tensor PyTorch's
//    element order, or channels_last_order's (host/core/model.h) for a channels-last trainer.
//    Adam runs over the padding too and keeps it zero (a zero gradient leaves zero moments and
//    a zero step), so the padding never needs to be skipped.
//  - BiasActShape: the (rows, channels, plane) that a layer's bias/ReLU kernels see, and the
//    bias-gradient scratch a run needs over every batch size it launches (the full batch and
//    the epoch's remainder: the number of slices is not monotonic in the row count).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "host/core/model.h"

namespace cuvae {

struct DeviceParamLayout {
  static constexpr size_t kAlignFloats = 64;        // 256 bytes
  static constexpr uint32_t kPadding = UINT32_MAX;  // host_index of a padding element
  std::vector<size_t> offset;        // per ModelDesc::params entry: its first device element
  size_t size = 0;                   // device elements in all, padding included
  std::vector<uint32_t> host_index;  // (size) per device element: its PyTorch-order index
  bool channels_last = false;

  size_t weight(const ModelDesc& d, LayerId id) const { return offset[size_t(d.layer(id).weight)]; }
  size_t bias(const ModelDesc& d, LayerId id) const { return offset[size_t(d.layer(id).bias)]; }
};

// The layout of `desc`'s parameters on the device, channels-last (channels_last_order inside
// each tensor) or not. The tensors' offsets are the same in both.
DeviceParamLayout device_param_layout(const ModelDesc& desc, bool channels_last);

// host (desc.num_params, PyTorch order) -> device (layout.size), the padding set to zero.
void to_device_order(const DeviceParamLayout& layout, const float* host, float* device);
// device (layout.size) -> host (desc.num_params); the padding is not read.
void to_host_order(const DeviceParamLayout& layout, const float* device, float* host);

// The shape a layer's bias/ReLU kernels (cuda/kernels/activations.cuh) see for `batch` images:
// (batch, C, H*W) in NCHW, a dense layer's (batch, out, 1), and a channels-last convolution output
// (batch*H*W, C, 1) unless it has one channel (decoder.out), which lies the same in both
// layouts and keeps the per-channel kernel's many blocks.
struct BiasActShape {
  int rows, channels;
  int64_t plane;
};
BiasActShape bias_act_shape(const Layer& layer, int batch, bool channels_last);

// Doubles of bias-gradient scratch that covers every layer's sliced reduction at each of the
// batch sizes a run launches: `full` images and, if nonzero, the epoch's `remainder`.
size_t bias_grad_scratch_for_run(const ModelDesc& desc, bool channels_last, int full,
                                 int remainder);

}  // namespace cuvae
