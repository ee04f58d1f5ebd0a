// The per-step scalars of a training step, in one place for the CPU trainer, the adam_step
// launcher and the GPU trainer's step table, so that all three round them identically.
//   step          Adam's t, 1-based over the run; the step's reparameterization noise is
//                 drawn with counter t - 1 (the number of steps taken before it)
//   step_size     lr / (1 - beta1^t)        computed in double, rounded to float once
//   inv_sqrt_bc2  1 / sqrt(1 - beta2^t)     likewise
//   kl_weight     the KL term's weight at step t (KlSchedule: beta, or the warm-up's ramp)
// StepTable lets a kernel read them from device memory, table[*cursor], instead of taking
// them as arguments: the GPU trainer uploads an epoch's table once and one captured CUDA
// graph then serves every step, its last kernel advancing the cursor.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace cuvae {

struct StepScalars {
  uint32_t step;
  float step_size;
  float inv_sqrt_bc2;
  float kl_weight;
};

// The weight of the KL term at Adam step t >= 1 (--beta-warmup): over the first warmup_steps
// steps (the warm-up epochs) it rises linearly from 0, float(beta (t - 1) / warmup_steps)
// (computed in double, rounded to float once, so the CPU and the GPU's step table agree), and
// is beta from step warmup_steps + 1 on; without a warm-up (warmup_steps == 0) it is beta.
struct KlSchedule {
  double beta = 1.0;
  int64_t warmup_steps = 0;

  bool warming(int64_t t) const { return t <= warmup_steps; }
  double weight(int64_t t) const {
    if (!warming(t)) return beta;
    return double(static_cast<float>(beta * double(t - 1) / double(warmup_steps)));
  }
};

// Device pointers: table (steps) and cursor (1), the index of the step in progress.
struct StepTable {
  const StepScalars* table;
  const int32_t* cursor;
};

// Adam's scalars for step t >= 1 (exactly as PyTorch's formulation needs them), and the KL
// weight of that step (float(kl.weight(t))).
inline StepScalars step_scalars(float lr, float beta1, float beta2, int64_t t,
                                const KlSchedule& kl = {}) {
  const double bc1 = 1.0 - std::pow(double(beta1), double(t));
  const double bc2 = 1.0 - std::pow(double(beta2), double(t));
  return StepScalars{static_cast<uint32_t>(t), static_cast<float>(double(lr) / bc1),
                     static_cast<float>(1.0 / std::sqrt(bc2)), static_cast<float>(kl.weight(t))};
}

// The step table of an epoch of `steps` steps whose steps [first_step, steps) remain (a
// resumed epoch starts inside), the first of them Adam step next_step: entry k >= first_step
// holds step_scalars(..., next_step + k - first_step, kl), the entries before first_step are
// zero (never read: the cursor starts at first_step).
inline std::vector<StepScalars> epoch_step_table(float lr, float beta1, float beta2,
                                                 int64_t first_step, int64_t steps,
                                                 int64_t next_step, const KlSchedule& kl) {
  std::vector<StepScalars> table(static_cast<size_t>(steps), StepScalars{0, 0.0f, 0.0f, 0.0f});
  for (int64_t k = first_step; k < steps; ++k)
    table[static_cast<size_t>(k)] =
        step_scalars(lr, beta1, beta2, next_step + (k - first_step), kl);
  return table;
}

}  // namespace cuvae
