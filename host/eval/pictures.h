// The pictures a VAE user looks at, as PNG files (libpng):
//   latent grid    the decoder's output over a regular n x n grid of two latent dimensions
//                  (the others 0), with the axis values written beside it;
//   scatter        z_mean of a labelled set, coloured by class, with axes and a legend;
//   reconstructions originals (top row) above their reconstructions (decoded z_mean);
//   samples        images decoded from z ~ N(0, I).
// The pictures drawn from images (scatter, reconstructions) name their split in the title.
// Tile sheets (reconstructions, samples) hold at most kMaxTilesPerLine digits side by side; a
// longer row wraps onto further lines (wrap_tiles).
// Every decoded digit is the Bernoulli mean sigmoid(logits) drawn as gray round(255 p):
// white ink on black, as MNIST stores it (and as the Keras example shows it, cmap Greys_r).
// Digits are drawn 1:1 (28 x 28 pixels) in the latent grid, like the Keras example, and
// 2x (56 x 56) in the reconstructions and samples, which hold few of them.
//
// Latent dimension 1 (documented choice): the grid is a single row of n digits along z[0]
// (dim_y is ignored, dim_x must be 0) and says "latent dim 1" in its title; the scatter plots
// z_mean[dim_x] (x) against the label (y, one jittered band per class).
// Bad options are InputErrors. Layout constants below give every picture's size in pixels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "host/core/inference.h"
#include "host/core/model.h"
#include "host/io/idx.h"

namespace cuvae {

// ---- layout (pixels) ------------------------------------------------------------------------
constexpr int kTextScale = 2;                   // every text is the 5 x 9 font of png.h drawn 2x
constexpr int kPicturePad = 16;                 // outer margin
constexpr int kTickLength = 6;                  // axis tick marks, outside the plot
constexpr int kTickLabelChars = 7;              // tick labels never exceed this many characters
constexpr int kGridCell = kImageSide;           // one grid digit, 1:1
constexpr int kTileScale = 2;                   // reconstructions and samples: digits drawn 2x
constexpr int kTile = kImageSide * kTileScale;  // 56
constexpr int kTileGap = 2;                     // white gap between tiles

// Axes pictures (grid, scatter): the plot area plus fixed margins; the left margin holds the
// turned y-axis name, the tick labels and the ticks, the bottom the ticks, tick labels and the
// x-axis name, the top a title line.
constexpr int kAxesLeft = 140;
constexpr int kAxesRight = 48;  // room for the last x tick label, centred on the plot edge
constexpr int kAxesTop = 48;
constexpr int kAxesBottom = 72;
// Latent grid: (kAxesLeft + n kGridCell + kAxesRight) x (kAxesTop + rows kGridCell +
// kAxesBottom), rows = n (rows = 1 when D == 1).
constexpr int kGridMaxN = 100;
constexpr double kGridMinExtent = 1e-6, kGridMaxExtent = 1e6;  // accepted --extent
// Scatter: a square plot of kScatterPlot pixels, the legend in a wider right margin:
// (kAxesLeft + kScatterPlot + kScatterRight) x (kAxesTop + kScatterPlot + kAxesBottom).
constexpr int kScatterPlot = 560;
constexpr int kScatterRight = 120;
// Canvas::disc radius of the points of a scatter of `count` points: 4 up to 50 points, 3 up
// to 500, 2 up to 3,000, 1 (a 3-pixel plus) above; a few points are easy to see, many do not
// hide each other.
int scatter_dot_radius(int64_t count);
// Tile sheets (reconstructions, samples): kPicturePad around, a title band on top.
constexpr int kTitleBand = 28;
constexpr int kRowLabelWidth = 104;   // reconstructions: "original" / "decoded" left of the rows
constexpr int kMaxTilesPerLine = 20;  // digits side by side, at most
constexpr int kReconLineGap = 12;     // reconstructions: white between two wrapped lines of pairs

// How a row of `count` tiles wraps: onto lines = ceil(count / kMaxTilesPerLine) lines of
// per_line = ceil(count / lines) tiles (evened out: 30 -> 2 lines of 15); tile i of the row
// goes to line i / per_line, column i % per_line.
struct TileWrap {
  int lines;
  int per_line;
};
TileWrap wrap_tiles(int count);

// Reconstructions: w = wrap_tiles(count); (2 kPicturePad + kRowLabelWidth + w.per_line kTile +
// (w.per_line - 1) kTileGap) x (2 kPicturePad + kTitleBand + w.lines (2 kTile + kTileGap) +
// (w.lines - 1) kReconLineGap): each line of originals with its reconstructions right below.
constexpr int kMaxReconstructions = 100;
// Samples: w = wrap_tiles(cols); (2 kPicturePad + w.per_line kTile + (w.per_line - 1) kTileGap)
// x (2 kPicturePad + kTitleBand + L kTile + (L - 1) kTileGap) with L = rows w.lines: sample row
// r fills lines r w.lines .. (r + 1) w.lines - 1.
constexpr int kMaxSampleSide = 100;

// ---- model calls (every picture decodes through these) --------------------------------------
// sigmoid(decode(z)) for `count` latents z (count, D) -> (count, 784), in chunks.
std::vector<float> decode_means(Inference& model, const std::vector<float>& z, int64_t count);
// z_mean = encoder.mu(x / 255) of the first `count` images (count, D), in chunks.
std::vector<float> encode_means(Inference& model, const ImageSet& images, int64_t count);
// What the reconstructions show for the first `count` images: decode_means(encode_means(x)).
std::vector<float> reconstruction_means(Inference& model, const ImageSet& images, int64_t count);

struct GridOptions {
  int n = 15;           // digits per side, 1..kGridMaxN
  double extent = 1.0;  // the grid spans [-extent, extent]; kGridMinExtent..kGridMaxExtent
  int dim_x = 0;        // latent dimension along x
  int dim_y = 1;        // latent dimension along y (must differ from dim_x; ignored if D == 1)
};

// The latent value of grid position i of n along an axis: -extent + 2 extent i / (n - 1), so
// the first and last cells sit exactly on -extent and +extent (numpy's linspace); 0 for n == 1.
// Along x i counts from the left, along y from the bottom (z[dim_y] = +extent on the top row).
double grid_value(int i, int n, double extent);

// Throws InputError when `opt` does not fit a model of latent dimension `latent_dim`.
void check_grid_options(const GridOptions& opt, int latent_dim);

// The axes show the span: ticks at -extent and +extent (the first and last cells' centres)
// and nice values between them (ticks_with_ends, plot.h).
void write_latent_grid(const std::string& path, Inference& model, const GridOptions& opt);

struct ScatterOptions {
  int64_t limit = 0;          // > 0: only the first `limit` images
  int dim_x = 0;              // z_mean[dim_x] along x
  int dim_y = 1;              // z_mean[dim_y] along y (must differ; ignored if D == 1)
  Split split = Split::Test;  // the split `data` holds, named in the title
};
// Throws InputError when `opt` does not fit a model of latent dimension `latent_dim`.
void check_scatter_options(const ScatterOptions& opt, int latent_dim);

// The axes span the 0.5th to 99.5th percentile of each plotted coordinate (plus 5% each side),
// so a few outliers do not squeeze the rest; the points outside are counted in the title.
// Points are drawn in data order, scatter_dot_radius(points) in size.
void write_scatter(const std::string& path, Inference& model, const Dataset& data,
                   const ScatterOptions& opt);
// count in 1..min(kMaxReconstructions, images.count); `split` (the split `images` come from)
// is named in the title.
void write_reconstructions(const std::string& path, Inference& model, const ImageSet& images,
                           int count, Split split);
// rows, cols in 1..kMaxSampleSide. Sample s (row-major), latent j: z = normal_from(w[0], w[1])
// with w = random_words(seed, Stream::Data, kSampleStreamTag, s * D + j) (philox.h).
constexpr uint64_t kSampleStreamTag = 100;
void write_samples(const std::string& path, Inference& model, int rows, int cols, uint64_t seed);

// The set of pictures of a run folder (written at the end of training and every K epochs
// with --snapshot-every K): grid_15<suffix>.png and grid_30<suffix>.png (extent 1, dims 0 and
// 1), scatter<suffix>.png (all of `shown`), reconstructions<suffix>.png (its first 10 images,
// fewer if it holds fewer), samples<suffix>.png (8 x 8, noise from `seed`). `shown` supplies
// the scatter and the reconstructions, whose titles name `shown_split`: the test split, or
// Split::Train when a run without test files shows its first training images.
void write_run_pictures(const std::string& dir, Inference& model, const Dataset& shown,
                        const std::string& suffix, uint64_t seed, Split shown_split = Split::Test);

}  // namespace cuvae
