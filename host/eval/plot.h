// Axes pictures on a Canvas (png.h): the plot rectangle, linear axes with "nice" ticks (1, 2
// or 5 times a power of ten, spaced so their labels never touch), lines, legends and the
// text they need; shared by the scatter (pictures.h) and the charts of the training curves and
// the anomaly scores. Sizes in pixels; the text is the 5 x 9 font drawn at kTextScale.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "host/eval/pictures.h"
#include "host/io/png.h"

namespace cuvae {

constexpr Rgb kInk{0, 0, 0};                       // text, axes, ticks
constexpr Rgb kGuide{225, 225, 225};               // grid lines at the ticks
constexpr int kLinePx = kGlyphRows * kTextScale;   // height of a line of text
constexpr int kCapPx = kGlyphAscent * kTextScale;  // height of digits and capitals
constexpr int kMinTickSpacing = 40;                // pixels between neighbouring ticks, at least
constexpr int kMaxTicks = 11;

// The categorical palette of matplotlib ("tab10"): one colour per class 0-9, and per series.
constexpr Rgb kClassColors[10] = {{31, 119, 180},  {255, 127, 14}, {44, 160, 44},   {214, 39, 40},
                                  {148, 103, 189}, {140, 86, 75},  {227, 119, 194}, {127, 127, 127},
                                  {188, 189, 34},  {23, 190, 207}};

int text_px(const std::string& s);                             // width at kTextScale
void ink_text(Canvas& c, int x, int y, const std::string& s);  // top-left corner at (x, y)

// `s` cut at the end to at most max_px pixels wide, ending in "..." when cut.
std::string shorten_to_px(const std::string& s, int max_px);

// The first of `candidates` that fits between x_min and x_max, centred on cx as far as the
// bounds allow; nothing when none fits (a very narrow picture).
void draw_fitting(Canvas& c, int cx, int y, const std::vector<std::string>& candidates, int x_min,
                  int x_max);

struct Tick {
  double value;
  std::string label;
};

// A tick value as text with the decimals its step needs ("-0.5", "2", "0.25"), in at most
// kTickLabelChars characters: too long in fixed point (huge or tiny values) it becomes a
// short exponent form ("2.5e-6", "1e5").
std::string tick_label(double v, double step);

// Ticks at multiples of the smallest step in {1, 2, 5} x 10^k that keeps neighbouring ticks
// far enough apart for their labels (`horizontal`: labels side by side) and at most kMaxTicks.
std::vector<Tick> nice_ticks(double lo, double hi, double px_per_unit, bool horizontal);

// A value as short text for a tick that is not on a nice step: at most 4 significant digits
// and kTickLabelChars characters, v and -v alike but for the sign ("3", "-2.5", "0.1235",
// "-1e-6", "1.23e5").
std::string value_label(double v);

// Ticks for an axis whose ends are values of their own (the latent grid: its first and last
// cells sit on -extent and +extent): lo and hi are always ticks, labelled with value_label
// unless a nice tick (nice_ticks) sits there already (and, for lo = -hi, its label reads as
// the other end's with a minus sign); between them the nice ticks that are
// far enough from the ends for their labels. lo == hi gives the one tick lo.
std::vector<Tick> ticks_with_ends(double lo, double hi, double px_per_unit, bool horizontal);

// A linear map from values to pixels: value lo at pixel p_lo, hi at p_hi (p_hi < p_lo for a
// y axis, whose values grow upwards).
struct AxisMap {
  double lo, hi;
  int p_lo, p_hi;
  double px_per_unit() const;
  double to_px(double v) const;
};

// The plot rectangle of an axes picture.
struct PlotArea {
  int x, y, w, h;
  int right() const { return x + w; }   // first column after the plot
  int bottom() const { return y + h; }  // first row below the plot
};

// Ticks, tick labels and the axis name below the plot. `guides` draws light lines across.
// Labels are centred on their ticks; an end label that would touch its neighbour's (two end
// ticks close together) moves outwards, to end (first) or start (last) at its tick.
void draw_x_axis(Canvas& c, const PlotArea& plot, const AxisMap& map,
                 const std::vector<Tick>& ticks, const std::string& name, bool guides);
// Ticks, right-aligned tick labels and the turned axis name left of the plot.
void draw_y_axis(Canvas& c, const PlotArea& plot, const AxisMap& map,
                 const std::vector<Tick>& ticks, const std::string& name, bool guides);
// A one-pixel frame just outside the plot.
void draw_frame(Canvas& c, const PlotArea& plot);

// The points (xs[i], ys[i]) joined by straight lines `width` pixels wide (1 or more), clipped
// to the plot; a non-finite value breaks the line there. xs and ys have the same size.
void draw_series(Canvas& c, const PlotArea& plot, const AxisMap& xmap, const AxisMap& ymap,
                 const std::vector<double>& xs, const std::vector<double>& ys, Rgb colour,
                 int width);

// A legend with its top-left corner at (x, y): an optional heading line, then a colour swatch
// and a name per entry, one line each. Returns the height drawn.
int draw_legend(Canvas& c, int x, int y, const std::string& heading,
                const std::vector<std::pair<std::string, Rgb>>& entries);

// [0.5th percentile, 99.5th percentile] of the finite values, widened by 5% each side; a
// degenerate range (or no finite value) is widened around its value (or is [-1, 1]).
std::pair<double, double> robust_range(const std::vector<double>& values);

}  // namespace cuvae
