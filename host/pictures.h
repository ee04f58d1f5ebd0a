// The pictures a VAE user looks at, as PNG files (libpng):
//   latent grid    the decoder's output over a regular n x n grid of two latent dimensions
//                  (the others 0), with the axis values written beside it;
//   scatter        z_mean of a labelled set, coloured by class, with axes and a legend;
//   reconstructions originals (top row) above their reconstructions (decoded z_mean);
//   samples        images decoded from z ~ N(0, I).
#pragma once

#include <cstdint>
#include <string>

#include "host/idx.h"
#include "host/inference.h"

namespace cuvae {

struct GridOptions {
  int n = 15;            // digits per side
  double extent = 1.0;   // the grid spans [-extent, extent] in both dimensions
  int dim_x = 0;         // latent dimension along x
  int dim_y = 1;         // latent dimension along y (must differ from dim_x unless D == 1)
};

void write_latent_grid(const std::string& path, Inference& model, const GridOptions& opt);
// limit > 0: only the first `limit` images.
void write_scatter(const std::string& path, Inference& model, const Dataset& data, int64_t limit);
void write_reconstructions(const std::string& path, Inference& model, const ImageSet& images,
                           int count);
void write_samples(const std::string& path, Inference& model, int rows, int cols, uint64_t seed);

// The set of pictures of a run folder (written at the end of training and every K epochs
// with --snapshot-every K): grid_15<suffix>.png, grid_30<suffix>.png, scatter<suffix>.png,
// reconstructions<suffix>.png, samples<suffix>.png. `test` supplies the scatter and the
// reconstructions.
void write_run_pictures(const std::string& dir, Inference& model, const Dataset& test,
                        const std::string& suffix, uint64_t seed);

}  // namespace cuvae
