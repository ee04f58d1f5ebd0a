// Fixtures shared by the trainer tests (CPU and GPU): configurations, initial states, synthetic
// images.
#pragma once

#include <random>

#include "host/model.h"
#include "host/trainer_cpu.h"

namespace cuvae::test {

inline TrainConfig small_config(uint64_t seed, int batch, double beta) {
  TrainConfig cfg;
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

}  // namespace cuvae::test
