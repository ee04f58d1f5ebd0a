// Evaluation of a trained model on a set of images (negative ELBO and its parts, in nats per
// image). The noise is drawn from Philox keyed by (seed, image index), so a result depends only
// on the model, the images and the seed, not on batching or the device.
#pragma once

#include <cstdint>

#include "host/idx.h"
#include "host/inference.h"

namespace cuvae {

struct ElboStats {
  int64_t images = 0;
  double recon = 0;  // mean BCE summed over the pixels
  double kl = 0;     // mean KL(q(z|x) || N(0, I))
  double elbo_loss() const { return recon + kl; }                  // negative ELBO
  double loss(double beta) const { return recon + beta * kl; }     // the training loss
};

// One z sample per image: z = mu + exp(logvar/2) eps, eps = N(0,1) from (seed, Stream::Eval,
// image index). limit > 0 evaluates only the first `limit` images.
ElboStats evaluate_elbo(Inference& model, const ImageSet& images, uint64_t seed,
                        int64_t limit = 0);

// eps for image `index`, sample `sample` (D values).
void eval_noise(float* eps, uint64_t seed, int64_t index, int sample, int latent_dim);

}  // namespace cuvae
