// ConvOp's algorithm choice without a GPU (cuda/libs/conv_select.h): which of cuDNN's candidates
// each policy and math mode accept, in which order they are set up, that a candidate whose set-up
// fails is skipped for the next one, and that the error lists every candidate with its reason
// when none can be set up. The set-up is a callback here: conv_algo.cu's sets the math type and
// queries the workspace.
#include <catch2/catch.hpp>
#include <cstddef>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "cuda/libs/conv_select.h"
#include "host/core/error.h"
#include "tests/test_support.h"

using namespace cuvae;

namespace {

AlgoCandidate candidate(const char* name, AlgoMath math, bool deterministic, float time_ms = 0,
                        bool reported_ok = true) {
  AlgoCandidate c;
  c.algo = int(name[0]);
  c.name = name;
  c.math = math;
  c.deterministic = deterministic;
  c.time_ms = time_ms;
  c.reported_ok = reported_ok;
  c.status = reported_ok ? "CUDNN_STATUS_SUCCESS" : "CUDNN_STATUS_NOT_SUPPORTED";
  return c;
}

// A set-up that fails for the candidates named in `refuse` (with the status a refused workspace
// query gives) and records the names of every candidate it was asked to set up, in order.
struct FakeSetup {
  const std::vector<AlgoCandidate>& cands;
  std::vector<std::string> refuse;
  std::vector<std::string> tried;
  std::optional<std::string> operator()(size_t i) {
    tried.push_back(cands[i].name);
    for (const std::string& r : refuse)
      if (r == cands[i].name) return std::string("workspace query: CUDNN_STATUS_NOT_SUPPORTED");
    return std::nullopt;
  }
};

// Runs select_candidate with a FakeSetup; returns the chosen name, or the error's message
// prefixed with "error: ".
std::string choose(const std::vector<AlgoCandidate>& cands, ConvAlgoPolicy policy, ConvMath math,
                   bool tf32_hardware, FakeSetup& setup) {
  try {
    const size_t i = select_candidate(cands, policy, math, tf32_hardware, "layer x forward",
                                      [&](size_t k) { return setup(k); });
    return cands[i].name;
  } catch (const Error& e) {
    return std::string("error: ") + e.what();
  }
}

std::vector<std::string> names(const std::vector<AlgoCandidate>& cands,
                               const std::vector<size_t>& order) {
  std::vector<std::string> v;
  for (size_t i : order) v.push_back(cands[i].name);
  return v;
}

// The rule ConvOp used before set-up failures were tolerated (the first acceptable result under
// the heuristic ranking, the fastest under Find; for Fp32Strict, results reporting another math
// type only when none reports an allowed one), on the same candidates: the oracle that the
// first choice has not changed.
std::optional<size_t> former_choice(const std::vector<AlgoCandidate>& cands, ConvAlgoPolicy policy,
                                    ConvMath math, bool tf32_hardware) {
  std::optional<size_t> best;
  for (int pass = 0; pass < 2 && !best; ++pass) {
    if (pass == 1 && math != ConvMath::Fp32Strict) break;
    for (size_t i = 0; i < cands.size(); ++i) {
      const AlgoCandidate& r = cands[i];
      if (!r.reported_ok) continue;
      if (pass == 0 && !math_allowed(r.math, math, tf32_hardware)) continue;
      if (r.math == AlgoMath::TensorOpAllowConversion) continue;
      if (policy == ConvAlgoPolicy::Deterministic) {
        if (!r.deterministic) continue;
        best = i;
        break;
      }
      if (!best || r.time_ms < cands[*best].time_ms) best = i;
    }
  }
  return best;
}

}  // namespace

TEST_CASE("conv algorithm choice: a candidate whose set-up fails is skipped for the next one",
          "[conv][conv_select]") {
  // Fp32Strict on a TF32 GPU: the heuristic ranks a tensor-op candidate first; under the FMA
  // descriptor it has no kernel for this geometry, so its workspace query fails.
  const std::vector<AlgoCandidate> cands = {
      candidate("IMPLICIT_PRECOMP_GEMM", AlgoMath::Fma, true),
      candidate("IMPLICIT_GEMM", AlgoMath::Fma, true),
      candidate("GEMM", AlgoMath::Fma, true),
  };
  SECTION("Deterministic") {
    FakeSetup setup{cands, {"IMPLICIT_PRECOMP_GEMM"}, {}};
    CHECK(choose(cands, ConvAlgoPolicy::Deterministic, ConvMath::Fp32Strict, true, setup) ==
          "IMPLICIT_GEMM");
    CHECK(setup.tried == std::vector<std::string>{"IMPLICIT_PRECOMP_GEMM", "IMPLICIT_GEMM"});
  }
  SECTION("two refusals in a row") {
    FakeSetup setup{cands, {"IMPLICIT_PRECOMP_GEMM", "IMPLICIT_GEMM"}, {}};
    CHECK(choose(cands, ConvAlgoPolicy::Deterministic, ConvMath::Fp32Strict, true, setup) ==
          "GEMM");
    CHECK(setup.tried.size() == 3);
  }
  SECTION("Fastest: the next fastest") {
    std::vector<AlgoCandidate> timed = cands;
    timed[0].time_ms = 0.5f, timed[1].time_ms = 0.2f, timed[2].time_ms = 0.3f;
    FakeSetup setup{timed, {"IMPLICIT_GEMM"}, {}};
    CHECK(choose(timed, ConvAlgoPolicy::Fastest, ConvMath::Fp32Strict, true, setup) == "GEMM");
    CHECK(setup.tried == std::vector<std::string>{"IMPLICIT_GEMM", "GEMM"});
  }
  SECTION("Fp32Strict falls back to a result reporting another math type (run under FMA)") {
    // The only FMA-reporting candidate cannot be set up; the tensor-op one, forced to FMA, can.
    const std::vector<AlgoCandidate> mixed = {
        candidate("FFT", AlgoMath::Fma, true),
        candidate("IMPLICIT_GEMM", AlgoMath::TensorOp, true),
    };
    FakeSetup setup{mixed, {"FFT"}, {}};
    CHECK(choose(mixed, ConvAlgoPolicy::Deterministic, ConvMath::Fp32Strict, true, setup) ==
          "IMPLICIT_GEMM");
    CHECK(setup.tried == std::vector<std::string>{"FFT", "IMPLICIT_GEMM"});
  }
  SECTION("a first candidate that sets up is taken, and nothing after it is set up") {
    FakeSetup setup{cands, {}, {}};
    CHECK(choose(cands, ConvAlgoPolicy::Deterministic, ConvMath::Fp32Strict, true, setup) ==
          "IMPLICIT_PRECOMP_GEMM");
    CHECK(setup.tried == std::vector<std::string>{"IMPLICIT_PRECOMP_GEMM"});
  }
}

TEST_CASE("conv algorithm choice: each policy's order of preference", "[conv][conv_select]") {
  // The heuristic's ranking, as cuDNN lists it, with the times Find would have measured.
  const std::vector<AlgoCandidate> cands = {
      candidate("A_nondet_fma", AlgoMath::Fma, false, 0.1f),
      candidate("B_failed", AlgoMath::Fma, true, 0.05f, false),
      candidate("C_tensor_op", AlgoMath::TensorOp, true, 0.2f),
      candidate("D_fma", AlgoMath::Fma, true, 0.4f),
      candidate("E_conversion", AlgoMath::TensorOpAllowConversion, true, 0.01f),
      candidate("F_default", AlgoMath::Default, true, 0.3f),
      candidate("G_fma", AlgoMath::Fma, true, 0.3f),
      candidate("H_tensor_op_nondet", AlgoMath::TensorOp, false, 0.15f),
  };
  using V = std::vector<std::string>;
  // Deterministic, Fp32Strict on a TF32 GPU: FMA ones in list order, then (the fallback) the
  // other deterministic ones in list order; never a failed, converting or non-deterministic one.
  CHECK(names(cands, preference_order(cands, ConvAlgoPolicy::Deterministic, ConvMath::Fp32Strict,
                                      true)) == V{"D_fma", "G_fma", "C_tensor_op", "F_default"});
  // Without TF32 hardware DEFAULT math is FMA math: it joins the first pass.
  CHECK(names(cands, preference_order(cands, ConvAlgoPolicy::Deterministic, ConvMath::Fp32Strict,
                                      false)) == V{"D_fma", "F_default", "G_fma", "C_tensor_op"});
  // Tf32 (and Bf16): one pass over DEFAULT, TENSOR_OP and FMA.
  for (ConvMath math : {ConvMath::Tf32, ConvMath::Bf16})
    CHECK(names(cands, preference_order(cands, ConvAlgoPolicy::Deterministic, math, true)) ==
          V{"C_tensor_op", "D_fma", "F_default", "G_fma"});
  // Fastest: by time within each pass, ties (F, G at 0.3) in list order; non-deterministic
  // ones too.
  CHECK(
      names(cands, preference_order(cands, ConvAlgoPolicy::Fastest, ConvMath::Fp32Strict, true)) ==
      V{"A_nondet_fma", "G_fma", "D_fma", "H_tensor_op_nondet", "C_tensor_op", "F_default"});
  CHECK(names(cands, preference_order(cands, ConvAlgoPolicy::Fastest, ConvMath::Tf32, true)) ==
        V{"A_nondet_fma", "H_tensor_op_nondet", "C_tensor_op", "F_default", "G_fma", "D_fma"});
  // The set-ups follow that order until one succeeds.
  FakeSetup setup{cands, {"D_fma", "G_fma"}, {}};
  CHECK(choose(cands, ConvAlgoPolicy::Deterministic, ConvMath::Fp32Strict, true, setup) ==
        "C_tensor_op");
  CHECK(setup.tried == V{"D_fma", "G_fma", "C_tensor_op"});
}

TEST_CASE("conv algorithm choice: the first choice is the one made before set-up could fail",
          "[conv][conv_select]") {
  // Random result lists (times with ties, every math type, failed entries): when every set-up
  // succeeds, the choice is the former rule's, and there is a choice exactly when it had one.
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const char* kNames[] = {"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"};
  const AlgoMath kMaths[] = {AlgoMath::Default, AlgoMath::TensorOp,
                             AlgoMath::TensorOpAllowConversion, AlgoMath::Fma};
  for (int round = 0; round < 2000; ++round) {
    std::vector<AlgoCandidate> cands(rng() % 9);
    for (size_t i = 0; i < cands.size(); ++i)
      cands[i] =
          candidate(kNames[i], kMaths[rng() % 4], rng() % 3 != 0, float(rng() % 4), rng() % 5 != 0);
    for (ConvAlgoPolicy policy : {ConvAlgoPolicy::Deterministic, ConvAlgoPolicy::Fastest})
      for (ConvMath math : {ConvMath::Fp32Strict, ConvMath::Tf32, ConvMath::Bf16})
        for (bool tf32_hardware : {false, true}) {
          const std::optional<size_t> want = former_choice(cands, policy, math, tf32_hardware);
          const std::vector<size_t> order = preference_order(cands, policy, math, tf32_hardware);
          INFO("round " << round << ", " << cands.size() << " candidates, policy "
                        << conv_policy_name(policy) << ", " << conv_math_name(math) << ", TF32 "
                        << tf32_hardware);
          REQUIRE(order.empty() == !want);
          if (want) REQUIRE(order.front() == *want);
        }
  }
}

TEST_CASE("conv algorithm choice: when no candidate can be set up, the error names each and why",
          "[conv][conv_select]") {
  const std::vector<AlgoCandidate> cands = {
      candidate("IMPLICIT_GEMM", AlgoMath::Fma, true),
      candidate("WINOGRAD", AlgoMath::Fma, false),
      candidate("FFT", AlgoMath::Fma, true, 0, false),
      candidate("GEMM", AlgoMath::TensorOpAllowConversion, true),
      candidate("DIRECT", AlgoMath::TensorOp, true),
  };
  FakeSetup setup{cands, {"IMPLICIT_GEMM", "DIRECT"}, {}};
  const std::string msg =
      choose(cands, ConvAlgoPolicy::Deterministic, ConvMath::Fp32Strict, true, setup);
  INFO(msg);
  REQUIRE_THAT(msg, Catch::StartsWith("error: layer x forward: no deterministic fp32-strict"));
  // Every candidate, with what cuDNN reported and the reason it was not taken: a failed set-up
  // (with the callback's reason) for the two that were tried, the rule for the others.
  CHECK_THAT(msg, Catch::Contains("[IMPLICIT_GEMM CUDNN_STATUS_SUCCESS FMA_MATH deterministic: "
                                  "set-up failed: workspace query: CUDNN_STATUS_NOT_SUPPORTED]"));
  CHECK_THAT(msg, Catch::Contains("[WINOGRAD CUDNN_STATUS_SUCCESS FMA_MATH non-deterministic: "
                                  "not deterministic]"));
  CHECK_THAT(msg, Catch::Contains("[FFT CUDNN_STATUS_NOT_SUPPORTED FMA_MATH deterministic: "
                                  "reported CUDNN_STATUS_NOT_SUPPORTED]"));
  CHECK_THAT(msg, Catch::Contains("[GEMM CUDNN_STATUS_SUCCESS TENSOR_OP_MATH_ALLOW_CONVERSION "
                                  "deterministic: may convert fp32 data to fp16]"));
  CHECK_THAT(msg, Catch::Contains("[DIRECT CUDNN_STATUS_SUCCESS TENSOR_OP_MATH deterministic: "
                                  "set-up failed: workspace query: CUDNN_STATUS_NOT_SUPPORTED]"));
  CHECK(setup.tried == std::vector<std::string>{"IMPLICIT_GEMM", "DIRECT"});

  // No candidate at all, and none acceptable (never set up).
  FakeSetup none{cands, {}, {}};
  CHECK_THAT(choose({}, ConvAlgoPolicy::Fastest, ConvMath::Tf32, true, none),
             Catch::EndsWith("no fastest tf32 cuDNN algorithm available; candidates: none"));
  const std::vector<AlgoCandidate> unusable = {candidate("FFT", AlgoMath::Fma, false)};
  FakeSetup never{unusable, {}, {}};
  CHECK_THAT(choose(unusable, ConvAlgoPolicy::Deterministic, ConvMath::Bf16, true, never),
             Catch::Contains("[FFT CUDNN_STATUS_SUCCESS FMA_MATH non-deterministic: not "
                             "deterministic]"));
  CHECK(never.tried.empty());
}
