// Helpers shared by the subcommands: option parsing with one-line errors, the GPU flags; with
// them come the number formatting (host/core/text.h) and the device policy (device_policy.h).
#pragma once

#include <cstdint>
#include <cxxopts.hpp>
#include <ostream>
#include <string>

#include "host/app/device_policy.h"
#include "host/core/text.h"
#include "host/core/train_types.h"

namespace cuvae {

constexpr const char* kVersion = CUVAE_VERSION;  // project(VERSION) in CMakeLists.txt

// Parses argv with cxxopts; unknown options, missing values and stray arguments become
// InputErrors that lead with the flag.
cxxopts::ParseResult parse_or_throw(cxxopts::Options& options, int argc, char** argv);

// Shared by train and bench: --tf32, --bf16, --algo (deterministic|fastest), --no-cuda-graph
// and (bench only) --no-fusion become the GPU options. --bf16 with --tf32 or --no-fusion is an
// InputError.
GpuOptions parse_gpu_flags(const cxxopts::ParseResult& r);
const char* algo_name(const GpuOptions& opts);       // "deterministic" or "fastest"
const char* layout_key(const GpuOptions& opts);      // "nchw", "nhwc" or "auto" (as asked)
const char* precision_name(const GpuOptions& opts);  // "strict fp32", "TF32", "bf16 mixed ..."
const char* precision_key(const GpuOptions& opts);   // "fp32", "tf32" or "bf16"

}  // namespace cuvae
