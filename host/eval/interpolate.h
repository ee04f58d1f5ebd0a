// Latent interpolation, the picture of `cuvae interpolate`: the decoder's output along the path
// between the z_mean of two images.
//
// Math: for a pair of images with a = z_mean(first), b = z_mean(second) (the encoder's mu, as
// the reconstructions use it), step k of K (K >= 2) sits at t_k = k / (K - 1) and shows
// sigmoid(decode(z(t_k))), the Bernoulli mean, drawn as the reconstructions draw it:
//   linear   z(t) = (1 - t) a + t b
//   slerp    z(t) = sin((1 - t) W) / sin W a + sin(t W) / sin W b,  cos W = a.b / (|a| |b|)
//            (Shoemake's spherical interpolation: along the great circle through a and b, its
//            norm |a| all the way when |a| = |b|); linear where it is undefined or unstable:
//            a or b (near) zero, or a and b (anti)parallel (sin W < kSlerpMinSin).
// Both are computed in double; at t = 0 and t = 1 the coefficients are exactly (1, 0) and (0, 1),
// so the first and last steps are z_mean(first) and z_mean(second) bit for bit and decode to
// what `cuvae reconstruct` shows for those images.
// The fast CPU engine's kernels (and maybe the GPU's) depend on the batch size, so there "bit
// for bit" holds for the same batch only, and otherwise to float rounding.
// Slerp is for latent dim 3 or more: under the N(0, I) prior latents of many dimensions lie
// near the shell |z| = sqrt(D), which the straight line between two of them cuts inside; a plane
// has no such shell, so a model of latent dim 1 or 2 refuses it.
//
// Pairs drawn at random (draw_pairs): Philox, as every random number of cuvae, so a seed gives
// the same pairs on every machine and engine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "host/core/inference.h"
#include "host/eval/pictures.h"
#include "host/io/idx.h"
#include "host/io/png.h"

namespace cuvae {

enum class LatentPath { Linear, Slerp };
const char* latent_path_name(LatentPath p);  // "linear" / "slerp"

constexpr int kMinInterpSteps = 2;
constexpr int kMaxInterpSteps = 100;
constexpr int kMaxInterpPairs = 100;
constexpr int kMinSlerpDim = 3;
constexpr double kSlerpMinSin = 1e-6;  // below: (anti)parallel, interpolate linearly
constexpr double kSlerpMinNorm = 1e-12;

// t_k = k / (K - 1): exactly 0 for k = 0 and exactly 1 for k = K - 1.
double step_t(int k, int steps);
// z(t) between a and b (dim floats each) into out (dim floats).
void lerp_latent(float* out, const float* a, const float* b, int dim, double t);
void slerp_latent(float* out, const float* a, const float* b, int dim, double t);

// Two images of a split, by index.
struct ImagePair {
  int64_t first = 0, second = 0;
  bool operator==(const ImagePair& o) const { return first == o.first && second == o.second; }
};

// `count` pairs of indices into `labels`, the two labels of each pair different. Pair p's first
// image is uniform over all images, its second uniform over the images of the other labels:
// each from 64 bits of random_words(seed, Stream::Data, kPairStreamTag, 2p + {0, 1}), reduced
// modulo the number of candidates. InputError when every image has the same label.
constexpr uint64_t kPairStreamTag = 102;  // after kSampleStreamTag 100, the scatter's jitter 101
std::vector<ImagePair> draw_pairs(const LabelSet& labels, int count, uint64_t seed);

// The latent paths and their decoded images.
struct Interpolation {
  LatentPath path = LatentPath::Linear;
  int steps = 0;  // K
  int dim = 0;    // D
  std::vector<ImagePair> pairs;
  std::vector<float> z;        // (pairs, K, D): z(t_k) of each pair
  std::vector<float> decoded;  // (pairs, K, 784): sigmoid(decode(z)) in [0, 1]
};

// InputError when steps, the pair count or an index is out of range, or slerp is asked of a
// model of latent dim below kMinSlerpDim.
Interpolation interpolate(Inference& model, const ImageSet& images,
                          const std::vector<ImagePair>& pairs, int steps, LatentPath path);

// ---- the picture (pixels; kTile, kTileGap, kPicturePad, kTitleBand from pictures.h) ----------
// Under the title (the path, the split, K) a key line; then one block per pair: a caption
// "#I (label) -> #J (label)" above a row holding the first original, the K decoded steps and the
// second original. The originals stand kOriginalGap apart from the steps, framed in
// kOriginalColour. A path of more than kInterpLineSteps steps wraps onto further lines of the
// same block, the first original on the first line, the second on the last:
//   cols = min(K, kInterpLineSteps), lines = ceil(K / kInterpLineSteps)
//   width  = 2 kPicturePad + 2 (kTile + kOriginalGap) + cols kTile + (cols - 1) kTileGap
//   height = 2 kPicturePad + kTitleBand + kKeyBand
//            + pairs (kPairCaption + lines kTile + (lines - 1) kTileGap) + (pairs - 1) kPairGap
constexpr int kInterpLineSteps = 20;
constexpr int kOriginalGap = 12;
constexpr int kOriginalFrame = 2;  // frame width, drawn in the gap around an original
constexpr int kKeyBand = 28;
constexpr int kPairCaption = 24;
constexpr int kPairGap = 14;
constexpr Rgb kOriginalColour{255, 127, 14};  // tab10 orange

int interpolation_width(int steps);
int interpolation_height(int pairs, int steps);

// `split` names the images' split in the title ("test", "train").
void write_interpolation(const std::string& path, const Interpolation& r, const Dataset& data,
                         const std::string& split);

}  // namespace cuvae
