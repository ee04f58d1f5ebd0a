// Evaluation (evaluate.h).
#include "host/evaluate.h"

#include <algorithm>
#include <vector>

#include "host/batch.h"
#include "host/cpu_ref.h"
#include "host/error.h"
#include "host/philox.h"

namespace cuvae {

void eval_noise(float* eps, uint64_t seed, int64_t index, int sample, int latent_dim) {
  for (int j = 0; j < latent_dim; ++j) {
    const Philox4 w = random_words(seed, Stream::Eval, uint64_t(index),
                                   uint32_t(sample) * uint32_t(latent_dim) + uint32_t(j));
    eps[j] = normal_from(w.v[0], w.v[1]);
  }
}

ElboStats evaluate_elbo(Inference& model, const ImageSet& images, uint64_t seed, int64_t limit) {
  const int64_t n = limit > 0 ? std::min(limit, images.count) : images.count;
  if (n < 1) throw Error("evaluate_elbo: no images");
  if (images.rows * images.cols != kImagePixels) throw Error("evaluate_elbo: images not 28x28");
  const int dim = model.desc().latent_dim;
  constexpr int kChunk = 512;
  std::vector<float> x(size_t(kChunk) * kImagePixels), mu(size_t(kChunk) * dim),
      logvar(mu.size()), eps(mu.size()), z(mu.size()), logits(x.size()), dlogits(x.size());
  std::vector<int32_t> index(kChunk);
  ElboStats s;
  double recon_sum = 0, kl_sum = 0;
  for (int64_t first = 0; first < n; first += kChunk) {
    const int count = int(std::min<int64_t>(kChunk, n - first));
    for (int i = 0; i < count; ++i) index[size_t(i)] = int32_t(first + i);
    gather_batch(x.data(), images.pixels.data(), index.data(), count, kImagePixels);
    model.encode(mu.data(), logvar.data(), x.data(), count);
    for (int i = 0; i < count; ++i) eval_noise(eps.data() + size_t(i) * dim, seed, first + i, 0, dim);
    cpu::reparam_forward(z.data(), mu.data(), logvar.data(), eps.data(), size_t(count) * dim);
    model.decode(logits.data(), z.data(), count);
    const cpu::LossParts p =
        cpu::bce_kl_loss(dlogits.data(), nullptr, nullptr, logits.data(), x.data(), mu.data(),
                         logvar.data(), count, kImagePixels, dim, 1.0);
    recon_sum += p.recon * count;
    kl_sum += p.kl * count;
    s.images += count;
  }
  s.recon = recon_sum / double(s.images);
  s.kl = kl_sum / double(s.images);
  return s;
}

}  // namespace cuvae
