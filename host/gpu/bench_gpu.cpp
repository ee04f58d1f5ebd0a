// `cuvae bench`'s GPU run (trainer_gpu.h).
#include <algorithm>

#include "host/gpu/device_info.h"
#include "host/gpu/trainer_gpu.h"

namespace cuvae {

GpuBenchReport bench_gpu(const TrainConfig& cfg, const GpuOptions& opts, const ModelDesc& desc,
                         const ImageSet& images, const TrainState& state,
                         const EpochCallback& on_epoch) {
  const size_t before = device_memory_in_use();
  const int batch = int(std::min<int64_t>(cfg.batch_size, images.count));
  GpuTrainer trainer(desc, cfg, opts, batch, int(images.count % batch));
  trainer.set_state(state);
  trainer.upload_images(images);
  size_t peak = 0;
  for (int epoch = 1; epoch <= cfg.epochs; ++epoch) {
    on_epoch(*trainer.run_epoch(epoch));
    peak = std::max(peak, device_memory_in_use());
  }
  GpuBenchReport r;
  r.cuda_graph = trainer.uses_cuda_graph();
  r.nhwc = trainer.nhwc();
  r.peak_memory = peak > before ? peak - before : 0;
  return r;
}

}  // namespace cuvae
