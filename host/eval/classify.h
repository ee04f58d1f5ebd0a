// The semi-supervised probe of a trained model (`cuvae classify`): the M1 model of Kingma et
// al., "Semi-Supervised Learning with Deep Generative Models" (2014), a classifier trained on
// the VAE's latent codes z_mean with few labels, against the same classifiers on the pixels.
//
// Labelled subsets. Draw r of n labels per class holds, for each class c, the n training
// images of class c with the smallest keys key(i) = Philox(seed, Stream::Labels, r, i) (64
// bits, ties by index), listed by ascending image index. The keys do not depend on n, so a
// draw's subsets are nested: the 10-per-class subset of draw r holds its 1-per-class subset.
//
// k nearest neighbours, on squared Euclidean distances
//   d(q, t) = |t|^2 - 2 q.t  (+ |q|^2, the same for every t of a query, left out),
// with q.t from a float GEMM (host/cpu/gemm.h) over blocks of queries and references. The
// neighbours of a query are the references ordered by (distance, reference index): of two at
// the same distance the lower index comes first. The vote of the k nearest: the class with the
// most votes; a tie between classes goes to the one whose member comes first in that order
// (the tied class of the nearest neighbour). k is chosen by leave-one-out on the labelled
// subset alone (each labelled image classified by the others, itself left out by index) over
// the odd k from 1 to KnnOptions::max_k, at most the subset size - 1: the highest leave-one-out
// accuracy, ties to the smaller k. Above max_cv_queries labelled images, the leave-one-out
// queries are max_cv_queries of them at evenly spaced positions (their neighbours are still
// all the others). With fewer than 2 labels in some class leave-one-out cannot estimate
// anything (that class's image has no fellow): k = 1.
//
// Multinomial logistic regression: host/eval/logreg.h.
//
// Nothing fitted here can see the test split: fit_knn, fit_logreg_cv and probe_draw take the
// labelled subset (LabelledSet) to choose k and lambda and fit, and the test features only as a
// FeatureSet, which holds no labels, to predict after everything is chosen; the caller scores
// the predictions against the test labels with accuracy().
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "host/core/images.h"
#include "host/core/inference.h"
#include "host/eval/evaluate.h"

namespace cuvae {

constexpr int kClasses = 10;  // labels 0..9 (host/core/images.h)

// Features without labels: what a fitted classifier predicts.
struct FeatureSet {
  int dim = 0;
  std::vector<float> x;  // (size, dim) row-major
  int64_t size() const { return dim > 0 ? int64_t(x.size()) / dim : 0; }
};

// Features with their labels: what a classifier is fitted and cross-validated on.
struct LabelledSet {
  int dim = 0;
  std::vector<float> x;    // (size, dim) row-major
  std::vector<uint8_t> y;  // (size) classes 0..9
  int64_t size() const { return int64_t(y.size()); }
};

// The rows `rows` of x (count, dim) with their labels.
LabelledSet select_rows(const float* x, const uint8_t* labels, int dim,
                        const std::vector<int64_t>& rows);

// The image indices of draw `draw` with `per_class` images of each class (see the top), in
// ascending order. Throws Error if a class has fewer than per_class images.
std::vector<int64_t> balanced_draw(const uint8_t* labels, int64_t n, int per_class, uint64_t seed,
                                   uint32_t draw);
// Images of each class among labels[0, n).
std::vector<int64_t> class_counts(const uint8_t* labels, int64_t n);

// The features of the first n images: the pixels as x / 255 (n, 784), and z_mean (n, D)
// through the model's encoder, `chunk` images per call.
FeatureSet pixel_features(const ImageSet& images, int64_t n);
FeatureSet latent_means(Inference& model, const ImageSet& images, int64_t n,
                        const ProgressFn& progress = nullptr, int chunk = kEvalChunk);

// ---- k nearest neighbours ----------------------------------------------------------------

struct KnnOptions {
  int max_k = 127;                // the odd k from 1 to max_k are tried
  int64_t max_cv_queries = 5000;  // leave-one-out on at most this many labelled images
  int64_t block = 2048;           // query and reference rows per distance block
};

struct KnnFit {
  int k = 1;
  std::string rule;                 // how k was chosen, in words
  std::vector<int> grid;            // the k tried (empty when k was fixed)
  std::vector<double> cv_accuracy;  // leave-one-out accuracy of each k of grid
  int64_t cv_queries = 0;           // labelled images classified by leave-one-out
};

// For each query row q of queries (nq, dim), the indices of its `k` nearest rows of refs
// (nr, dim), nearest first, in the order of the top: out (nq, k). exclude (nq), if given, names
// a reference row each query must skip (itself, for leave-one-out), -1 for none. k <= the
// references a query may use.
std::vector<int64_t> nearest_neighbours(const float* refs, int64_t nr, const float* queries,
                                        int64_t nq, int dim, int k,
                                        const int64_t* exclude = nullptr, int64_t block = 2048);

// The vote of the first k of a query's neighbour list (see the top).
uint8_t knn_vote(const int64_t* neighbours, int k, const uint8_t* labels);

// k by leave-one-out on `train` alone.
KnnFit fit_knn(const LabelledSet& train, const KnnOptions& options = {});
// The class of each query by the k nearest rows of train.
std::vector<uint8_t> predict_knn(const LabelledSet& train, int k, const FeatureSet& queries,
                                 int64_t block = 2048);

// ---- the probe of one labelled subset -------------------------------------------------------

struct LogRegOptions;  // logreg.h
struct LogRegChoice;

// What probe_draw reports for one labelled subset: each classifier's choice and its predicted
// class of each test image.
struct DrawResult {
  KnnFit knn;
  std::vector<uint8_t> knn_predicted;
  double lambda = 0;  // the logistic regression's, chosen
  std::string lambda_rule;
  std::vector<double> lambda_grid, lambda_cv_accuracy;
  int iterations = 0;  // of the final fit
  bool converged = false;
  std::string stop;  // why the final fit stopped (LbfgsResult::stop)
  std::vector<uint8_t> logreg_predicted;
  double knn_seconds = 0, logreg_seconds = 0;  // each classifier's choice, fit and prediction
};

// Called with a few words on what runs now, e.g. "logistic regression, lambda 1e-3, fold 2/5".
using StageFn = std::function<void(const std::string&)>;

// Both classifiers fitted, with their hyper-parameters chosen, on `train`; then, and only then,
// their predictions on `test`.
DrawResult probe_draw(const LabelledSet& train, const FeatureSet& test, const KnnOptions& knn,
                      const LogRegOptions& logreg, const StageFn& stage = nullptr);

// The fraction of predictions equal to the labels.
double accuracy(const std::vector<uint8_t>& predicted, const uint8_t* labels);

// Mean and sample standard deviation (n - 1 in the denominator; 0 for one value).
struct MeanStd {
  double mean = 0, std = 0;
};
MeanStd mean_std(const std::vector<double>& v);

}  // namespace cuvae
