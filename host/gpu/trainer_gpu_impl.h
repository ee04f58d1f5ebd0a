// The GPU trainer's private state (trainer_gpu.h): GpuTrainer::Impl, its buffers and the
// members that run a step. Declared here, defined in one file per piece:
//   trainer_gpu_buffers.cpp  the buffer plan: every device buffer sized from the description,
//                            the ConvOps, the cuDNN workspace and the bias-gradient scratch
//   trainer_gpu_layout.cpp   --layout auto: the convolution passes timed in NCHW and NHWC
//   trainer_gpu_layers.cpp   one layer's forward and backward, fp32 and bf16
//   trainer_gpu_latent.cpp   the fused latent block (heads + reparameterization) and the loss
//   trainer_gpu_step.cpp     the step: gather, forward, loss, backward, Adam (fp32 and mixed)
//   trainer_gpu_graph.cpp    the step table and cursor, CUDA-graph capture, the sums' read-back
//   trainer_gpu.cpp          the public GpuTrainer and train_gpu
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "cuda/kernels/activations.cuh"
#include "cuda/kernels/precision.cuh"
#include "cuda/kernels/shuffle.cuh"
#include "cuda/libs/conv.cuh"
#include "cuda/libs/dense.cuh"
#include "cuda/runtime/cuda_check.cuh"
#include "cuda/runtime/device_buffer.cuh"
#include "host/core/model.h"
#include "host/core/step_scalars.h"
#include "host/core/train_types.h"
#include "host/gpu/gpu_plan.h"
#include "host/gpu/trainer_gpu.h"

namespace cuvae {

struct GpuTrainer::Impl {
  // One ConvOp per convolution layer for one batch size (null for dense layers).
  using ConvSet = std::array<std::unique_ptr<ConvOp>, kNumLayers>;

  static bool is_conv(const Layer& l) { return l.kind != LayerKind::Linear; }

  ModelDesc desc;
  TrainConfig cfg;
  GpuOptions opts;
  int max_batch;
  int remainder;
  CudaStream stream;
  CudnnHandle cudnn;
  CublasHandle cublas;
  ConvSet full_convs, rem_convs;
  DeviceBuffer<unsigned char> workspace;
  // Where each parameter tensor lies in params, grads, adam_m and adam_v: 256-byte aligned
  // starts, channels_last_order inside the tensors when opts.nhwc (host/gpu/gpu_plan.h).
  DeviceParamLayout dev;
  // The bias gradients' sliced reductions (activations.cuh): per-slice sums and the ticket.
  DeviceBuffer<double> bias_partial;
  DeviceBuffer<unsigned> bias_ticket;
  BiasGradScratch bias_scratch;

  DeviceBuffer<float> params, grads, adam_m, adam_v;  // (dev.size) each, padding zero
  // Mixed precision (opts.bf16) only: the step's bf16 copies of the weights of the layers
  // that run in bf16 (the convolutions and encoder.fc), and the bf16 weight gradients the
  // convolutions write (widened into `grads` before Adam). Each tensor starts on a 256-byte
  // boundary of its own layout (lo_offset), which the tensor-core kernels want.
  DeviceBuffer<bf16> params_lo, grads_lo;
  std::array<size_t, kNumLayers> lo_offset{};  // per bf16 layer: its weight in params_lo
  SpanMap lo_weights;                          // params <-> params_lo
  SpanMap lo_conv_grads;                       // grads <-> grads_lo, the convolutions only
  // Activations, sized for max_batch; see cpu_model.h for the shapes.
  DeviceBuffer<float> x, h1, h2, h3, eps, z, d0, d1, d2, logits, dlogits;
  // The two latent heads in one buffer (2, max_batch, D), mu then logvar, so that one
  // strided-batched GEMM computes both; and their gradients alike.
  DeviceBuffer<float> heads, g_heads;
  float *mu, *logvar, *g_mu, *g_lv;  // views into heads, g_heads
  // Activation gradients.
  DeviceBuffer<float> g_h1, g_h2, g_h3, g_h3_lv, g_z, g_d0, g_d1, g_d2;
  // Mixed precision: the bf16 activations and activation gradients. The float buffers the
  // mixed step also uses are x (the loss's targets), h3, heads, eps, z, g_h3, g_heads, g_z,
  // d0 (decoder.fc before its bias: the layer runs in fp32) and g_d0 (its masked gradient);
  // the other float activations stay unallocated, and in fp32 these stay unallocated.
  DeviceBuffer<bf16> x_lo, h1_lo, h2_lo, d0_lo, d1_lo, d2_lo, logits_lo, dlogits_lo;
  DeviceBuffer<bf16> g_h1_lo, g_h2_lo, g_h3_lo, g_d0_lo, g_d1_lo, g_d2_lo;
  DeviceBuffer<float> recon, kl;        // (max_batch) per image
  DeviceBuffer<double> image_dsum;      // (max_batch) the fused loss's scratch
  DeviceBuffer<unsigned> blocks_done;   // (1) the fused loss's ticket, 0 between launches
  DeviceBuffer<unsigned> reparam_done;  // (1) the biased reparam backward's ticket
  DeviceBuffer<double> sums;            // (3) epoch sums of recon, kl and (KL warm-up) weight * kl
  DeviceBuffer<unsigned long long> nonfinite;  // (1) Adam's earliest bad gradient (adam.cuh)
  DeviceBuffer<uint8_t> images;                // (N, 784)
  DeviceBuffer<int32_t> perm;                  // (N) this epoch's order
  std::unique_ptr<DeviceShuffle> shuffle;      // draws perm
  DeviceBuffer<StepScalars> schedule;          // (steps per epoch, at least 1) the step table
  DeviceBuffer<int32_t> cursor;                // (1) the step in progress: its index in the epoch
  CudaGraphExec step_graph;                    // the captured full-batch step
  bool graph_failed = false;                   // capture failed once: stay eager
  int64_t eager_full_steps = 0;                // full-batch steps launched without the graph
  size_t graph_nodes = 0;
  CudaEvent epoch_start, epoch_end;
  int64_t num_images = 0;
  int64_t step = 0;  // Adam steps taken
  // Position inside an epoch that stopped early (or that set_state resumes): steps done and
  // the loss sums over their images. 0 at an epoch boundary.
  int64_t epoch_step = 0;
  double epoch_sums[3] = {0, 0, 0};
  std::array<std::string, kNumLayers> forward_names, backward_names;  // NVTX range names
  // --layout auto: what choose_layout measured (ms, NCHW then NHWC).
  bool layout_measured = false;
  std::array<double, 2> layout_ms{};

  // ---- the buffer plan (trainer_gpu_buffers.cpp) ----
  // Checks the options, allocates every buffer for max_batch and builds the ConvOps (choosing
  // the layout with layout_auto), in the steps below.
  Impl(const ModelDesc& d, const TrainConfig& c, const GpuOptions& o, int mb, int rem);
  // Channels-last layouts: every convolution's rows (batch * out_h * out_w) must fit in int.
  void check_channels_last_batch() const;
  // The NVTX range names of each layer's forward and backward.
  void name_ranges();
  // params, grads and the Adam moments (zeroed), in the layout-independent offsets.
  void allocate_parameters();
  // The float activations and activation gradients (see the members above for which the mixed
  // step leaves unallocated).
  void allocate_activations();
  // Mixed precision: the bf16 weights and their spans, the bf16 activations and gradients.
  void allocate_mixed_precision();
  // The loss's, reparameterization's and Adam's scratch, tickets and sums; the step table.
  void allocate_step_buffers();
  // The convolutions, in the layout asked for or, with layout_auto, the faster one here; then
  // the workspace, the bias scratch and `dev` in that layout.
  void build_convs(ConvMath math, ConvAlgoPolicy policy);
  // A layer's output-sized activation buffer of type T for max_batch, allocated only when `used`
  // (defined and used in trainer_gpu_buffers.cpp only).
  template <typename T>
  DeviceBuffer<T> layer_sized(LayerId id, const char* what, bool used) const;
  // One ConvOp per convolution layer at `batch`, in the layout opts.nhwc says.
  ConvSet make_convs(int batch, ConvMath math, ConvAlgoPolicy policy);

  // Grows the cuDNN workspace to what the ConvOps built so far need and the bias gradients'
  // scratch to the largest sliced reduction of a step (full batch or remainder) in the layout
  // opts.nhwc says. Neither shrinks: after --layout auto they fit both layouts' needs.
  void size_layout_buffers();

  // ---- --layout auto (trainer_gpu_layout.cpp) ----
  // --layout auto: builds the full batch's convolutions in NCHW and in NHWC and times, in each,
  // what the layout changes in a step (every convolution's forward, bias/ReLU, their backward
  // and both gradients; not the dense layers, whose GEMMs are the same) on this trainer's own
  // buffers, zeroed: one warm-up pass, then the best of three. Keeps the faster layout's
  // ConvOps; sets opts.nhwc and layout_ms. When cuDNN has no algorithm for NHWC here (a
  // ConvOp refuses), keeps NCHW and says so.
  void choose_layout(ConvMath math, ConvAlgoPolicy policy);

  // The convolution layers' share of a step (choose_layout): their forward passes with the
  // bias/ReLU epilogues, then their backward passes, in the step's precision.
  void conv_passes(const ConvSet& c, int n);

  // ---- small helpers ----
  template <typename T>
  void zero(DeviceBuffer<T>& buf) {
    if (buf.size() > 0) CUDA_CHECK(cudaMemsetAsync(buf.data(), 0, buf.size() * sizeof(T), s()));
  }

  cudaStream_t s() const { return stream.get(); }

  // The (rows, channels, plane) a layer's bias/ReLU kernels see (host/gpu/gpu_plan.h).
  BiasActShape epilogue(LayerId id, int batch) const {
    return bias_act_shape(desc.layer(id), batch, opts.nhwc);
  }

  // Offsets, in floats, from mu to logvar (activations) and from encoder.mu's weight (and
  // bias) to encoder.logvar's (parameters): the strides of the heads' batched GEMMs.
  long long head_stride() const { return (long long)max_batch * desc.latent_dim; }
  long long weight_stride() const {
    return (long long)dev.weight(desc, kEncLogvar) - (long long)dev.weight(desc, kEncMu);
  }
  const float* weight(LayerId id) const { return params.data() + dev.weight(desc, id); }
  const float* bias(LayerId id) const { return params.data() + dev.bias(desc, id); }
  float* weight_grad(LayerId id) { return grads.data() + dev.weight(desc, id); }
  float* bias_grad(LayerId id) { return grads.data() + dev.bias(desc, id); }
  const bf16* weight_lo(LayerId id) const { return params_lo.data() + lo_offset[size_t(id)]; }

  // The flat parameter-sized buffers between the host's (PyTorch) order and the device's.
  void upload_ordered(DeviceBuffer<float>& dst, const float* host);
  void download_ordered(const DeviceBuffer<float>& src, float* host) const;

  // ---- layer operations (trainer_gpu_layers.cpp) ----
  // y = act(layer(x) + bias); without the epilogue (the fused loss adds the output bias),
  // y = layer(x).
  void layer_forward(const ConvSet& convs, LayerId id, float* y, const float* in, int batch,
                     bool with_epilogue = true);

  // dy: gradient w.r.t. the layer's (post-ReLU) output y, masked in place; writes the
  // layer's weight and bias gradients and, unless dx is null, the input gradient. Without
  // the epilogue, dy is used as it is and the bias gradient is left alone (the fused loss
  // wrote it).
  void layer_backward(const ConvSet& convs, LayerId id, float* dx, float* dy, const float* y,
                      const float* in, int batch, bool with_epilogue = true);

  // A bf16 convolution with its bias (+ ReLU) epilogue, or without it (the fused loss adds the
  // output bias).
  void conv_forward_lo(const ConvSet& convs, LayerId id, bf16* y, const bf16* in, int batch,
                       bool with_epilogue = true);

  // Its backward: dy masked in place (unless !epilogue), the bias gradient (float), the
  // bf16 weight gradient into grads_lo (widened later) and, unless dx is null, dx.
  void conv_backward_lo(const ConvSet& convs, LayerId id, bf16* dx, bf16* dy, const bf16* y,
                        const bf16* in, int batch, bool with_epilogue = true);

  // ---- the latent block and the loss (trainer_gpu_latent.cpp) ----
  // The fused latent block, the same in both precisions. Forward: mu and logvar (one batched
  // GEMM from h3), their biases added inside the reparameterization, z and eps.
  void heads_forward(int count, const StepTable& at);

  // Backward from g_z: the heads' gradients (their bias gradients summed inside the
  // reparameterization kernel), their weight gradients, and g_h3 = the sum of both heads'
  // input gradients (the second GEMM accumulates).
  void heads_backward(int count, const StepTable& at);

  // A KL warm-up (cfg.beta_warmup > 0): the KL gradient's weight comes from the step table
  // (it changes every step, and a captured graph replays one set of arguments) and the loss
  // sums gain the weighted KL (sums[2], kl_weighted_accumulate). Without one, neither: the
  // step's launches are those of a run that never heard of warm-ups.
  bool kl_warmup() const { return cfg.beta_warmup > 0; }
  // The KL term's backward in the two reparameterization forms, and the weighted sum.
  void kl_weighted_sum(int count, const StepTable& at);

  // The output layer's bias, the loss, its gradient dlogits and the loss sums in one launch
  // (cuda/kernels/loss.cuh), for float or bf16 logits.
  template <typename T>
  void fused_loss(T* dlogits_out, const T* pre_bias, int count);

  // ---- the step (trainer_gpu_step.cpp) ----
  // Forward, loss (added to `sums`) and backward in fp32 (strict, or TF32 if opts.tf32), the
  // batch in `x`; leaves every gradient in `grads`.
  void forward_backward(const ConvSet& c, int count, const StepTable& at);

  // The mixed-precision forward, loss and backward (GpuOptions::bf16 says what runs in bf16);
  // the batch in `x` and, if x_lo_ready, its bf16 copy in `x_lo`; leaves every gradient,
  // widened to float, in `grads`.
  void forward_backward_mixed(const ConvSet& c, int count, const StepTable& at, bool x_lo_ready);

  // Enqueues one step for the step table's entry at the cursor: with `gather`, the batch at
  // the cursor's place in `perm` into `x` (else `x` holds it already); forward, loss (added to
  // `sums`), backward, Adam if apply_adam, and the cursor's advance. Changes no host state, so
  // the same launches can be captured once and replayed.
  void enqueue_step(int count, bool gather, bool apply_adam);

  // ---- the step table, the CUDA graph, the read-back (trainer_gpu_graph.cpp) ----
  // Captures the full-batch step (gather included) in a CUDA graph. On failure, says why on
  // stderr once and leaves the trainer launching steps eagerly: slower, same results.
  void capture_step_graph();

  // One step of the epoch at the cursor: the graph for a full batch when there is one. The
  // first full batch runs eagerly, so that cuDNN's and cuBLAS's lazy set-up (module loading,
  // per-algorithm state) happens before, not during, the capture at the second.
  void run_step(int count);

  // Uploads the step table of an epoch whose steps [first_step, steps) remain, the first of
  // them Adam step `step` + 1, and sets the cursor to first_step.
  void upload_schedule(int64_t first_step, int64_t steps);

  // The host (PyTorch-order) index of device parameter element i (past the parameters for
  // padding, which Adam never flags: its gradient is zero). Adam flags the lowest device index
  // of a non-finite gradient: in channels-last order that names a non-finite element, though
  // not always the one an NCHW run would name first.
  size_t host_index(size_t i) const;

  // Reads the loss sums and Adam's non-finite word in one synchronisation; throws
  // TrainingDiverged, naming the step and the parameter, when a gradient was not finite.
  void read_sums(double out[3], int epoch);
};

}  // namespace cuvae
