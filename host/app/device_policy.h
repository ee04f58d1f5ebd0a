// Which device a command runs on, and the inference engine for it: one policy for every
// command (train, bench, eval, encode, the picture commands).
#pragma once

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "host/core/inference.h"
#include "host/core/model.h"
#include "host/gpu/device_info.h"

namespace cuvae {

// --device, shared by every command: 'gpu', 'cpu' (the fast CPU engine) or 'cpu-ref' (the CPU
// reference, the oracle of the tests: slow, for debugging); anything else is an InputError.
void check_device_flag(const std::string& device);
inline bool is_cpu_device(const std::string& device) {
  return device == "cpu" || device == "cpu-ref";
}
constexpr const char* kDeviceHelp =
    "gpu, cpu (the fast CPU engine) or cpu-ref (the slow CPU reference, for debugging)";
// The --device help of every command but parity-dump; cxxopts appends "(default: gpu)".
constexpr const char* kDeviceOptionHelp =
    "gpu, cpu (the fast CPU engine) or cpu-ref (the slow CPU reference, for debugging); gpu "
    "falls back to cpu with a note when no GPU is usable and --device is not given";
// The device a command runs on, one policy for every command: --device validated; an explicit
// --device gpu without a usable GPU is an InputError; the default (gpu) falls back to the fast
// CPU engine with one note on `log`. `gpu` describes the GPU when the choice is "gpu".
struct DeviceChoice {
  std::string device;  // "gpu", "cpu" or "cpu-ref"
  GpuInfo gpu;
};
DeviceChoice resolve_device(const std::string& requested, bool explicit_flag, std::ostream& log);

// The CPU engine's description for the start-up lines: "cpu (oneDNN 2.6.3, 2 OpenMP
// threads)" or "cpu-ref (the reference model, 2 OpenMP threads)".
std::string cpu_device_line(const std::string& device);

// The engine of a device resolve_device() chose: "gpu" the GPU engine (which throws if no GPU
// is usable), "cpu" or "cpu-ref" that CPU engine.
std::unique_ptr<Inference> make_inference(const ModelDesc& desc, const std::vector<float>& params,
                                          const std::string& device);

}  // namespace cuvae
