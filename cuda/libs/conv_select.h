// The pure part of ConvOp's algorithm choice (conv.cu), kept free of cuDNN types so that it runs,
// and is tested, on the CPU (tests/test_conv_select.cpp).
//
// cuDNN reports a list of candidate algorithms for each routine (forward, backward-data,
// backward-filter): its heuristic ranking (Deterministic policy) or every algorithm benchmarked
// with its time (Fastest). preference_order() keeps the candidates that the policy and the math
// mode accept, in the order the policy prefers them; select_candidate() then sets each one up in
// that order (conv.cu: the math type on the descriptor, then the workspace query) and takes the
// first whose set-up succeeds. A candidate can be reported as fine and still fail there: under
// Fp32Strict the descriptor is forced to FMA math, and an algorithm reported with TENSOR_OP or
// DEFAULT math may have no FMA implementation for the geometry or layout. When no candidate
// can be set up, the Error names every candidate and why it was not taken.
// Owns: nothing (pure functions over a candidate list).
#pragma once

#include <algorithm>
#include <cstddef>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/libs/conv.cuh"
#include "host/core/error.h"

namespace cuvae {

inline const char* conv_policy_name(ConvAlgoPolicy p) {
  return p == ConvAlgoPolicy::Deterministic ? "deterministic" : "fastest";
}
inline const char* conv_math_name(ConvMath m) {
  switch (m) {
    case ConvMath::Fp32Strict:
      return "fp32-strict";
    case ConvMath::Tf32:
      return "tf32";
    case ConvMath::Bf16:
      return "bf16";
  }
  return "unknown";
}

// The math type cuDNN reports with a candidate (cudnnMathType_t, mapped one to one in conv.cu).
enum class AlgoMath { Default, TensorOp, TensorOpAllowConversion, Fma };

inline const char* algo_math_name(AlgoMath m) {
  switch (m) {
    case AlgoMath::Default:
      return "DEFAULT_MATH";
    case AlgoMath::TensorOp:
      return "TENSOR_OP_MATH";
    case AlgoMath::TensorOpAllowConversion:
      return "TENSOR_OP_MATH_ALLOW_CONVERSION";
    case AlgoMath::Fma:
      return "FMA_MATH";
  }
  return "unknown";
}

// One entry of cuDNN's result list (a cudnnConvolution*AlgoPerf_t).
struct AlgoCandidate {
  int algo = 0;                       // the cudnnConvolution*Algo_t value
  const char* name = "";              // its name, e.g. "IMPLICIT_GEMM"
  AlgoMath math = AlgoMath::Default;  // the math type reported with it
  float time_ms = 0;                  // Find's measured time (Fastest only)
  bool deterministic = false;         // reported CUDNN_DETERMINISTIC
  bool reported_ok = true;            // reported with CUDNN_STATUS_SUCCESS
  const char* status = "";            // the reported status, as cuDNN names it
};

// Whether a candidate reporting math type `m` honours `math`. Fp32Strict takes FMA kernels;
// DEFAULT_MATH only on a GPU without TF32 (compute capability < 8), where it means the same.
// Tf32 takes anything but ALLOW_CONVERSION, which may round fp32 data down to fp16.
// Bf16 data takes any of them (bf16 tensor cores under TENSOR_OP_MATH or DEFAULT_MATH).
inline bool math_allowed(AlgoMath m, ConvMath math, bool tf32_hardware) {
  if (math == ConvMath::Fp32Strict)
    return m == AlgoMath::Fma || (m == AlgoMath::Default && !tf32_hardware);
  return m == AlgoMath::Default || m == AlgoMath::TensorOp || m == AlgoMath::Fma;
}

namespace conv_select_detail {

// Why candidate c is never set up under the policy and math mode, or "" when it is eligible.
// pass 0 also requires a reported math type that honours `math`; pass 1 (Fp32Strict only) does
// not, because the descriptor runs with FMA_MATH whatever the candidate reported.
inline std::string ineligible(const AlgoCandidate& c, int pass, ConvAlgoPolicy policy,
                              ConvMath math, bool tf32_hardware) {
  if (!c.reported_ok) return std::string("reported ") + c.status;
  if (c.math == AlgoMath::TensorOpAllowConversion) return "may convert fp32 data to fp16";
  if (pass == 0 && !math_allowed(c.math, math, tf32_hardware))
    return std::string(algo_math_name(c.math)) + " is not " +
           (math == ConvMath::Fp32Strict ? "FMA math" : "an allowed math type");
  if (policy == ConvAlgoPolicy::Deterministic && !c.deterministic) return "not deterministic";
  return "";
}

}  // namespace conv_select_detail

// The indices of the candidates the policy accepts under `math`, most preferred first:
//   pass 0: reported CUDNN_STATUS_SUCCESS, a math type that honours `math`, not
//           ALLOW_CONVERSION, and deterministic under the Deterministic policy;
//   pass 1 (Fp32Strict only, after all of pass 0): the same without the math-type rule. Which
//           math type a result reports under an FMA-only descriptor is not pinned down by the
//           documentation (frameworks override it rather than trust it), so these stay as a
//           fallback; conv.cu runs them with FMA_MATH, which is what keeps TF32 out.
// Within a pass: Deterministic keeps cuDNN's heuristic ranking (the list order); Fastest sorts
// by measured time, ties in list order. The first index is the algorithm ConvOp took before
// set-up failures were tolerated (the first acceptable result, or the fastest).
inline std::vector<size_t> preference_order(const std::vector<AlgoCandidate>& cands,
                                            ConvAlgoPolicy policy, ConvMath math,
                                            bool tf32_hardware) {
  std::vector<size_t> order;
  std::vector<bool> taken(cands.size(), false);
  const int passes = math == ConvMath::Fp32Strict ? 2 : 1;
  for (int pass = 0; pass < passes; ++pass) {
    const size_t begin = order.size();
    for (size_t i = 0; i < cands.size(); ++i)
      if (!taken[i] &&
          conv_select_detail::ineligible(cands[i], pass, policy, math, tf32_hardware).empty())
        order.push_back(i), taken[i] = true;
    if (policy == ConvAlgoPolicy::Fastest)
      std::stable_sort(order.begin() + std::ptrdiff_t(begin), order.end(),
                       [&](size_t a, size_t b) { return cands[a].time_ms < cands[b].time_ms; });
  }
  return order;
}

// Sets up the candidates in preference_order() until one succeeds and returns its index.
// try_candidate(i) sets up cands[i] and returns std::nullopt on success, else why it failed
// (it must not throw for a refused set-up). Throws Error, naming `what`, the policy, the math
// mode and every candidate with the reason it was not taken, when none succeeds.
inline size_t select_candidate(
    const std::vector<AlgoCandidate>& cands, ConvAlgoPolicy policy, ConvMath math,
    bool tf32_hardware, const std::string& what,
    const std::function<std::optional<std::string>(size_t)>& try_candidate) {
  std::vector<std::string> why(cands.size());
  for (size_t i = 0; i < cands.size(); ++i)  // pass 1 is the loosest: what no pass takes
    why[i] = conv_select_detail::ineligible(cands[i], math == ConvMath::Fp32Strict ? 1 : 0, policy,
                                            math, tf32_hardware);
  for (size_t i : preference_order(cands, policy, math, tf32_hardware)) {
    const std::optional<std::string> failed = try_candidate(i);
    if (!failed) return i;
    why[i] = "set-up failed: " + *failed;
  }
  std::ostringstream os;
  os << what << ": no " << conv_policy_name(policy) << " " << conv_math_name(math)
     << " cuDNN algorithm available; candidates:";
  if (cands.empty()) os << " none";
  for (size_t i = 0; i < cands.size(); ++i) {
    const AlgoCandidate& c = cands[i];
    os << " [" << c.name << " " << c.status << " " << algo_math_name(c.math)
       << (c.deterministic ? " deterministic" : " non-deterministic") << ": " << why[i] << "]";
  }
  throw Error(os.str());
}

}  // namespace cuvae
