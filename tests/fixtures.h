// Fixtures shared by the trainer tests (CPU and GPU): configurations, initial states, synthetic
// images.
#pragma once

#include <random>
#include <string>

#include "host/core/model.h"
#include "host/cpu/cpu_model.h"
#include "host/cpu/trainer_cpu.h"

namespace cuvae::test {

// device: the CPU engine train_cpu runs, "cpu-ref" (the reference) or "cpu" (the fast one).
inline TrainConfig small_config(uint64_t seed, int batch, double beta,
                                const std::string& device = "cpu-ref") {
  TrainConfig cfg;
  cfg.device = device;
  cfg.seed = seed;
  cfg.batch_size = batch;
  cfg.beta = beta;
  cfg.epochs = 1;
  return cfg;
}

inline TrainState fresh_state(const ModelDesc& d, uint64_t seed) {
  TrainState st;
  st.params.resize(d.num_params);
  init_params(d, seed, st.params.data());
  // Glorot leaves biases at zero; random biases exercise the bias paths.
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-0.1f, 0.1f);
  for (const ParamTensor& p : d.params)
    if (p.fan_in == 0)
      for (size_t i = 0; i < p.numel; ++i) st.params[p.offset + i] = u(rng);
  st.adam_m.assign(d.num_params, 0.0f);
  st.adam_v.assign(d.num_params, 0.0f);
  return st;
}

// MNIST-like synthetic images as uint8.
inline ImageSet synthetic_images(uint64_t seed, int64_t count) {
  ImageSet s;
  s.count = count;
  s.rows = s.cols = kImageSide;
  s.pixels.resize(size_t(count) * kImagePixels);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> px(0, 255), coin(0, 9);
  for (uint8_t& p : s.pixels) {
    const int c = coin(rng);
    p = uint8_t(c < 5 ? 0 : c < 6 ? 255 : px(rng));
  }
  return s;
}

// A model with random biases (Glorot leaves them zero) and an MNIST-like batch: half the
// pixels 0, a tenth 1, the rest uniform; standard normal noise.
template <typename T>
void random_model_and_batch(const ModelDesc& d, uint64_t seed, int batch, std::vector<T>& params,
                            cpu::Activations<T>& a) {
  std::vector<float> pf(d.num_params);
  init_params(d, seed, pf.data());
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-0.1f, 0.1f), px(0.f, 1.f);
  std::normal_distribution<float> normal;
  for (const ParamTensor& p : d.params)
    if (p.fan_in == 0)
      for (size_t i = 0; i < p.numel; ++i) pf[p.offset + i] = u(rng);
  params.assign(pf.begin(), pf.end());
  a.resize(d, batch);
  for (T& v : a.x) {
    const float q = px(rng);
    v = q < 0.5f ? 0 : q < 0.6f ? 1 : px(rng);
  }
  for (T& e : a.eps) e = normal(rng);
}

}  // namespace cuvae::test
