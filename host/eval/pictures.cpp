// The pictures of a trained VAE (pictures.h), drawn on a Canvas and written by write_png.
//
// Math: a decoded digit is p = sigmoid(logits) = 1 / (1 + exp(-l)) per pixel (the Bernoulli
// mean of the decoder), drawn as gray round(255 p). The latent grid puts
// z[dim_x] = grid_value(col), z[dim_y] = grid_value(n - 1 - row), every other z[k] = 0 in
// cell (row, col). The scatter uses z_mean = encoder.mu(x), the reconstructions
// sigmoid(decode(z_mean)), the samples sigmoid(decode(z)) with z ~ N(0, I) from Philox.
// The axes, ticks and legends are plot.h's.
#include "host/eval/pictures.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "host/core/error.h"
#include "host/core/philox.h"
#include "host/core/text.h"
#include "host/eval/plot.h"
#include "host/io/png.h"

namespace cuvae {
namespace {

constexpr int kChunk = 1024;                 // images per encode / decode call
constexpr uint64_t kScatterJitterTag = 101;  // Philox counter word of the D == 1 jitter

float sigmoid(float l) {
  return 1.0f / (1.0f + std::exp(-l));
}

void check_images(const ImageSet& images, const std::string& what) {
  if (images.rows != kImageSide || images.cols != kImageSide)
    throw InputError(what + ": " + images.path + " holds " + std::to_string(images.rows) + "x" +
                     std::to_string(images.cols) + " images, expected 28x28");
  if (images.count < 1) throw InputError(what + ": " + images.path + " holds no images");
}

std::string dim_name(int d) {
  return "z[" + std::to_string(d) + "]";
}

std::string split_words(Split s) {
  return std::string(split_name(s)) + " split";
}

// Throws unless dim_x and dim_y are two different dimensions of a latent space of `latent_dim`
// (dim_y is unused, so unchecked, when latent_dim is 1).
void check_latent_dims(const std::string& what, int dim_x, int dim_y, int latent_dim) {
  const std::string range =
      " (latent dim " + std::to_string(latent_dim) + ": 0.." + std::to_string(latent_dim - 1) + ")";
  if (dim_x < 0 || dim_x >= latent_dim)
    throw InputError(what + ": x dimension " + std::to_string(dim_x) + " does not exist" + range);
  if (latent_dim == 1) return;  // one dimension, z[0]; dim_y unused
  if (dim_y < 0 || dim_y >= latent_dim)
    throw InputError(what + ": y dimension " + std::to_string(dim_y) + " does not exist" + range);
  if (dim_x == dim_y)
    throw InputError(what + ": the x and y dimensions must differ, both are " +
                     std::to_string(dim_x));
}

}  // namespace

// ---- model calls ---------------------------------------------------------------------------
std::vector<float> decode_means(Inference& model, const std::vector<float>& z, int64_t count) {
  const int dim = model.desc().latent_dim;
  std::vector<float> p(size_t(count) * kImagePixels);
  for (int64_t first = 0; first < count; first += kChunk) {
    const int n = int(std::min<int64_t>(kChunk, count - first));
    model.decode(p.data() + size_t(first) * kImagePixels, z.data() + size_t(first) * dim, n);
  }
  for (float& v : p) v = sigmoid(v);
  return p;
}

std::vector<float> encode_means(Inference& model, const ImageSet& images, int64_t count) {
  const int dim = model.desc().latent_dim;
  std::vector<float> mu(size_t(count) * dim), logvar(size_t(kChunk) * dim);
  std::vector<float> x(size_t(kChunk) * kImagePixels);
  for (int64_t first = 0; first < count; first += kChunk) {
    const int n = int(std::min<int64_t>(kChunk, count - first));
    const uint8_t* src = images.pixels.data() + size_t(first) * kImagePixels;
    for (size_t i = 0; i < size_t(n) * kImagePixels; ++i) x[i] = float(src[i]) / 255.0f;
    model.encode(mu.data() + size_t(first) * dim, logvar.data(), x.data(), n);
  }
  return mu;
}

std::vector<float> reconstruction_means(Inference& model, const ImageSet& images, int64_t count) {
  return decode_means(model, encode_means(model, images, count), count);
}

// ---- latent grid ---------------------------------------------------------------------------
double grid_value(int i, int n, double extent) {
  if (n <= 1) return 0.0;
  return -extent + 2.0 * extent * double(i) / double(n - 1);
}

void check_grid_options(const GridOptions& opt, int latent_dim) {
  if (opt.n < 1 || opt.n > kGridMaxN)
    throw InputError("latent grid: n must be between 1 and " + std::to_string(kGridMaxN) +
                     ", got " + std::to_string(opt.n));
  if (!std::isfinite(opt.extent) || opt.extent < kGridMinExtent || opt.extent > kGridMaxExtent)
    throw InputError("latent grid: extent must be a finite number between 1e-6 and 1e6, got " +
                     exact_text(opt.extent));
  check_latent_dims("latent grid", opt.dim_x, opt.dim_y, latent_dim);
}

void write_latent_grid(const std::string& path, Inference& model, const GridOptions& opt) {
  const int dim = model.desc().latent_dim;
  check_grid_options(opt, dim);
  const int n = opt.n, rows = dim == 1 ? 1 : n;

  std::vector<float> z(size_t(rows) * n * dim, 0.0f);
  for (int r = 0; r < rows; ++r)
    for (int col = 0; col < n; ++col) {
      float* zc = &z[(size_t(r) * n + col) * dim];
      zc[opt.dim_x] = float(grid_value(col, n, opt.extent));
      if (dim > 1) zc[opt.dim_y] = float(grid_value(n - 1 - r, n, opt.extent));
    }
  const std::vector<float> p = decode_means(model, z, int64_t(rows) * n);

  const PlotArea plot{kAxesLeft, kAxesTop, n * kGridCell, rows * kGridCell};
  Canvas c(kAxesLeft + plot.w + kAxesRight, kAxesTop + plot.h + kAxesBottom, kWhite);
  for (int r = 0; r < rows; ++r)
    for (int col = 0; col < n; ++col)
      c.blit_gray(plot.x + col * kGridCell, plot.y + r * kGridCell,
                  &p[(size_t(r) * n + col) * kImagePixels], kImageSide, kImageSide);
  draw_frame(c, plot);

  // Cell centres carry the values: the first at -extent, the last at +extent.
  const int half = kGridCell / 2;
  const double lo = n > 1 ? -opt.extent : 0.0, hi = n > 1 ? opt.extent : 0.0;
  const AxisMap xmap{lo, hi, plot.x + half, plot.x + (n - 1) * kGridCell + half};
  // Both axes span the same values over the same pixels: one set of ticks (spaced for the
  // side-by-side x labels) serves both; the end ticks show the extent.
  const std::vector<Tick> ticks = ticks_with_ends(lo, hi, xmap.px_per_unit(), true);
  draw_x_axis(c, plot, xmap, ticks, dim_name(opt.dim_x), false);
  std::vector<std::string> title;
  if (dim == 1) {
    title = {"decoded digits along z[0] (latent dim 1)", "z[0] only (latent dim 1)",
             "latent dim 1"};
  } else {
    const AxisMap ymap{lo, hi, plot.bottom() - 1 - half, plot.y + half};
    draw_y_axis(c, plot, ymap, ticks, dim_name(opt.dim_y), false);
    if (dim == 2)
      title = {"decoded digits over the latent plane", "decoded latent grid"};
    else
      title = {"decoded grid, the other " + std::to_string(dim - 2) + " latent dims 0",
               "other latent dims 0"};
  }
  draw_fitting(c, plot.x + plot.w / 2, kPicturePad, title, kPicturePad, c.width() - kPicturePad);
  write_png(path, c);
}

// ---- scatter -------------------------------------------------------------------------------
int scatter_dot_radius(int64_t count) {
  if (count <= 50) return 4;
  if (count <= 500) return 3;
  if (count <= 3000) return 2;
  return 1;
}

void check_scatter_options(const ScatterOptions& opt, int latent_dim) {
  if (opt.limit < 0)
    throw InputError("scatter: limit must be >= 0, got " + std::to_string(opt.limit));
  check_latent_dims("scatter", opt.dim_x, opt.dim_y, latent_dim);
}

namespace {

// The title candidates of a scatter, longest first; every one names the split.
std::vector<std::string> scatter_titles(const ScatterOptions& opt, int dim, int64_t count,
                                        int64_t outside) {
  const std::string split = split_words(opt.split);
  std::string title = "z_mean of " + with_commas(count) + (count == 1 ? " image" : " images");
  if (dim == 1) title += " by label";
  title += ", " + split;
  const std::string note =
      outside > 0 ? ", " + with_commas(outside) + " outside the axes" : std::string();
  std::string dims;  // which of the latent dims the axes show
  if (dim == 1) dims = " (latent dim 1)";
  if (dim > 2)
    dims = " (" + dim_name(opt.dim_x) + ", " + dim_name(opt.dim_y) + " of " + std::to_string(dim) +
           ")";
  // The count of points outside the axes matters more than the dims, which the axes name.
  return {title + dims + note, title + note, title + dims, title, split};
}

}  // namespace

void write_scatter(const std::string& path, Inference& model, const Dataset& data,
                   const ScatterOptions& opt) {
  const std::string what = "scatter";
  const int dim = model.desc().latent_dim;
  check_scatter_options(opt, dim);
  check_images(data.images, what);
  const int64_t count = opt.limit > 0 ? std::min(opt.limit, data.images.count) : data.images.count;
  if (int64_t(data.labels.labels.size()) < count)
    throw InputError(what + ": " + data.labels.path + " holds fewer labels than " +
                     data.images.path + " holds images");
  const std::vector<float> mu = encode_means(model, data.images, count);

  std::vector<double> xs(static_cast<size_t>(count)), ys(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    xs[size_t(i)] = mu[size_t(i) * dim + size_t(opt.dim_x)];
    if (dim >= 2) {
      ys[size_t(i)] = mu[size_t(i) * dim + size_t(opt.dim_y)];
    } else {  // one band per class, jittered so the points do not hide each other
      const Philox4 w = random_words(0, Stream::Data, kScatterJitterTag, uint32_t(i));
      ys[size_t(i)] = data.labels.labels[size_t(i)] + 0.6 * (double(uniform01(w.v[0])) - 0.5);
    }
  }
  const auto [x_lo, x_hi] = robust_range(xs);
  const auto [y_lo, y_hi] = dim >= 2 ? robust_range(ys) : std::pair<double, double>{-0.7, 9.7};

  const PlotArea plot{kAxesLeft, kAxesTop, kScatterPlot, kScatterPlot};
  Canvas c(kAxesLeft + kScatterPlot + kScatterRight, kAxesTop + kScatterPlot + kAxesBottom, kWhite);
  const AxisMap xmap{x_lo, x_hi, plot.x, plot.right() - 1};
  const AxisMap ymap{y_lo, y_hi, plot.bottom() - 1, plot.y};
  draw_x_axis(c, plot, xmap, nice_ticks(x_lo, x_hi, xmap.px_per_unit(), true), dim_name(opt.dim_x),
              true);
  draw_y_axis(c, plot, ymap, nice_ticks(y_lo, y_hi, ymap.px_per_unit(), false),
              dim >= 2 ? dim_name(opt.dim_y) : "label", true);

  const int radius = scatter_dot_radius(count);
  int64_t outside = 0;
  for (int64_t i = 0; i < count; ++i) {
    const double x = xs[size_t(i)], y = ys[size_t(i)];
    if (!(x >= x_lo && x <= x_hi && y >= y_lo && y <= y_hi)) {  // also NaN
      ++outside;
      continue;
    }
    const int px = int(std::lround(xmap.to_px(x))), py = int(std::lround(ymap.to_px(y)));
    const Rgb colour = kClassColors[data.labels.labels[size_t(i)] % 10];
    // Keep the dot inside the plot so it never covers the frame.
    c.disc(std::clamp(px, plot.x + radius, plot.right() - 1 - radius),
           std::clamp(py, plot.y + radius, plot.bottom() - 1 - radius), radius, colour);
  }
  draw_frame(c, plot);

  // Legend: a swatch and the class for each label.
  std::vector<std::pair<std::string, Rgb>> classes;
  for (int k = 0; k < 10; ++k) classes.emplace_back(std::to_string(k), kClassColors[k]);
  draw_legend(c, plot.right() + 24, plot.y, "label", classes);

  draw_fitting(c, plot.x + plot.w / 2, kPicturePad, scatter_titles(opt, dim, count, outside),
               kPicturePad, c.width() - kPicturePad);
  write_png(path, c);
}

// ---- tile sheets ---------------------------------------------------------------------------
TileWrap wrap_tiles(int count) {
  if (count < 1) return {1, 1};
  const int lines = (count + kMaxTilesPerLine - 1) / kMaxTilesPerLine;
  return {lines, (count + lines - 1) / lines};
}

// ---- reconstructions -----------------------------------------------------------------------
void write_reconstructions(const std::string& path, Inference& model, const ImageSet& images,
                           int count, Split split) {
  const std::string what = "reconstructions";
  check_images(images, what);
  const int64_t most = std::min<int64_t>(kMaxReconstructions, images.count);
  if (count < 1 || count > most)
    throw InputError(what + ": count must be between 1 and " + std::to_string(most) + " (" +
                     images.path + " holds " + with_commas(images.count) + " images), got " +
                     std::to_string(count));
  const std::vector<float> p = reconstruction_means(model, images, count);

  const TileWrap wrap = wrap_tiles(count);
  const int strip = wrap.per_line * kTile + (wrap.per_line - 1) * kTileGap;
  const int pair_h = 2 * kTile + kTileGap;  // a line of originals above its reconstructions
  Canvas c(2 * kPicturePad + kRowLabelWidth + strip,
           2 * kPicturePad + kTitleBand + wrap.lines * pair_h + (wrap.lines - 1) * kReconLineGap,
           kWhite);
  const int x0 = kPicturePad + kRowLabelWidth, y0 = kPicturePad + kTitleBand;
  std::vector<float> original(kImagePixels);
  for (int i = 0; i < count; ++i) {
    const uint8_t* src = images.pixels.data() + size_t(i) * kImagePixels;
    for (int j = 0; j < kImagePixels; ++j) original[size_t(j)] = float(src[j]) / 255.0f;
    const int x = x0 + (i % wrap.per_line) * (kTile + kTileGap);
    const int y = y0 + (i / wrap.per_line) * (pair_h + kReconLineGap);
    c.blit_gray(x, y, original.data(), kImageSide, kImageSide, kTileScale);
    c.blit_gray(x, y + kTile + kTileGap, &p[size_t(i) * kImagePixels], kImageSide, kImageSide,
                kTileScale);
  }
  for (int line = 0; line < wrap.lines; ++line) {
    const int y = y0 + line * (pair_h + kReconLineGap);
    ink_text(c, kPicturePad, y + (kTile - kCapPx) / 2, "original");
    ink_text(c, kPicturePad, y + kTile + kTileGap + (kTile - kCapPx) / 2, "decoded");
  }
  const std::string from = split_words(split);
  draw_fitting(
      c, x0 + strip / 2, kPicturePad,
      {"reconstructions of the " + from + ": decoder(z_mean)", from + ": decoder(z_mean)", from},
      kPicturePad, c.width() - kPicturePad);
  write_png(path, c);
}

// ---- samples -------------------------------------------------------------------------------
void write_samples(const std::string& path, Inference& model, int rows, int cols, uint64_t seed) {
  if (rows < 1 || rows > kMaxSampleSide || cols < 1 || cols > kMaxSampleSide)
    throw InputError("samples: rows and cols must be between 1 and " +
                     std::to_string(kMaxSampleSide) + ", got " + std::to_string(rows) + " x " +
                     std::to_string(cols));
  const int dim = model.desc().latent_dim;
  const int64_t count = int64_t(rows) * cols;
  std::vector<float> z(size_t(count) * dim);
  for (size_t i = 0; i < z.size(); ++i) {
    const Philox4 w = random_words(seed, Stream::Data, kSampleStreamTag, uint32_t(i));
    z[i] = normal_from(w.v[0], w.v[1]);
  }
  const std::vector<float> p = decode_means(model, z, count);

  // A row of more than kMaxTilesPerLine samples wraps onto wrap.lines lines.
  const TileWrap wrap = wrap_tiles(cols);
  const int lines = rows * wrap.lines;
  const int sheet_w = wrap.per_line * kTile + (wrap.per_line - 1) * kTileGap;
  Canvas c(2 * kPicturePad + sheet_w,
           2 * kPicturePad + kTitleBand + lines * kTile + (lines - 1) * kTileGap, kWhite);
  const int x0 = kPicturePad, y0 = kPicturePad + kTitleBand;
  for (int r = 0; r < rows; ++r)
    for (int col = 0; col < cols; ++col) {
      const int line = r * wrap.lines + col / wrap.per_line;
      c.blit_gray(x0 + (col % wrap.per_line) * (kTile + kTileGap), y0 + line * (kTile + kTileGap),
                  &p[(size_t(r) * cols + col) * kImagePixels], kImageSide, kImageSide, kTileScale);
    }
  draw_fitting(c, x0 + sheet_w / 2, kPicturePad,
               {"samples: decoded z ~ N(0, I), seed " + std::to_string(seed), "decoded z ~ N(0, I)",
                "z ~ N(0, I)"},
               kPicturePad, c.width() - kPicturePad);
  write_png(path, c);
}

// ---- run pictures --------------------------------------------------------------------------
void write_run_pictures(const std::string& dir, Inference& model, const Dataset& shown,
                        const std::string& suffix, uint64_t seed, Split shown_split) {
  const std::string base = dir + "/";
  for (const int n : {15, 30}) {
    GridOptions g;
    g.n = n;
    write_latent_grid(base + "grid_" + std::to_string(n) + suffix + ".png", model, g);
  }
  if (shown.size() > 0) {
    ScatterOptions scatter;  // z[0], z[1] (z[0] alone at latent dim 1)
    scatter.split = shown_split;
    write_scatter(base + "scatter" + suffix + ".png", model, shown, scatter);
    write_reconstructions(base + "reconstructions" + suffix + ".png", model, shown.images,
                          int(std::min<int64_t>(10, shown.size())), shown_split);
  }
  write_samples(base + "samples" + suffix + ".png", model, 8, 8, seed);
}

}  // namespace cuvae
