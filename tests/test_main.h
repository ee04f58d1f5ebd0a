// The body of the test executables' mains, included by each main after <catch2/catch.hpp> with
// CATCH_CONFIG_RUNNER defined (only then does Catch2 declare its Session).
#pragma once

#include <cstdio>
#include <cstring>
#include <string>

#include "tests/test_support.h"

namespace cuvae::test {

// Whether the arguments ask Catch2 for a listing (--list-*: CTest's test discovery), which
// never skips.
inline bool is_listing(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--list", 6) == 0) return true;
  return false;
}

// With a non-empty skip_reason (no GPU, no MNIST) and no listing asked for: prints
// "skipped: <reason>" and returns kSkipExitCode. Else runs the Catch2 session and returns
// catch_exit_code of its result: 0 or 1, never 77 (a listing: Catch2's own result).
inline int run_or_skip(int argc, char** argv, const std::string& skip_reason) {
  const bool listing = is_listing(argc, argv);
  if (!listing && !skip_reason.empty()) {
    std::printf("skipped: %s\n", skip_reason.c_str());
    return kSkipExitCode;
  }
  const int result = Catch::Session().run(argc, argv);
  // A listing returns what Catch2 says (v2: how many it listed), as test discovery expects.
  return listing ? result : catch_exit_code(result);
}

}  // namespace cuvae::test
