// Evaluation (evaluate.h): the one-sample negative ELBO per image and the importance-weighted
// estimate of -log p(x). Both run the model only through Inference::encode / decode, so the
// CPU reference and the GPU engine share this code; the per-image arithmetic after the decoder
// (BCE, log weights, log-mean-exp) is done here on the host in double.
#include "host/eval/evaluate.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "host/core/batch.h"
#include "host/core/error.h"
#include "host/core/philox.h"
#include "host/cpu/cpu_ref.h"

namespace cuvae {
namespace {

int64_t images_to_use(const ImageSet& images, int64_t limit, const char* who) {
  const int64_t n = limit > 0 ? std::min(limit, images.count) : images.count;
  if (n < 1) throw Error(std::string(who) + ": no images");
  if (images.rows * images.cols != kImagePixels)
    throw Error(std::string(who) + ": images are not 28x28");
  if (n > INT32_MAX) throw Error(std::string(who) + ": too many images");
  return n;
}

// x (count, 784) for images first .. first + count - 1.
void gather_range(float* x, const ImageSet& images, int64_t first, int count,
                  std::vector<int32_t>& index) {
  index.resize(size_t(count));
  for (int i = 0; i < count; ++i) index[size_t(i)] = int32_t(first + i);
  gather_batch(x, images.pixels.data(), index.data(), count, kImagePixels);
}

}  // namespace

void eval_noise(float* eps, uint64_t seed, int64_t index, int sample, int latent_dim) {
  for (int j = 0; j < latent_dim; ++j) {
    const Philox4 w = random_words(seed, Stream::Eval, uint64_t(index),
                                   uint32_t(sample) * uint32_t(latent_dim) + uint32_t(j));
    eps[j] = normal_from(w.v[0], w.v[1]);
  }
}

void evaluate_elbo_chunks(Inference& model, const ImageSet& images, uint64_t seed, int64_t limit,
                          const ElboChunkFn& on_chunk, int chunk) {
  const int64_t n = images_to_use(images, limit, "evaluate_elbo");
  if (chunk < 1) throw Error("evaluate_elbo: chunk must be positive");
  const int dim = model.desc().latent_dim;
  const int cap = int(std::min<int64_t>(chunk, n));
  std::vector<float> x(size_t(cap) * kImagePixels), mu(size_t(cap) * dim), logvar(mu.size()),
      eps(mu.size()), z(mu.size()), logits(x.size()), dlogits(x.size());
  std::vector<double> recon(static_cast<size_t>(cap)), kl(recon.size());
  std::vector<int32_t> index;
  for (int64_t first = 0; first < n; first += cap) {
    const int count = int(std::min<int64_t>(cap, n - first));
    gather_range(x.data(), images, first, count, index);
    model.encode(mu.data(), logvar.data(), x.data(), count);
    for (int i = 0; i < count; ++i)
      eval_noise(eps.data() + size_t(i) * dim, seed, first + i, 0, dim);
    cpu::reparam_forward(z.data(), mu.data(), logvar.data(), eps.data(), size_t(count) * dim);
    model.decode(logits.data(), z.data(), count);
    cpu::bce_kl_loss(dlogits.data(), recon.data(), kl.data(), logits.data(), x.data(), mu.data(),
                     logvar.data(), count, kImagePixels, dim, 1.0);
    on_chunk(first, count, x.data(), eps.data(), mu.data(), logvar.data(), recon.data(), kl.data());
  }
}

ElboStats evaluate_elbo(Inference& model, const ImageSet& images, uint64_t seed, int64_t limit) {
  ElboStats s;
  double recon_sum = 0, kl_sum = 0;
  evaluate_elbo_chunks(model, images, seed, limit,
                       [&](int64_t, int count, const float*, const float*, const float*,
                           const float*, const double* recon, const double* kl) {
                         for (int i = 0; i < count; ++i) {
                           recon_sum += recon[i];
                           kl_sum += kl[i];
                         }
                         s.images += count;
                       });
  s.recon = recon_sum / double(s.images);
  s.kl = kl_sum / double(s.images);
  return s;
}

double log_mean_exp(const double* v, int n) {
  if (n < 1) throw Error("log_mean_exp: no values");
  double m = -std::numeric_limits<double>::infinity();
  for (int i = 0; i < n; ++i) {
    if (std::isnan(v[i])) return std::numeric_limits<double>::quiet_NaN();
    m = std::max(m, v[i]);
  }
  if (std::isinf(m)) return m;  // all -inf, or some +inf
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(v[i] - m);
  return m + std::log(sum) - std::log(double(n));
}

void iwae_log_weights(double* log_w, Inference& model, const float* x, const float* mu,
                      const float* logvar, int count, int k, uint64_t seed, int64_t first_index,
                      int max_rows) {
  if (count < 1 || k < 1 || max_rows < 1)
    throw Error("iwae_log_weights: count, k and max_rows must be positive");
  const int dim = model.desc().latent_dim;
  const int64_t total = int64_t(count) * k;
  const int cap = int(std::min<int64_t>(max_rows, total));
  std::vector<float> eps(size_t(cap) * dim), z(eps.size()), logits(size_t(cap) * kImagePixels),
      dlogits(kImagePixels);
  for (int64_t first_row = 0; first_row < total; first_row += cap) {
    const int rows = int(std::min<int64_t>(cap, total - first_row));
    for (int r = 0; r < rows; ++r) {
      const int64_t row = first_row + r;
      const int64_t i = row / k;
      eval_noise(eps.data() + size_t(r) * dim, seed, first_index + i, int(row % k), dim);
      cpu::reparam_forward(z.data() + size_t(r) * dim, mu + i * dim, logvar + i * dim,
                           eps.data() + size_t(r) * dim, size_t(dim));
    }
    model.decode(logits.data(), z.data(), rows);
    for (int r = 0; r < rows; ++r) {
      const int64_t row = first_row + r;
      const int64_t i = row / k;
      // The same per-image BCE as the ELBO (bce_kl_loss with no latent terms).
      double recon = 0;
      cpu::bce_kl_loss<float>(dlogits.data(), &recon, nullptr,
                              logits.data() + size_t(r) * kImagePixels, x + i * kImagePixels,
                              nullptr, nullptr, 1, kImagePixels, 0, 1.0);
      double zz = 0, ee = 0, lv = 0;
      for (int j = 0; j < dim; ++j) {
        const double zj = z[size_t(r) * dim + j], ej = eps[size_t(r) * dim + j];
        zz += zj * zj;
        ee += ej * ej;
        lv += double(logvar[i * dim + j]);
      }
      // log p(x|z) + log N(z; 0, I) - log N(z; mu, sigma^2), with (z - mu) / sigma = eps.
      log_w[row] = -recon - 0.5 * zz + 0.5 * ee + 0.5 * lv;
    }
  }
}

IwaeStats evaluate_iwae(Inference& model, const ImageSet& images, int k, uint64_t seed,
                        int64_t limit, int max_rows, const ProgressFn& progress) {
  const int64_t n = images_to_use(images, limit, "evaluate_iwae");
  if (k < 1) throw Error("evaluate_iwae: K must be at least 1");
  if (max_rows < 1) throw Error("evaluate_iwae: max_rows must be positive");
  const int dim = model.desc().latent_dim;
  // Images per group: enough that a group's K decodes fill about max_rows rows.
  const int group = int(std::min<int64_t>({std::max(1, max_rows / k), kEvalChunk, n}));
  std::vector<float> x(size_t(group) * kImagePixels), mu(size_t(group) * dim), logvar(mu.size());
  std::vector<double> log_w(size_t(group) * k);
  std::vector<int32_t> index;
  IwaeStats s;
  s.samples = k;
  s.per_image.resize(size_t(n));
  for (int64_t first = 0; first < n; first += group) {
    const int count = int(std::min<int64_t>(group, n - first));
    gather_range(x.data(), images, first, count, index);
    model.encode(mu.data(), logvar.data(), x.data(), count);
    iwae_log_weights(log_w.data(), model, x.data(), mu.data(), logvar.data(), count, k, seed, first,
                     max_rows);
    for (int i = 0; i < count; ++i) {
      const double v = -log_mean_exp(log_w.data() + size_t(i) * k, k);
      if (!std::isfinite(v))
        throw Error("evaluate_iwae: the estimate for image " + std::to_string(first + i) +
                    " is not finite (the model's outputs are not finite)");
      s.per_image[size_t(first + i)] = v;
    }
    if (progress) progress(first + count, n);
  }
  s.images = n;
  double sum = 0;
  for (const double v : s.per_image) sum += v;
  s.mean = sum / double(n);
  double ss = 0;
  for (const double v : s.per_image) ss += (v - s.mean) * (v - s.mean);
  if (n > 1) s.std_error = std::sqrt(ss / double(n - 1) / double(n));
  return s;
}

}  // namespace cuvae
