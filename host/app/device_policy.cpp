// The device policy of every command (device_policy.h).
#include "host/app/device_policy.h"

#include <omp.h>

#include "host/core/error.h"
#include "host/core/text.h"
#include "host/cpu/cpu_fast.h"
#include "host/cpu/inference_cpu.h"
#include "host/gpu/inference_gpu.h"

namespace cuvae {

void check_device_flag(const std::string& device) {
  if (device != "gpu" && !is_cpu_device(device))
    throw InputError("--device: expected 'gpu', 'cpu' or 'cpu-ref', got " + quote_arg(device));
}

DeviceChoice resolve_device(const std::string& requested, bool explicit_flag, std::ostream& log) {
  check_device_flag(requested);
  DeviceChoice c{requested, GpuInfo{}};
  if (requested != "gpu") return c;
  c.gpu = query_gpus();
  if (c.gpu.count > 0) return c;
  if (explicit_flag) throw InputError("--device gpu: no usable CUDA device (" + c.gpu.reason + ")");
  log << "cuvae: no usable GPU (" << c.gpu.reason << "); running on the CPU (--device cpu)\n";
  c.device = "cpu";
  return c;
}

std::string cpu_device_line(const std::string& device) {
  if (device == "cpu") return "cpu (" + cpu::fast_engine_library() + ")";
  return "cpu-ref (the reference model, " + std::to_string(omp_get_max_threads()) +
         " OpenMP threads)";
}

std::unique_ptr<Inference> make_inference(const ModelDesc& desc, const std::vector<float>& params,
                                          const std::string& device) {
  if (device == "gpu") return make_gpu_inference(desc, params);
  return make_cpu_inference(desc, params, device);
}

}  // namespace cuvae
