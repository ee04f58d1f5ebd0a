// Tail probabilities and quantiles for sizing the statistical bounds of the tests: a check
// "|mean - mu| <= q * se" over n samples fails on correct code with probability alpha when q
// is the quantile of the statistic's distribution at alpha (Student's t with n - 1 degrees of
// freedom for an estimated standard error of normal data, the normal distribution for a known
// one). Each test sizes q for its own n and its own number of checks, so that the false-failure
// rate of a whole test run stays at or under 1e-6.
#pragma once

#include <cmath>
#include <stdexcept>

namespace cuvae::test {

// P(Z > z) for a standard normal Z.
inline double normal_upper_tail(double z) {
  return 0.5 * std::erfc(z / std::sqrt(2.0));
}

// The regularized incomplete beta function I_x(a, b), by its continued fraction
//   I_x(a, b) = x^a (1 - x)^b / (a B(a, b)) * 1 / (1 + d_1 / (1 + d_2 / (1 + ...))),
//   d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1)),
//   d_{2m}   = m (b - m) x / ((a + 2m - 1)(a + 2m)),
// evaluated with the modified Lentz method; for x above (a + 1) / (a + b + 2), where the fraction
// converges slowly, through I_x(a, b) = 1 - I_{1-x}(b, a).
inline double incomplete_beta(double x, double a, double b) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  if (x > (a + 1) / (a + b + 2)) return 1 - incomplete_beta(1 - x, b, a);
  const double log_front = a * std::log(x) + b * std::log1p(-x) - std::log(a) -
                           (std::lgamma(a) + std::lgamma(b) - std::lgamma(a + b));
  constexpr double kTiny = 1e-300;
  // The fraction 0 + 1 / (1 + d_1 / (1 + d_2 / ...)): b_0 = 0 (held as kTiny), a_1 = 1,
  // a_{j+1} = d_j, every b_j = 1. f is the running value, c and d Lentz's ratios.
  double f = kTiny, c = kTiny, d = 0;
  for (int j = 1; j <= 10000; ++j) {
    double num;
    if (j == 1) {
      num = 1;
    } else {
      const int k = j - 1;  // the k-th d
      const int m = k / 2;
      num = k % 2 == 1 ? -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
                       : m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
    }
    d = 1 + num * d;
    d = std::abs(d) < kTiny ? kTiny : d;
    c = 1 + num / c;
    c = std::abs(c) < kTiny ? kTiny : c;
    d = 1 / d;
    const double delta = c * d;
    f *= delta;
    if (std::abs(delta - 1) < 1e-15) return std::exp(log_front) * f;
  }
  throw std::runtime_error("incomplete_beta: no convergence");
}

// P(T > t), T Student's t with `dof` degrees of freedom (t >= 0).
inline double student_t_upper_tail(double t, double dof) {
  if (t < 0) return 1 - student_t_upper_tail(-t, dof);
  return 0.5 * incomplete_beta(dof / (dof + t * t), 0.5 * dof, 0.5);
}

// The q with upper_tail(q) = p (0 < p < 0.5), by bisection on a decreasing tail function.
template <typename Tail>
double upper_quantile(double p, const Tail& upper_tail) {
  double lo = 0, hi = 1;
  while (upper_tail(hi) > p) hi *= 2;
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    (upper_tail(mid) > p ? lo : hi) = mid;
  }
  return hi;
}
inline double normal_upper_quantile(double p) {
  return upper_quantile(p, normal_upper_tail);
}
inline double student_t_upper_quantile(double p, double dof) {
  return upper_quantile(p, [dof](double t) { return student_t_upper_tail(t, dof); });
}

}  // namespace cuvae::test
