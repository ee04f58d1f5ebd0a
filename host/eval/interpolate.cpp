// Latent interpolation (interpolate.h): the paths, the pairs and the picture.
#include "host/eval/interpolate.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "host/core/error.h"
#include "host/core/philox.h"
#include "host/core/text.h"
#include "host/eval/plot.h"

namespace cuvae {
namespace {

// 64 random bits of draw `i` of the pair stream, reduced modulo m (m >= 1); the bias of the
// reduction is below m / 2^64, far under anything a picture could show.
uint64_t pair_draw(uint64_t seed, uint32_t i, uint64_t m) {
  const Philox4 w = random_words(seed, Stream::Data, kPairStreamTag, i);
  return ((uint64_t(w.v[0]) << 32) | w.v[1]) % m;
}

void check_interpolation(const Inference& model, const ImageSet& images,
                         const std::vector<ImagePair>& pairs, int steps, LatentPath path) {
  const std::string what = "interpolation";
  if (images.rows != kImageSide || images.cols != kImageSide)
    throw InputError(what + ": " + images.path + " holds " + std::to_string(images.rows) + "x" +
                     std::to_string(images.cols) + " images, expected 28x28");
  if (steps < kMinInterpSteps || steps > kMaxInterpSteps)
    throw InputError(what + ": steps must be between " + std::to_string(kMinInterpSteps) + " and " +
                     std::to_string(kMaxInterpSteps) + ", got " + std::to_string(steps));
  if (pairs.empty() || pairs.size() > size_t(kMaxInterpPairs))
    throw InputError(what + ": between 1 and " + std::to_string(kMaxInterpPairs) + " pairs, got " +
                     std::to_string(pairs.size()));
  for (const ImagePair& p : pairs)
    for (const int64_t i : {p.first, p.second})
      if (i < 0 || i >= images.count)
        throw InputError(what + ": image " + std::to_string(i) + " does not exist (" + images.path +
                         " holds " + counted(images.count, "image") + ")");
  const int dim = model.desc().latent_dim;
  if (path == LatentPath::Slerp && dim < kMinSlerpDim)
    throw InputError(what + ": slerp needs a latent dim of " + std::to_string(kMinSlerpDim) +
                     " or more, the model has " + std::to_string(dim));
}

// The pair's images, first and second after each other, as one set to encode.
ImageSet gather_pairs(const ImageSet& images, const std::vector<ImagePair>& pairs) {
  ImageSet sel;
  sel.path = images.path;
  sel.rows = images.rows;
  sel.cols = images.cols;
  sel.count = int64_t(pairs.size()) * 2;
  sel.pixels.reserve(size_t(sel.count) * kImagePixels);
  for (const ImagePair& p : pairs)
    for (const int64_t i : {p.first, p.second}) {
      const auto src = images.pixels.begin() + ptrdiff_t(i) * kImagePixels;
      sel.pixels.insert(sel.pixels.end(), src, src + kImagePixels);
    }
  return sel;
}

// A frame kOriginalFrame pixels wide just outside the tile at (x, y).
void frame_tile(Canvas& c, int x, int y) {
  for (int k = 1; k <= kOriginalFrame; ++k)
    c.frame(x - k, y - k, kTile + 2 * k, kTile + 2 * k, kOriginalColour);
}

void draw_original(Canvas& c, int x, int y, const ImageSet& images, int64_t index) {
  std::vector<float> v(kImagePixels);
  const uint8_t* src = images.pixels.data() + size_t(index) * kImagePixels;
  for (int j = 0; j < kImagePixels; ++j) v[size_t(j)] = float(src[j]) / 255.0f;
  c.blit_gray(x, y, v.data(), kImageSide, kImageSide, kTileScale);
  frame_tile(c, x, y);
}

// The title and the key line above the pairs.
void draw_headings(Canvas& c, const Interpolation& r, const std::string& split) {
  const std::string path = latent_path_name(r.path);
  const std::string k = std::to_string(r.steps) + " steps";
  const int x_min = kPicturePad, x_max = c.width() - kPicturePad;
  draw_fitting(c, c.width() / 2, kPicturePad,
               {path + " interpolation of z_mean, " + split + " split, " + k,
                path + ", " + split + " split, " + k, path + ", " + k, path},
               x_min, x_max);
  // The key: a framed swatch, then what it marks.
  constexpr int kSwatch = 14;
  const int y = kPicturePad + kTitleBand + (kCapPx - kSwatch) / 2;
  for (int i = 0; i < kOriginalFrame; ++i)
    c.frame(x_min + i, y + i, kSwatch - 2 * i, kSwatch - 2 * i, kOriginalColour);
  const int text_x = x_min + kSwatch + 8;
  draw_fitting(c, text_x, kPicturePad + kTitleBand,
               {"original, and between them decoder(z(t)), t = 0 .. 1",
                "original, then decoded t = 0 .. 1", "original"},
               text_x, x_max);
}

std::string caption(const Dataset& data, const ImagePair& p) {
  const auto one = [&](int64_t i) {
    return "#" + std::to_string(i) + " (" + std::to_string(int(data.labels.labels[size_t(i)])) +
           ")";
  };
  return one(p.first) + " -> " + one(p.second);
}

}  // namespace

const char* latent_path_name(LatentPath p) {
  return p == LatentPath::Slerp ? "slerp" : "linear";
}

double step_t(int k, int steps) {
  return steps <= 1 ? 0.0 : double(k) / double(steps - 1);
}

void lerp_latent(float* out, const float* a, const float* b, int dim, double t) {
  for (int j = 0; j < dim; ++j) out[j] = float((1.0 - t) * double(a[j]) + t * double(b[j]));
}

void slerp_latent(float* out, const float* a, const float* b, int dim, double t) {
  double aa = 0, bb = 0, ab = 0;
  for (int j = 0; j < dim; ++j) {
    aa += double(a[j]) * a[j];
    bb += double(b[j]) * b[j];
    ab += double(a[j]) * b[j];
  }
  const double na = std::sqrt(aa), nb = std::sqrt(bb);
  if (!(na >= kSlerpMinNorm && nb >= kSlerpMinNorm)) return lerp_latent(out, a, b, dim, t);
  const double w = std::acos(std::clamp(ab / (na * nb), -1.0, 1.0));
  const double s = std::sin(w);
  if (!(s >= kSlerpMinSin)) return lerp_latent(out, a, b, dim, t);
  // At t = 0: sin(w) / s = 1 and sin(0) = 0 exactly (and the reverse at t = 1).
  const double ca = std::sin((1.0 - t) * w) / s, cb = std::sin(t * w) / s;
  for (int j = 0; j < dim; ++j) out[j] = float(ca * double(a[j]) + cb * double(b[j]));
}

std::vector<ImagePair> draw_pairs(const LabelSet& labels, int count, uint64_t seed) {
  const std::string what = "pairs";
  if (count < 1 || count > kMaxInterpPairs)
    throw InputError(what + ": count must be between 1 and " + std::to_string(kMaxInterpPairs) +
                     ", got " + std::to_string(count));
  const std::vector<uint8_t>& l = labels.labels;
  const uint64_t n = l.size();
  if (n == 0) throw InputError(what + ": " + labels.path + " holds no labels");
  std::array<uint64_t, 256> per_label{};
  for (const uint8_t v : l) ++per_label[v];
  if (per_label[l[0]] == n)
    throw InputError(what + ": every image of " + labels.path + " has label " +
                     std::to_string(int(l[0])) + ", a pair needs two different labels");
  std::vector<ImagePair> pairs(static_cast<size_t>(count));
  for (int p = 0; p < count; ++p) {
    const uint64_t i = pair_draw(seed, uint32_t(2 * p), n);
    // The r-th image (in index order) whose label is not l[i].
    uint64_t r = pair_draw(seed, uint32_t(2 * p + 1), n - per_label[l[i]]);
    uint64_t j = 0;
    for (;; ++j)
      if (l[j] != l[i] && r-- == 0) break;
    pairs[size_t(p)] = ImagePair{int64_t(i), int64_t(j)};
  }
  return pairs;
}

Interpolation interpolate(Inference& model, const ImageSet& images,
                          const std::vector<ImagePair>& pairs, int steps, LatentPath path) {
  check_interpolation(model, images, pairs, steps, path);
  Interpolation r;
  r.path = path;
  r.steps = steps;
  r.dim = model.desc().latent_dim;
  r.pairs = pairs;
  const int64_t n = int64_t(pairs.size());
  const size_t dim = size_t(r.dim);
  const std::vector<float> mu = encode_means(model, gather_pairs(images, pairs), 2 * n);
  r.z.resize(size_t(n) * size_t(steps) * dim);
  for (size_t p = 0; p < size_t(n); ++p) {
    const float* a = &mu[2 * p * dim];
    const float* b = &mu[(2 * p + 1) * dim];
    for (int k = 0; k < steps; ++k) {
      float* z = &r.z[(p * size_t(steps) + size_t(k)) * dim];
      if (path == LatentPath::Slerp)
        slerp_latent(z, a, b, r.dim, step_t(k, steps));
      else
        lerp_latent(z, a, b, r.dim, step_t(k, steps));
    }
  }
  r.decoded = decode_means(model, r.z, n * steps);
  return r;
}

// ---- the picture ---------------------------------------------------------------------------
int interpolation_width(int steps) {
  const int cols = std::min(steps, kInterpLineSteps);
  return 2 * kPicturePad + 2 * (kTile + kOriginalGap) + cols * kTile + (cols - 1) * kTileGap;
}

int interpolation_height(int pairs, int steps) {
  const int lines = (steps + kInterpLineSteps - 1) / kInterpLineSteps;
  return 2 * kPicturePad + kTitleBand + kKeyBand +
         pairs * (kPairCaption + lines * kTile + (lines - 1) * kTileGap) + (pairs - 1) * kPairGap;
}

void write_interpolation(const std::string& path, const Interpolation& r, const Dataset& data,
                         const std::string& split) {
  const int n = int(r.pairs.size()), k_steps = r.steps;
  if (n < 1 || k_steps < 1 || r.decoded.size() != size_t(n) * size_t(k_steps) * kImagePixels)
    throw Error("interpolation picture: " + std::to_string(n) + " pairs x " +
                std::to_string(k_steps) + " steps do not match the decoded images");
  const int cols = std::min(k_steps, kInterpLineSteps);
  const int lines = (k_steps + kInterpLineSteps - 1) / kInterpLineSteps;
  const int pitch = kTile + kTileGap;
  Canvas c(interpolation_width(k_steps), interpolation_height(n, k_steps), kWhite);
  const int x_first = kPicturePad, x_steps = x_first + kTile + kOriginalGap;
  const int x_second = x_steps + cols * kTile + (cols - 1) * kTileGap + kOriginalGap;
  int y = kPicturePad + kTitleBand + kKeyBand;
  for (int p = 0; p < n; ++p) {
    const ImagePair& pair = r.pairs[size_t(p)];
    const std::string text = caption(data, pair);
    draw_fitting(c, x_first, y,
                 {text, "#" + std::to_string(pair.first) + " -> #" + std::to_string(pair.second)},
                 x_first, c.width() - kPicturePad);
    const int y0 = y + kPairCaption;
    draw_original(c, x_first, y0, data.images, pair.first);
    for (int k = 0; k < k_steps; ++k) {
      const float* img = &r.decoded[(size_t(p) * size_t(k_steps) + size_t(k)) * kImagePixels];
      c.blit_gray(x_steps + (k % kInterpLineSteps) * pitch, y0 + (k / kInterpLineSteps) * pitch,
                  img, kImageSide, kImageSide, kTileScale);
    }
    draw_original(c, x_second, y0 + (lines - 1) * pitch, data.images, pair.second);
    y = y0 + lines * kTile + (lines - 1) * kTileGap + kPairGap;
  }
  draw_headings(c, r, split);
  write_png(path, c);
}

}  // namespace cuvae
