// The GPU trainer's layer operations (trainer_gpu_impl.h): one layer's forward (cuDNN
// convolution or cuBLAS GEMM, then the bias/ReLU epilogue) and backward (the epilogue's mask and
// bias gradient, then the weight and input gradients), in fp32 and, for the convolutions, bf16.
#include "cuda/runtime/nvtx.cuh"
#include "host/gpu/trainer_gpu_impl.h"

namespace cuvae {

void GpuTrainer::Impl::layer_forward(const ConvSet& convs, LayerId id, float* y, const float* in,
                                     int batch, bool with_epilogue) {
  const Layer& l = desc.layer(id);
  const NvtxRange range(forward_names[size_t(id)].c_str());
  if (is_conv(l))
    convs[size_t(id)]->forward(y, in, weight(id), workspace.data(), workspace.size());
  else
    dense_forward(cublas, y, in, weight(id), batch, l.in_channels, l.out_channels);
  if (with_epilogue) {
    const BiasActShape e = epilogue(id, batch);
    bias_act_forward(y, bias(id), e.rows, e.channels, e.plane, l.relu, s());
  }
}

void GpuTrainer::Impl::layer_backward(const ConvSet& convs, LayerId id, float* dx, float* dy,
                                      const float* y, const float* in, int batch,
                                      bool with_epilogue) {
  const Layer& l = desc.layer(id);
  const NvtxRange range(backward_names[size_t(id)].c_str());
  float* dw = weight_grad(id);
  float* db = bias_grad(id);
  if (with_epilogue) {
    const BiasActShape e = epilogue(id, batch);
    bias_act_backward(dy, db, y, e.rows, e.channels, e.plane, l.relu, s(), &bias_scratch);
  }
  if (is_conv(l)) {
    const ConvOp& op = *convs[size_t(id)];
    op.backward_filter(dw, in, dy, workspace.data(), workspace.size());
    if (dx) op.backward_data(dx, dy, weight(id), workspace.data(), workspace.size());
  } else {
    dense_backward_filter(cublas, dw, in, dy, batch, l.in_channels, l.out_channels);
    if (dx) dense_backward_data(cublas, dx, dy, weight(id), batch, l.in_channels, l.out_channels);
  }
}

void GpuTrainer::Impl::conv_forward_lo(const ConvSet& convs, LayerId id, bf16* y, const bf16* in,
                                       int batch, bool with_epilogue) {
  const NvtxRange range(forward_names[size_t(id)].c_str());
  convs[size_t(id)]->forward(y, in, weight_lo(id), workspace.data(), workspace.size());
  if (with_epilogue) {
    const BiasActShape e = epilogue(id, batch);
    bias_act_forward(y, bias(id), e.rows, e.channels, e.plane, desc.layer(id).relu, s());
  }
}

void GpuTrainer::Impl::conv_backward_lo(const ConvSet& convs, LayerId id, bf16* dx, bf16* dy,
                                        const bf16* y, const bf16* in, int batch,
                                        bool with_epilogue) {
  const NvtxRange range(backward_names[size_t(id)].c_str());
  if (with_epilogue) {
    const BiasActShape e = epilogue(id, batch);
    bias_act_backward(dy, bias_grad(id), y, e.rows, e.channels, e.plane, desc.layer(id).relu, s(),
                      &bias_scratch);
  }
  const ConvOp& op = *convs[size_t(id)];
  op.backward_filter(grads_lo.data() + lo_offset[size_t(id)], in, dy, workspace.data(),
                     workspace.size());
  if (dx) op.backward_data(dx, dy, weight_lo(id), workspace.data(), workspace.size());
}

}  // namespace cuvae
