// The test helpers themselves (test_support.h), where a mistake would quietly weaken other tests.
#include <stdlib.h>  // setenv, unsetenv

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "tests/stats.h"
#include "tests/test_support.h"

using namespace cuvae;

TEST_CASE("temp_dir gives every call a new folder, also with CUVAE_TEST_SEED pinned",
          "[test_support]") {
  namespace fs = std::filesystem;
  const char* old = std::getenv("CUVAE_TEST_SEED");
  const std::string saved = old ? old : "";
  // Two test processes replaying one seed must not share (and delete) each other's folder.
  REQUIRE(::setenv("CUVAE_TEST_SEED", "12345", 1) == 0);
  const std::string a = test::temp_dir("cuvae_support_");
  const std::string b = test::temp_dir("cuvae_support_");
  if (old)
    ::setenv("CUVAE_TEST_SEED", saved.c_str(), 1);
  else
    ::unsetenv("CUVAE_TEST_SEED");
  CHECK(a != b);
  CHECK(fs::is_directory(a));
  CHECK(fs::is_directory(b));
  CHECK(fs::path(a).filename().string().rfind("cuvae_support_", 0) == 0);
  std::error_code ec;
  fs::remove_all(a, ec);
  fs::remove_all(b, ec);
}

TEST_CASE("catch_exit_code maps every failure count to 1", "[test_support]") {
  CHECK(test::catch_exit_code(0) == 0);
  for (int failures = 1; failures <= 255; ++failures) {
    INFO(failures << " failures");
    REQUIRE(test::catch_exit_code(failures) == 1);
  }
}

TEST_CASE("the t and normal tails and quantiles of the statistical bounds", "[test_support]") {
  // Closed forms: t with 1 degree of freedom is Cauchy, P(T > t) = 1/2 - atan(t) / pi; with 2,
  // P(T > t) = (1 - t / sqrt(2 + t^2)) / 2.
  for (const double t : {0.0, 0.3, 1.0, 2.5, 7.0, 40.0, 1e3}) {
    INFO("t " << t);
    CHECK(test::student_t_upper_tail(t, 1) ==
          Approx(0.5 - std::atan(t) / M_PI).epsilon(1e-10).margin(1e-300));
    CHECK(test::student_t_upper_tail(t, 2) ==
          Approx(0.5 * (1 - t / std::sqrt(2 + t * t))).epsilon(1e-10).margin(1e-300));
  }
  // Many degrees of freedom: the normal tail, as far out as the bounds go.
  for (const double z : {1.0, 3.0, 5.0, 5.5}) {
    INFO("z " << z);
    CHECK(test::student_t_upper_tail(z, 1e7) == Approx(test::normal_upper_tail(z)).epsilon(1e-4));
  }
  CHECK(test::normal_upper_tail(1.959963984540054) == Approx(0.025).epsilon(1e-12));
  // Quantiles invert the tails; t's are wider than the normal's at small n.
  for (const double p : {0.05, 1e-3, 1e-7}) {
    INFO("p " << p);
    const double z = test::normal_upper_quantile(p);
    CHECK(test::normal_upper_tail(z) == Approx(p).epsilon(1e-9));
    for (const double dof : {3.0, 11.0, 47.0, 3999.0}) {
      const double q = test::student_t_upper_quantile(p, dof);
      CHECK(test::student_t_upper_tail(q, dof) == Approx(p).epsilon(1e-9));
      CHECK(q > z);
    }
  }
  // The 0.975 quantile of t with 11 degrees of freedom, from the usual tables: 2.201.
  CHECK(test::student_t_upper_quantile(0.025, 11) == Approx(2.201).margin(5e-4));
}
