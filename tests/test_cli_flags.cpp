// Strict flag parsing: every nonsense value is an InputError naming the flag.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>

#include "host/app/cli.h"
#include "host/core/error.h"
#include "host/core/text.h"
#include "tests/test_support.h"

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

// The run's settings (train_types.h): what is stored in float must be a normal float, or 0
// where 0 is in the range; the text of the message names the range.
TEST_CASE("real flags of the run's settings refuse what float cannot hold", "[cli]") {
  const float tiny = std::numeric_limits<float>::min();  // the smallest normal float
  char text[64];
  std::snprintf(text, sizeof text, "%.9g", double(tiny));
  CHECK(float(parse_real_flag("--lr", text, kLrRange)) == tiny);
  CHECK(parse_real_flag("--lr", "10", kLrRange) == 10);
  CHECK(parse_real_flag("--beta", "0", kBetaRange) == 0);
  CHECK(float(parse_real_flag("--beta", text, kBetaRange)) == tiny);
  CHECK(parse_real_flag("--beta", "1e6", kBetaRange) == 1e6);
  // Below the smallest normal float: 0 or a subnormal once stored.
  std::snprintf(text, sizeof text, "%.9g", double(std::nextafter(tiny, 0.0f)));
  for (const char* flag : {"--lr", "--beta"}) {
    const RealRange& range = std::string(flag) == "--lr" ? kLrRange : kBetaRange;
    for (const char* bad : {"1e-50", "1e-45", "1e-39", static_cast<const char*>(text), "-1e-50",
                            "nan", "inf", "1e999", "1e7", "10.5"}) {
      if (std::string(flag) == "--beta" && std::string(bad) == "10.5") continue;  // in range
      INFO(flag << " " << bad);
      try {
        parse_real_flag(flag, bad, range);
        FAIL("accepted " << bad);
      } catch (const InputError& e) {
        const std::string msg = e.what();
        INFO(msg);
        REQUIRE(msg.rfind(std::string(flag) + ":", 0) == 0);
        REQUIRE(msg.find('\n') == std::string::npos);
        if (std::isfinite(std::strtod(bad, nullptr)))
          REQUIRE(msg.find("1.17549435e-38, the smallest normal float") != std::string::npos);
      }
    }
  }
  CHECK(parse_int_flag("--batch-size", "65536", kBatchSizeRange) == 65536);
  require_flag_error([&] { parse_int_flag("--batch-size", "65537", kBatchSizeRange); },
                     "--batch-size");
}

TEST_CASE("seed flag", "[cli]") {
  CHECK(parse_seed_flag("--seed", "0") == 0);
  CHECK(parse_seed_flag("--seed", "18446744073709551615") == UINT64_MAX);
  for (const char* bad : {"-1", "18446744073709551616", "", "1.5", "+3", " 1", "x"})
    require_flag_error([&] { parse_seed_flag("--seed", bad); }, "--seed");
}

TEST_CASE("text: counts in the singular for one, floats in their shortest decimal", "[cli]") {
  CHECK(counted(1, "training image") == "1 training image");
  CHECK(counted(0, "image") == "0 images");
  CHECK(counted(12345, "image") == "12,345 images");
  CHECK(counted(2, "class", "classes") == "2 classes");
  // Adam's defaults and the learning rate: the decimal the user typed, as a double.
  CHECK(float_as_decimal(0.9f) == 0.9);
  CHECK(float_as_decimal(0.999f) == 0.999);
  CHECK(float_as_decimal(1e-3f) == 1e-3);
  CHECK(float_as_decimal(1e-7f) == 1e-7);
  CHECK(float_as_decimal(std::numeric_limits<float>::min()) == 1.1754944e-38);
  // Random floats: the double reads back as the float, and no shorter decimal does.
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<uint32_t> bits(0, 0x7f7fffffu);  // finite, non-negative
  for (int i = 0; i < 2000; ++i) {
    uint32_t b = bits(rng);
    float v;
    std::memcpy(&v, &b, sizeof v);
    const double d = float_as_decimal(v);
    INFO("float bits " << b);
    REQUIRE(float(d) == v);
    // The significant digits of d's shortest decimal (the decimal float_as_decimal chose).
    char buf[400];  // %g of any finite double fits
    int significant = 1;
    for (; significant < 17; ++significant) {
      std::snprintf(buf, sizeof buf, "%.*g", significant, d);
      if (std::strtod(buf, nullptr) == d) break;
    }
    // At most 9 digits (enough for any float), and one fewer does not read back as v.
    REQUIRE(significant <= 9);
    if (significant > 1) {
      std::snprintf(buf, sizeof buf, "%.*g", significant - 1, double(v));
      REQUIRE(std::strtof(buf, nullptr) != v);
    }
  }
}
