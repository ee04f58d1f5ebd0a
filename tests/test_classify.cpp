// The probe of `cuvae classify` (host/eval/classify.h, logreg.h): the labelled draws, k nearest
// neighbours against a brute-force search in exact arithmetic (ties included), the logistic
// regression's objective against a direct formula and its gradient against finite differences
// in double, L-BFGS on a quadratic with a known minimum, the whole probe on separable classes
// (100%) and on shuffled labels (chance, within the binomial spread), and that nothing chosen
// depends on the test split. Data are fresh every run (seed printed on failure).
#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "host/core/error.h"
#include "host/cpu/cpu_model.h"
#include "host/cpu/inference_cpu.h"
#include "host/eval/classify.h"
#include "host/eval/logreg.h"
#include "tests/stats.h"
#include "tests/test_support.h"

using namespace cuvae;
using cuvae::test::compare;

namespace {

// `per_class` points of each class around its centre, noise sd `noise`, in shuffled order.
LabelledSet clusters(std::mt19937_64& rng, int dim, int per_class, double noise,
                     const std::vector<std::vector<double>>& centres) {
  std::normal_distribution<double> g(0, noise);
  LabelledSet s;
  s.dim = dim;
  std::vector<int> order(size_t(per_class) * kClasses);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  for (const int o : order) {
    const int c = o % kClasses;
    for (int j = 0; j < dim; ++j) s.x.push_back(float(centres[size_t(c)][size_t(j)] + g(rng)));
    s.y.push_back(uint8_t(c));
  }
  return s;
}

// 10 class centres, all at one distance from the origin: evenly on a circle of radius `spread`
// for dim 2, else in uniformly random directions on the sphere of radius spread * sqrt(dim) (the
// typical length of a Gaussian vector with sd `spread`).
std::vector<std::vector<double>> make_centres(std::mt19937_64& rng, int dim, double spread) {
  std::vector<std::vector<double>> c(kClasses, std::vector<double>(size_t(dim)));
  std::normal_distribution<double> g(0, 1);
  for (int k = 0; k < kClasses; ++k) {
    std::vector<double>& v = c[size_t(k)];
    if (dim == 2) {
      v = {spread * std::cos(0.6283185307 * k), spread * std::sin(0.6283185307 * k)};
      continue;
    }
    double norm2 = 0;
    for (double& x : v) {
      x = g(rng);
      norm2 += x * x;
    }
    for (double& x : v) x *= spread * std::sqrt(double(dim) / norm2);
  }
  return c;
}

FeatureSet features_of(const LabelledSet& s) {
  FeatureSet f;
  f.dim = s.dim;
  f.x = s.x;
  return f;
}

// The neighbours of each query by brute force in exact (integer) arithmetic: all references
// sorted by (squared distance, index), self (exclude) left out.
std::vector<int64_t> brute_neighbours(const std::vector<int>& refs, const std::vector<int>& q,
                                      int dim, int k, const std::vector<int64_t>* exclude) {
  const int64_t nr = int64_t(refs.size()) / dim, nq = int64_t(q.size()) / dim;
  std::vector<int64_t> out;
  for (int64_t i = 0; i < nq; ++i) {
    std::vector<std::pair<int64_t, int64_t>> all;  // (squared distance, index)
    for (int64_t j = 0; j < nr; ++j) {
      if (exclude && (*exclude)[size_t(i)] == j) continue;
      int64_t d = 0;
      for (int t = 0; t < dim; ++t) {
        const int64_t diff = q[size_t(i * dim + t)] - refs[size_t(j * dim + t)];
        d += diff * diff;
      }
      all.push_back({d, j});
    }
    std::sort(all.begin(), all.end());
    for (int t = 0; t < k; ++t) out.push_back(all[size_t(t)].second);
  }
  return out;
}

// The vote rule written out: count, then the first neighbour whose class has the top count.
int brute_vote(const std::vector<int64_t>& nb, size_t offset, int k,
               const std::vector<uint8_t>& labels) {
  std::map<int, int> votes;
  for (int i = 0; i < k; ++i) votes[labels[size_t(nb[offset + size_t(i)])]]++;
  int top = 0;
  for (const auto& v : votes) top = std::max(top, v.second);
  for (int i = 0; i < k; ++i)
    if (votes[labels[size_t(nb[offset + size_t(i)])]] == top)
      return labels[size_t(nb[offset + size_t(i)])];
  return -1;
}

// The multinomial objective written out directly, in long double.
long double direct_objective(const std::vector<double>& x, const std::vector<uint8_t>& y, int dim,
                             double lambda, const std::vector<double>& theta) {
  const size_t n = y.size(), nw = size_t(kClasses) * size_t(dim);
  long double loss = 0;
  for (size_t i = 0; i < n; ++i) {
    long double z[kClasses], sum = 0;
    for (int c = 0; c < kClasses; ++c) {
      z[c] = theta[nw + size_t(c)];
      for (int j = 0; j < dim; ++j) z[c] += theta[size_t(c * dim + j)] * x[i * size_t(dim) + j];
      sum += std::exp(z[c]);
    }
    loss += std::log(sum) - z[y[i]];
  }
  long double sq = 0;
  for (size_t i = 0; i < nw; ++i) sq += theta[i] * theta[i];
  return loss / n + 0.5L * lambda * sq;
}

}  // namespace

TEST_CASE("balanced draws hold n images per class, no duplicates, nested and reproducible",
          "[classify]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t n = 3001;
  std::vector<uint8_t> labels(static_cast<size_t>(n));
  for (auto& l : labels) l = uint8_t(rng() % kClasses);
  const std::vector<int64_t> have = class_counts(labels.data(), n);
  const int64_t fewest = *std::min_element(have.begin(), have.end());
  std::vector<int64_t> previous;
  for (const int per_class : {1, 7, 100, int(fewest)}) {
    const std::vector<int64_t> rows = balanced_draw(labels.data(), n, per_class, seed, 3);
    REQUIRE(rows.size() == size_t(per_class) * kClasses);
    REQUIRE(std::is_sorted(rows.begin(), rows.end()));
    REQUIRE(std::set<int64_t>(rows.begin(), rows.end()).size() == rows.size());
    std::array<int, kClasses> got{};
    for (const int64_t r : rows) {
      REQUIRE((r >= 0 && r < n));
      ++got[labels[size_t(r)]];
    }
    for (const int g : got) REQUIRE(g == per_class);
    // Nested: the smaller count's draw lies inside the larger's.
    REQUIRE(std::includes(rows.begin(), rows.end(), previous.begin(), previous.end()));
    previous = rows;
    REQUIRE(balanced_draw(labels.data(), n, per_class, seed, 3) == rows);
  }
  // Other draws and other seeds pick other images (10 of ~300 per class: equal by chance with
  // probability far below 1e-12).
  const std::vector<int64_t> a = balanced_draw(labels.data(), n, 10, seed, 0);
  REQUIRE(balanced_draw(labels.data(), n, 10, seed, 1) != a);
  REQUIRE(balanced_draw(labels.data(), n, 10, seed + 1, 0) != a);
  REQUIRE_THROWS_AS(balanced_draw(labels.data(), n, int(fewest) + 1, seed, 0), Error);
}

TEST_CASE("balanced draws pick every image of a class about equally often", "[classify]") {
  // 400 images, 40 per class, 4 per class drawn in each of 2000 draws: each image's count is
  // Binomial(2000, 0.1), sd 13.4; the bound holds all 400 at a false-failure rate of 1e-6.
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::vector<uint8_t> labels(400);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = uint8_t(i % kClasses);
  std::vector<int> hits(labels.size(), 0);
  const int draws = 2000;
  for (int d = 0; d < draws; ++d)
    for (const int64_t r :
         balanced_draw(labels.data(), int64_t(labels.size()), 4, seed, uint32_t(d)))
      ++hits[size_t(r)];
  const double sd = std::sqrt(draws * 0.1 * 0.9);
  const double bound = test::normal_upper_quantile(1e-6 / 2 / 400) * sd;
  for (size_t i = 0; i < hits.size(); ++i) {
    INFO("image " << i << " drawn " << hits[i] << " times, expected 200 +- " << bound);
    REQUIRE(std::abs(hits[i] - 200.0) <= bound);
  }
}

TEST_CASE("knn_vote: the majority, a tie to the class of the nearest tied neighbour",
          "[classify]") {
  const std::vector<uint8_t> labels = {2, 5, 5, 2, 7, 5, 7, 7};
  std::vector<int64_t> nb = {0, 1, 2, 3, 4, 5, 6, 7};  // classes 2 5 5 2 7 5 7 7
  REQUIRE(knn_vote(nb.data(), 1, labels.data()) == 2);
  REQUIRE(knn_vote(nb.data(), 2, labels.data()) == 2);  // 2:1 5:1, 2 is nearer
  REQUIRE(knn_vote(nb.data(), 3, labels.data()) == 5);  // 5 has two
  REQUIRE(knn_vote(nb.data(), 4, labels.data()) == 2);  // 2:2 5:2, 2 is nearer
  REQUIRE(knn_vote(nb.data(), 6, labels.data()) == 5);
  REQUIRE(knn_vote(nb.data(), 8, labels.data()) == 5);  // 5:3 7:3 2:2, 5 is nearer
  std::reverse(nb.begin(), nb.end());                   // classes 7 7 5 7 2 5 5 2
  REQUIRE(knn_vote(nb.data(), 8, labels.data()) == 7);  // 7:3 5:3, 7 is nearer
}

TEST_CASE("nearest neighbours match a brute-force search, ties by index", "[classify]") {
  // Integer points in {0..3}^dim: many equal distances and duplicate points, and every
  // distance exact in float, so the GEMM's order must be the exact (distance, index) order.
  const uint64_t seed = test::fresh_seed();
  const int dim = GENERATE(1, 3, 5);
  const int64_t block = GENERATE(int64_t(1), int64_t(7), int64_t(64), int64_t(2048));
  INFO("seed " << seed << " dim " << dim << " block " << block);
  std::mt19937_64 rng(seed);
  const int nr = 203, nq = 57;
  std::vector<int> ri(size_t(nr) * dim), qi(size_t(nq) * dim);
  for (int& v : ri) v = int(rng() % 4);
  for (int& v : qi) v = int(rng() % 4);
  std::vector<uint8_t> labels(static_cast<size_t>(nr));
  for (auto& l : labels) l = uint8_t(rng() % kClasses);
  const std::vector<float> rf(ri.begin(), ri.end()), qf(qi.begin(), qi.end());
  for (const int k : {1, 2, 3, 8, 31}) {
    INFO("k " << k);
    const std::vector<int64_t> got =
        nearest_neighbours(rf.data(), nr, qf.data(), nq, dim, k, nullptr, block);
    const std::vector<int64_t> want = brute_neighbours(ri, qi, dim, k, nullptr);
    REQUIRE(got == want);
    LabelledSet train;
    train.dim = dim;
    train.x = rf;
    train.y = labels;
    FeatureSet queries;
    queries.dim = dim;
    queries.x = qf;
    const std::vector<uint8_t> pred = predict_knn(train, k, queries, block);
    for (int i = 0; i < nq; ++i)
      REQUIRE(int(pred[size_t(i)]) == brute_vote(want, size_t(i) * k, k, labels));
  }
  // Leave-one-out: the references as queries, each leaving itself out (by index, so a
  // duplicate of it still counts).
  std::vector<int64_t> self(static_cast<size_t>(nr));
  std::iota(self.begin(), self.end(), 0);
  const std::vector<int64_t> got =
      nearest_neighbours(rf.data(), nr, rf.data(), nr, dim, 5, self.data(), block);
  REQUIRE(got == brute_neighbours(ri, ri, dim, 5, &self));
  REQUIRE_THROWS_AS(nearest_neighbours(rf.data(), nr, rf.data(), nr, dim, nr, self.data()), Error);
}

TEST_CASE(
    "fit_knn: leave-one-out accuracy of every k as a brute-force count, ties to the "
    "smaller k",
    "[classify]") {
  const uint64_t seed = test::fresh_seed();
  const int64_t max_queries = GENERATE(int64_t(5000), int64_t(50));
  INFO("seed " << seed << " max_cv_queries " << max_queries);
  std::mt19937_64 rng(seed);
  const int dim = 2, n = 150;
  std::vector<int> xi(size_t(n) * dim);
  for (int& v : xi) v = int(rng() % 6);
  LabelledSet train;
  train.dim = dim;
  train.x.assign(xi.begin(), xi.end());
  for (int i = 0; i < n; ++i)
    train.y.push_back(uint8_t((xi[size_t(i * dim)] / 2 + rng() % 3) % kClasses));
  KnnOptions opt;
  opt.max_k = 11;
  opt.max_cv_queries = max_queries;
  opt.block = 16;
  const KnnFit fit = fit_knn(train, opt);
  const int64_t nq = std::min<int64_t>(n, max_queries);
  REQUIRE(fit.cv_queries == nq);
  std::vector<int64_t> rows, self;
  std::vector<int> qi;
  for (int64_t i = 0; i < nq; ++i) {
    rows.push_back(i * n / nq);
    self.push_back(rows.back());
    for (int t = 0; t < dim; ++t) qi.push_back(xi[size_t(rows.back() * dim + t)]);
  }
  const std::vector<int64_t> nb = brute_neighbours(xi, qi, dim, opt.max_k, &self);
  REQUIRE(fit.grid == std::vector<int>{1, 3, 5, 7, 9, 11});
  double best = -1;
  int best_k = 0;
  for (size_t g = 0; g < fit.grid.size(); ++g) {
    const int k = fit.grid[g];
    int correct = 0;
    for (int64_t i = 0; i < nq; ++i)
      correct +=
          brute_vote(nb, size_t(i) * opt.max_k, k, train.y) == train.y[size_t(rows[size_t(i)])];
    REQUIRE(fit.cv_accuracy[g] == double(correct) / double(nq));
    if (fit.cv_accuracy[g] > best) best = fit.cv_accuracy[g], best_k = k;
  }
  REQUIRE(fit.k == best_k);
}

TEST_CASE("with one label per class, k = 1 and lambda is the fixed one", "[classify]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const LabelledSet s = clusters(rng, 3, 1, 1, make_centres(rng, 3, 5));
  const KnnFit knn = fit_knn(s);
  REQUIRE(knn.k == 1);
  REQUIRE(knn.grid.empty());
  LogRegOptions opt;
  const LogRegChoice lr = fit_logreg_cv(s, opt);
  REQUIRE(lr.model.lambda == opt.fixed_lambda);
  REQUIRE(lr.grid.empty());
}

TEST_CASE("the logistic objective: the direct formula, and its gradient by finite differences",
          "[classify]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int dim = 7, n = 23;
  const double lambda = 0.3;
  const std::vector<double> x = test::random_vector<double>(rng, size_t(n) * dim, -2, 2);
  std::vector<uint8_t> y(static_cast<size_t>(n));
  for (auto& v : y) v = uint8_t(rng() % kClasses);
  const std::vector<double> theta =
      test::random_vector<double>(rng, size_t(logreg_params(dim)), -1, 1);
  std::vector<double> grad(theta.size());
  test::poison(grad);
  const double f = softmax_objective(x.data(), y.data(), n, dim, lambda, theta.data(), grad.data());
  REQUIRE(f == Approx(double(direct_objective(x, y, dim, lambda, theta))).epsilon(1e-13));
  // Central differences of the double objective; error ~ h^2 f''' + eps f / h, about 1e-9.
  const double h = 1e-5;
  std::vector<double> fd(theta.size()), scratch(theta.size());
  for (size_t i = 0; i < theta.size(); ++i) {
    std::vector<double> t = theta;
    t[i] = theta[i] + h;
    const double up =
        softmax_objective(x.data(), y.data(), n, dim, lambda, t.data(), scratch.data());
    t[i] = theta[i] - h;
    const double down =
        softmax_objective(x.data(), y.data(), n, dim, lambda, t.data(), scratch.data());
    fd[i] = (up - down) / (2 * h);
  }
  REQUIRE_MAX_ABS(compare(grad.data(), fd.data(), grad.size()), "gradient vs finite differences",
                  1e-8);
}

TEST_CASE("the float objective (GEMM, blocks, threads) agrees with the double one", "[classify]") {
  const uint64_t seed = test::fresh_seed();
  const int n = GENERATE(1, 1023, 3001);  // one row, one block, blocks with a remainder
  INFO("seed " << seed << " n " << n);
  std::mt19937_64 rng(seed);
  const int dim = 37;
  const std::vector<float> xf = test::random_vector<float>(rng, size_t(n) * dim, -2, 2);
  const std::vector<double> xd(xf.begin(), xf.end());
  std::vector<uint8_t> y(static_cast<size_t>(n));
  for (auto& v : y) v = uint8_t(rng() % kClasses);
  // theta exactly representable in float: the float path rounds it.
  std::vector<double> theta =
      test::random_vector<double>(rng, size_t(logreg_params(dim)), -0.5, 0.5);
  for (double& t : theta) t = double(float(t));
  std::vector<double> gf(theta.size()), gd(theta.size());
  test::poison(gf);
  const double ff = softmax_objective(xf.data(), y.data(), n, dim, 0.01, theta.data(), gf.data());
  const double fdv = softmax_objective(xd.data(), y.data(), n, dim, 0.01, theta.data(), gd.data());
  // Float products over 37 terms of size ~1: relative error ~1e-6 per logit.
  REQUIRE(ff == Approx(fdv).epsilon(1e-5));
  REQUIRE_REL_L2(compare(gf.data(), gd.data(), gf.size()), "gradient, float vs double", 1e-5);
}

TEST_CASE("L-BFGS finds the minimum of an ill-conditioned quadratic", "[classify]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const size_t np = 50;
  const std::vector<double> a = test::random_vector<double>(rng, np, -3, 3);
  std::vector<double> curv(np);
  for (size_t i = 0; i < np; ++i) curv[i] = std::pow(10.0, -2.0 + 4.0 * double(i) / double(np - 1));
  const ObjectiveFn f = [&](const double* t, double* g) {
    double v = 0;
    for (size_t i = 0; i < np; ++i) {
      g[i] = curv[i] * (t[i] - a[i]);
      v += 0.5 * curv[i] * (t[i] - a[i]) * (t[i] - a[i]);
    }
    return v;
  };
  LogRegOptions opt;
  opt.grad_tol = 1e-10;
  opt.max_iterations = 5000;  // about 1,000 needed: 12 decades of gradient over 4 of curvature
  std::vector<double> theta(np, 0.0);
  const LbfgsResult r = minimise_lbfgs(f, theta, opt);
  REQUIRE(r.converged);
  REQUIRE(r.grad_max <= 1e-10);
  // |theta - a| <= |g| / smallest curvature.
  REQUIRE_MAX_ABS(compare(theta.data(), a.data(), np), "minimiser", 1e-10 / 1e-2);
}

TEST_CASE("standardisation uses the training rows' statistics, and restandardise keeps the logits",
          "[classify]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int dim = 5, n = 40;
  std::vector<float> x = test::random_vector<float>(rng, size_t(n) * dim, -3, 7);
  for (int i = 0; i < n; ++i) x[size_t(i * dim + 2)] = 4.0f;  // a constant feature
  const Standardizer st = Standardizer::of(x.data(), n, dim);
  for (int j = 0; j < dim; ++j) {
    double m = 0, v = 0;
    for (int i = 0; i < n; ++i) m += x[size_t(i * dim + j)];
    m /= n;
    for (int i = 0; i < n; ++i) v += (x[size_t(i * dim + j)] - m) * (x[size_t(i * dim + j)] - m);
    const double sd = std::sqrt(v / n);
    REQUIRE(st.mean[size_t(j)] == Approx(m).epsilon(1e-6));
    REQUIRE(st.scale[size_t(j)] == Approx(j == 2 ? 1.0 : 1.0 / sd).epsilon(1e-6));
  }
  const std::vector<float> xs = st.apply(x.data(), n);
  for (int i = 0; i < n; ++i) REQUIRE(xs[size_t(i * dim + 2)] == 0.0f);
  // The same classifier on another standardisation: the same logits for any row.
  const std::vector<float> other_rows = test::random_vector<float>(rng, size_t(n) * dim, 0, 1);
  const Standardizer to = Standardizer::of(other_rows.data(), n, dim);
  const std::vector<double> theta =
      test::random_vector<double>(rng, size_t(logreg_params(dim)), -1, 1);
  const std::vector<double> moved = restandardise(theta, st, to);
  const std::vector<float> probe = test::random_vector<float>(rng, size_t(dim), -5, 5);
  for (int c = 0; c < kClasses; ++c) {
    double a = theta[size_t(kClasses * dim + c)], b = moved[size_t(kClasses * dim + c)];
    for (int j = 0; j < dim; ++j) {
      a += theta[size_t(c * dim + j)] * (probe[size_t(j)] - st.mean[size_t(j)]) *
           st.scale[size_t(j)];
      b += moved[size_t(c * dim + j)] * (probe[size_t(j)] - to.mean[size_t(j)]) *
           to.scale[size_t(j)];
    }
    REQUIRE(b == Approx(a).epsilon(1e-5).margin(1e-5));
  }
}

TEST_CASE("separable classes: both classifiers reach 100% test accuracy", "[classify]") {
  // Centres 6.2 apart on a circle (dim 2) or at least 6 apart on a sphere of radius 40 (dim 16),
  // noise sd 0.2: a point crosses half the gap to another centre with probability below 1e-12,
  // so the nearest neighbours cannot miss. The logistic regression's boundaries are not the
  // bisectors, hence one norm for all centres and the small noise. When every lambda scores
  // 100% in cross-validation the largest (10) is chosen, and so regularised the classifier is
  // close to argmax_c mu_c.x on the standardised features: the nearest centre only when the
  // centres are equally long (Gaussian centres, sd 10, missed test points in 6 draws of 4,000;
  // on the sphere none in 20,000). With one label per class (lambda fixed at 1e-2) the
  // boundaries follow the noisy labelled points: at noise 0.4, 3 draws of 20,000 missed a
  // point; at 0.2 none of 200,000.
  const uint64_t seed = test::fresh_seed();
  const int dim = GENERATE(2, 16);
  const int per_class = GENERATE(1, 10);
  INFO("seed " << seed << " dim " << dim << " labels per class " << per_class);
  std::mt19937_64 rng(seed);
  std::vector<std::vector<double>> centres = make_centres(rng, dim, 10);
  if (dim > 2) {  // keep the Gaussian centres at least 6 apart
    for (int tries = 0; tries < 1000; ++tries) {
      double closest = 1e300;
      for (int a = 0; a < kClasses; ++a)
        for (int b = a + 1; b < kClasses; ++b) {
          double d = 0;
          for (int j = 0; j < dim; ++j)
            d += std::pow(centres[size_t(a)][size_t(j)] - centres[size_t(b)][size_t(j)], 2);
          closest = std::min(closest, std::sqrt(d));
        }
      if (closest >= 6) break;
      centres = make_centres(rng, dim, 10);
    }
  }
  const LabelledSet train = clusters(rng, dim, per_class, 0.2, centres);
  const LabelledSet test_set = clusters(rng, dim, 100, 0.2, centres);
  const DrawResult r = probe_draw(train, features_of(test_set), KnnOptions{}, LogRegOptions{});
  INFO("k " << r.knn.k << " lambda " << r.lambda);
  REQUIRE(accuracy(r.knn_predicted, test_set.y.data()) == 1.0);
  REQUIRE(accuracy(r.logreg_predicted, test_set.y.data()) == 1.0);
}

TEST_CASE("shuffled labels: both classifiers at chance within the binomial spread", "[classify]") {
  // Test labels drawn uniformly, independent of everything the classifiers saw: given the
  // predictions, the correct count is Binomial(n, 0.1) whatever the classifier does. Four
  // checks at a false-failure rate of 1e-6 in all.
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int dim = 4, n_test = 4000;
  const std::vector<std::vector<double>> centres = make_centres(rng, dim, 10);
  LabelledSet train = clusters(rng, dim, 30, 0.4, centres);
  std::shuffle(train.y.begin(), train.y.end(), rng);  // labels no longer follow the clusters
  const LabelledSet test_set = clusters(rng, dim, n_test / kClasses, 0.4, centres);
  std::vector<uint8_t> test_labels(static_cast<size_t>(n_test));
  for (auto& l : test_labels) l = uint8_t(rng() % kClasses);
  const double bound =
      test::normal_upper_quantile(1e-6 / 2 / 4) * std::sqrt(0.1 * 0.9 / double(n_test));
  for (const bool pixels_like : {false, true}) {
    LabelledSet tr = train;
    FeatureSet te = features_of(test_set);
    if (pixels_like) {  // no structure at all: uniform noise features
      tr.x = test::random_vector<float>(rng, tr.x.size(), 0, 1);
      te.x = test::random_vector<float>(rng, te.x.size(), 0, 1);
    }
    const DrawResult r = probe_draw(tr, te, KnnOptions{}, LogRegOptions{});
    const double knn = accuracy(r.knn_predicted, test_labels.data());
    const double lr = accuracy(r.logreg_predicted, test_labels.data());
    INFO("kNN " << knn << " logistic " << lr << " bound 0.1 +- " << bound);
    REQUIRE(std::abs(knn - 0.1) <= bound);
    REQUIRE(std::abs(lr - 0.1) <= bound);
  }
}

TEST_CASE("nothing chosen depends on the test split", "[classify]") {
  // probe_draw sees the test features only after choosing k and lambda (and never the test
  // labels: a FeatureSet has none). Two unrelated test sets give the same choices and fits, and
  // the same predictions on the rows they share.
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int dim = 3;
  const std::vector<std::vector<double>> centres = make_centres(rng, dim, 2);
  const LabelledSet train = clusters(rng, dim, 12, 1.0, centres);
  FeatureSet a = features_of(clusters(rng, dim, 20, 1.0, centres));
  FeatureSet b = a;
  const std::vector<float> extra = test::random_vector<float>(rng, size_t(500) * dim, -9, 9);
  b.x.insert(b.x.end(), extra.begin(), extra.end());
  const DrawResult ra = probe_draw(train, a, KnnOptions{}, LogRegOptions{});
  const DrawResult rb = probe_draw(train, b, KnnOptions{}, LogRegOptions{});
  REQUIRE(ra.knn.k == rb.knn.k);
  REQUIRE(ra.knn.cv_accuracy == rb.knn.cv_accuracy);
  REQUIRE(ra.lambda == rb.lambda);
  REQUIRE(ra.lambda_cv_accuracy == rb.lambda_cv_accuracy);
  REQUIRE(ra.iterations == rb.iterations);
  REQUIRE(!ra.lambda_grid.empty());
  REQUIRE(std::equal(ra.knn_predicted.begin(), ra.knn_predicted.end(), rb.knn_predicted.begin()));
  REQUIRE(std::equal(ra.logreg_predicted.begin(), ra.logreg_predicted.end(),
                     rb.logreg_predicted.begin()));
  REQUIRE(rb.knn_predicted.size() == size_t(b.size()));
}

TEST_CASE("latent_means is the encoder's mu, whatever the chunk", "[classify]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int dim = 3, n = 11;
  const ModelDesc d = make_vae(dim);
  std::vector<float> params(d.num_params);
  init_params(d, seed, params.data());
  ImageSet images;
  images.count = n;
  images.rows = images.cols = kImageSide;
  for (int i = 0; i < n * kImagePixels; ++i) images.pixels.push_back(uint8_t(rng() % 256));
  const std::unique_ptr<Inference> m = make_cpu_inference(d, params, "cpu-ref");
  // Directly: the reference model's forward pass on the batch.
  cpu::Activations<float> a;
  a.resize(d, n);
  for (size_t i = 0; i < a.x.size(); ++i) a.x[i] = float(images.pixels[i]) / 255.0f;
  std::fill(a.eps.begin(), a.eps.end(), 0.0f);
  cpu::model_forward(d, params.data(), a, 1.0);
  for (const int chunk : {1, 4, 512}) {
    const FeatureSet z = latent_means(*m, images, n, nullptr, chunk);
    REQUIRE(z.dim == dim);
    REQUIRE_MAX_ABS(compare(z.x.data(), a.out[kEncMu].data(), z.x.size()), "z_mean", 0.0);
  }
  const FeatureSet p = pixel_features(images, 5);
  REQUIRE(p.size() == 5);
  REQUIRE_MAX_ABS(compare(p.x.data(), a.x.data(), p.x.size()), "pixels", 0.0);
}

TEST_CASE("accuracy and mean_std against direct counts", "[classify]") {
  const std::vector<uint8_t> pred = {1, 2, 3, 4, 5};
  const std::vector<uint8_t> labels = {1, 0, 3, 4, 0};
  REQUIRE(accuracy(pred, labels.data()) == 0.6);
  const MeanStd m = mean_std({0.5, 0.7, 0.9});
  REQUIRE(m.mean == Approx(0.7).epsilon(1e-15));
  REQUIRE(m.std == Approx(0.2).epsilon(1e-14));  // sqrt((0.04 + 0 + 0.04) / 2)
  REQUIRE(mean_std({0.25}).std == 0.0);
}
