// Strict flag parsing: every nonsense value is an InputError naming the flag.
#include <catch2/catch.hpp>
#include <cmath>
#include <functional>

#include "host/app/cli.h"
#include "host/core/error.h"

using namespace cuvae;

namespace {
void require_flag_error(const std::function<void()>& f, const std::string& flag) {
  try {
    f();
    FAIL("accepted a bad value for " << flag);
  } catch (const InputError& e) {
    const std::string msg = e.what();
    INFO(msg);
    REQUIRE(msg.rfind(flag + ":", 0) == 0);
    REQUIRE(msg.find('\n') == std::string::npos);
  }
}
}  // namespace

TEST_CASE("integer flags", "[cli]") {
  CHECK(parse_int_flag("--epochs", "3", 1, 10) == 3);
  CHECK(parse_int_flag("--epochs", "10", 1, 10) == 10);
  for (const char* bad : {"0", "11", "-1", "", " 3", "3 ", "3.5", "1e3", "abc", "nan", "3x",
                          "99999999999999999999999"})
    require_flag_error([&] { parse_int_flag("--epochs", bad, 1, 10); }, "--epochs");
}

TEST_CASE("real flags", "[cli]") {
  CHECK(parse_real_flag("--lr", "1e-3", 0, 10, false) == 1e-3);
  CHECK(parse_real_flag("--beta", "0", 0, 1e6, true) == 0);
  for (const char* bad : {"0", "-1e-3", "nan", "NaN", "inf", "-inf", "", "1e-3x", "11", "1e999"})
    require_flag_error([&] { parse_real_flag("--lr", bad, 0, 10, false); }, "--lr");
  require_flag_error([&] { parse_real_flag("--beta", "-0.5", 0, 1e6, true); }, "--beta");
}

TEST_CASE("seed flag", "[cli]") {
  CHECK(parse_seed_flag("--seed", "0") == 0);
  CHECK(parse_seed_flag("--seed", "18446744073709551615") == UINT64_MAX);
  for (const char* bad : {"-1", "18446744073709551616", "", "1.5", "+3", " 1", "x"})
    require_flag_error([&] { parse_seed_flag("--seed", bad); }, "--seed");
}
