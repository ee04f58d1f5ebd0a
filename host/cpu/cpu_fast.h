// The fast CPU engine: the whole cuvae model, forward with the fused loss and backward, on
// oneDNN (the CPU counterpart of cuDNN: convolution, transposed convolution and inner product
// primitives, each with forward, backward-data and backward-weights). It computes what the
// reference in cpu_model.h computes, in fp32 with the library's summation order; the tests
// hold it to the reference layer by layer and gradient by gradient.
//
// Chosen by measurement (BENCHMARKS.md, "CPU engine"): on an AVX-512 processor oneDNN's JIT
// convolutions in their own blocked layouts run several times faster than im2col over a
// generic BLAS, and its transposed convolutions in plain NCHW fall back to a reference
// implementation, so every primitive here picks its own layouts (format `any`) and the engine
// reorders between them where two neighbours disagree.
//
// One FastModel serves one batch size: every primitive, reorder and buffer is made in the
// constructor (the shared scratchpad too), and a step only binds the parameter and gradient
// pointers, so no tensor is allocated while training (oneDNN's argument lists are small). The ReLUs
// run as post-ops of their layers; the reparameterization, the BCE + KL loss and the ReLU masks of
// the backward pass are loops over plain arrays, threaded over the batch with OpenMP.
//
// Determinism: oneDNN's CPU primitives and the loops here sum in an order fixed by the shapes
// and the thread count, so the same inputs and the same OMP_NUM_THREADS give the same bits.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "host/core/model.h"
#include "host/cpu/cpu_ref.h"

namespace cuvae::cpu {

class FastModel {
 public:
  FastModel(const ModelDesc& desc, int batch);
  ~FastModel();
  FastModel(const FastModel&) = delete;
  FastModel& operator=(const FastModel&) = delete;

  int batch() const;
  float* x();    // (B, 784) input in [0, 1]; filled by the caller
  float* eps();  // (B, D) standard normal noise; filled by the caller
  float* z();    // (B, D) the latent: written by forward(), read by decode()

  // The model on x() with noise eps(): every activation, the per-image loss parts and the
  // gradient of the batch loss w.r.t. the logits. Returns the batch means.
  LossParts forward(const float* params, double beta);
  const double* recon() const;  // (B) per-image BCE of the last forward()
  const double* kl() const;     // (B) per-image KL
  // The gradient of the last forward()'s batch loss into grads (desc.num_params, PyTorch order).
  void backward(const float* params, double beta, float* grads);

  // Encoder only: mu and logvar for x(). Decoder only: logits for z().
  void encode(const float* params);
  void decode(const float* params);
  const float* mu() const;      // (B, D)
  const float* logvar() const;  // (B, D)
  const float* logits() const;  // (B, 784)

  // An activation of the last pass in the reference's layout (cpu::Activations' sizes): a
  // layer's output after its ReLU (slot = its LayerId) or z (kLatentSlot), see model.h.
  std::vector<float> read(int slot) const;
  // The gradient of the last forward()'s batch loss w.r.t. the logits (B, 784).
  std::vector<float> read_dlogits() const;
  // The first activation of the last forward() holding a NaN or an infinity, named as the
  // reference trainer names it; "the loss" when every activation is finite.
  std::string first_nonfinite_activation() const;
  // "<primitive>: <oneDNN implementation>" for every primitive, e.g. for a benchmark's log.
  std::vector<std::string> implementations() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// oneDNN's single-precision GEMM rate on this machine in GFLOP/s: the median of `reps` timed
// n x n x n products after one warm-up, on the threads oneDNN uses for the model.
double measure_sgemm_gflops(int n, int reps);

// "oneDNN 2.6.3, 2 OpenMP threads": the library and the threads it runs on, for the start-up
// lines and the benchmarks.
std::string fast_engine_library();

}  // namespace cuvae::cpu
