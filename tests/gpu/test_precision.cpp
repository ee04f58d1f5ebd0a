// GPU tests of the bf16 conversions (cuda/kernels/precision.cuh): to_bf16 against the host's
// __float2bfloat16_rn bit for bit, and the span forms of to_bf16 and widen_spans, each span to its
// place and nothing else, in guarded device memory.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cuda/runtime/device_buffer.cuh"
#include "host/core/error.h"
#include "host/core/model.h"
#include "tests/gpu/checks.h"
#include "tests/gpu/device_io.h"
#include "tests/test_support.h"

using namespace cuvae;
using namespace cuvae::test;

// ---- to_bf16, and the span forms of to_bf16 and widen_spans ----------------------------------

namespace {

// A SpanMap of up to kMax tensors placed in the float buffer in one order with gaps between them,
// and in the bf16 buffer in another order, each start rounded up to a multiple of 8 elements (16
// bytes, as the trainer aligns its bf16 tensors). Elements of either buffer outside every span
// must be left alone.
struct SpanCase {
  SpanMap map;
  size_t float_size = 0, lo_size = 0;
};

SpanCase place_spans(const std::vector<size_t>& sizes, std::mt19937_64& rng) {
  SpanCase c;
  c.map.count = int(sizes.size());
  std::vector<size_t> order(sizes.size());
  for (size_t j = 0; j < order.size(); ++j) order[j] = j;
  std::uniform_int_distribution<size_t> gap(0, 5);
  std::shuffle(order.begin(), order.end(), rng);
  for (size_t j : order) {
    c.float_size += gap(rng);
    c.map.offset[j] = c.float_size;
    c.map.size[j] = sizes[j];
    c.float_size += sizes[j];
  }
  std::shuffle(order.begin(), order.end(), rng);
  for (size_t j : order) {
    c.lo_size = (c.lo_size + gap(rng) + 7) / 8 * 8;
    c.map.lo_offset[j] = c.lo_size;
    c.lo_size += sizes[j];
  }
  c.float_size += gap(rng) + 1;
  c.lo_size += gap(rng) + 1;
  return c;
}

// The span maps every conversion test runs: none, one span over both whole buffers, touching
// spans and an empty one (they share no index), the trainer's tensors (the five convolution
// weights and encoder.fc's), and kMax random sizes up to 1, 31, 4097 and 70000 (some empty).
std::vector<std::pair<std::string, SpanCase>> span_cases(std::mt19937_64& rng) {
  std::vector<std::pair<std::string, SpanCase>> v;
  v.emplace_back("no spans", SpanCase{SpanMap{}, 17, 17});
  SpanCase whole;
  whole.map.count = 1, whole.map.size[0] = 4097, whole.float_size = whole.lo_size = 4097;
  v.emplace_back("one span over both whole buffers", whole);
  SpanCase touching;
  touching.map.count = 3;
  touching.map.offset[0] = 0, touching.map.lo_offset[0] = 40, touching.map.size[0] = 40;
  touching.map.offset[1] = 40, touching.map.lo_offset[1] = 0, touching.map.size[1] = 40;
  touching.map.offset[2] = 40, touching.map.lo_offset[2] = 40, touching.map.size[2] = 0;
  touching.float_size = touching.lo_size = 80;
  v.emplace_back("touching spans, swapped, and an empty one", touching);
  const ModelDesc m = make_vae(2);
  std::vector<size_t> model_sizes;
  for (LayerId id : {kEncConv1, kEncConv2, kEncFc, kDecDeconv1, kDecDeconv2, kDecOut})
    model_sizes.push_back(m.weight(id).numel);
  v.emplace_back("the model's bf16 weights", place_spans(model_sizes, rng));
  for (size_t max_size : {size_t(1), size_t(31), size_t(4097), size_t(70000)}) {
    std::uniform_int_distribution<size_t> size(0, max_size);
    std::vector<size_t> sizes(SpanMap::kMax);
    for (size_t& n : sizes) n = size(rng);
    sizes[0] = max_size;  // at least one of the largest
    v.emplace_back("kMax spans of up to " + std::to_string(max_size) + " elements",
                   place_spans(sizes, rng));
  }
  return v;
}

std::string describe(const SpanMap& map) {
  std::ostringstream os;
  os << map.count << " spans:";
  for (int j = 0; j < map.count; ++j)
    os << " [" << map.offset[j] << " -> " << map.lo_offset[j] << ", " << map.size[j] << "]";
  return os.str();
}

// For each element of a buffer of `n`: the element of the other buffer that the map pairs it
// with, or n_other (none). lo_side: the bf16 buffer's view, else the float buffer's.
std::vector<size_t> partner(const SpanMap& map, size_t n, bool lo_side, size_t none) {
  std::vector<size_t> p(n, none);
  for (int j = 0; j < map.count; ++j)
    for (size_t k = 0; k < map.size[j]; ++k)
      p[(lo_side ? map.lo_offset[j] : map.offset[j]) + k] =
          (lo_side ? map.offset[j] : map.lo_offset[j]) + k;
  return p;
}

// Values that exercise the rounding: signed zeros, denormals and their ties, ties near 1 and at
// the top of the range, values that overflow to Inf, Inf, NaN (quiet, negative, signaling).
std::vector<float> rounding_specials() {
  const float inf = std::numeric_limits<float>::infinity();
  return {0.0f,
          -0.0f,
          float_from_bits(0x00000001),  // the smallest denormal: rounds to +0
          float_from_bits(0x00008000),  // a denormal tie between 0 (even) and 0x0001: +0
          float_from_bits(0x00018000),  // a denormal tie between 0x0001 and 0x0002 (even)
          float_from_bits(0x007fffff),  // the largest denormal: rounds up to the smallest normal
          float_from_bits(0x80400000),  // a negative denormal, exact in bf16
          kTieDown,
          kTieUp,
          -kTieDown,
          -kTieUp,
          float_from_bits(0x3f808001),  // just above a tie: rounds up
          float_from_bits(0x3f807fff),  // just below a tie: rounds down
          3.4e38f,                      // beyond bf16's largest finite value (3.3895e38) by
          -3.4e38f,                     // more than half an ulp: +-Inf
          std::numeric_limits<float>::max(),
          float_from_bits(0x7f7f7fff),  // below the tie at the top: the largest finite bf16
          float_from_bits(0x7f7f8000),  // the tie at the top: to even, which is Inf
          inf,
          -inf,
          std::numeric_limits<float>::quiet_NaN(),
          -std::numeric_limits<float>::quiet_NaN(),
          float_from_bits(0x7f800001),  // a signaling NaN with the lowest payload: NaN, not Inf
          float_from_bits(0xff800001)};
}

// n floats: half random bit patterns (every exponent, some Inf), half ordinary numbers, with the
// rounding specials (as many as fit) at random places. The only NaNs are the specials' four,
// whose bf16 forms can never be the poison 0xFFFF (canonical 0x7FFF, or with the payload kept
// 0x7FC0 / 0xFFC0), so a NaN output that is the poison is an element nobody wrote.
std::vector<float> conversion_input(std::mt19937_64& rng, size_t n) {
  std::vector<float> v(n);
  std::uniform_real_distribution<float> ordinary(-4.0f, 4.0f);
  for (size_t i = 0; i < n; ++i) {
    v[i] = i % 2 ? float_from_bits(uint32_t(rng() >> 32)) : ordinary(rng);
    if (std::isnan(v[i])) v[i] = float_from_bits(bits_of(v[i]) & 0xBFFFFFFFu);  // finite
  }
  std::vector<float> specials = rounding_specials();
  std::shuffle(specials.begin(), specials.end(), rng);
  std::copy_n(specials.begin(), std::min(n, specials.size()), v.begin());
  std::shuffle(v.begin(), v.end(), rng);
  return v;
}

// got[i] == bf16(src[i]) bit for bit, except that a NaN source only needs a NaN result (its
// payload is the implementation's) other than the poison.
void require_rounded(const std::vector<bf16>& got, const std::vector<float>& src,
                     const std::string& name) {
  REQUIRE(got.size() == src.size());
  std::vector<bf16> want(src.size()), got_cmp = got;
  for (size_t i = 0; i < src.size(); ++i) {
    want[i] = round_bf16(src[i]);
    if (std::isnan(src[i])) {
      INFO(name << "[" << i << "] from NaN " << show(src[i]) << " is " << show(got[i]));
      REQUIRE(std::isnan(widen(got[i])));
      REQUIRE_FALSE(is_poison(got[i]));
      want[i] = got_cmp[i] = kBf16Zero;  // checked: out of the bitwise comparison
    }
  }
  require_same_bits(got_cmp, want, name);
}

}  // namespace

TEST_CASE("to_bf16 rounds like the host __float2bfloat16_rn, bit for bit",
          "[gpu][bf16][precision]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  // 16,776,965 = 65,535 blocks of 256 threads + 5: more than one grid's worth of elements.
  const size_t n = GENERATE(size_t(1), size_t(31), size_t(4097), size_t(65535) * 256 + 5);
  const size_t shift = GENERATE(size_t(0), size_t(1));  // 1: both 1 element past alignment
  INFO("n " << n << " shift " << shift);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  const std::vector<float> src = conversion_input(rng, n);
  const Guarded<float> d_src = guarded_input(src, shift, s);
  Guarded<bf16> d_dst(n, shift);
  auto run = [&] {
    d_dst.poison(s);
    to_bf16(d_dst.data(), d_src.data(), n, s);
    return d_dst.get(s, "dst");  // and nothing past the n elements written
  };
  const std::vector<bf16> got = run();
  require_rounded(got, src, "dst");
  require_same_run(run(), got, "dst");
  const std::vector<float> src_after = d_src.get(s, "src");  // an input: left alone, NaNs too
  REQUIRE(same_bits(src_after, src));
}

TEST_CASE("to_bf16 over a span map rounds each span to its place and nothing else",
          "[gpu][bf16][precision]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  for (const auto& [what, c] : span_cases(rng)) {
    INFO(what << ": " << describe(c.map) << "; buffers " << c.float_size << " floats, " << c.lo_size
              << " bf16");
    const std::vector<float> src = conversion_input(rng, c.float_size);
    const DeviceBuffer<float> d_src = to_device(src, s);
    DeviceBuffer<bf16> d_lo(c.lo_size, "lo");
    poison_device(d_lo, s);
    to_bf16(d_lo.data(), d_src.data(), c.map, s);
    const std::vector<bf16> got = to_host(d_lo, s);
    const std::vector<size_t> from = partner(c.map, c.lo_size, true, c.float_size);
    std::vector<bf16> in_spans;
    std::vector<float> their_src;
    size_t untouched_written = 0, first = c.lo_size;
    for (size_t i = 0; i < c.lo_size; ++i) {
      if (from[i] < c.float_size) {
        in_spans.push_back(got[i]), their_src.push_back(src[from[i]]);
      } else if (!is_poison(got[i])) {
        if (untouched_written++ == 0) first = i;
      }
    }
    INFO(untouched_written << " bf16 elements outside the spans written, first [" << first << "]");
    REQUIRE(untouched_written == 0);
    require_rounded(in_spans, their_src, "lo in the spans");
    const std::vector<float> src_after = to_host(d_src, s);
    REQUIRE(same_bits(src_after, src));
  }
}

TEST_CASE("widen_spans widens each span exactly to its place and nothing else",
          "[gpu][bf16][precision]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  CudaStream stream;
  const cudaStream_t s = stream.get();
  for (const auto& [what, c] : span_cases(rng)) {
    INFO(what << ": " << describe(c.map) << "; buffers " << c.float_size << " floats, " << c.lo_size
              << " bf16");
    // Every bf16 value the rounding produces from the specials and random bits: -0, denormals,
    // the largest finite, Inf, NaN.
    const std::vector<bf16> lo = round_all(conversion_input(rng, c.lo_size));
    const DeviceBuffer<bf16> d_lo = to_device(lo, s);
    DeviceBuffer<float> d_dst(c.float_size, "dst");
    poison_device(d_dst, s);
    widen_spans(d_dst.data(), d_lo.data(), c.map, s);
    const std::vector<float> got = to_host(d_dst, s);
    const std::vector<size_t> from = partner(c.map, c.float_size, false, c.lo_size);
    size_t outside_written = 0, inside_wrong = 0, first = c.float_size;
    for (size_t i = 0; i < c.float_size; ++i) {
      bool ok;
      if (from[i] < c.lo_size) {
        const float want = widen(lo[from[i]]);  // exact
        ok = std::isnan(want) ? std::isnan(got[i]) && !is_poison(got[i])
                              : bits_of(got[i]) == bits_of(want);
        inside_wrong += !ok;
      } else {
        ok = is_poison(got[i]);
        outside_written += !ok;
      }
      if (!ok && first == c.float_size) first = i;
    }
    INFO(outside_written << " floats outside the spans written, " << inside_wrong
                         << " inside wrong; first at [" << first << "]"
                         << (first < c.float_size ? ": got " + show(got[first]) : std::string()));
    REQUIRE(outside_written == 0);
    REQUIRE(inside_wrong == 0);
  }
}

TEST_CASE("the span forms reject overlapping spans and a count outside [0, kMax]",
          "[gpu][bf16][precision]") {
  CudaStream stream;
  const cudaStream_t s = stream.get();
  const size_t n = 64;
  const DeviceBuffer<float> d_f = to_device(std::vector<float>(n, 1.0f), s);
  const DeviceBuffer<bf16> d_l = to_device(std::vector<bf16>(n, bf16_from_bits(0x3f80)), s);
  DeviceBuffer<float> d_dst(n, "dst");
  DeviceBuffer<bf16> d_lo(n, "lo");
  poison_device(d_dst, s);
  poison_device(d_lo, s);

  SpanMap ok;  // two disjoint spans on both sides
  ok.count = 2;
  ok.offset[0] = 0, ok.lo_offset[0] = 0, ok.size[0] = 10;
  ok.offset[1] = 10, ok.lo_offset[1] = 16, ok.size[1] = 5;
  SpanMap float_overlap = ok;
  float_overlap.offset[1] = 9;  // float index 9 twice
  SpanMap lo_overlap = ok;
  lo_overlap.lo_offset[1] = 8;  // bf16 index 8 and 9 twice, the float side disjoint
  SpanMap inner = ok;
  inner.offset[1] = 2, inner.lo_offset[1] = 3;  // inside the first on both sides
  SpanMap too_many;
  too_many.count = SpanMap::kMax + 1;
  SpanMap negative;
  negative.count = -1;
  for (const SpanMap* bad : {&float_overlap, &lo_overlap, &inner, &too_many, &negative}) {
    INFO(describe(*bad));
    CHECK_THROWS_AS(to_bf16(d_lo.data(), d_f.data(), *bad, s), Error);
    CHECK_THROWS_AS(widen_spans(d_dst.data(), d_l.data(), *bad, s), Error);
  }
  // Nothing was launched: both outputs still hold the poison everywhere.
  const std::vector<float> dst = to_host(d_dst, s);
  const std::vector<bf16> lo = to_host(d_lo, s);
  CHECK(std::all_of(dst.begin(), dst.end(), [](float v) { return is_poison(v); }));
  CHECK(std::all_of(lo.begin(), lo.end(), [](bf16 v) { return is_poison(v); }));
}
