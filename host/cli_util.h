// Helpers shared by the subcommands: option parsing with one-line errors, number formatting.
#pragma once

#include <cstdint>
#include <cxxopts.hpp>
#include <ostream>
#include <string>

#include "cuda/device.cuh"
#include "host/trainer_gpu.h"

namespace cuvae {

constexpr const char* kVersion = CUVAE_VERSION;  // project(VERSION) in CMakeLists.txt

// Parses argv with cxxopts; unknown options, missing values and stray arguments become
// InputErrors that lead with the flag.
cxxopts::ParseResult parse_or_throw(cxxopts::Options& options, int argc, char** argv);

std::string with_commas(int64_t v);           // 1234567 -> "1,234,567"
std::string fixed(double v, int digits);      // fixed-point text
std::string quote_arg(const std::string& s);  // 'text'
std::string exact_text(double v);             // shortest text that reads back as v (17 digits)

// --device, shared by every command: 'gpu', 'cpu' (the fast CPU engine) or 'cpu-ref' (the CPU
// reference, the oracle of the tests: slow, for debugging); anything else is an InputError.
void check_device_flag(const std::string& device);
inline bool is_cpu_device(const std::string& device) {
  return device == "cpu" || device == "cpu-ref";
}
constexpr const char* kDeviceHelp =
    "gpu, cpu (the fast CPU engine) or cpu-ref (the slow CPU reference, for debugging)";
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

// Shared by train and bench: --tf32, --bf16, --algo (deterministic|fastest), --no-cuda-graph
// and (bench only) --no-fusion become the GPU options. --bf16 with --tf32 or --no-fusion is an
// InputError.
GpuOptions parse_gpu_flags(const cxxopts::ParseResult& r);
const char* algo_name(const GpuOptions& opts);       // "deterministic" or "fastest"
const char* layout_key(const GpuOptions& opts);      // "nchw", "nhwc" or "auto" (as asked)
const char* precision_name(const GpuOptions& opts);  // "strict fp32", "TF32", "bf16 mixed ..."
const char* precision_key(const GpuOptions& opts);   // "fp32", "tf32" or "bf16"

}  // namespace cuvae
