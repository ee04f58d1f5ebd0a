// GPU trainer (trainer_gpu.h): the public GpuTrainer over GpuTrainer::Impl (trainer_gpu_impl.h,
// which lists the files that define its pieces) and train_gpu; the state's transfer between the
// host's parameter order and the device's.
#include "host/gpu/trainer_gpu.h"

#include <cuda_profiler_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <utility>
#include <vector>

#include "cuda/runtime/nvtx.cuh"
#include "host/core/error.h"
#include "host/gpu/trainer_gpu_impl.h"

namespace cuvae {

void GpuTrainer::Impl::upload_ordered(DeviceBuffer<float>& dst, const float* host) {
  std::vector<float> staged(dev.size);
  to_device_order(dev, host, staged.data());
  dst.upload(staged.data(), dev.size, s());  // pageable: staged before the call returns
}

void GpuTrainer::Impl::download_ordered(const DeviceBuffer<float>& src, float* host) const {
  std::vector<float> staged(dev.size);
  src.download(staged.data(), dev.size, s());
  stream.synchronize();
  to_host_order(dev, staged.data(), host);
}

GpuTrainer::GpuTrainer(const ModelDesc& desc, const TrainConfig& cfg, const GpuOptions& opts,
                       int max_batch, int remainder) {
  if (max_batch < 1 || remainder < 0 || remainder >= max_batch)
    throw Error("GpuTrainer: bad batch sizes");
  impl_ = std::make_unique<Impl>(desc, cfg, opts, max_batch, remainder);
}

GpuTrainer::~GpuTrainer() = default;

void GpuTrainer::set_state(const TrainState& st) {
  Impl& m = *impl_;
  const size_t n = m.desc.num_params;
  if (st.params.size() != n || st.adam_m.size() != n || st.adam_v.size() != n)
    throw Error("GpuTrainer::set_state: state sized for another model");
  m.upload_ordered(m.params, st.params.data());
  m.upload_ordered(m.adam_m, st.adam_m.data());
  m.upload_ordered(m.adam_v, st.adam_v.data());
  m.step = st.step;
  m.epoch_step = st.epoch_step;
  m.epoch_sums[0] = st.epoch_recon_sum;
  m.epoch_sums[1] = st.epoch_kl_sum;
  m.epoch_sums[2] = st.epoch_weighted_kl_sum;
  m.stream.synchronize();
}

void GpuTrainer::get_state(TrainState& st) const {
  const Impl& m = *impl_;
  const size_t n = m.desc.num_params;
  st.params.resize(n);
  st.adam_m.resize(n);
  st.adam_v.resize(n);
  m.download_ordered(m.params, st.params.data());
  m.download_ordered(m.adam_m, st.adam_m.data());
  m.download_ordered(m.adam_v, st.adam_v.data());
  st.step = m.step;
  st.epoch_step = m.epoch_step;
  st.epoch_recon_sum = m.epoch_sums[0];
  st.epoch_kl_sum = m.epoch_sums[1];
  st.epoch_weighted_kl_sum = m.epoch_sums[2];
}

void GpuTrainer::upload_images(const ImageSet& img) {
  Impl& m = *impl_;
  if (img.rows * img.cols != kImagePixels) throw Error("GpuTrainer: images are not 28x28");
  if (img.count < 1 || img.count > INT32_MAX) throw Error("GpuTrainer: bad image count");
  const size_t bytes = size_t(img.count) * kImagePixels;
  m.step_graph = CudaGraphExec();  // it names the buffers replaced here
  m.images = DeviceBuffer<uint8_t>(bytes, "the training images");
  m.perm = DeviceBuffer<int32_t>(size_t(img.count), "the epoch permutation");
  m.shuffle = std::make_unique<DeviceShuffle>(img.count);
  m.schedule = DeviceBuffer<StepScalars>(size_t((img.count + m.max_batch - 1) / m.max_batch),
                                         "the step table");
  m.images.upload(img.pixels.data(), bytes, m.s());
  m.num_images = img.count;
  m.stream.synchronize();
}

std::optional<EpochMetrics> GpuTrainer::run_epoch(int epoch, const StepCallback& on_step,
                                                  const StopCheck& should_stop) {
  Impl& m = *impl_;
  if (m.num_images == 0) throw Error("GpuTrainer::run_epoch: no images uploaded");
  const int64_t n = m.num_images;
  if (n % m.max_batch != m.remainder)
    throw Error("GpuTrainer::run_epoch: dataset size does not match the planned batches");
  const NvtxRange range("epoch");
  const auto t0 = std::chrono::steady_clock::now();
  // Recorded before the epoch's uploads, so the device time covers everything the epoch
  // costs the device, the permutation and the host's gaps included.
  m.epoch_start.record(m.s());
  // A resumed epoch continues from the position set_state gave (full batches so far).
  EpochMetrics out;
  out.epoch = epoch;
  out.steps = std::exchange(m.epoch_step, 0);
  out.images = out.steps * m.max_batch;
  const int64_t images_before = out.images;
  const int64_t steps_per_epoch = (n + m.max_batch - 1) / m.max_batch;
  m.upload_schedule(out.steps, steps_per_epoch);
  m.sums.upload(m.epoch_sums, 3, m.s());
  const KlSchedule kl = kl_schedule(m.cfg, steps_per_epoch);
  const bool warming = kl.warming(int64_t(epoch - 1) * steps_per_epoch + 1);
  {
    const NvtxRange shuffle_range("draw permutation");
    m.shuffle->draw(m.perm.data(), m.cfg.seed, epoch, m.s());
  }
  for (int64_t first = out.images; first < n; first += m.max_batch) {
    const int count = int(std::min<int64_t>(m.max_batch, n - first));
    const int64_t global_step = m.step + 1;  // 1-based over the whole run
    if (global_step == m.opts.profile_first) CUDA_CHECK(cudaProfilerStart());
    {
      const NvtxRange step_range("train step");
      m.run_step(count);
    }
    ++m.step;
    if (global_step == m.opts.profile_last) CUDA_CHECK(cudaProfilerStop());
    out.images += count;
    ++out.steps;
    if (on_step) {  // host-side counts only: no synchronisation here
      StepProgress p;
      p.epoch = epoch;
      p.step = out.steps;
      p.steps = steps_per_epoch;
      p.images = out.images;
      p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      p.loss = std::nan("");
      on_step(p);
    }
    if (out.images < n && should_stop && should_stop()) {
      m.read_sums(m.epoch_sums, epoch);  // waits for the queued steps
      m.epoch_step = out.steps;
      return std::nullopt;
    }
  }
  m.epoch_end.record(m.s());
  double sums[3];
  m.read_sums(sums, epoch);  // the only host synchronisation of the epoch
  m.epoch_sums[0] = m.epoch_sums[1] = m.epoch_sums[2] = 0;
  out.device_ms = m.epoch_end.ms_since(m.epoch_start);
  finish_epoch_loss(out, sums[0], sums[1], sums[2], warming, m.cfg.beta, kl.weight(m.step));
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  out.images_per_s = double(out.images - images_before) / std::max(out.seconds, 1e-9);
  if (!std::isfinite(out.loss))
    throw TrainingDiverged("training diverged: the mean loss of epoch " + std::to_string(epoch) +
                           " is not finite");
  return out;
}

LossParts GpuTrainer::step_on_batch(const float* host_x, int count, bool apply_adam) {
  Impl& m = *impl_;
  m.x.upload(host_x, size_t(count) * kImagePixels, m.s());
  CUDA_CHECK(cudaMemsetAsync(m.sums.data(), 0, 3 * sizeof(double), m.s()));
  m.upload_schedule(0, 1);  // entry 0: Adam step m.step + 1, the noise of counter m.step
  m.enqueue_step(count, false, apply_adam);
  if (apply_adam) ++m.step;
  double sums[3];
  m.read_sums(sums, 0);
  LossParts p;
  p.recon = sums[0] / count;
  p.kl = sums[1] / count;
  p.loss = p.recon + m.cfg.beta * p.kl;
  return p;
}

void GpuTrainer::download_grads(float* g) const {
  impl_->download_ordered(impl_->grads, g);
}

void GpuTrainer::download_eps(float* e, int count) const {
  impl_->eps.download(e, size_t(count) * size_t(impl_->desc.latent_dim), impl_->s());
  impl_->stream.synchronize();
}

std::string GpuTrainer::describe() const {
  const Impl& m = *impl_;
  std::ostringstream os;
  for (int i = 0; i < kNumLayers; ++i)
    if (m.full_convs[size_t(i)])
      os << m.desc.layers[size_t(i)].name << ": " << m.full_convs[size_t(i)]->describe() << "\n";
  os << "precision: "
     << (m.opts.bf16   ? "bf16 mixed (bf16 convolutions and encoder.fc, fp32 weights, Adam, loss "
                         "and latent layers)"
         : m.opts.tf32 ? "TF32"
                       : "strict fp32")
     << "\n";
  os << "layout: "
     << (m.opts.nhwc ? "NHWC (channels last; parameters kept in channels_last_order)" : "NCHW");
  if (m.layout_measured)
    os << ", chosen by --layout auto: convolution passes " << m.layout_ms[0] << " ms NCHW, "
       << m.layout_ms[1] << " ms NHWC";
  os << "\n";
  os << "training step: ";
  if (m.step_graph)
    os << "CUDA graph of " << m.graph_nodes << " nodes\n";
  else if (!m.opts.cuda_graph)
    os << "eager launches (CUDA graph off)\n";
  else if (m.graph_failed)
    os << "eager launches (CUDA graph capture failed)\n";
  else
    os << "CUDA graph, captured at the second full batch\n";
  return os.str();
}

bool GpuTrainer::nhwc() const {
  return impl_->opts.nhwc;
}

bool GpuTrainer::uses_cuda_graph() const {
  return bool(impl_->step_graph);
}

bool train_gpu(const TrainConfig& cfg, const GpuOptions& opts, const ModelDesc& desc,
               const ImageSet& images, TrainState& state, const EpochCallback& on_epoch,
               const StepCallback& on_step, const StopCheck& should_stop) {
  check_state_position(state, images.count, cfg.batch_size);
  const int batch = int(std::min<int64_t>(cfg.batch_size, images.count));
  const int remainder = int(images.count % batch);
  GpuTrainer trainer(desc, cfg, opts, batch, remainder);
  trainer.set_state(state);
  trainer.upload_images(images);
  for (int epoch = int(state.epoch) + 1; epoch <= cfg.epochs; ++epoch) {
    if (should_stop && should_stop()) return false;  // at an epoch boundary
    const std::optional<EpochMetrics> m = trainer.run_epoch(epoch, on_step, should_stop);
    trainer.get_state(state);  // params, moments, step, position
    if (!m) return false;
    state.epoch = epoch;
    on_epoch(*m);
  }
  return true;
}

}  // namespace cuvae
