// The training state's checks (train_types.h).
#include "host/core/train_types.h"

#include <cstdint>

#include "host/core/error.h"

namespace cuvae {

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
