// The training curves of one or more runs, from their metrics.csv (host/io/metrics_csv.h), as
// a PNG: the per-epoch loss parts against the epoch, one panel per scale.
//
// One run: two panels side by side: left the loss, the reconstruction and the test loss (when
// measured) in nats per image, right the KL term alone (about 20x smaller, so on its own scale);
// one colour per series (kClassColors 0-3: loss, reconstruction, test loss, KL).
// Several runs (2 to kMaxCurveRuns): four panels, 2 x 2: loss, reconstruction, test loss, KL,
// each on its own scale, with one colour per run (kClassColors in the order given).
// Either way the legend stands in a column right of the panels, the x axis is the epoch (whole
// numbers only on the ticks), each y axis spans its panel's finite values plus 5% each side,
// and the points are marked when there are at most kCurveMarkedEpochs of them. A value that is
// not finite (a test loss never measured) leaves a gap.
// Size: (cols kCurvePanelW + kCurveLegendW) x (kCurveHead + rows kCurvePanelH) with (cols,
// rows) = (2, 1) for one run and (2, 2) for several: 1448 x 486 or 1448 x 918.
#pragma once

#include <string>
#include <vector>

#include "host/eval/pictures.h"
#include "host/io/metrics_csv.h"
#include "host/io/png.h"

namespace cuvae {

constexpr int kMaxCurveRuns = 10;  // one colour of kClassColors each
constexpr int kCurvePlotW = 440;   // one panel's plot
constexpr int kCurvePlotH = 320;
constexpr int kCurvePanelTop = 40;    // the panel's title above its plot
constexpr int kCurvePanelRight = 24;  // space right of a plot
constexpr int kCurvePanelW = kAxesLeft + kCurvePlotW + kCurvePanelRight;  // 604
constexpr int kCurvePanelH = kCurvePanelTop + kCurvePlotH + kAxesBottom;  // 432
constexpr int kCurveHead = 54;          // the picture's title band
constexpr int kCurveLegendW = 240;      // the legend column; longer names are cut ("...")
constexpr int kCurveMarkedEpochs = 40;  // mark every point up to this many epochs

struct CurveRun {
  std::string name;  // the legend's name of the run (its folder name)
  MetricsLog log;    // at least one row
};

int curves_width(int runs);
int curves_height(int runs);

// runs: 1 to kMaxCurveRuns, each with at least one epoch; otherwise an InputError naming the
// file of the empty log.
Canvas curves_picture(const std::vector<CurveRun>& runs);
void write_curves_png(const std::string& path, const std::vector<CurveRun>& runs);

}  // namespace cuvae
