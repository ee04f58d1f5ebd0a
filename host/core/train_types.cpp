// The training state's checks and the epoch loss (train_types.h).
#include "host/core/train_types.h"

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <sstream>

#include "host/core/error.h"

namespace cuvae {

bool RealRange::holds(double v) const {
  if (!std::isfinite(v) || (lo_inclusive ? v < lo : v <= lo) || v > hi) return false;
  const float f = static_cast<float>(v);
  return v == 0 || (std::isnormal(f) && double(f) <= hi);
}

std::string RealRange::text() const {
  std::ostringstream os;
  os << (lo_inclusive ? ">= " : "> ") << lo << " and <= " << hi;
  if (lo < double(FLT_MIN))
    os << " (" << (lo_inclusive && lo == 0 ? "0 or " : "") << "at least " << std::setprecision(9)
       << FLT_MIN << ", the smallest normal float)";
  return os.str();
}

KlSchedule kl_schedule(const TrainConfig& cfg, int64_t steps_per_epoch) {
  if (cfg.beta_warmup < 0) throw Error("training: negative KL warm-up");
  return KlSchedule{cfg.beta, int64_t(cfg.beta_warmup) * steps_per_epoch};
}

void finish_epoch_loss(EpochMetrics& m, double recon_sum, double kl_sum, double weighted_kl_sum,
                       bool warming, double beta, double last_weight) {
  m.recon = recon_sum / double(m.images);
  m.kl = kl_sum / double(m.images);
  m.kl_weight = !warming ? beta : kl_sum > 0 ? weighted_kl_sum / kl_sum : last_weight;
  m.loss = m.recon + m.kl_weight * m.kl;
}

int64_t check_state_position(const TrainState& state, int64_t images, int batch_size) {
  if (images < 1 || batch_size < 1) throw Error("training: no images or a bad batch size");
  if (state.epoch < 0 || state.epoch > INT32_MAX) throw Error("training: bad epoch count");
  const int64_t steps_per_epoch = (images + batch_size - 1) / batch_size;
  if (state.epoch_step < 0 || state.epoch_step >= steps_per_epoch ||
      state.step != state.epoch * steps_per_epoch + state.epoch_step)
    throw Error("training: the state's step counters do not match the data and batch size");
  return steps_per_epoch;
}

}  // namespace cuvae
