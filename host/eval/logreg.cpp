// Multinomial logistic regression (logreg.h): the objective in float and double, L-BFGS, the fit
// on standardised features and the choice of lambda by cross-validation.
#include "host/eval/logreg.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <sstream>

#include <omp.h>

#include "host/core/error.h"
#include "host/core/interrupt.h"
#include "host/core/text.h"
#include "host/cpu/gemm.h"

namespace cuvae {
namespace {

// One row's loss logsumexp(z) - z_y from its logits z (10), and r = softmax(z) - onehot(y).
double row_loss(const double* z, int y, double* r) {
  double top = z[0];
  for (int c = 1; c < kClasses; ++c) top = std::max(top, z[c]);
  double sum = 0;
  for (int c = 0; c < kClasses; ++c) sum += (r[c] = std::exp(z[c] - top));
  for (int c = 0; c < kClasses; ++c) r[c] = r[c] / sum - (c == y ? 1.0 : 0.0);
  return top + std::log(sum) - z[y];
}

// lambda/2 |W|^2 with its gradient lambda W added into grad.
double penalty(const double* theta, int dim, double lambda, double* grad) {
  double sq = 0;
  for (int64_t i = 0; i < int64_t(kClasses) * dim; ++i) {
    sq += theta[i] * theta[i];
    grad[i] += lambda * theta[i];
  }
  return 0.5 * lambda * sq;
}

std::string lambda_text(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

}  // namespace

double softmax_objective(const double* x, const uint8_t* y, int64_t n, int dim, double lambda,
                         const double* theta, double* grad) {
  const int64_t np = logreg_params(dim);
  std::fill(grad, grad + np, 0.0);
  const double* w = theta;                            // (10, dim)
  const double* b = theta + int64_t(kClasses) * dim;  // (10)
  double loss = 0;
  for (int64_t i = 0; i < n; ++i) {
    double z[kClasses], r[kClasses];
    for (int c = 0; c < kClasses; ++c) {
      z[c] = b[c];
      for (int j = 0; j < dim; ++j) z[c] += w[c * dim + j] * x[i * dim + j];
    }
    loss += row_loss(z, y[i], r);
    for (int c = 0; c < kClasses; ++c) {
      for (int j = 0; j < dim; ++j) grad[c * dim + j] += r[c] * x[i * dim + j] / double(n);
      grad[int64_t(kClasses) * dim + c] += r[c] / double(n);
    }
  }
  return loss / double(n) + penalty(theta, dim, lambda, grad);
}

double softmax_objective(const float* x, const uint8_t* y, int64_t n, int dim, double lambda,
                         const double* theta, double* grad) {
  // Blocks of rows, each read once while in cache: its logits x W^T, its softmax, its part of
  // the gradient r^T x. Each thread sums its blocks in double, the threads in order.
  constexpr int64_t kRows = 1024;
  const int64_t nw = int64_t(kClasses) * dim, blocks = (n + kRows - 1) / kRows;
  const std::vector<float> w(theta, theta + nw);  // (10, dim)
  const double* b = theta + nw;
  const int threads = blocks > 1 ? omp_get_max_threads() : 1;
  std::vector<double> acc(size_t(threads) * size_t(nw + kClasses + 1), 0.0);  // per thread
#pragma omp parallel num_threads(threads)
  {
    double* mine = acc.data() + size_t(omp_get_thread_num()) * size_t(nw + kClasses + 1);
    std::vector<float> z(kRows * kClasses), r(kRows * kClasses), g(static_cast<size_t>(nw));
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t first = blk * kRows, rows = std::min(kRows, n - first);
      const float* xb = x + first * dim;
      cpu::GemmShape s;
      s.m = rows, s.n = kClasses, s.k = dim, s.trans_b = true;
      cpu::sgemm(z.data(), xb, w.data(), s);  // z = x W^T: (rows, 10)
      for (int64_t i = 0; i < rows; ++i) {
        double zi[kClasses], ri[kClasses];
        for (int c = 0; c < kClasses; ++c) zi[c] = double(z[size_t(i * kClasses + c)]) + b[c];
        mine[nw + kClasses] += row_loss(zi, y[first + i], ri);
        for (int c = 0; c < kClasses; ++c) {
          r[size_t(i * kClasses + c)] = float(ri[c]);
          mine[nw + c] += ri[c];
        }
      }
      cpu::GemmShape t;
      t.m = kClasses, t.n = dim, t.k = rows, t.trans_a = true;
      cpu::sgemm(g.data(), r.data(), xb, t);  // r^T x: (10, dim)
      for (int64_t i = 0; i < nw; ++i) mine[i] += g[size_t(i)];
    }
  }
  double loss = 0;
  std::fill(grad, grad + nw + kClasses, 0.0);
  for (int t = 0; t < threads; ++t) {
    const double* part = acc.data() + size_t(t) * size_t(nw + kClasses + 1);
    for (int64_t i = 0; i < nw + kClasses; ++i) grad[i] += part[i] / double(n);
    loss += part[nw + kClasses];
  }
  return loss / double(n) + penalty(theta, dim, lambda, grad);
}

// ---- L-BFGS ------------------------------------------------------------------------------

namespace {

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (const double x : v) m = std::max(m, std::abs(x));
  return m;
}

struct Pair {
  std::vector<double> s, y;
  double rho;  // 1 / (s.y)
};

// -H g by the two-loop recursion, H the L-BFGS inverse Hessian of the pairs (oldest first)
// with the initial scaling s.y / y.y of the newest pair.
std::vector<double> lbfgs_direction(const std::deque<Pair>& pairs, const std::vector<double>& g) {
  std::vector<double> q = g;
  std::vector<double> alpha(pairs.size());
  for (size_t k = pairs.size(); k-- > 0;) {
    alpha[k] = pairs[k].rho * dot(pairs[k].s, q);
    for (size_t i = 0; i < q.size(); ++i) q[i] -= alpha[k] * pairs[k].y[i];
  }
  if (!pairs.empty()) {
    const Pair& last = pairs.back();
    const double gamma = 1.0 / (last.rho * dot(last.y, last.y));
    for (double& v : q) v *= gamma;
  }
  for (size_t k = 0; k < pairs.size(); ++k) {
    const double beta = pairs[k].rho * dot(pairs[k].y, q);
    for (size_t i = 0; i < q.size(); ++i) q[i] += (alpha[k] - beta) * pairs[k].s[i];
  }
  for (double& v : q) v = -v;
  return q;
}

}  // namespace

LbfgsResult minimise_lbfgs(const ObjectiveFn& f, std::vector<double>& theta,
                           const LogRegOptions& options) {
  constexpr double kArmijo = 1e-4;
  constexpr int kMaxHalvings = 40;
  constexpr double kStall = 1e-12;  // a step lowering f by less than this of |f|: stalled
  const size_t np = theta.size();
  std::vector<double> g(np), g_new(np), x_new(np);
  LbfgsResult res;
  res.f = f(theta.data(), g.data());
  if (!std::isfinite(res.f)) throw Error("logistic regression: the objective is not finite");
  std::deque<Pair> pairs;
  for (res.iterations = 0; res.iterations < options.max_iterations; ++res.iterations) {
    check_interrupt();  // a signal stops a fit between iterations
    if (max_abs(g) <= options.grad_tol) {
      res.stop = "gradient";
      break;
    }
    std::vector<double> d = lbfgs_direction(pairs, g);
    double gd = dot(g, d);
    if (!(gd < 0)) {  // not a descent direction: start the history again
      pairs.clear();
      d = lbfgs_direction(pairs, g);
      gd = dot(g, d);
    }
    double step = pairs.empty() ? std::min(1.0, 1.0 / std::sqrt(dot(g, g))) : 1.0;
    double f_new = 0;
    bool accepted = false;
    for (int h = 0; h < kMaxHalvings && !accepted; ++h, step *= 0.5) {
      for (size_t i = 0; i < np; ++i) x_new[i] = theta[i] + step * d[i];
      f_new = f(x_new.data(), g_new.data());
      accepted = std::isfinite(f_new) && f_new <= res.f + kArmijo * step * gd;
      if (accepted) break;
    }
    if (!accepted) {  // no decrease left at the objective's precision
      res.stop = "line search";
      break;
    }
    Pair p{std::vector<double>(np), std::vector<double>(np), 0};
    for (size_t i = 0; i < np; ++i) p.s[i] = x_new[i] - theta[i], p.y[i] = g_new[i] - g[i];
    const double sy = dot(p.s, p.y);
    if (sy > 1e-16 * std::sqrt(dot(p.s, p.s) * dot(p.y, p.y))) {
      p.rho = 1.0 / sy;
      pairs.push_back(std::move(p));
      if (int(pairs.size()) > options.history) pairs.pop_front();
    }
    const double f_old = res.f;
    theta.swap(x_new);
    g.swap(g_new);
    res.f = f_new;
    if (f_old - f_new <= kStall * std::abs(f_new)) {
      res.iterations += 1;
      res.stop = "stalled";
      break;
    }
  }
  if (res.stop.empty()) res.stop = "iterations";
  res.converged = res.stop != "iterations";
  res.grad_max = max_abs(g);
  return res;
}

// ---- standardisation, fit, prediction -------------------------------------------------------

Standardizer Standardizer::of(const float* x, int64_t n, int dim) {
  if (n < 1) throw Error("Standardizer: no rows");
  std::vector<double> sum(size_t(dim), 0.0), sq(size_t(dim), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int j = 0; j < dim; ++j) sum[size_t(j)] += x[i * dim + j];
  Standardizer st;
  st.mean.resize(size_t(dim));
  st.scale.resize(size_t(dim));
  for (int j = 0; j < dim; ++j) st.mean[size_t(j)] = float(sum[size_t(j)] / double(n));
  for (int64_t i = 0; i < n; ++i)
    for (int j = 0; j < dim; ++j) {
      const double v = double(x[i * dim + j]) - st.mean[size_t(j)];
      sq[size_t(j)] += v * v;
    }
  for (int j = 0; j < dim; ++j) {
    const double sd = std::sqrt(sq[size_t(j)] / double(n));
    st.scale[size_t(j)] = sd > 1e-6 ? float(1.0 / sd) : 1.0f;
  }
  return st;
}

std::vector<float> Standardizer::apply(const float* x, int64_t n) const {
  const size_t dim = mean.size();
  std::vector<float> out(size_t(n) * dim);
#pragma omp parallel for schedule(static) if (n * int64_t(dim) > (int64_t{1} << 16))
  for (int64_t i = 0; i < n; ++i)
    for (size_t j = 0; j < dim; ++j)
      out[size_t(i) * dim + j] = (x[size_t(i) * dim + j] - mean[j]) * scale[j];
  return out;
}

namespace {

// The fit on standardised rows xs (n, dim), from theta (in place).
LbfgsResult fit_standardised(const std::vector<float>& xs, const uint8_t* y, int64_t n, int dim,
                             double lambda, const LogRegOptions& options,
                             std::vector<double>& theta) {
  const ObjectiveFn f = [&](const double* th, double* grad) {
    return softmax_objective(xs.data(), y, n, dim, lambda, th, grad);
  };
  return minimise_lbfgs(f, theta, options);
}

// The largest logit of each standardised row (ties to the lower class).
std::vector<uint8_t> argmax_logits(const std::vector<float>& xs, int64_t n, int dim,
                                   const std::vector<double>& theta) {
  const int64_t nw = int64_t(kClasses) * dim;
  std::vector<float> w(theta.begin(), theta.begin() + nw), z(size_t(n) * kClasses);
  cpu::GemmShape s;
  s.m = n, s.n = kClasses, s.k = dim, s.trans_b = true;
  cpu::sgemm(z.data(), xs.data(), w.data(), s);
  std::vector<uint8_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    int best = 0;
    double top = -std::numeric_limits<double>::infinity();
    for (int c = 0; c < kClasses; ++c) {
      const double v = double(z[size_t(i * kClasses + c)]) + theta[size_t(nw + c)];
      if (v > top) top = v, best = c;
    }
    out[size_t(i)] = uint8_t(best);
  }
  return out;
}

}  // namespace

LogRegModel fit_logreg(const LabelledSet& train, double lambda, const LogRegOptions& options,
                       const std::vector<double>* warm) {
  const int64_t n = train.size();
  LogRegModel m;
  m.dim = train.dim;
  m.lambda = lambda;
  m.standardizer = Standardizer::of(train.x.data(), n, train.dim);
  const std::vector<float> xs = m.standardizer.apply(train.x.data(), n);
  m.theta = warm ? *warm : std::vector<double>(size_t(logreg_params(train.dim)), 0.0);
  if (int64_t(m.theta.size()) != logreg_params(train.dim))
    throw Error("fit_logreg: the starting point has the wrong size");
  m.fit = fit_standardised(xs, train.y.data(), n, train.dim, lambda, options, m.theta);
  return m;
}

std::vector<uint8_t> predict_logreg(const LogRegModel& model, const FeatureSet& x) {
  if (x.dim != model.dim) throw Error("predict_logreg: feature sizes differ");
  constexpr int64_t kChunk = 4096;
  std::vector<uint8_t> out;
  out.reserve(size_t(x.size()));
  for (int64_t first = 0; first < x.size(); first += kChunk) {
    const int64_t count = std::min(kChunk, x.size() - first);
    const std::vector<float> xs = model.standardizer.apply(x.x.data() + first * x.dim, count);
    const std::vector<uint8_t> part = argmax_logits(xs, count, x.dim, model.theta);
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

std::vector<double> restandardise(const std::vector<double>& theta, const Standardizer& from,
                                  const Standardizer& to) {
  const int64_t dim = int64_t(from.mean.size()), nw = int64_t(kClasses) * dim;
  if (int64_t(theta.size()) != nw + kClasses || int64_t(to.mean.size()) != dim)
    throw Error("restandardise: sizes differ");
  std::vector<double> out(theta.size());
  for (int c = 0; c < kClasses; ++c) {
    double shift = theta[size_t(nw + c)];
    for (int64_t j = 0; j < dim; ++j) {
      const double wj = theta[size_t(c * dim + j)] * double(from.scale[size_t(j)]);
      out[size_t(c * dim + j)] = wj / double(to.scale[size_t(j)]);
      shift += wj * (double(to.mean[size_t(j)]) - double(from.mean[size_t(j)]));
    }
    out[size_t(nw + c)] = shift;
  }
  return out;
}

namespace {

// One fold: the fits on its training rows at every lambda (descending), each from the previous
// lambda's solution, and their correct predictions on its validation rows.
struct FoldResult {
  std::vector<int64_t> correct;             // per lambda
  std::vector<std::vector<double>> thetas;  // per lambda, on st's standardisation
  Standardizer st;                          // of the fold's training rows
};

FoldResult fit_fold(const LabelledSet& tr, const LabelledSet& va,
                    const std::vector<double>& lambdas, const LogRegOptions& options,
                    const std::function<void(double)>& on_lambda) {
  FoldResult out;
  out.st = Standardizer::of(tr.x.data(), tr.size(), tr.dim);
  const std::vector<float> xs = out.st.apply(tr.x.data(), tr.size());
  const std::vector<float> vs = out.st.apply(va.x.data(), va.size());
  std::vector<double> theta(static_cast<size_t>(logreg_params(tr.dim)), 0.0);
  for (const double lambda : lambdas) {
    if (on_lambda) on_lambda(lambda);
    fit_standardised(xs, tr.y.data(), tr.size(), tr.dim, lambda, options, theta);
    const std::vector<uint8_t> pred = argmax_logits(vs, va.size(), va.dim, theta);
    int64_t ok = 0;
    for (int64_t i = 0; i < va.size(); ++i) ok += pred[size_t(i)] == va.y[size_t(i)];
    out.correct.push_back(ok);
    out.thetas.push_back(theta);
  }
  return out;
}

int smallest_class(const LabelledSet& s) {
  const std::vector<int64_t> counts = class_counts(s.y.data(), s.size());
  int64_t smallest = s.size();
  for (const int64_t c : counts)
    if (c > 0) smallest = std::min(smallest, c);
  return int(std::min<int64_t>(smallest, INT32_MAX));
}

}  // namespace

LogRegChoice fit_logreg_cv(const LabelledSet& train, const LogRegOptions& options,
                           const std::function<void(const std::string&)>& stage) {
  const int64_t n = train.size();
  if (n < 1) throw Error("fit_logreg_cv: no labelled rows");
  const int k = std::min(options.folds, smallest_class(train));
  LogRegChoice choice;
  if (k < 2 || options.lambdas.empty()) {
    if (stage) stage("logistic regression, lambda " + lambda_text(options.fixed_lambda));
    choice.model = fit_logreg(train, options.fixed_lambda, options);
    choice.rule = "fixed lambda = " + lambda_text(options.fixed_lambda) +
                  " (a class with a single label: nothing to validate on)";
    return choice;
  }
  std::vector<double> grid = options.lambdas;
  std::sort(grid.begin(), grid.end(), std::greater<double>());
  // Member t of each class, in row order, goes to fold t mod k.
  std::vector<int> fold(static_cast<size_t>(n));
  std::vector<int64_t> seen(kClasses, 0);
  for (int64_t i = 0; i < n; ++i) fold[size_t(i)] = int(seen[train.y[size_t(i)]]++ % k);
  const int held_out = n > options.single_split_above ? 1 : k;
  std::vector<int64_t> correct(grid.size(), 0);
  int64_t validated = 0;
  FoldResult first;  // fold 1's fits: the final fit starts from the chosen lambda's
  for (int f = 0; f < held_out; ++f) {
    std::vector<int64_t> tr_rows, va_rows;
    for (int64_t i = 0; i < n; ++i) (fold[size_t(i)] == f ? va_rows : tr_rows).push_back(i);
    const LabelledSet tr = select_rows(train.x.data(), train.y.data(), train.dim, tr_rows);
    const LabelledSet va = select_rows(train.x.data(), train.y.data(), train.dim, va_rows);
    FoldResult res = fit_fold(tr, va, grid, options, [&](double lambda) {
      if (stage)
        stage("logistic regression, lambda " + lambda_text(lambda) + ", fold " +
              std::to_string(f + 1) + "/" + std::to_string(held_out));
    });
    for (size_t l = 0; l < grid.size(); ++l) correct[l] += res.correct[l];
    validated += va.size();
    if (f == 0) first = std::move(res);
  }
  size_t best = 0;
  for (size_t l = 0; l < grid.size(); ++l) {
    choice.cv_accuracy.push_back(double(correct[l]) / double(validated));
    if (correct[l] > correct[best]) best = l;  // ties: the larger lambda, met first
  }
  choice.grid = grid;
  choice.rule = held_out == 1 ? "one split: fold 1 of " + std::to_string(k) + " held out (" +
                                    counted(validated, "image") + ")"
                              : std::to_string(k) + "-fold cross-validation";
  if (stage) stage("logistic regression, lambda " + lambda_text(grid[best]) + ", all labels");
  // From the same classifier as fold 1's fit at that lambda, on all the labelled rows.
  const Standardizer all = Standardizer::of(train.x.data(), n, train.dim);
  const std::vector<double> warm = restandardise(first.thetas[best], first.st, all);
  choice.model = fit_logreg(train, grid[best], options, &warm);
  return choice;
}

}  // namespace cuvae
