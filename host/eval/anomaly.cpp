// Anomaly scores, their ROC statistics and picture (anomaly.h).
#include "host/eval/anomaly.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <utility>

#include "host/core/error.h"
#include "host/core/text.h"
#include "host/eval/plot.h"

namespace cuvae {
namespace {

std::vector<double> sorted_copy(const std::vector<double>& v, const char* what) {
  if (v.empty()) throw Error(std::string("anomaly: no ") + what + " scores");
  for (const double x : v)
    if (std::isnan(x)) throw Error(std::string("anomaly: a NaN among the ") + what + " scores");
  std::vector<double> s = v;
  std::sort(s.begin(), s.end());
  return s;
}

// Twice the Mann-Whitney count of sorted scores (pairs out > in count 2, ties 1): an integer.
int64_t twice_u(const std::vector<double>& in, const std::vector<double>& out) {
  int64_t total = 0;
  size_t i = 0, o = 0;
  while (o < out.size()) {
    const double v = out[o];
    while (i < in.size() && in[i] < v) ++i;
    const size_t below = i;
    size_t ties = 0;
    while (i + ties < in.size() && in[i + ties] == v) ++ties;
    size_t run = 0;
    while (o < out.size() && out[o] == v) ++o, ++run;
    total += int64_t(run) * int64_t(2 * below + ties);
  }
  return total;
}

// Light tint of a colour (35% of it over white), as a filled area under a line.
Rgb tint(Rgb c) {
  const auto t = [](uint8_t v) { return uint8_t(std::lround(0.35 * v + 0.65 * 255)); };
  return {t(c.r), t(c.g), t(c.b)};
}

// Two tints over each other (multiplied, as overlapping filters).
Rgb overlap(Rgb a, Rgb b) {
  return {uint8_t(a.r * b.r / 255), uint8_t(a.g * b.g / 255), uint8_t(a.b * b.b / 255)};
}

constexpr Rgb kThresholdGrey{110, 110, 110};
constexpr Rgb kDiagonalGrey{170, 170, 170};
constexpr Rgb kRocColour = kClassColors[4];

// Per-bin fractions of `sorted` over [lo, hi] in `bins` bins; counts the values outside.
std::vector<double> bin_fractions(const std::vector<double>& sorted, double lo, double hi, int bins,
                                  int64_t& outside) {
  std::vector<double> f(size_t(bins), 0.0);
  for (const double v : sorted) {
    if (!(v >= lo && v <= hi)) {
      ++outside;
      continue;
    }
    const int k = std::min(bins - 1, int((v - lo) / (hi - lo) * bins));
    f[size_t(k)] += 1.0;
  }
  for (double& x : f) x /= double(sorted.size());
  return f;
}

// The outline of a histogram: from (lo, 0) up and along each bin's top, back down at hi.
void histogram_outline(const std::vector<double>& f, double lo, double hi, std::vector<double>& xs,
                       std::vector<double>& ys) {
  const int bins = int(f.size());
  xs = {lo};
  ys = {0.0};
  for (int k = 0; k < bins; ++k) {
    const double a = lo + (hi - lo) * k / bins, b = lo + (hi - lo) * (k + 1) / bins;
    xs.insert(xs.end(), {a, b});
    ys.insert(ys.end(), {f[size_t(k)], f[size_t(k)]});
  }
  xs.push_back(hi);
  ys.push_back(0.0);
}

struct Histogram {
  double lo = 0, hi = 1, top = 1;
  std::vector<double> in, out;  // fractions per bin
  int64_t outside = 0;
};

Histogram make_histogram(const AnomalyResult& r) {
  Histogram h;
  std::vector<double> pooled = r.in;
  pooled.insert(pooled.end(), r.out.begin(), r.out.end());
  std::tie(h.lo, h.hi) = robust_range(pooled);
  h.in = bin_fractions(r.in, h.lo, h.hi, kAnomalyBins, h.outside);
  h.out = bin_fractions(r.out, h.lo, h.hi, kAnomalyBins, h.outside);
  const double peak = std::max(*std::max_element(h.in.begin(), h.in.end()),
                               *std::max_element(h.out.begin(), h.out.end()));
  h.top = peak > 0 ? 1.15 * peak : 1.0;  // headroom for the threshold labels
  return h;
}

// The fills: per pixel column, each set's tint up to its bin's height, the mix where both are.
void fill_histograms(Canvas& c, const PlotArea& plot, const AxisMap& xmap, const AxisMap& ymap,
                     const Histogram& h) {
  const Rgb ti = tint(kClassColors[0]), to = tint(kClassColors[1]), both = overlap(ti, to);
  for (int px = plot.x; px < plot.right(); ++px) {
    const double v = h.lo + (px + 0.5 - xmap.p_lo) / xmap.px_per_unit();
    if (v < h.lo || v > h.hi) continue;
    const int k = std::min(kAnomalyBins - 1, int((v - h.lo) / (h.hi - h.lo) * kAnomalyBins));
    // The top row of each bar, or the row below the plot for an empty bin.
    const int base = plot.bottom() - 1;
    const auto top_row = [&](double f) {
      return f > 0 ? int(std::lround(ymap.to_px(f))) : base + 1;
    };
    const int yi = top_row(h.in[size_t(k)]), yo = top_row(h.out[size_t(k)]);
    const int y_low = std::max(yi, yo), y_high = std::min(yi, yo);
    if (y_low <= base) c.vline(px, y_low, base, both);
    if (y_high < y_low) c.vline(px, y_high, y_low - 1, yi < yo ? ti : to);
  }
}

void draw_histogram_panel(Canvas& c, const PlotArea& plot, const AnomalyResult& r) {
  const Histogram h = make_histogram(r);
  const AxisMap xmap{h.lo, h.hi, plot.x, plot.right() - 1};
  const AxisMap ymap{0.0, h.top, plot.bottom() - 1, plot.y};
  std::string xname = "negative ELBO (nats), " + std::to_string(kAnomalyBins) + " shared bins";
  if (h.outside > 0) xname += ", " + with_commas(h.outside) + " scores outside";
  draw_x_axis(c, plot, xmap, nice_ticks(h.lo, h.hi, xmap.px_per_unit(), true), xname, true);
  draw_y_axis(c, plot, ymap, nice_ticks(0.0, h.top, ymap.px_per_unit(), false),
              "fraction of the set per bin", true);
  fill_histograms(c, plot, xmap, ymap, h);
  std::vector<double> xs, ys;
  histogram_outline(h.in, h.lo, h.hi, xs, ys);
  draw_series(c, plot, xmap, ymap, xs, ys, kClassColors[0], 2);
  histogram_outline(h.out, h.lo, h.hi, xs, ys);
  draw_series(c, plot, xmap, ymap, xs, ys, kClassColors[1], 2);
  // The thresholds: the 5% one (the lower) labelled on its left, the 1% one on its right, each
  // on the other side where the plot ends; a label that would run into the first drops a line.
  int label_end = plot.x - 1, label_y = plot.y + 6;
  for (const OperatingPoint* p : {&r.at_5pct, &r.at_1pct}) {
    if (!(p->threshold >= h.lo && p->threshold <= h.hi)) continue;
    const int px = int(std::lround(xmap.to_px(p->threshold)));
    c.vline(px, plot.y, plot.bottom() - 1, kThresholdGrey);
    const std::string label = fixed(100 * p->target_fpr, 0) + "% FPR";
    const int w = text_px(label), left = px - 6 - w, right = px + 6;
    const bool on_left = p == &r.at_5pct ? left >= plot.x + 4 : right + w > plot.right() - 4;
    const int x = on_left ? left : right;
    if (x <= label_end + 8) label_y += kLinePx + 6;
    ink_text(c, x, label_y, label);
    label_end = x + w;
  }
  draw_frame(c, plot);
}

void draw_roc_panel(Canvas& c, const PlotArea& plot, const AnomalyResult& r) {
  const AxisMap xmap{0.0, 1.0, plot.x, plot.right() - 1};
  const AxisMap ymap{0.0, 1.0, plot.bottom() - 1, plot.y};
  draw_x_axis(c, plot, xmap, nice_ticks(0.0, 1.0, xmap.px_per_unit(), true),
              "false positive rate (in flagged)", true);
  draw_y_axis(c, plot, ymap, nice_ticks(0.0, 1.0, ymap.px_per_unit(), false),
              "true positive rate (out flagged)", true);
  draw_series(c, plot, xmap, ymap, {0.0, 1.0}, {0.0, 1.0}, kDiagonalGrey, 1);
  draw_series(c, plot, xmap, ymap, r.roc.fpr, r.roc.tpr, kRocColour, 2);
  // The operating points as dots, their figures in the corner below the diagonal.
  int line_y = plot.bottom() - 8 - 2 * (kLinePx + 8);
  for (const OperatingPoint* p : {&r.at_1pct, &r.at_5pct}) {
    const int px = int(std::lround(xmap.to_px(p->fpr))), py = int(std::lround(ymap.to_px(p->tpr)));
    c.disc(std::clamp(px, plot.x + 3, plot.right() - 4),
           std::clamp(py, plot.y + 3, plot.bottom() - 4), 3, kInk);
    const std::string label =
        "TPR " + fixed(100 * p->tpr, 1) + "% at " + fixed(100 * p->target_fpr, 0) + "% FPR";
    ink_text(c, plot.right() - 8 - text_px(label), line_y, label);
    line_y += kLinePx + 8;
  }
  draw_frame(c, plot);
  draw_fitting(c, plot.x + plot.w / 2, plot.y - kLinePx - 12,
               {"ROC curve, AUC " + fixed(r.auc, 4), "AUC " + fixed(r.auc, 4)}, plot.x - 40,
               c.width() - kPicturePad);
}

}  // namespace

std::vector<double> neg_elbo_scores(Inference& model, const ImageSet& images, uint64_t seed,
                                    int64_t n, const ProgressFn& progress) {
  std::vector<double> scores;
  scores.reserve(size_t(n));
  evaluate_elbo_chunks(model, images, seed, n,
                       [&](int64_t first, int count, const float*, const float*, const float*,
                           const float*, const double* recon, const double* kl) {
                         for (int i = 0; i < count; ++i) {
                           const double s = recon[i] + kl[i];
                           if (!std::isfinite(s))
                             throw Error("the negative ELBO of image " + std::to_string(first + i) +
                                         " of " + images.path +
                                         " is not finite (the model's outputs are not finite)");
                           scores.push_back(s);
                         }
                         if (progress) progress(first + count, n);
                       });
  return scores;
}

double roc_auc(const std::vector<double>& in, const std::vector<double>& out) {
  const std::vector<double> a = sorted_copy(in, "in"), b = sorted_copy(out, "out");
  return double(twice_u(a, b)) / (2.0 * double(a.size()) * double(b.size()));
}

RocCurve roc_curve(const std::vector<double>& in, const std::vector<double>& out) {
  const std::vector<double> a = sorted_copy(in, "in"), b = sorted_copy(out, "out");
  RocCurve c{{0.0}, {0.0}};
  // Walk both sets from the top: at each distinct score, flag everything at or above it.
  size_t i = a.size(), o = b.size();
  while (i > 0 || o > 0) {
    const double v = std::max(i > 0 ? a[i - 1] : -INFINITY, o > 0 ? b[o - 1] : -INFINITY);
    while (i > 0 && a[i - 1] == v) --i;
    while (o > 0 && b[o - 1] == v) --o;
    c.fpr.push_back(double(a.size() - i) / double(a.size()));
    c.tpr.push_back(double(b.size() - o) / double(b.size()));
  }
  return c;
}

int64_t count_above(const std::vector<double>& sorted, double t) {
  return int64_t(sorted.end() - std::upper_bound(sorted.begin(), sorted.end(), t));
}

OperatingPoint operating_point(const std::vector<double>& in, const std::vector<double>& out,
                               double target_fpr) {
  if (!(target_fpr >= 0 && target_fpr < 1))
    throw Error("anomaly: the target false-positive rate must be in [0, 1), got " +
                exact_text(target_fpr));
  const std::vector<double> a = sorted_copy(in, "in"), b = sorted_copy(out, "out");
  const int64_t n = int64_t(a.size());
  const int64_t allowed =
      std::min(n - 1, int64_t(std::floor(target_fpr * double(n) * (1 + 1e-12))));
  OperatingPoint p;
  p.target_fpr = target_fpr;
  p.threshold = a[size_t(n - allowed - 1)];
  p.in_above = count_above(a, p.threshold);
  p.out_above = count_above(b, p.threshold);
  p.fpr = double(p.in_above) / double(n);
  p.tpr = double(p.out_above) / double(b.size());
  return p;
}

AnomalyResult analyse_scores(std::vector<double> in, std::vector<double> out) {
  AnomalyResult r;
  r.auc = roc_auc(in, out);
  r.roc = roc_curve(in, out);
  r.at_1pct = operating_point(in, out, 0.01);
  r.at_5pct = operating_point(in, out, 0.05);
  std::sort(in.begin(), in.end());
  std::sort(out.begin(), out.end());
  r.in = std::move(in);
  r.out = std::move(out);
  return r;
}

Canvas anomaly_picture(const AnomalyResult& r, const std::string& in_name,
                       const std::string& out_name, const std::string& title) {
  if (r.in.empty() || r.out.empty()) throw Error("anomaly picture: no scores");
  Canvas c(kAnomalyWidth, kAnomalyHeight, kWhite);
  const PlotArea hist{kAxesLeft, kAnomalyTop, kAnomalyHistW, kAnomalyPlotH};
  const PlotArea roc{hist.right() + kAxesLeft, kAnomalyTop, kAnomalyPlotH, kAnomalyPlotH};
  draw_histogram_panel(c, hist, r);
  draw_roc_panel(c, roc, r);
  // The legend of the histograms above their plot, under the title.
  const int name_px = hist.right() - kPicturePad - 22;
  draw_legend(c, kPicturePad, kPicturePad + kLinePx + 12, "",
              {{shorten_to_px(in_name, name_px), kClassColors[0]},
               {shorten_to_px(out_name, name_px), kClassColors[1]}});
  draw_fitting(c, c.width() / 2, kPicturePad, {title, "anomaly scores"}, kPicturePad,
               c.width() - kPicturePad);
  return c;
}

void write_anomaly_png(const std::string& path, const AnomalyResult& r, const std::string& in_name,
                       const std::string& out_name, const std::string& title) {
  write_png(path, anomaly_picture(r, in_name, out_name, title));
}

}  // namespace cuvae
