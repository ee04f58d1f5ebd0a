// Axes pictures (plot.h).
#include "host/eval/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "host/core/error.h"
#include "host/core/text.h"

namespace cuvae {
namespace {

// Clips the segment (x0, y0)-(x1, y1) to [xmin, xmax] x [ymin, ymax] (Liang-Barsky); false when
// nothing of it is inside.
bool clip_segment(double& x0, double& y0, double& x1, double& y1, double xmin, double xmax,
                  double ymin, double ymax) {
  const double dx = x1 - x0, dy = y1 - y0;
  double t0 = 0.0, t1 = 1.0;
  const double p[4] = {-dx, dx, -dy, dy};
  const double q[4] = {x0 - xmin, xmax - x0, y0 - ymin, ymax - y0};
  for (int k = 0; k < 4; ++k) {
    if (p[k] == 0.0) {
      if (q[k] < 0.0) return false;  // parallel to this edge and outside it
      continue;
    }
    const double t = q[k] / p[k];
    if (p[k] < 0.0)
      t0 = std::max(t0, t);
    else
      t1 = std::min(t1, t);
    if (t0 > t1) return false;
  }
  const double ax = x0 + t0 * dx, ay = y0 + t0 * dy;
  x1 = x0 + t1 * dx;
  y1 = y0 + t1 * dy;
  x0 = ax;
  y0 = ay;
  return true;
}

// A `width` x `width` block centred on (x, y), inside the plot only.
void pen(Canvas& c, const PlotArea& plot, int x, int y, int width, Rgb colour) {
  const int x0 = std::max(plot.x, x - (width - 1) / 2), y0 = std::max(plot.y, y - (width - 1) / 2);
  const int x1 = std::min(plot.right() - 1, x + width / 2),
            y1 = std::min(plot.bottom() - 1, y + width / 2);
  if (x1 >= x0 && y1 >= y0) c.fill_rect(x0, y0, x1 - x0 + 1, y1 - y0 + 1, colour);
}

}  // namespace

int text_px(const std::string& s) {
  return text_width(s, kTextScale);
}

void ink_text(Canvas& c, int x, int y, const std::string& s) {
  draw_text(c, x, y, s, kInk, kTextScale);
}

std::string shorten_to_px(const std::string& s, int max_px) {
  if (text_px(s) <= max_px) return s;
  std::string cut = s;
  while (!cut.empty() && text_px(cut + "...") > max_px) cut.pop_back();
  return cut.empty() ? std::string() : cut + "...";
}

// The first of `candidates` that fits between x_min and x_max, centred on cx as far as the
// bounds allow; nothing when none fits (a very narrow picture).
void draw_fitting(Canvas& c, int cx, int y, const std::vector<std::string>& candidates, int x_min,
                  int x_max) {
  for (const std::string& s : candidates) {
    const int w = text_px(s);
    if (w > x_max - x_min) continue;
    const int x = std::clamp(cx - w / 2, x_min, x_max - w);
    ink_text(c, x, y, s);
    return;
  }
}

// A tick value as text with the decimals its step needs ("-0.5", "2", "0.25"), in at most
// kTickLabelChars characters: too long in fixed point (huge or tiny values) it becomes a
// short exponent form ("2.5e-6", "1e5").
std::string tick_label(double v, double step) {
  const int decimals = std::max(0, int(-std::floor(std::log10(step) + 1e-9)));
  std::string s = fixed(v, decimals);
  if (int(s.size()) <= kTickLabelChars) return s;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1e", v);
  std::string m = buf;
  const size_t e = m.find('e');
  std::string mantissa = m.substr(0, e);
  const int exponent = std::atoi(m.c_str() + e + 1);
  if (mantissa.size() > 2 && mantissa.compare(mantissa.size() - 2, 2, ".0") == 0)
    mantissa.resize(mantissa.size() - 2);
  return mantissa + "e" + std::to_string(exponent);
}

// Ticks at multiples of the smallest step in {1, 2, 5} x 10^k that keeps neighbouring ticks
// far enough apart for their labels (`horizontal`: labels side by side) and at most kMaxTicks.
std::vector<Tick> nice_ticks(double lo, double hi, double px_per_unit, bool horizontal) {
  const double range = hi - lo;
  if (!(range > 0) || !std::isfinite(range)) return {{lo, tick_label(lo, 1.0)}};
  int k = int(std::floor(std::log10(range))) - 2;
  for (int iter = 0; iter < 40; ++iter, ++k) {
    for (const double m : {1.0, 2.0, 5.0}) {
      const double step = m * std::pow(10.0, k);
      const double first = std::ceil(lo / step - 1e-9), last = std::floor(hi / step + 1e-9);
      if (last - first + 1 > kMaxTicks) continue;
      std::vector<Tick> ticks;
      int widest = 0;
      for (double i = first; i <= last; ++i) {
        const double v = i == 0 ? 0.0 : i * step;  // never "-0.0"
        ticks.push_back({v, tick_label(v, step)});
        widest = std::max(widest, text_px(ticks.back().label));
      }
      const int need = std::max(kMinTickSpacing, (horizontal ? widest : kLinePx) + 16);
      if (ticks.size() <= 1 || step * px_per_unit >= need) return ticks;
    }
  }
  return {};
}

// A value as short text for a tick that is not on a nice step: at most 4 significant digits
// and kTickLabelChars characters ("3", "2.5", "1.235", "-1e-6", "1.23e5").
std::string value_label(double v) {
  if (v == 0.0) return "0";  // never "-0"
  // "1e-06" -> "1e-6", "1e+06" -> "1e6"
  const auto short_exponent = [](std::string s) {
    const size_t e = s.find('e');
    if (e != std::string::npos) s = s.substr(0, e) + "e" + std::to_string(std::atoi(&s[e + 1]));
    return s;
  };
  // The most significant digits of |v| that fit in one character less than the limit (so that
  // v and -v read alike), as %g writes them or, where that is too long, in exponent form.
  std::string s;
  for (int digits = 4; digits >= 1; --digits) {
    char g[40], e[40];
    std::snprintf(g, sizeof g, "%.*g", digits, std::abs(v));
    std::snprintf(e, sizeof e, "%.*e", digits - 1, std::abs(v));
    s = short_exponent(g);
    if (int(s.size()) < kTickLabelChars) break;
    s = short_exponent(e);
    if (int(s.size()) < kTickLabelChars) break;
  }
  return v < 0 ? "-" + s : s;
}

// Ticks for an axis whose ends are values of their own: lo and hi, and the nice ticks between
// them far enough from both for their labels.
std::vector<Tick> ticks_with_ends(double lo, double hi, double px_per_unit, bool horizontal) {
  if (!(hi > lo)) return {{lo, value_label(lo)}};
  const std::vector<Tick> nice = nice_ticks(lo, hi, px_per_unit, horizontal);
  const double tol = 1e-9 * (hi - lo);
  const auto end_tick = [&](double v) {
    for (const Tick& t : nice)
      if (std::abs(t.value - v) <= tol) return Tick{v, t.label};
    return Tick{v, value_label(v)};
  };
  Tick first = end_tick(lo), last = end_tick(hi);
  if (lo == -hi && first.label != "-" + last.label) {  // "-1e6" but "1000000": alike instead
    first.label = value_label(lo);
    last.label = value_label(hi);
  }
  // The spacing nice_ticks keeps between neighbours, for these two labels.
  const auto apart = [&](const Tick& a, const Tick& b) {
    const int widest = std::max(text_px(a.label), text_px(b.label));
    const int need = std::max(kMinTickSpacing, (horizontal ? widest : kLinePx) + 16);
    return (b.value - a.value) * px_per_unit >= need;
  };
  std::vector<Tick> ticks{first};
  for (const Tick& t : nice)
    if (t.value > lo + tol && t.value < hi - tol && apart(first, t) && apart(t, last))
      ticks.push_back(t);
  ticks.push_back(last);
  return ticks;
}

double AxisMap::px_per_unit() const {
  return hi > lo ? std::abs(p_hi - p_lo) / (hi - lo) : 0.0;
}

double AxisMap::to_px(double v) const {
  if (!(hi > lo)) return 0.5 * (p_lo + p_hi);
  return p_lo + (v - lo) / (hi - lo) * (p_hi - p_lo);
}

// Ticks, tick labels and the axis name below the plot. `guides` draws light lines across.
void draw_x_axis(Canvas& c, const PlotArea& plot, const AxisMap& map,
                 const std::vector<Tick>& ticks, const std::string& name, bool guides) {
  const int label_y = plot.bottom() + 1 + kTickLength + 4;
  const size_t n = ticks.size();
  std::vector<int> px(n), x(n), w(n);
  for (size_t i = 0; i < n; ++i) {
    px[i] = int(std::lround(map.to_px(ticks[i].value)));
    w[i] = text_px(ticks[i].label);
    x[i] = px[i] - w[i] / 2;
  }
  constexpr int kLabelGap = 8;  // least white between neighbouring labels
  if (n >= 2) {
    const bool first_touches = x[0] + w[0] + kLabelGap > x[1];
    const bool last_touches = x[n - 2] + w[n - 2] + kLabelGap > x[n - 1];
    if (first_touches) x[0] = px[0] - w[0];
    if (last_touches) x[n - 1] = px[n - 1];
  }
  for (size_t i = 0; i < n; ++i) {
    if (guides) c.vline(px[i], plot.y, plot.bottom() - 1, kGuide);
    c.vline(px[i], plot.bottom() + 1, plot.bottom() + kTickLength, kInk);
    ink_text(c, std::clamp(x[i], 0, std::max(0, c.width() - w[i])), label_y, ticks[i].label);
  }
  const int cx = plot.x + plot.w / 2;
  draw_fitting(c, cx, label_y + kLinePx + 8, {name}, 0, c.width());
}

// Ticks, right-aligned tick labels and the turned axis name left of the plot.
void draw_y_axis(Canvas& c, const PlotArea& plot, const AxisMap& map,
                 const std::vector<Tick>& ticks, const std::string& name, bool guides) {
  const int label_right = plot.x - 1 - kTickLength - 6;
  int widest = 0;
  for (const Tick& t : ticks) {
    const int py = int(std::lround(map.to_px(t.value)));
    if (guides) c.hline(plot.x, plot.right() - 1, py, kGuide);
    c.hline(plot.x - 1 - kTickLength, plot.x - 2, py, kInk);
    ink_text(c, label_right - text_px(t.label), py - kCapPx / 2, t.label);
    widest = std::max(widest, text_px(t.label));
  }
  // Beside the widest tick label, as matplotlib places it; never into the outer margin.
  const int name_x = std::max(kPicturePad, label_right - widest - 12 - kLinePx);
  draw_text_up(c, name_x, plot.y + plot.h / 2 + text_px(name) / 2, name, kInk, kTextScale);
}

// A one-pixel frame just outside the plot.
void draw_frame(Canvas& c, const PlotArea& plot) {
  c.frame(plot.x - 1, plot.y - 1, plot.w + 2, plot.h + 2, kInk);
}

// [0.5th percentile, 99.5th percentile] of the finite values, widened by 5% each side; a
// degenerate range is widened around its value.
std::pair<double, double> robust_range(const std::vector<double>& values) {
  std::vector<double> v;
  v.reserve(values.size());
  for (double x : values)
    if (std::isfinite(x)) v.push_back(x);
  if (v.empty()) return {-1.0, 1.0};
  std::sort(v.begin(), v.end());
  const double last = double(v.size() - 1);
  double lo = v[size_t(std::floor(0.005 * last))];
  double hi = v[size_t(std::ceil(0.995 * last))];
  const double span = hi - lo;
  if (!(span > 1e-9 * std::max({1.0, std::abs(lo), std::abs(hi)}))) {
    const double mid = 0.5 * (lo + hi), half = std::max(1e-3, 0.05 * std::abs(mid));
    return {mid - half, mid + half};
  }
  return {lo - 0.05 * span, hi + 0.05 * span};
}

void draw_series(Canvas& c, const PlotArea& plot, const AxisMap& xmap, const AxisMap& ymap,
                 const std::vector<double>& xs, const std::vector<double>& ys, Rgb colour,
                 int width) {
  if (xs.size() != ys.size()) throw Error("draw_series: xs and ys differ in size");
  width = std::max(1, width);
  auto finite = [&](size_t i) { return std::isfinite(xs[i]) && std::isfinite(ys[i]); };
  for (size_t i = 0; i < xs.size(); ++i) {
    if (!finite(i)) continue;
    const bool joined = i + 1 < xs.size() && finite(i + 1);
    double x0 = xmap.to_px(xs[i]), y0 = ymap.to_px(ys[i]);
    double x1 = joined ? xmap.to_px(xs[i + 1]) : x0, y1 = joined ? ymap.to_px(ys[i + 1]) : y0;
    if (!clip_segment(x0, y0, x1, y1, plot.x, plot.right() - 1, plot.y, plot.bottom() - 1))
      continue;
    // One pen stroke per pixel step along the longer axis of the (clipped, so short) segment.
    const int steps = int(std::ceil(std::max(std::abs(x1 - x0), std::abs(y1 - y0))));
    for (int k = 0; k <= steps; ++k) {
      const double t = steps > 0 ? double(k) / steps : 0.0;
      pen(c, plot, int(std::lround(x0 + t * (x1 - x0))), int(std::lround(y0 + t * (y1 - y0))),
          width, colour);
    }
  }
}

int draw_legend(Canvas& c, int x, int y, const std::string& heading,
                const std::vector<std::pair<std::string, Rgb>>& entries) {
  constexpr int kSwatch = 12, kRow = 24;
  int top = y;
  if (!heading.empty()) {
    ink_text(c, x, top, heading);
    top += kLinePx + 10;
  }
  for (const auto& [name, colour] : entries) {
    c.fill_rect(x, top + (kCapPx - kSwatch) / 2, kSwatch, kSwatch, colour);
    ink_text(c, x + kSwatch + 10, top, name);
    top += kRow;
  }
  return top - y;
}

}  // namespace cuvae
