// Pictures: the PNG writer (exact round trip through libpng's reader, atomic failure), the
// bitmap font, and every picture of pictures.h on random-weight models (latent dims 1, 2, 3):
// the PNG size follows from the layout constants, and the digits drawn are the decoder's
// output for the documented latents (checked against the model called here directly).
#include <png.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <set>
#include <tuple>

#include "host/core/error.h"
#include "host/core/model.h"
#include "host/core/philox.h"
#include "host/core/text.h"
#include "host/cpu/inference_cpu.h"
#include "host/eval/pictures.h"
#include "host/eval/plot.h"
#include "host/io/png.h"
#include "tests/test_support.h"

using namespace cuvae;
namespace fs = std::filesystem;

namespace {

// A PNG read back with libpng as 8-bit RGB.
struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
  Rgb at(int x, int y) const {
    const uint8_t* p = &rgb[(size_t(y) * size_t(width) + size_t(x)) * 3];
    return Rgb{p[0], p[1], p[2]};
  }
};

Image read_png(const std::string& path) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  INFO(path);
  REQUIRE(png_image_begin_read_from_file(&img, path.c_str()) != 0);
  // The file itself must be 8-bit RGB, not something libpng converts from.
  REQUIRE(img.format == PNG_FORMAT_RGB);
  Image out;
  out.width = int(img.width);
  out.height = int(img.height);
  out.rgb.resize(PNG_IMAGE_SIZE(img));
  REQUIRE(png_image_finish_read(&img, nullptr, out.rgb.data(), 0, nullptr) != 0);
  return out;
}

// Files in `dir` other than `keep`: a failed or finished write must leave no temporary file.
std::vector<std::string> other_files(const fs::path& dir, const std::set<std::string>& keep) {
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator(dir))
    if (!keep.count(e.path().filename().string())) found.push_back(e.path().string());
  return found;
}

// Labelled random images; the labels cycle through 0-9.
Dataset synthetic_data(std::mt19937_64& rng, int count) {
  Dataset d;
  d.images.path = "synthetic-images";
  d.images.count = count;
  d.images.rows = d.images.cols = kImageSide;
  d.images.pixels.resize(size_t(count) * kImagePixels);
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& p : d.images.pixels) p = uint8_t(byte(rng));
  d.labels.path = "synthetic-labels";
  for (int i = 0; i < count; ++i) d.labels.labels.push_back(uint8_t(i % 10));
  return d;
}

std::unique_ptr<Inference> random_model(int latent_dim, uint64_t seed) {
  const ModelDesc desc = make_vae(latent_dim);
  std::vector<float> params(desc.num_params);
  init_params(desc, seed, params.data());
  // Glorot weights from a 1-3 wide input make the decoder almost blind to z (cells differ by
  // a few gray levels); scaled up, neighbouring latents give clearly different digits, so a
  // cell drawn for the wrong z cannot pass the 1-level tolerance.
  const ParamTensor& fc = desc.param("decoder.fc.weight");
  for (size_t i = fc.offset; i < fc.offset + fc.numel; ++i) params[i] *= 30.0f;
  return make_cpu_inference(desc, params, "cpu-ref");
}

// The gray levels the pictures should show for latents z (count, D): round(255 sigmoid(l)).
std::vector<int> expected_gray(Inference& model, const std::vector<float>& z, int count) {
  std::vector<float> logits(size_t(count) * kImagePixels);
  model.decode(logits.data(), z.data(), count);
  std::vector<int> g(logits.size());
  for (size_t i = 0; i < g.size(); ++i)
    g[i] = int(std::lround(255.0 / (1.0 + std::exp(-double(logits[i])))));
  return g;
}

// The digit whose top-left pixel is (x0, y0), drawn `scale` x: every pixel gray (R = G = B)
// and within 1 of `want` (a different sigmoid rounding may move a level by one).
void require_digit(const Image& img, int x0, int y0, int scale, const int* want,
                   const std::string& what) {
  int worst = 0, worst_at = -1;
  for (int row = 0; row < kImageSide; ++row)
    for (int col = 0; col < kImageSide; ++col)
      for (int sy = 0; sy < scale; ++sy)
        for (int sx = 0; sx < scale; ++sx) {
          const Rgb p = img.at(x0 + col * scale + sx, y0 + row * scale + sy);
          INFO(what << " pixel (" << row << ", " << col << ")");
          REQUIRE((p.r == p.g && p.g == p.b));
          const int diff = std::abs(int(p.r) - want[row * kImageSide + col]);
          if (diff > worst) worst = diff, worst_at = row * kImageSide + col;
        }
  INFO(what << ": worst gray difference " << worst << " at pixel " << worst_at);
  REQUIRE(worst <= 1);
}

int grid_width(int n) {
  return kAxesLeft + n * kGridCell + kAxesRight;
}
int grid_height(int rows) {
  return kAxesTop + rows * kGridCell + kAxesBottom;
}

// Where `text`, as draw_text draws it at kTextScale in black, stands in `img` with its top-left
// corner in [x_lo, x_hi) x [y_lo, y_hi): every pixel of its box, and of a white border of 4
// pixels left and right (2 above and below) around it, black exactly where the text is (so "3"
// is not found inside "-3" or "13"). The corners found.
std::vector<std::pair<int, int>> find_text(const Image& img, const std::string& text, int x_lo,
                                           int x_hi, int y_lo, int y_hi) {
  constexpr int kPadX = 4, kPadY = 2;
  const int w = text_width(text, kTextScale), h = text_height(kTextScale);
  Canvas t(w + 2 * kPadX, h + 2 * kPadY, kWhite);
  draw_text(t, kPadX, kPadY, text, kBlack, kTextScale);
  // The box's pixels, the text's first: most places differ there at once.
  std::vector<std::tuple<int, int, bool>> box;
  for (const bool ink : {true, false})
    for (int ty = 0; ty < t.height(); ++ty)
      for (int tx = 0; tx < t.width(); ++tx)
        if ((t.at(tx, ty) == kBlack) == ink) box.emplace_back(tx - kPadX, ty - kPadY, ink);
  std::vector<std::pair<int, int>> found;
  for (int y = std::max(y_lo, kPadY); y < std::min(y_hi, img.height - h - kPadY); ++y)
    for (int x = std::max(x_lo, kPadX); x < std::min(x_hi, img.width - w - kPadX); ++x) {
      bool same = true;
      for (size_t k = 0; k < box.size() && same; ++k) {
        const auto& [dx, dy, ink] = box[k];
        same = (img.at(x + dx, y + dy) == kBlack) == ink;
      }
      if (same) found.emplace_back(x, y);
    }
  return found;
}

// Whether `text` stands in the title band (the top `band` rows) of `img`.
bool title_has(const Image& img, const std::string& text, int band) {
  return !find_text(img, text, 0, img.width, 0, band).empty();
}

template <typename F>
void require_input_error(const F& f, const std::string& words) {
  try {
    f();
    FAIL("no InputError; expected one mentioning '" << words << "'");
  } catch (const InputError& e) {
    const std::string msg = e.what();
    INFO(msg);
    REQUIRE(msg.find(words) != std::string::npos);
    REQUIRE(msg.find('\n') == std::string::npos);
  }
}

}  // namespace

// ---- PNG -----------------------------------------------------------------------------------
TEST_CASE("write_png round trip is exact for a random canvas", "[pictures][png]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const test::TempDir dir("cuvae_pictures_");
  for (int round = 0; round < 4; ++round) {
    // Awkward sizes: a single pixel, a single row, odd sizes.
    const int w = round == 0 ? 1 : int(rng() % 97) + 1;
    const int h = round == 1 ? 1 : int(rng() % 61) + 1;
    Canvas c(w, h, kBlack);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) c.set(x, y, Rgb{uint8_t(rng()), uint8_t(rng()), uint8_t(rng())});
    const std::string path = dir.file("round" + std::to_string(round) + ".png");
    write_png(path, c);
    const Image img = read_png(path);
    REQUIRE(img.width == w);
    REQUIRE(img.height == h);
    REQUIRE(img.rgb == c.pixels());
  }
  // Rewriting replaces the file in place; no temporary file is left.
  Canvas small(3, 2, kWhite);
  write_png(dir.file("round0.png"), small);
  REQUIRE(read_png(dir.file("round0.png")).width == 3);
  REQUIRE(other_files(dir.path, {"round0.png", "round1.png", "round2.png", "round3.png"}).empty());
}

TEST_CASE("write_png failures are InputErrors naming the file and leave nothing",
          "[pictures][png]") {
  const test::TempDir dir("cuvae_pictures_");
  const Canvas c(4, 4);
  const std::string missing = dir.file("no-such-folder/x.png");
  require_input_error([&] { write_png(missing, c); }, missing);
  // The target is a folder: the rename fails and the temporary file is removed.
  fs::create_directories(dir.path / "a-folder.png");
  const std::string folder = dir.file("a-folder.png");
  require_input_error([&] { write_png(folder, c); }, folder);
  REQUIRE(other_files(dir.path, {"a-folder.png"}).empty());
  REQUIRE(fs::is_empty(dir.path / "a-folder.png"));
}

TEST_CASE("Canvas drawing clips and blits gray levels", "[pictures]") {
  Canvas c(10, 8, kWhite);
  c.fill_rect(-5, -5, 8, 7, kBlack);  // partly outside
  REQUIRE(c.at(0, 0) == kBlack);
  REQUIRE(c.at(2, 1) == kBlack);
  REQUIRE(c.at(3, 1) == kWhite);
  REQUIRE(c.at(2, 2) == kWhite);
  c.set(100, 100, kBlack);  // ignored
  REQUIRE_THROWS_AS(c.at(10, 0), Error);
  const float values[4] = {0.0f, 1.0f, 0.5f, 2.0f};
  c.blit_gray(8, 6, values, 2, 2, 1);  // the right column falls off the canvas
  REQUIRE(c.at(8, 6) == Rgb{0, 0, 0});
  REQUIRE(c.at(9, 6) == Rgb{255, 255, 255});
  REQUIRE(c.at(8, 7) == Rgb{128, 128, 128});
  REQUIRE(c.at(9, 7) == Rgb{255, 255, 255});
  REQUIRE(gray_level(std::nanf("")) == 0);
  REQUIRE(gray_level(-3.0f) == 0);
  REQUIRE_THROWS_AS(Canvas(0, 5), Error);
}

// ---- font ----------------------------------------------------------------------------------
TEST_CASE("the font draws every supported character inside its cell and nothing for a space",
          "[pictures]") {
  const std::string required =
      "0123456789-+.,=:[]()#abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  for (const char ch : required) {
    INFO("character '" << ch << "'");
    REQUIRE(font_has(ch));
  }
  std::set<std::vector<uint8_t>> shapes;
  for (const int scale : {1, 3}) {
    for (const char ch : font_characters()) {
      INFO("character '" << ch << "' at scale " << scale);
      Canvas c(20 * scale, 20 * scale, kWhite);
      draw_text(c, 2 * scale, 3 * scale, std::string(1, ch), kBlack, scale);
      int lit = 0;
      for (int y = 0; y < c.height(); ++y)
        for (int x = 0; x < c.width(); ++x)
          if (c.at(x, y) == kBlack) {
            ++lit;
            REQUIRE(x >= 2 * scale);
            REQUIRE(x < (2 + kGlyphCols) * scale);
            REQUIRE(y >= 3 * scale);
            REQUIRE(y < (3 + kGlyphRows) * scale);
          }
      REQUIRE(lit > 0);
      REQUIRE(lit % (scale * scale) == 0);
      if (scale == 1) {
        // No two characters share a shape (a copy-paste slip in the font table).
        REQUIRE(shapes.insert(c.pixels()).second);
      }
    }
  }
  Canvas c(40, 20, kWhite);
  draw_text(c, 0, 0, "   ", kBlack, 2);
  REQUIRE(c.pixels() == Canvas(40, 20, kWhite).pixels());
  REQUIRE_FALSE(font_has(' '));
  REQUIRE(text_width("", 2) == 0);
  REQUIRE(text_width("ab", 1) == kGlyphAdvance + kGlyphCols);
  REQUIRE(text_width("ab", 3) == 3 * (kGlyphAdvance + kGlyphCols));
  // A character the font lacks is visible (a box), not silently dropped.
  draw_text(c, 0, 0, "@", kBlack, 1);
  REQUIRE(c.at(0, 0) == kBlack);
}

TEST_CASE("turned text has the same pixels as the straight text but rotated", "[pictures]") {
  const std::string s = "z[1] Ay,";
  const int scale = 2, w = text_width(s, scale), h = text_height(scale);
  Canvas flat(w, h, kWhite), up(h, w, kWhite);
  draw_text(flat, 0, 0, s, kBlack, scale);
  draw_text_up(up, 0, w - 1, s, kBlack, scale);
  // Straight (x, y) lands at (y, w - 1 - x) when turned counter-clockwise.
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      INFO("(" << x << ", " << y << ")");
      REQUIRE(flat.at(x, y) == up.at(y, w - 1 - x));
    }
}

// ---- latent grid ---------------------------------------------------------------------------
TEST_CASE("latent grid: size from the layout and each cell the decoder at its z", "[pictures]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  const test::TempDir dir("cuvae_pictures_");
  // (latent dim, n, extent, dim_x, dim_y)
  for (const auto& [dim, n, extent, dx, dy] :
       {std::tuple<int, int, double, int, int>{2, 4, 1.0, 0, 1},
        {2, 1, 2.0, 0, 1},
        {3, 3, 2.5, 2, 0},
        {1, 5, 3.0, 0, 1}}) {
    INFO("latent dim " << dim << ", n " << n << ", extent " << extent << ", dims " << dx << ","
                       << dy);
    auto model = random_model(dim, seed + uint64_t(dim));
    GridOptions g;
    g.n = n;
    g.extent = extent;
    g.dim_x = dx;
    g.dim_y = dy;
    const std::string path = dir.file("grid.png");
    write_latent_grid(path, *model, g);
    const Image img = read_png(path);
    const int rows = dim == 1 ? 1 : n;  // latent dim 1: one row along z[0]
    REQUIRE(img.width == grid_width(n));
    REQUIRE(img.height == grid_height(rows));

    // The documented latents: numpy's linspace(-extent, extent, n) along x (left to right)
    // and along y (bottom to top); 0 for n == 1 and for every other dimension.
    const auto lin = [&](int i) { return n == 1 ? 0.0 : -extent + 2.0 * extent * i / (n - 1); };
    std::vector<float> z(size_t(rows) * n * dim, 0.0f);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < n; ++c) {
        z[(size_t(r) * n + c) * dim + dx] = float(lin(c));
        if (dim > 1) z[(size_t(r) * n + c) * dim + dy] = float(lin(n - 1 - r));
      }
    const std::vector<int> want = expected_gray(*model, z, rows * n);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < n; ++c)
        require_digit(img, kAxesLeft + c * kGridCell, kAxesTop + r * kGridCell, 1,
                      &want[(size_t(r) * n + c) * kImagePixels],
                      "cell (" + std::to_string(r) + ", " + std::to_string(c) + ")");
    // Tick labels and axis names are drawn in the margins (something dark below the plot and,
    // for two or more dimensions, left of it).
    int dark_below = 0, dark_left = 0;
    for (int y = kAxesTop + rows * kGridCell + 2; y < img.height; ++y)
      for (int x = 0; x < img.width; ++x) dark_below += img.at(x, y) == kBlack;
    for (int y = 0; y < img.height; ++y)
      for (int x = 0; x < kAxesLeft - 2; ++x) dark_left += img.at(x, y) == kBlack;
    REQUIRE(dark_below > 0);
    if (dim > 1) REQUIRE(dark_left > 0);
  }
}

TEST_CASE("latent grid refuses bad options", "[pictures]") {
  const test::TempDir dir("cuvae_pictures_");
  const std::string path = dir.file("bad.png");
  auto two = random_model(2, 1);
  auto one = random_model(1, 1);
  const auto grid = [&](Inference& m, int n, double extent, int dx, int dy) {
    GridOptions g;
    g.n = n;
    g.extent = extent;
    g.dim_x = dx;
    g.dim_y = dy;
    write_latent_grid(path, m, g);
  };
  require_input_error([&] { grid(*two, 0, 1, 0, 1); }, "n must be");
  require_input_error([&] { grid(*two, kGridMaxN + 1, 1, 0, 1); }, "n must be");
  require_input_error([&] { grid(*two, 5, 0, 0, 1); }, "extent");
  require_input_error([&] { grid(*two, 5, -1, 0, 1); }, "extent");
  require_input_error([&] { grid(*two, 5, std::nan(""), 0, 1); }, "extent");
  require_input_error([&] { grid(*two, 5, INFINITY, 0, 1); }, "extent");
  require_input_error([&] { grid(*two, 5, 1, 0, 0); }, "must differ");
  require_input_error([&] { grid(*two, 5, 1, 2, 1); }, "x dimension 2");
  require_input_error([&] { grid(*two, 5, 1, 0, -1); }, "y dimension -1");
  require_input_error([&] { grid(*one, 5, 1, 1, 0); }, "x dimension 1");
  REQUIRE_FALSE(fs::exists(path));
  // Latent dim 1 ignores dim_y: the default options work.
  grid(*one, 2, 1, 0, 1);
  REQUIRE(fs::exists(path));
}

TEST_CASE("latent grid ticks reach both ends of the extent for any n and extent", "[pictures]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> pick_n(2, kGridMaxN);
  std::uniform_real_distribution<double> pick_log(std::log10(kGridMinExtent),
                                                  std::log10(kGridMaxExtent));
  // The whole number `label` reads as (strtod), NaN when it is not one.
  const auto read = [](const std::string& label) {
    char* end = nullptr;
    const double v = std::strtod(label.c_str(), &end);
    return end == label.c_str() + label.size() && !label.empty() ? v : std::nan("");
  };
  // The place value of the last digit a label shows ("0.0227" 1e-4, "1.5e-6" 1e-7, "30" 1).
  const auto last_place = [](const std::string& label) {
    const size_t e = label.find('e');
    const std::string mantissa = label.substr(0, e);
    const size_t dot = mantissa.find('.');
    const int decimals = dot == std::string::npos ? 0 : int(mantissa.size() - dot - 1);
    const int exponent = e == std::string::npos ? 0 : std::atoi(label.c_str() + e + 1);
    return std::pow(10.0, exponent - decimals);
  };
  for (int round = 0; round < 2000; ++round) {
    const int n = round < 4 ? std::vector<int>{2, 5, 3, kGridMaxN}[size_t(round)] : pick_n(rng);
    const double extent = round == 1   ? 3.0
                          : round == 2 ? kGridMinExtent
                          : round == 3 ? kGridMaxExtent
                                       : std::pow(10.0, pick_log(rng));
    // The grid's x axis: the first and last cell centres, (n - 1) cells apart, on -/+extent.
    const double px_per_unit = (n - 1) * kGridCell / (2.0 * extent);
    INFO("n " << n << ", extent " << exact_text(extent));
    for (const bool horizontal : {true, false}) {
      const std::vector<Tick> ticks = ticks_with_ends(-extent, extent, px_per_unit, horizontal);
      REQUIRE(ticks.size() >= 2);
      REQUIRE(ticks.size() <= size_t(kMaxTicks) + 2);
      REQUIRE(ticks.front().value == -extent);
      REQUIRE(ticks.back().value == extent);
      // The two ends read alike but for the sign.
      REQUIRE(ticks.front().label == "-" + ticks.back().label);
      for (size_t i = 0; i < ticks.size(); ++i) {
        const Tick& t = ticks[i];
        INFO("tick " << i << " " << exact_text(t.value) << " '" << t.label << "'");
        REQUIRE(t.label.size() <= size_t(kTickLabelChars));
        // The label is the value rounded to its last digit shown, and to at least two
        // significant digits (a 7-character label cannot always show more: "0.0012").
        const double error = std::abs(read(t.label) - t.value);
        REQUIRE(error <= 0.5 * last_place(t.label) * (1 + 1e-9));
        if (t.value != 0)
          REQUIRE(error <=
                  0.5 * std::pow(10.0, std::floor(std::log10(std::abs(t.value))) - 1) * (1 + 1e-9));
        if (i == 0) continue;
        REQUIRE(t.value > ticks[i - 1].value);
        // Neighbouring labels never touch: side by side on x (centred on their ticks; two end
        // ticks alone are drawn outwards), one text line apart on y.
        const double gap = (t.value - ticks[i - 1].value) * px_per_unit;
        if (!horizontal)
          REQUIRE(gap >= kLinePx + 8);
        else if (ticks.size() > 2)
          REQUIRE(gap >= (text_px(t.label) + text_px(ticks[i - 1].label)) / 2.0 + 8);
      }
    }
  }
}

TEST_CASE("latent grid pictures label -extent and +extent at the end cells", "[pictures]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  const test::TempDir dir("cuvae_pictures_");
  // (latent dim, n, extent, the labels the ends must carry)
  for (const auto& [dim, n, extent, lo_text, hi_text] :
       {std::tuple<int, int, double, std::string, std::string>{2, 5, 3.0, "-3", "3"},
        {2, 15, 2.5, "-2.5", "2.5"},
        {2, 2, 1e-6, "-1e-6", "1e-6"},
        {2, 12, 1e6, "-1e6", "1e6"},
        {3, 7, 0.123456, "-0.1235", "0.1235"},
        {1, 6, 3.0, "-3", "3"}}) {
    INFO("latent dim " << dim << ", n " << n << ", extent " << extent);
    auto model = random_model(dim, seed + uint64_t(n));
    GridOptions g;
    g.n = n;
    g.extent = extent;
    const std::string path = dir.file("grid.png");
    write_latent_grid(path, *model, g);
    const Image img = read_png(path);
    const int rows = dim == 1 ? 1 : n, plot_bottom = kAxesTop + rows * kGridCell;
    const int first = kAxesLeft + kGridCell / 2, last = first + (n - 1) * kGridCell;
    // x: below the plot, each label over (or ending or starting at) its end cell's centre.
    const auto on_x = [&](const std::string& text, int centre) {
      for (const auto& [x, y] : find_text(img, text, 0, img.width, plot_bottom, img.height))
        if (x <= centre && centre <= x + text_width(text, kTextScale)) return true;
      return false;
    };
    REQUIRE(on_x(lo_text, first));
    REQUIRE(on_x(hi_text, last));
    if (dim == 1) continue;
    // y: left of the plot, level with the centres of the bottom (-extent) and top rows.
    const auto on_y = [&](const std::string& text, int centre) {
      for (const auto& [x, y] : find_text(img, text, 0, kAxesLeft, 0, img.height))
        if (y <= centre && centre <= y + text_height(kTextScale)) return true;
      return false;
    };
    REQUIRE(on_y(hi_text, kAxesTop + kGridCell / 2));
    REQUIRE(on_y(lo_text, plot_bottom - kGridCell / 2));
  }
}

// ---- scatter -------------------------------------------------------------------------------
TEST_CASE("scatter: size from the layout and one colour per class in the plot", "[pictures]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const test::TempDir dir("cuvae_pictures_");
  const Dataset data = synthetic_data(rng, 60);
  // tab10, the documented palette.
  const Rgb palette[10] = {{31, 119, 180},  {255, 127, 14}, {44, 160, 44},   {214, 39, 40},
                           {148, 103, 189}, {140, 86, 75},  {227, 119, 194}, {127, 127, 127},
                           {188, 189, 34},  {23, 190, 207}};
  for (const int dim : {2, 1, 3}) {
    INFO("latent dim " << dim);
    auto model = random_model(dim, seed ^ uint64_t(dim));
    const std::string path = dir.file("scatter.png");
    write_scatter(path, *model, data, ScatterOptions{});
    const Image img = read_png(path);
    REQUIRE(img.width == kAxesLeft + kScatterPlot + kScatterRight);
    REQUIRE(img.height == kAxesTop + kScatterPlot + kAxesBottom);
    // With fewer than 200 points the axes span all of them, so every class shows in the plot.
    std::set<int> classes;
    for (int y = kAxesTop; y < kAxesTop + kScatterPlot; ++y)
      for (int x = kAxesLeft; x < kAxesLeft + kScatterPlot; ++x)
        for (int k = 0; k < 10; ++k)
          if (img.at(x, y) == palette[k]) classes.insert(k);
    REQUIRE(classes.size() == 10);
    // The legend (right of the plot) shows every class colour too.
    std::set<int> legend;
    for (int y = 0; y < img.height; ++y)
      for (int x = kAxesLeft + kScatterPlot + 2; x < img.width; ++x)
        for (int k = 0; k < 10; ++k)
          if (img.at(x, y) == palette[k]) legend.insert(k);
    REQUIRE(legend.size() == 10);
  }
  auto model = random_model(2, seed);
  const std::string path = dir.file("limited.png");
  ScatterOptions seven;
  seven.limit = 7;  // first 7 images: classes 0-6 only
  write_scatter(path, *model, data, seven);
  const Image img = read_png(path);
  std::set<int> classes;
  for (int y = kAxesTop; y < kAxesTop + kScatterPlot; ++y)
    for (int x = kAxesLeft; x < kAxesLeft + kScatterPlot; ++x)
      for (int k = 0; k < 10; ++k)
        if (img.at(x, y) == palette[k]) classes.insert(k);
  REQUIRE(classes == std::set<int>{0, 1, 2, 3, 4, 5, 6});

  const auto scatter = [&](const Dataset& d, int64_t limit, int dx, int dy) {
    ScatterOptions opt;
    opt.limit = limit;
    opt.dim_x = dx;
    opt.dim_y = dy;
    write_scatter(path, *model, d, opt);
  };
  require_input_error([&] { scatter(data, -1, 0, 1); }, "limit");
  require_input_error([&] { scatter(data, 0, 0, 0); }, "must differ");
  require_input_error([&] { scatter(data, 0, 2, 1); }, "x dimension 2");
  require_input_error([&] { scatter(data, 0, 0, -1); }, "y dimension -1");
  Dataset short_labels = data;
  short_labels.labels.labels.resize(10);
  require_input_error([&] { scatter(short_labels, 0, 0, 1); }, "fewer labels");
  Dataset empty = data;
  empty.images.count = 0;
  empty.images.pixels.clear();
  require_input_error([&] { scatter(empty, 0, 0, 1); }, "no images");
}

TEST_CASE("scatter: each point at its z_mean[dim_x], z_mean[dim_y] for any two dims",
          "[pictures]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const test::TempDir dir("cuvae_pictures_");
  constexpr int kPoints = 60;
  const Dataset data = synthetic_data(rng, kPoints);
  auto model = random_model(4, seed);
  // z_mean of every image from the model, called here directly.
  std::vector<float> x(size_t(kPoints) * kImagePixels), mu(size_t(kPoints) * 4),
      logvar(size_t(kPoints) * 4);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(data.images.pixels[i]) / 255.0f;
  model->encode(mu.data(), logvar.data(), x.data(), kPoints);
  const int radius = scatter_dot_radius(kPoints);
  const int right = kAxesLeft + kScatterPlot - 1, bottom = kAxesTop + kScatterPlot - 1;
  for (const auto& [dx, dy] : {std::pair<int, int>{2, 3}, {3, 0}, {1, 2}, {0, 1}}) {
    INFO("dims " << dx << "," << dy);
    ScatterOptions opt;
    opt.dim_x = dx;
    opt.dim_y = dy;
    const std::string path = dir.file("scatter.png");
    write_scatter(path, *model, data, opt);
    const Image img = read_png(path);
    // With under 200 points the documented axes run from the smallest to the largest value,
    // widened by 5% of their span each side; a dot's centre is kept `radius` inside the plot.
    const auto centres = [&](int d, int p_lo, int p_hi) {
      double lo = INFINITY, hi = -INFINITY;
      for (int i = 0; i < kPoints; ++i) {
        lo = std::min(lo, double(mu[size_t(i) * 4 + d]));
        hi = std::max(hi, double(mu[size_t(i) * 4 + d]));
      }
      const double span = hi - lo;
      lo -= 0.05 * span;
      hi += 0.05 * span;
      std::vector<int> px(kPoints);
      for (int i = 0; i < kPoints; ++i) {
        const double t = (double(mu[size_t(i) * 4 + d]) - lo) / (hi - lo);
        px[size_t(i)] = int(std::lround(p_lo + t * (p_hi - p_lo)));
        px[size_t(i)] =
            std::clamp(px[size_t(i)], std::min(p_lo, p_hi) + radius, std::max(p_lo, p_hi) - radius);
      }
      return px;
    };
    const std::vector<int> cx = centres(dx, kAxesLeft, right), cy = centres(dy, bottom, kAxesTop);
    const Rgb palette[10] = {{31, 119, 180},  {255, 127, 14}, {44, 160, 44},   {214, 39, 40},
                             {148, 103, 189}, {140, 86, 75},  {227, 119, 194}, {127, 127, 127},
                             {188, 189, 34},  {23, 190, 207}};
    for (int i = 0; i < kPoints; ++i) {
      // Points are drawn in data order: the last one whose disc covers this centre shows.
      int top = i;
      for (int j = i + 1; j < kPoints; ++j) {
        const int ddx = cx[size_t(j)] - cx[size_t(i)], ddy = cy[size_t(j)] - cy[size_t(i)];
        if (ddx * ddx + ddy * ddy <= radius * radius + radius) top = j;
      }
      INFO("point " << i << " at (" << cx[size_t(i)] << ", " << cy[size_t(i)] << ")");
      REQUIRE(img.at(cx[size_t(i)], cy[size_t(i)]) == palette[data.labels.labels[size_t(top)]]);
    }
    // The axes are named after the dimensions shown.
    REQUIRE(!find_text(img, "z[" + std::to_string(dx) + "]", kAxesLeft, right,
                       kAxesTop + kScatterPlot, img.height)
                 .empty());
  }
}

TEST_CASE("scatter points are bigger the fewer they are, and never invisible", "[pictures]") {
  int previous = scatter_dot_radius(1);
  REQUIRE(previous >= 3);  // a lone point or a few: at least a 7-pixel disc
  for (int64_t count = 1; count <= 100000; count += 1 + count / 50) {
    INFO("count " << count);
    const int r = scatter_dot_radius(count);
    REQUIRE(r >= 1);  // a plus of 5 pixels at least
    REQUIRE(r <= previous);
    previous = r;
  }
  REQUIRE(scatter_dot_radius(10000) == 1);  // MNIST's test split: the points do not merge

  // A scatter of one point shows a disc of that radius: (dx, dy) with dx^2 + dy^2 <= r^2 + r.
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const test::TempDir dir("cuvae_pictures_");
  const Dataset one = synthetic_data(rng, 1);
  auto model = random_model(2, seed);
  write_scatter(dir.file("one.png"), *model, one, ScatterOptions{});
  const Image img = read_png(dir.file("one.png"));
  const Rgb class0{31, 119, 180};
  int lit = 0;
  for (int y = kAxesTop; y < kAxesTop + kScatterPlot; ++y)
    for (int x = kAxesLeft; x < kAxesLeft + kScatterPlot; ++x) lit += img.at(x, y) == class0;
  const int r = scatter_dot_radius(1);
  int disc = 0;
  for (int dy = -r; dy <= r; ++dy)
    for (int dx = -r; dx <= r; ++dx) disc += dx * dx + dy * dy <= r * r + r;
  REQUIRE(lit == disc);
  REQUIRE(lit >= 25);
}

TEST_CASE("the pictures of images name their split in the title", "[pictures]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const test::TempDir dir("cuvae_pictures_");
  const Dataset data = synthetic_data(rng, 12);
  for (const int dim : {2, 1, 5}) {
    auto model = random_model(dim, seed + uint64_t(dim));
    for (const Split split : {Split::Test, Split::Train}) {
      const std::string name = std::string(split_name(split)) + " split";
      const std::string other = split == Split::Test ? "train split" : "test split";
      INFO("latent dim " << dim << ", " << name);
      ScatterOptions opt;
      opt.split = split;
      write_scatter(dir.file("s.png"), *model, data, opt);
      const Image scatter = read_png(dir.file("s.png"));
      REQUIRE(title_has(scatter, name, kAxesTop));
      REQUIRE_FALSE(title_has(scatter, other, kAxesTop));
      for (const int count : {12, 1}) {
        INFO("count " << count);
        write_reconstructions(dir.file("r.png"), *model, data.images, count, split);
        const Image recon = read_png(dir.file("r.png"));
        REQUIRE(title_has(recon, name, kPicturePad + kTitleBand));
        REQUIRE_FALSE(title_has(recon, other, kPicturePad + kTitleBand));
      }
    }
  }
}

// ---- reconstructions -----------------------------------------------------------------------
TEST_CASE("reconstructions: originals above decoder of z_mean", "[pictures]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const test::TempDir dir("cuvae_pictures_");
  const Dataset data = synthetic_data(rng, 45);
  // (latent dim, count, lines, tiles per line): at most 20 side by side, the lines evened out.
  for (const auto& [dim, count, lines, per_line] : {std::tuple<int, int, int, int>{2, 4, 1, 4},
                                                    {1, 1, 1, 1},
                                                    {3, 20, 1, 20},
                                                    {2, 21, 2, 11},
                                                    {3, 45, 3, 15}}) {
    INFO("latent dim " << dim << ", count " << count);
    auto model = random_model(dim, seed + 7 * uint64_t(dim));
    const std::string path = dir.file("recon.png");
    write_reconstructions(path, *model, data.images, count, Split::Test);
    const Image img = read_png(path);
    REQUIRE(img.width ==
            2 * kPicturePad + kRowLabelWidth + per_line * kTile + (per_line - 1) * kTileGap);
    const int pair_h = 2 * kTile + kTileGap;  // a line of originals above its reconstructions
    REQUIRE(img.height ==
            2 * kPicturePad + kTitleBand + lines * pair_h + (lines - 1) * kReconLineGap);

    std::vector<float> x(size_t(count) * kImagePixels), mu(size_t(count) * dim),
        logvar(size_t(count) * dim);
    for (size_t i = 0; i < x.size(); ++i) x[i] = float(data.images.pixels[i]) / 255.0f;
    model->encode(mu.data(), logvar.data(), x.data(), count);
    const std::vector<int> want = expected_gray(*model, mu, count);
    const int x0 = kPicturePad + kRowLabelWidth, y0 = kPicturePad + kTitleBand;
    for (int i = 0; i < count; ++i) {
      // Image i: line i / per_line, column i % per_line; its reconstruction right below it.
      const int tx = x0 + (i % per_line) * (kTile + kTileGap);
      const int ty = y0 + (i / per_line) * (pair_h + kReconLineGap);
      std::vector<int> original(kImagePixels);
      for (int j = 0; j < kImagePixels; ++j)
        original[size_t(j)] = data.images.pixels[size_t(i) * kImagePixels + size_t(j)];
      require_digit(img, tx, ty, kTileScale, original.data(), "original " + std::to_string(i));
      require_digit(img, tx, ty + kTile + kTileGap, kTileScale, &want[size_t(i) * kImagePixels],
                    "reconstruction " + std::to_string(i));
    }
  }
  auto model = random_model(2, seed);
  const std::string path = dir.file("bad.png");
  const ImageSet nine = synthetic_data(rng, 9).images;
  const auto recon = [&](const ImageSet& images, int count) {
    write_reconstructions(path, *model, images, count, Split::Test);
  };
  require_input_error([&] { recon(nine, 0); }, "count");
  require_input_error([&] { recon(nine, 10); }, "count");
  require_input_error([&] { recon(data.images, kMaxReconstructions + 1); }, "count");
  REQUIRE_FALSE(fs::exists(path));
}

TEST_CASE("wrap_tiles: lines of at most 20, as few as possible, evened out", "[pictures]") {
  for (int count = 1; count <= std::max(kMaxReconstructions, kMaxSampleSide); ++count) {
    INFO("count " << count);
    const TileWrap w = wrap_tiles(count);
    REQUIRE(w.per_line >= 1);
    REQUIRE(w.per_line <= 20);
    REQUIRE(int64_t(w.lines) * w.per_line >= count);       // room for every tile
    REQUIRE(int64_t(w.lines - 1) * 20 < count);            // no fewer lines would do
    REQUIRE(count - (w.lines - 1) * w.per_line >= 1);      // the last line is not empty
    REQUIRE(int64_t(w.lines) * (w.per_line - 1) < count);  // as narrow as that many lines allow
  }
}

// ---- samples -------------------------------------------------------------------------------
TEST_CASE("samples: the decoder of the documented Philox normals and reproducible", "[pictures]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  const test::TempDir dir("cuvae_pictures_");
  // (latent dim, rows, cols, lines per row, tiles per line): a row of more than 20 wraps.
  for (const auto& [dim, rows, cols, wrap_lines, per_line] :
       {std::tuple<int, int, int, int, int>{2, 2, 3, 1, 3},
        {1, 1, 1, 1, 1},
        {3, 3, 2, 1, 2},
        {2, 1, 45, 3, 15},
        {2, 2, 23, 2, 12}}) {
    INFO("latent dim " << dim << ", " << rows << " x " << cols);
    auto model = random_model(dim, seed + 3);
    const std::string path = dir.file("samples.png");
    write_samples(path, *model, rows, cols, seed);
    const Image img = read_png(path);
    const int lines = rows * wrap_lines;
    REQUIRE(img.width == 2 * kPicturePad + per_line * kTile + (per_line - 1) * kTileGap);
    REQUIRE(img.height == 2 * kPicturePad + kTitleBand + lines * kTile + (lines - 1) * kTileGap);

    // The picture of `draw_seed` holds the decoder's images of its documented Philox normals.
    const int count = rows * cols;
    const auto require_samples_of = [&](const Image& pic, uint64_t draw_seed) {
      std::vector<float> z(size_t(count) * dim);
      for (size_t i = 0; i < z.size(); ++i) {
        const Philox4 w = random_words(draw_seed, Stream::Data, 100, uint32_t(i));
        z[i] = normal_from(w.v[0], w.v[1]);
      }
      const std::vector<int> want = expected_gray(*model, z, count);
      // Sample (r, c): line r * wrap_lines + c / per_line, column c % per_line.
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c)
          require_digit(
              pic, kPicturePad + (c % per_line) * (kTile + kTileGap),
              kPicturePad + kTitleBand + (r * wrap_lines + c / per_line) * (kTile + kTileGap),
              kTileScale, &want[(size_t(r) * cols + c) * kImagePixels],
              "sample (" + std::to_string(r) + ", " + std::to_string(c) + ")");
    };
    require_samples_of(img, seed);
    // Same seed, same picture; another seed, that seed's draws. (Not "other pixels": a random
    // model with one latent unit can map two draws to the same 8-bit image.)
    write_samples(dir.file("again.png"), *model, rows, cols, seed);
    REQUIRE(read_png(dir.file("again.png")).rgb == img.rgb);
    write_samples(dir.file("other.png"), *model, rows, cols, seed + 1);
    require_samples_of(read_png(dir.file("other.png")), seed + 1);
  }
  auto model = random_model(2, seed);
  const std::string path = dir.file("bad.png");
  require_input_error([&] { write_samples(path, *model, 0, 3, 1); }, "rows and cols");
  require_input_error([&] { write_samples(path, *model, 3, kMaxSampleSide + 1, 1); },
                      "rows and cols");
  REQUIRE_FALSE(fs::exists(path));
}

// ---- run pictures --------------------------------------------------------------------------
TEST_CASE("write_run_pictures writes the five pictures with the suffix", "[pictures][slow]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const test::TempDir dir("cuvae_pictures_");
  const Dataset test_set = synthetic_data(rng, 25);
  for (const int dim : {2, 1}) {
    INFO("latent dim " << dim);
    auto model = random_model(dim, seed);
    const std::string suffix = "_epoch" + std::to_string(dim);
    write_run_pictures(dir.path.string(), *model, test_set, suffix, seed);
    const int rows15 = dim == 1 ? 1 : 15, rows30 = dim == 1 ? 1 : 30;
    const std::vector<std::tuple<std::string, int, int>> want = {
        {"grid_15", grid_width(15), grid_height(rows15)},
        {"grid_30", grid_width(30), grid_height(rows30)},
        {"scatter", kAxesLeft + kScatterPlot + kScatterRight,
         kAxesTop + kScatterPlot + kAxesBottom},
        {"reconstructions", 2 * kPicturePad + kRowLabelWidth + 10 * kTile + 9 * kTileGap,
         2 * kPicturePad + kTitleBand + 2 * kTile + kTileGap},
        {"samples", 2 * kPicturePad + 8 * kTile + 7 * kTileGap,
         2 * kPicturePad + kTitleBand + 8 * kTile + 7 * kTileGap}};
    for (const auto& [name, w, h] : want) {
      INFO(name);
      const Image img = read_png(dir.file(name + suffix + ".png"));
      REQUIRE(img.width == w);
      REQUIRE(img.height == h);
    }
    // Without the split argument the titles say the test split.
    REQUIRE(title_has(read_png(dir.file("scatter" + suffix + ".png")), "test split", kAxesTop));
    REQUIRE(title_has(read_png(dir.file("reconstructions" + suffix + ".png")), "test split",
                      kPicturePad + kTitleBand));
  }
  REQUIRE(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 10);
  // A run without test files shows its first training images, and says so.
  auto model = random_model(2, seed);
  write_run_pictures(dir.path.string(), *model, test_set, "_train", seed, Split::Train);
  for (const auto& [name, band] : {std::pair<std::string, int>{"scatter", kAxesTop},
                                   {"reconstructions", kPicturePad + kTitleBand}}) {
    INFO(name);
    const Image img = read_png(dir.file(name + "_train.png"));
    REQUIRE(title_has(img, "train split", band));
    REQUIRE_FALSE(title_has(img, "test split", band));
  }
}
