// Evaluation of a trained model on a set of images, in nats per image.
//
// Negative ELBO (one z sample per image):
//   -ELBO(x) = BCE(x, decode(z)) + KL(q(z|x) || N(0, I)),  z = mu + exp(logvar/2) eps
// with BCE summed over the 784 pixels and the KL in closed form (cpu_ref.h).
//
// Importance-weighted bound (Burda et al., "Importance Weighted Autoencoders", 2016) with K
// samples z_k = mu + sigma eps_k from q(z|x):
//   log w_k = log p(x|z_k) + log N(z_k; 0, I) - log N(z_k; mu, sigma^2)
//           = -BCE(x, decode(z_k)) - 1/2 |z_k|^2 + 1/2 |eps_k|^2 + 1/2 sum_j logvar_j
//   (the (2 pi)^(D/2) factors cancel), and the estimate of -log p(x) is
//   IWAE_K(x) = -(logsumexp_k log w_k - log K)
// computed in double with the maximum subtracted. E[IWAE_K] is an upper bound on -log p(x)
// that does not increase with K and equals the negative ELBO at K = 1 in expectation; for
// K = 1 and the same eps, IWAE_1 = BCE + (1/2 |z|^2 - 1/2 |eps|^2 - 1/2 sum logvar), i.e.
// the ELBO with the KL replaced by its one-sample estimate log q(z|x) - log p(z).
//
// log p(x|z) = -BCE is the continuous-target Bernoulli likelihood the training loss uses. For
// binary x it is a normalized density; for grey-level x in [0, 1] (MNIST / 255) it is not,
// and the figures are the usual "nats" of the Keras and PyTorch VAE examples, comparable with
// each other but not with likelihoods reported on binarized MNIST.
//
// The noise of image i, sample k, is Philox keyed by (seed, Stream::Eval, i, k D + j), so a
// result depends only on the model, the images and the seed, not on batching or the device.
// Sample 0 is the eps of the ELBO, so the K samples of IWAE_K are nested in those of K' > K.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "host/core/inference.h"
#include "host/io/idx.h"

namespace cuvae {

struct ElboStats {
  int64_t images = 0;
  double recon = 0;                                             // mean BCE summed over the pixels
  double kl = 0;                                                // mean KL(q(z|x) || N(0, I))
  double elbo_loss() const { return recon + kl; }               // negative ELBO
  double loss(double beta) const { return recon + beta * kl; }  // the training loss
};

// One z sample per image: z = mu + exp(logvar/2) eps, eps = N(0,1) from (seed, Stream::Eval,
// image index). limit > 0 evaluates only the first `limit` images.
ElboStats evaluate_elbo(Inference& model, const ImageSet& images, uint64_t seed, int64_t limit = 0);

// The per-image results behind evaluate_elbo, delivered chunk by chunk (images first ..
// first + count - 1, in order): the pixels x (count, 784) in [0, 1], the noise eps, mu and
// logvar (count, D), and recon, kl (count). The numbers do not depend on `chunk` (images per
// encode/decode call); the pointers are valid only during the call.
using ElboChunkFn =
    std::function<void(int64_t first, int count, const float* x, const float* eps, const float* mu,
                       const float* logvar, const double* recon, const double* kl)>;
constexpr int kEvalChunk = 512;
void evaluate_elbo_chunks(Inference& model, const ImageSet& images, uint64_t seed, int64_t limit,
                          const ElboChunkFn& on_chunk, int chunk = kEvalChunk);

// eps for image `index`, sample `sample` (D values).
void eval_noise(float* eps, uint64_t seed, int64_t index, int sample, int latent_dim);

// log(mean_i exp(v_i)) in double, stable for any finite v (the maximum is subtracted); NaN if
// any v is NaN, -inf if all are -inf.
double log_mean_exp(const double* v, int n);

// log w (count, K), row-major, for images whose pixels x (count, 784), mu and logvar (count,
// D, from encode) are given and whose dataset indices are first_index, first_index + 1, ...
// (they key the noise). Decodes at most max_rows latents per call.
constexpr int kIwaeRows = 1024;
void iwae_log_weights(double* log_w, Inference& model, const float* x, const float* mu,
                      const float* logvar, int count, int k, uint64_t seed, int64_t first_index,
                      int max_rows = kIwaeRows);

struct IwaeStats {
  int64_t images = 0;
  int samples = 0;  // K
  double mean = 0;  // mean over the images of IWAE_K(x), nats
  // Sample standard deviation of IWAE_K(x) / sqrt(images); none for one image (undefined).
  std::optional<double> std_error;
  std::vector<double> per_image;  // IWAE_K(x) of each image
};

// Called after each group of images with (images done, images in all).
using ProgressFn = std::function<void(int64_t done, int64_t total)>;

// IWAE_K of the first `limit` images (all when limit <= 0), K >= 1. Throws Error if any
// estimate is not finite (a broken model never yields a number).
IwaeStats evaluate_iwae(Inference& model, const ImageSet& images, int k, uint64_t seed,
                        int64_t limit = 0, int max_rows = kIwaeRows,
                        const ProgressFn& progress = nullptr);

}  // namespace cuvae
