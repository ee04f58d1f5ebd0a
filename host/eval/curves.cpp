// The training curves picture (curves.h).
#include "host/eval/curves.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "host/core/error.h"
#include "host/core/text.h"
#include "host/eval/plot.h"

namespace cuvae {
namespace {

struct Series {
  std::vector<double> x, y;
  Rgb colour;
};

struct Panel {
  std::string title, y_name;
  std::vector<Series> series;
};

// A quantity of a metrics row.
using Field = double MetricsRow::*;

Series series_of(const MetricsLog& log, Field field, Rgb colour) {
  Series s;
  s.colour = colour;
  for (const MetricsRow& r : log.rows) {
    s.x.push_back(double(r.epoch));
    s.y.push_back(r.*field);
  }
  return s;
}

// The finite range of the panel's values, plus 5% each side; nothing finite: empty.
bool value_range(const Panel& p, double& lo, double& hi) {
  lo = INFINITY, hi = -INFINITY;
  for (const Series& s : p.series)
    for (const double v : s.y)
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (!(lo <= hi)) return false;
  const double span = hi - lo;
  if (!(span > 1e-9 * std::max({1.0, std::abs(lo), std::abs(hi)}))) {
    const double half = std::max(1e-3, 0.05 * std::abs(lo));
    lo -= half, hi += half;
  } else {
    lo -= 0.05 * span, hi += 0.05 * span;
  }
  return true;
}

// Ticks at whole epochs only.
std::vector<Tick> epoch_ticks(const AxisMap& xmap) {
  std::vector<Tick> ticks;
  for (const Tick& t : nice_ticks(xmap.lo, xmap.hi, xmap.px_per_unit(), true))
    if (t.value == std::floor(t.value)) ticks.push_back({t.value, tick_label(t.value, 1.0)});
  return ticks;
}

void draw_panel(Canvas& c, const PlotArea& plot, const Panel& p, double e_lo, double e_hi,
                bool marked) {
  const AxisMap xmap{e_lo, e_hi, plot.x, plot.right() - 1};
  draw_fitting(c, plot.x + plot.w / 2, plot.y - kLinePx - 12, {p.title}, plot.x - kAxesLeft + 8,
               plot.right() + kCurvePanelRight);
  double lo = 0, hi = 0;
  if (!value_range(p, lo, hi)) {
    draw_x_axis(c, plot, xmap, epoch_ticks(xmap), "epoch", true);
    draw_frame(c, plot);
    draw_fitting(c, plot.x + plot.w / 2, plot.y + plot.h / 2 - kLinePx / 2, {"not measured"},
                 plot.x, plot.right());
    return;
  }
  const AxisMap ymap{lo, hi, plot.bottom() - 1, plot.y};
  draw_x_axis(c, plot, xmap, epoch_ticks(xmap), "epoch", true);
  draw_y_axis(c, plot, ymap, nice_ticks(lo, hi, ymap.px_per_unit(), false), p.y_name, true);
  for (const Series& s : p.series) {
    draw_series(c, plot, xmap, ymap, s.x, s.y, s.colour, 2);
    if (!marked) continue;
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      const int px = int(std::lround(xmap.to_px(s.x[i]))),
                py = int(std::lround(ymap.to_px(s.y[i])));
      if (px >= plot.x + 2 && px < plot.right() - 2 && py >= plot.y + 2 && py < plot.bottom() - 2)
        c.disc(px, py, 2, s.colour);
    }
  }
  draw_frame(c, plot);
}

// One run: loss, reconstruction and test loss together; KL alone.
std::vector<Panel> single_run_panels(const CurveRun& run,
                                     std::vector<std::pair<std::string, Rgb>>& legend) {
  const MetricsLog& log = run.log;
  Panel losses{"loss, reconstruction", "nats per image", {}};
  losses.series.push_back(series_of(log, &MetricsRow::loss, kClassColors[0]));
  losses.series.push_back(series_of(log, &MetricsRow::recon, kClassColors[1]));
  legend = {{"loss", kClassColors[0]}, {"reconstruction", kClassColors[1]}};
  if (log.has_test_loss()) {
    losses.title += ", test loss";
    losses.series.push_back(series_of(log, &MetricsRow::test_loss, kClassColors[2]));
    legend.emplace_back("test loss", kClassColors[2]);
  }
  Panel kl{"KL term", "nats per image", {series_of(log, &MetricsRow::kl, kClassColors[3])}};
  legend.emplace_back("KL", kClassColors[3]);
  return {losses, kl};
}

// Several runs: a panel per quantity, a colour per run.
std::vector<Panel> multi_run_panels(const std::vector<CurveRun>& runs,
                                    std::vector<std::pair<std::string, Rgb>>& legend) {
  const std::pair<const char*, Field> quantities[] = {{"loss", &MetricsRow::loss},
                                                      {"reconstruction", &MetricsRow::recon},
                                                      {"test loss", &MetricsRow::test_loss},
                                                      {"KL term", &MetricsRow::kl}};
  std::vector<Panel> panels;
  for (const auto& [title, field] : quantities) {
    Panel p{title, "nats per image", {}};
    for (size_t i = 0; i < runs.size(); ++i)
      p.series.push_back(series_of(runs[i].log, field, kClassColors[i]));
    panels.push_back(std::move(p));
  }
  legend.clear();
  const int name_px = kCurveLegendW - kPicturePad - 22;
  for (size_t i = 0; i < runs.size(); ++i)
    legend.emplace_back(shorten_to_px(runs[i].name, name_px), kClassColors[i]);
  return panels;
}

void check_runs(const std::vector<CurveRun>& runs) {
  if (runs.empty() || int(runs.size()) > kMaxCurveRuns)
    throw InputError("training curves: 1 to " + std::to_string(kMaxCurveRuns) + " runs, got " +
                     std::to_string(runs.size()));
  for (const CurveRun& r : runs)
    if (r.log.rows.empty())
      throw InputError(r.log.path + ": no epochs yet (only the header): no curves to draw");
}

}  // namespace

int curves_width(int) {
  return 2 * kCurvePanelW + kCurveLegendW;
}

int curves_height(int runs) {
  return kCurveHead + (runs > 1 ? 2 : 1) * kCurvePanelH;
}

Canvas curves_picture(const std::vector<CurveRun>& runs) {
  check_runs(runs);
  const int n = int(runs.size());
  std::vector<std::pair<std::string, Rgb>> legend;
  const std::vector<Panel> panels =
      n == 1 ? single_run_panels(runs[0], legend) : multi_run_panels(runs, legend);
  int64_t e_min = INT64_MAX, e_max = 0;
  size_t most = 0;
  for (const CurveRun& r : runs) {
    e_min = std::min(e_min, r.log.rows.front().epoch);
    e_max = std::max(e_max, r.log.rows.back().epoch);
    most = std::max(most, r.log.rows.size());
  }
  const double pad = e_max > e_min ? 0.03 * double(e_max - e_min) : 0.5;
  const double e_lo = double(e_min) - pad, e_hi = double(e_max) + pad;

  Canvas c(curves_width(n), curves_height(n), kWhite);
  for (size_t k = 0; k < panels.size(); ++k) {
    const int col = int(k % 2), row = int(k / 2);
    const PlotArea plot{col * kCurvePanelW + kAxesLeft,
                        kCurveHead + row * kCurvePanelH + kCurvePanelTop, kCurvePlotW, kCurvePlotH};
    draw_panel(c, plot, panels[k], e_lo, e_hi, most <= size_t(kCurveMarkedEpochs));
  }
  draw_legend(c, 2 * kCurvePanelW + 8, kCurveHead + kCurvePanelTop, n == 1 ? "" : "run", legend);
  const std::string epochs = with_commas(int64_t(most)) + (most == 1 ? " epoch" : " epochs");
  const std::vector<std::string> title =
      n == 1 ? std::vector<std::string>{"training curves of " + runs[0].name + ", " + epochs,
                                        "training curves, " + epochs}
             : std::vector<std::string>{"training curves of " + std::to_string(n) + " runs"};
  draw_fitting(c, c.width() / 2, kPicturePad, title, kPicturePad, c.width() - kPicturePad);
  return c;
}

void write_curves_png(const std::string& path, const std::vector<CurveRun>& runs) {
  write_png(path, curves_picture(runs));
}

}  // namespace cuvae
