// The test helpers themselves (test_support.h), where a mistake would quietly weaken other tests.
#include <stdlib.h>  // setenv, unsetenv

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <string>

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
