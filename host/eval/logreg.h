// Multinomial logistic regression (softmax, L2-regularised) for the probe of `cuvae classify`
// (classify.h).
//
// Features are standardised with the mean and standard deviation of the training rows alone
// (x' = (x - mean) / sd; a feature with sd below 1e-6 of its scale is only centred). On the
// standardised rows x'_i (n, d) with labels y_i, the weights W (10, d) and biases b (10):
//   f(W, b) = 1/n sum_i [ logsumexp_c z_ic - z_i,y_i ] + lambda/2 |W|^2,   z_i = W x'_i + b
//   df/dW_c = 1/n sum_i (p_ic - [y_i = c]) x'_i + lambda W_c,  df/db_c = 1/n sum_i (p_ic - [y_i =
//   c])
// with p_i = softmax(z_i); the biases are not penalised. f is convex (strictly in W for
// lambda > 0) and minimised, from zero or a given start, by L-BFGS (10 pairs of history,
// backtracking line search with the Armijo condition) until max |gradient| <= grad_tol, the
// objective stops falling (a step lowers it by less than 1e-12 of its value, or no step lowers it
// at all) or max_iterations. In float (the product x'.W and the gradient's sum over the rows on the
// GEMM of host/cpu/gemm.h, the softmax and the loss in double) or, for the tests, wholly in double.
//
// lambda by cross-validation on the training rows alone: stratified folds (member t of a class,
// in row order, goes to fold t mod K), K = min(folds, the smallest class count); every lambda
// of the grid, largest first, each fold's fit warm-started from its fit at the previous lambda;
// the highest validation accuracy (correct predictions over all folds), ties to the larger
// lambda; then the fit on all the training rows at that lambda, starting from fold 1's fit at
// it (restandardise: the same classifier on the standardisation of all the rows). Above
// single_split_above rows, only the first of the K folds is held out (one 80/20 split at K = 5),
// since every fold is a full fit on most of the rows. With fewer than 2 rows in some class
// (1 label per class) there is nothing to validate on: lambda = fixed_lambda.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "host/eval/classify.h"

namespace cuvae {

struct LogRegOptions {
  std::vector<double> lambdas = {10, 1, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5};  // the grid, largest first
  double fixed_lambda = 1e-2;          // when no class has 2 rows to cross-validate
  int folds = 5;                       // K, at most
  int64_t single_split_above = 10000;  // more rows: one train/validation split
  int max_iterations = 200;            // L-BFGS iterations per fit
  double grad_tol = 1e-5;              // max |df/dtheta| at convergence
  int history = 10;                    // L-BFGS pairs
};

// Per-feature statistics of a training set, applied to any rows.
struct Standardizer {
  std::vector<float> mean, scale;  // (d); x' = (x - mean) * scale, scale = 1 / sd (or 1)
  static Standardizer of(const float* x, int64_t n, int dim);
  std::vector<float> apply(const float* x, int64_t n) const;  // (n, d)
};

// The parameters theta = [W (10, d) row-major, b (10)]: 10 d + 10 values.
inline int64_t logreg_params(int dim) {
  return int64_t(kClasses) * dim + kClasses;
}

// f(theta) (the top) and its gradient into grad (logreg_params(dim)) for rows x (n, dim),
// labels y (n). The float form runs the products on the GEMM, the double form plain loops.
double softmax_objective(const float* x, const uint8_t* y, int64_t n, int dim, double lambda,
                         const double* theta, double* grad);
double softmax_objective(const double* x, const uint8_t* y, int64_t n, int dim, double lambda,
                         const double* theta, double* grad);

// Minimises f (value and gradient into its second argument) from theta, in place.
using ObjectiveFn = std::function<double(const double* theta, double* grad)>;
struct LbfgsResult {
  double f = 0, grad_max = 0;  // at the end
  int iterations = 0;
  // Why it stopped: "gradient" (max |gradient| <= grad_tol), "stalled" (a step lowered f by
  // less than 1e-12 |f|), "line search" (no step lowered f: the objective's precision) or
  // "iterations" (max_iterations). converged: any but the last.
  std::string stop;
  bool converged = false;
};
LbfgsResult minimise_lbfgs(const ObjectiveFn& f, std::vector<double>& theta,
                           const LogRegOptions& options);

struct LogRegModel {
  int dim = 0;
  double lambda = 0;
  Standardizer standardizer;  // of the training rows
  std::vector<double> theta;  // on standardised features
  LbfgsResult fit;
};

// theta on `from`'s standardisation turned into the same classifier on `to`'s (the same logits
// for every x): W'_cj = W_cj s_j / s'_j, b'_c = b_c + sum_j W_cj s_j (m'_j - m_j).
std::vector<double> restandardise(const std::vector<double>& theta, const Standardizer& from,
                                  const Standardizer& to);

// The fit at one lambda; warm, if given, is the starting theta (of a fit on the same rows).
LogRegModel fit_logreg(const LabelledSet& train, double lambda, const LogRegOptions& options,
                       const std::vector<double>* warm = nullptr);
// The class of each row (the largest logit; ties to the lower class).
std::vector<uint8_t> predict_logreg(const LogRegModel& model, const FeatureSet& x);

struct LogRegChoice {
  LogRegModel model;                      // fitted on all of train at the chosen lambda
  std::string rule;                       // how lambda was chosen, in words
  std::vector<double> grid, cv_accuracy;  // empty when lambda was fixed
};

// lambda by cross-validation on `train` alone (the top), then the fit at it.
LogRegChoice fit_logreg_cv(const LabelledSet& train, const LogRegOptions& options,
                           const std::function<void(const std::string&)>& stage = nullptr);

}  // namespace cuvae
