// The host's bf16 rounding (host/core/bf16_round.h) against CUDA's own conversion, which
// cuda_bf16.h also compiles for the host: a test of a build with CUDA only.
#include <cuda_bf16.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "host/core/bf16_round.h"
#include "tests/test_support.h"

using namespace cuvae;

TEST_CASE("round_bf16 is the device conversion's rounding, bit for bit", "[cpu_model][bf16]") {
  // cuda_bf16.h's host __float2bfloat16_rn implements the device's cvt.rn.bf16.f32.
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::vector<uint32_t> bits = {0x00000000u, 0x80000000u, 0x00000001u, 0x00008000u, 0x00018000u,
                                0x007fffffu, 0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x7f7f8000u,
                                0x7f7fffffu, 0xff7fffffu, 0x7f800000u, 0xff800000u, 0x7fc00000u,
                                0xffc00001u, 0x7f800001u};
  for (int i = 0; i < 1 << 20; ++i) bits.push_back(uint32_t(rng()));
  size_t wrong = 0, nan = 0;
  for (const uint32_t u : bits) {
    float v, want;
    std::memcpy(&v, &u, sizeof v);
    const float got = round_bf16(v);
    if (std::isnan(v)) {
      ++nan;
      if (!std::isnan(got)) ++wrong;
      continue;
    }
    want = __bfloat162float(__float2bfloat16_rn(v));
    if (std::memcmp(&got, &want, sizeof got) != 0 && wrong++ == 0)
      UNSCOPED_INFO("first difference: bits " << std::hex << u << " -> " << got << ", want "
                                              << want);
  }
  INFO(bits.size() << " values, " << nan << " NaNs");
  REQUIRE(nan >= 3);
  REQUIRE(wrong == 0);
}
