// Anomaly detection with the VAE's per-image score: the one-sample negative ELBO (the score of
// `cuvae encode`, evaluate.h) of images like the training data ("in", the negatives) and of
// other images ("out", the positives); how well the score tells them apart.
//
// ROC AUC: the probability that an out image scores higher than an in image, ties counted 1/2
// (the Mann-Whitney U statistic over n_in n_out):
//   AUC = (#{(o, i): s_o > s_i} + 1/2 #{(o, i): s_o = s_i}) / (n_in n_out),
// computed exactly by sorting (O(n log n)): each run of equal scores in the merged order adds
// its out count times (the in scores below it + half its own in count), summed in integers.
// It equals the trapezoid area under roc_curve().
//
// Operating point at a target false-positive rate alpha (0 <= alpha < 1), flagging an image
// when its score is strictly above the threshold t:
//   t = the smallest score such that the fraction of in scores strictly above it is <= alpha,
// i.e. at most floor(alpha n_in) in scores lie above t (alpha n_in rounded with a relative
// tolerance of 1e-12). That t is always an in score: the (n_in - floor(alpha n_in))-th smallest.
// Ties: every in score equal to t is not flagged, so with ties at t (or when alpha n_in is not
// whole) the achieved false-positive rate `fpr` is below alpha. TPR = the fraction of out
// scores strictly above t.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "host/core/inference.h"
#include "host/eval/evaluate.h"
#include "host/eval/pictures.h"
#include "host/io/idx.h"
#include "host/io/png.h"

namespace cuvae {

// The negative ELBO (recon + kl, nats) of the first n images (n >= 1) with evaluate_elbo_chunks's
// noise (seed), in image order. Throws Error if a score is not finite.
std::vector<double> neg_elbo_scores(Inference& model, const ImageSet& images, uint64_t seed,
                                    int64_t n, const ProgressFn& progress = nullptr);

// The AUC above. Both sets non-empty and free of NaN (Error otherwise); any order.
double roc_auc(const std::vector<double>& in, const std::vector<double>& out);

// The ROC curve flagging score >= v for every distinct score v, from the highest down: points
// (FPR, TPR) from (0, 0) to (1, 1); a run of tied scores gives one straight (diagonal) step.
struct RocCurve {
  std::vector<double> fpr, tpr;
};
RocCurve roc_curve(const std::vector<double>& in, const std::vector<double>& out);

struct OperatingPoint {
  double target_fpr = 0;  // alpha
  double threshold = 0;   // t: flagged when score > t
  int64_t in_above = 0;   // in scores > t (false positives)
  int64_t out_above = 0;  // out scores > t (true positives)
  double fpr = 0;         // in_above / n_in, <= target_fpr
  double tpr = 0;         // out_above / n_out
};
OperatingPoint operating_point(const std::vector<double>& in, const std::vector<double>& out,
                               double target_fpr);

// Everything `cuvae anomaly` reports and draws.
struct AnomalyResult {
  std::vector<double> in, out;  // the scores, sorted ascending
  double auc = 0;
  RocCurve roc;
  OperatingPoint at_1pct, at_5pct;  // target FPR 0.01 and 0.05
};
AnomalyResult analyse_scores(std::vector<double> in, std::vector<double> out);

// Count of sorted values strictly above t.
int64_t count_above(const std::vector<double>& sorted, double t);

// ---- the picture (pixels) -------------------------------------------------------------------
// Left: histograms of both score sets over kAnomalyBins shared bins spanning the 0.5th to
// 99.5th percentile of the pooled scores (plus 5% each side; the scores outside are counted
// in the x-axis name), each as the fraction of its own images per bin (in blue kClassColors[0],
// out orange kClassColors[1], lightly filled, their overlap in a mix of both), with the
// thresholds at 1% and 5% FPR as grey lines; linear axes. Right: the ROC curve
// (kClassColors[4]) with the diagonal for reference and the two operating points, the AUC
// above it. Size: (kAxesLeft + kAnomalyHistW + kAxesLeft + kAnomalyPlotH + kAxesRight) x
// (kAnomalyTop + kAnomalyPlotH + kAxesBottom) = 1248 x 576. The legend names are cut short
// (ending in "...") to fit the histogram's width.
constexpr int kAnomalyBins = 60;
constexpr int kAnomalyHistW = 520;  // histogram plot width
constexpr int kAnomalyPlotH = 400;  // both plots' height; the ROC plot is square
constexpr int kAnomalyTop = 104;  // the title line, then the legend (two lines) and the ROC's title
constexpr int kAnomalyWidth = kAxesLeft + kAnomalyHistW + kAxesLeft + kAnomalyPlotH + kAxesRight;
constexpr int kAnomalyHeight = kAnomalyTop + kAnomalyPlotH + kAxesBottom;

// in_name, out_name: the legend's names of the two sets; title: the picture's title.
Canvas anomaly_picture(const AnomalyResult& r, const std::string& in_name,
                       const std::string& out_name, const std::string& title);
void write_anomaly_png(const std::string& path, const AnomalyResult& r, const std::string& in_name,
                       const std::string& out_name, const std::string& title);

}  // namespace cuvae
