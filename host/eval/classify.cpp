// The probe of `cuvae classify` (classify.h): labelled draws, features, k nearest neighbours
// and the orchestration of one labelled subset.
#include "host/eval/classify.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "host/core/error.h"
#include "host/core/interrupt.h"
#include "host/core/model.h"
#include "host/core/philox.h"
#include "host/core/text.h"
#include "host/cpu/gemm.h"
#include "host/eval/logreg.h"

namespace cuvae {

LabelledSet select_rows(const float* x, const uint8_t* labels, int dim,
                        const std::vector<int64_t>& rows) {
  LabelledSet s;
  s.dim = dim;
  s.x.resize(rows.size() * size_t(dim));
  s.y.resize(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    std::copy(x + rows[r] * dim, x + (rows[r] + 1) * dim, s.x.begin() + long(r * size_t(dim)));
    s.y[r] = labels[rows[r]];
  }
  return s;
}

std::vector<int64_t> class_counts(const uint8_t* labels, int64_t n) {
  std::vector<int64_t> counts(kClasses, 0);
  for (int64_t i = 0; i < n; ++i) {
    if (labels[i] >= kClasses) throw Error("class_counts: a label above 9");
    ++counts[labels[i]];
  }
  return counts;
}

std::vector<int64_t> balanced_draw(const uint8_t* labels, int64_t n, int per_class, uint64_t seed,
                                   uint32_t draw) {
  if (per_class < 1) throw Error("balanced_draw: per_class must be at least 1");
  if (n > int64_t(UINT32_MAX)) throw Error("balanced_draw: too many images");
  std::array<std::vector<std::pair<uint64_t, int64_t>>, kClasses> members;  // (key, index)
  for (int64_t i = 0; i < n; ++i) {
    if (labels[i] >= kClasses) throw Error("balanced_draw: a label above 9");
    const Philox4 w = random_words(seed, Stream::Labels, draw, uint32_t(i));
    members[labels[i]].push_back({(uint64_t(w.v[0]) << 32) | w.v[1], i});
  }
  std::vector<int64_t> rows;
  rows.reserve(size_t(per_class) * kClasses);
  for (int c = 0; c < kClasses; ++c) {
    auto& m = members[size_t(c)];
    if (int64_t(m.size()) < per_class)
      throw Error("balanced_draw: class " + std::to_string(c) + " has " +
                  counted(int64_t(m.size()), "image") + ", fewer than " +
                  std::to_string(per_class));
    std::partial_sort(m.begin(), m.begin() + per_class, m.end());
    for (int j = 0; j < per_class; ++j) rows.push_back(m[size_t(j)].second);
  }
  std::sort(rows.begin(), rows.end());
  return rows;
}

FeatureSet pixel_features(const ImageSet& images, int64_t n) {
  if (n < 0 || n > images.count) throw Error("pixel_features: bad image count");
  FeatureSet f;
  f.dim = kImagePixels;
  f.x.resize(size_t(n) * kImagePixels);
  for (size_t i = 0; i < f.x.size(); ++i) f.x[i] = float(images.pixels[i]) / 255.0f;
  return f;
}

FeatureSet latent_means(Inference& model, const ImageSet& images, int64_t n,
                        const ProgressFn& progress, int chunk) {
  if (n < 0 || n > images.count || chunk < 1) throw Error("latent_means: bad count or chunk");
  const int dim = model.desc().latent_dim;
  FeatureSet f;
  f.dim = dim;
  f.x.resize(size_t(n) * dim);
  std::vector<float> x(size_t(chunk) * kImagePixels), logvar(size_t(chunk) * dim);
  for (int64_t first = 0; first < n; first += chunk) {
    const int count = int(std::min<int64_t>(chunk, n - first));
    const uint8_t* p = images.pixels.data() + first * kImagePixels;
    for (size_t i = 0; i < size_t(count) * kImagePixels; ++i) x[i] = float(p[i]) / 255.0f;
    model.encode(f.x.data() + first * dim, logvar.data(), x.data(), count);
    if (progress) progress(first + count, n);
  }
  for (const float v : f.x)
    if (!std::isfinite(v)) throw Error("latent_means: the encoder gave a non-finite z_mean");
  return f;
}

// ---- k nearest neighbours ----------------------------------------------------------------

namespace {

// Loops over fewer elements run on one thread: waking the OpenMP team costs more.
constexpr int64_t kParallelWork = int64_t{1} << 16;

// A query's k best (distance, index) so far, ascending.
struct TopK {
  float* d;
  int64_t* idx;
  int k, filled = 0;
  void offer(float dist, int64_t j) {
    if (filled == k && !(dist < d[k - 1] || (dist == d[k - 1] && j < idx[k - 1]))) return;
    int pos = filled < k ? filled++ : k - 1;
    while (pos > 0 && (dist < d[pos - 1] || (dist == d[pos - 1] && j < idx[pos - 1]))) {
      d[pos] = d[pos - 1];
      idx[pos] = idx[pos - 1];
      --pos;
    }
    d[pos] = dist;
    idx[pos] = j;
  }
};

std::vector<float> squared_norms(const float* x, int64_t n, int dim) {
  std::vector<float> norms(static_cast<size_t>(n));
#pragma omp parallel for schedule(static) if (n * dim > kParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int j = 0; j < dim; ++j) s += double(x[i * dim + j]) * x[i * dim + j];
    norms[size_t(i)] = float(s);
  }
  return norms;
}

}  // namespace

std::vector<int64_t> nearest_neighbours(const float* refs, int64_t nr, const float* queries,
                                        int64_t nq, int dim, int k, const int64_t* exclude,
                                        int64_t block) {
  if (k < 1 || dim < 1 || block < 1 || k > nr - (exclude ? 1 : 0))
    throw Error("nearest_neighbours: k must be between 1 and the references a query may use");
  const std::vector<float> norms = squared_norms(refs, nr, dim);
  std::vector<int64_t> out(size_t(nq) * k, -1);
  std::vector<float> dist(size_t(nq) * k);
  std::vector<float> dots(size_t(std::min(block, nq)) * size_t(std::min(block, nr)));
  for (int64_t q0 = 0; q0 < nq; q0 += block) {
    check_interrupt();  // a signal stops a long search between blocks of queries
    const int64_t bq = std::min(block, nq - q0);
    std::vector<TopK> top;
    top.reserve(size_t(bq));
    for (int64_t i = 0; i < bq; ++i)
      top.push_back({dist.data() + (q0 + i) * k, out.data() + (q0 + i) * k, k});
    for (int64_t r0 = 0; r0 < nr; r0 += block) {
      const int64_t br = std::min(block, nr - r0);
      cpu::GemmShape s;
      s.m = bq, s.n = br, s.k = dim, s.trans_b = true;
      cpu::sgemm(dots.data(), queries + q0 * dim, refs + r0 * dim, s);  // (bq, br) = q . r^T
#pragma omp parallel for schedule(static) if (bq * br > kParallelWork)
      for (int64_t i = 0; i < bq; ++i) {
        const int64_t skip = exclude ? exclude[q0 + i] : -1;
        const float* row = dots.data() + i * br;
        for (int64_t j = 0; j < br; ++j)
          if (r0 + j != skip) top[size_t(i)].offer(norms[size_t(r0 + j)] - 2.0f * row[j], r0 + j);
      }
    }
  }
  return out;
}

uint8_t knn_vote(const int64_t* neighbours, int k, const uint8_t* labels) {
  std::array<int, kClasses> votes{};
  int most = 0;
  for (int i = 0; i < k; ++i) most = std::max(most, ++votes[labels[neighbours[i]]]);
  for (int i = 0;; ++i)  // the nearest neighbour whose class has the most votes
    if (votes[labels[neighbours[i]]] == most) return labels[neighbours[i]];
}

KnnFit fit_knn(const LabelledSet& train, const KnnOptions& options) {
  const int64_t n = train.size();
  if (n < 1) throw Error("fit_knn: no labelled rows");
  KnnFit fit;
  const std::vector<int64_t> counts = class_counts(train.y.data(), n);
  int64_t smallest = n;
  for (const int64_t c : counts)
    if (c > 0) smallest = std::min(smallest, c);
  const int k_cap = int(std::min<int64_t>(options.max_k, n - 1));
  if (smallest < 2 || k_cap < 1) {
    fit.k = 1;
    fit.rule = "fixed k = 1 (a class with a single label: nothing to leave one out of)";
    return fit;
  }
  // The leave-one-out queries: all rows, or max_cv_queries at evenly spaced positions.
  const int64_t nq = std::min(n, options.max_cv_queries);
  std::vector<int64_t> rows(static_cast<size_t>(nq));
  for (int64_t i = 0; i < nq; ++i) rows[size_t(i)] = i * n / nq;
  std::vector<float> qx(size_t(nq) * train.dim);
  for (int64_t i = 0; i < nq; ++i)
    std::copy_n(train.x.data() + rows[size_t(i)] * train.dim, train.dim,
                qx.begin() + i * train.dim);
  const std::vector<int64_t> nb = nearest_neighbours(train.x.data(), n, qx.data(), nq, train.dim,
                                                     k_cap, rows.data(), options.block);
  double best = -1;
  for (int k = 1; k <= k_cap; k += 2) {
    int64_t correct = 0;
    for (int64_t i = 0; i < nq; ++i)
      correct +=
          knn_vote(nb.data() + i * k_cap, k, train.y.data()) == train.y[size_t(rows[size_t(i)])];
    const double acc = double(correct) / double(nq);
    fit.grid.push_back(k);
    fit.cv_accuracy.push_back(acc);
    if (acc > best) best = acc, fit.k = k;
  }
  fit.cv_queries = nq;
  fit.rule = nq < n ? "leave-one-out on " + std::to_string(nq) + " of the " + std::to_string(n) +
                          " labelled images (evenly spaced)"
                    : "leave-one-out on the " + std::to_string(n) + " labelled images";
  return fit;
}

std::vector<uint8_t> predict_knn(const LabelledSet& train, int k, const FeatureSet& queries,
                                 int64_t block) {
  if (queries.dim != train.dim) throw Error("predict_knn: feature sizes differ");
  const int64_t nq = queries.size();
  const std::vector<int64_t> nb = nearest_neighbours(train.x.data(), train.size(), queries.x.data(),
                                                     nq, train.dim, k, nullptr, block);
  std::vector<uint8_t> out(static_cast<size_t>(nq));
  for (int64_t i = 0; i < nq; ++i) out[size_t(i)] = knn_vote(nb.data() + i * k, k, train.y.data());
  return out;
}

// ---- the probe of one labelled subset -------------------------------------------------------

DrawResult probe_draw(const LabelledSet& train, const FeatureSet& test, const KnnOptions& knn,
                      const LogRegOptions& logreg, const StageFn& stage) {
  const auto say = [&](const std::string& what) {
    if (stage) stage(what);
  };
  const auto seconds = [](std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  DrawResult r;
  auto t0 = std::chrono::steady_clock::now();
  say("kNN, choosing k");
  r.knn = fit_knn(train, knn);
  r.knn_seconds = seconds(t0);
  t0 = std::chrono::steady_clock::now();
  LogRegChoice lr = fit_logreg_cv(train, logreg, stage);
  r.lambda = lr.model.lambda;
  r.lambda_rule = lr.rule;
  r.lambda_grid = lr.grid;
  r.lambda_cv_accuracy = lr.cv_accuracy;
  r.iterations = lr.model.fit.iterations;
  r.converged = lr.model.fit.converged;
  r.stop = lr.model.fit.stop;
  r.logreg_seconds = seconds(t0);
  // Everything is chosen and fitted: now, and only now, the test features.
  t0 = std::chrono::steady_clock::now();
  say("kNN, k = " + std::to_string(r.knn.k) + ", on the test images");
  r.knn_predicted = predict_knn(train, r.knn.k, test, knn.block);
  r.knn_seconds += seconds(t0);
  t0 = std::chrono::steady_clock::now();
  say("logistic regression on the test images");
  r.logreg_predicted = predict_logreg(lr.model, test);
  r.logreg_seconds += seconds(t0);
  return r;
}

double accuracy(const std::vector<uint8_t>& predicted, const uint8_t* labels) {
  if (predicted.empty()) throw Error("accuracy: no predictions");
  int64_t correct = 0;
  for (size_t i = 0; i < predicted.size(); ++i) correct += predicted[i] == labels[i];
  return double(correct) / double(predicted.size());
}

MeanStd mean_std(const std::vector<double>& v) {
  MeanStd m;
  if (v.empty()) return m;
  for (const double x : v) m.mean += x;
  m.mean /= double(v.size());
  if (v.size() < 2) return m;
  double ss = 0;
  for (const double x : v) ss += (x - m.mean) * (x - m.mean);
  m.std = std::sqrt(ss / double(v.size() - 1));
  return m;
}

}  // namespace cuvae
