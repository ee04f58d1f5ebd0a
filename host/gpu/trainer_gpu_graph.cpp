// The GPU trainer's step launches (trainer_gpu_impl.h): the per-epoch step table and cursor,
// the full-batch step captured once in a CUDA graph and replayed (eager launches when capture
// fails), and the epoch's one read-back of the loss sums and Adam's non-finite flag.
#include <cstdio>
#include <string>
#include <vector>

#include "cuda/kernels/adam.cuh"
#include "host/core/error.h"
#include "host/core/step_scalars.h"
#include "host/gpu/trainer_gpu_impl.h"

namespace cuvae {

void GpuTrainer::Impl::capture_step_graph() {
  cudaGraph_t graph = nullptr;
  std::string failure;
  CUDA_CHECK(cudaStreamBeginCapture(s(), cudaStreamCaptureModeGlobal));
  try {
    enqueue_step(max_batch, true, true);
  } catch (const Error& e) {
    failure = e.what();
  } catch (...) {  // not a CUDA/cuDNN/cuBLAS refusal: end the capture and pass it on
    if (cudaStreamEndCapture(s(), &graph) == cudaSuccess && graph) cudaGraphDestroy(graph);
    throw;
  }
  const cudaError_t ended = cudaStreamEndCapture(s(), &graph);
  if (failure.empty() && ended != cudaSuccess)
    failure = std::string("cudaStreamEndCapture: ") + cudaGetErrorString(ended);
  if (failure.empty()) {
    cudaGraphExec_t exec = nullptr;
    const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
    if (made == cudaSuccess) {
      step_graph = CudaGraphExec(exec);
      if (cudaGraphGetNodes(graph, nullptr, &graph_nodes) != cudaSuccess) graph_nodes = 0;
    } else {
      failure = std::string("cudaGraphInstantiate: ") + cudaGetErrorString(made);
    }
  }
  if (graph) cudaGraphDestroy(graph);
  if (failure.empty()) return;
  (void)cudaGetLastError();  // clear a non-sticky error left by the failed capture
  graph_failed = true;
  std::fprintf(stderr,
               "cuvae: note: the training step could not be captured in a CUDA graph (%s); "
               "launching its kernels one by one instead\n",
               failure.c_str());
}

void GpuTrainer::Impl::run_step(int count) {
  if (count == max_batch && opts.cuda_graph && !graph_failed && eager_full_steps > 0) {
    if (!step_graph) capture_step_graph();
    if (step_graph) {
      step_graph.launch(s());
      return;
    }
  }
  enqueue_step(count, true, true);
  if (count == max_batch) ++eager_full_steps;
}

void GpuTrainer::Impl::upload_schedule(int64_t first_step, int64_t steps) {
  if (step + (steps - first_step) >= (int64_t{1} << 31))
    throw Error("GpuTrainer: more than 2^31 - 1 Adam steps");
  // The KL schedule counts the run's epochs of its training images (none uploaded: no
  // warm-up, step_on_batch's single steps).
  const int64_t steps_per_epoch = num_images > 0 ? (num_images + max_batch - 1) / max_batch : 0;
  const std::vector<StepScalars> table =
      epoch_step_table(cfg.adam.lr, cfg.adam.beta1, cfg.adam.beta2, first_step, steps, step + 1,
                       kl_schedule(cfg, steps_per_epoch));
  // Pageable sources: staged before cudaMemcpyAsync returns, so the locals may go.
  schedule.upload(table.data(), table.size(), s());
  const int32_t at = int32_t(first_step);
  cursor.upload(&at, 1, s());
}

size_t GpuTrainer::Impl::host_index(size_t i) const {
  const uint32_t h = i < dev.size ? dev.host_index[i] : DeviceParamLayout::kPadding;
  return h == DeviceParamLayout::kPadding ? desc.num_params + i : size_t(h);
}

void GpuTrainer::Impl::read_sums(double out[3], int epoch) {
  unsigned long long bad = kNoNonfinite;
  sums.download(out, 3, s());
  nonfinite.download(&bad, 1, s());
  stream.synchronize();
  if (bad == kNoNonfinite) return;
  throw TrainingDiverged("training diverged at step " + std::to_string(bad >> 32) +
                         (epoch > 0 ? " (epoch " + std::to_string(epoch) + ")" : "") +
                         ": non-finite gradient of " +
                         param_element_name(desc, host_index(size_t(bad & 0xffffffffull))));
}

}  // namespace cuvae
