// The GPU side of a build without CUDA (CUVAE_CUDA=OFF): no device is ever usable, and every
// GPU engine refuses with the reason. It stands in for the whole of host/gpu (device_info.h,
// trainer_gpu.h's train_gpu and bench_gpu, inference_gpu.h), so the commands need no #if.
#include "host/core/error.h"
#include "host/gpu/device_info.h"
#include "host/gpu/inference_gpu.h"
#include "host/gpu/trainer_gpu.h"

namespace cuvae {
namespace {

// CUVAE_CUDA=OFF, or AUTO where no toolkit was found.
constexpr const char* kNoCuda = "this build has no CUDA: it was configured without the GPU engine";

[[noreturn]] void refuse() {
  throw InputError(std::string("--device gpu: ") + kNoCuda);
}

}  // namespace

GpuInfo query_gpus() {
  GpuInfo info;
  info.reason = kNoCuda;
  return info;
}

size_t device_memory_in_use() {
  return 0;
}

std::string cuda_build_info() {
  return "no CUDA: the CPU engines only";
}
std::string cuda_driver_info() {
  return "no CUDA driver used";
}
std::string cuda_library_info() {
  return "no cuBLAS, no cuDNN";
}

bool train_gpu(const TrainConfig&, const GpuOptions&, const ModelDesc&, const ImageSet&,
               TrainState&, const EpochCallback&, const StepCallback&, const StopCheck&) {
  refuse();
}

GpuBenchReport bench_gpu(const TrainConfig&, const GpuOptions&, const ModelDesc&, const ImageSet&,
                         const TrainState&, const EpochCallback&) {
  refuse();
}

std::unique_ptr<Inference> make_gpu_inference(const ModelDesc&, const std::vector<float>&) {
  refuse();
}

}  // namespace cuvae
