// Latent interpolation (host/eval/interpolate.h) on random-weight models: the first and last
// steps decode bit for bit to what the reconstructions show for those images; the linear and
// spherical paths against direct formulas (midpoint, norm, angle, the plane of a and b); the
// pairs drawn from Philox (different labels, the documented draws, reproducible); the picture's
// size from the layout, its tiles the decoded images and its originals framed; bad input.
#include <png.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <tuple>

#include "host/core/error.h"
#include "host/core/model.h"
#include "host/core/philox.h"
#include "host/cpu/inference_cpu.h"
#include "host/eval/interpolate.h"
#include "host/eval/pictures.h"
#include "tests/test_support.h"

using namespace cuvae;
namespace fs = std::filesystem;

namespace {

// Random images with random labels 0-9.
Dataset synthetic_data(std::mt19937_64& rng, int count) {
  Dataset d;
  d.images.path = "synthetic-images";
  d.images.count = count;
  d.images.rows = d.images.cols = kImageSide;
  d.images.pixels.resize(size_t(count) * kImagePixels);
  std::uniform_int_distribution<int> byte(0, 255), label(0, 9);
  for (uint8_t& p : d.images.pixels) p = uint8_t(byte(rng));
  d.labels.path = "synthetic-labels";
  for (int i = 0; i < count; ++i) d.labels.labels.push_back(uint8_t(label(rng)));
  return d;
}

// Random weights, decoder.fc scaled up so that the decoder follows z closely (as in
// test_pictures.cpp): a step drawn from the wrong z cannot pass.
std::vector<float> random_params(const ModelDesc& desc, uint64_t seed) {
  std::vector<float> params(desc.num_params);
  init_params(desc, seed, params.data());
  const ParamTensor& fc = desc.param("decoder.fc.weight");
  for (size_t i = fc.offset; i < fc.offset + fc.numel; ++i) params[i] *= 30.0f;
  return params;
}

std::vector<float> random_latent(std::mt19937_64& rng, int dim, double scale) {
  std::normal_distribution<double> n(0.0, scale);
  std::vector<float> v(static_cast<size_t>(dim));
  for (float& x : v) x = float(n(rng));
  return v;
}

double dot(const float* a, const float* b, int dim) {
  double s = 0;
  for (int j = 0; j < dim; ++j) s += double(a[j]) * double(b[j]);
  return s;
}

bool same_bits(const float* a, const float* b, size_t n) {
  return std::memcmp(a, b, n * sizeof(float)) == 0;
}

template <typename F>
void require_input_error(const F& f, const std::string& words) {
  try {
    f();
    FAIL("no InputError; expected one mentioning '" << words << "'");
  } catch (const InputError& e) {
    const std::string msg = e.what();
    INFO(msg);
    REQUIRE(msg.find(words) != std::string::npos);
    REQUIRE(msg.find('\n') == std::string::npos);
  }
}

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
  Rgb at(int x, int y) const {
    const uint8_t* p = &rgb[(size_t(y) * size_t(width) + size_t(x)) * 3];
    return Rgb{p[0], p[1], p[2]};
  }
};

Image read_png(const std::string& path) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  REQUIRE(png_image_begin_read_from_file(&img, path.c_str()) != 0);
  REQUIRE(img.format == PNG_FORMAT_RGB);
  Image out;
  out.width = int(img.width);
  out.height = int(img.height);
  out.rgb.resize(PNG_IMAGE_SIZE(img));
  REQUIRE(png_image_finish_read(&img, nullptr, out.rgb.data(), 0, nullptr) != 0);
  return out;
}

// The 2x digit at (x0, y0) shows the gray levels round(255 v) of `values` (784), within one
// level (the picture and this test may round differently at a half).
void require_tile(const Image& img, int x0, int y0, const float* values, const std::string& what) {
  int worst = 0;
  for (int row = 0; row < kImageSide; ++row)
    for (int col = 0; col < kImageSide; ++col) {
      const int want = int(std::lround(255.0 * double(values[row * kImageSide + col])));
      for (int s = 0; s < kTileScale * kTileScale; ++s) {
        const Rgb p =
            img.at(x0 + col * kTileScale + s % kTileScale, y0 + row * kTileScale + s / kTileScale);
        INFO(what << " pixel (" << row << ", " << col << ")");
        REQUIRE((p.r == p.g && p.g == p.b));
        worst = std::max(worst, std::abs(int(p.r) - want));
      }
    }
  INFO(what << ": worst gray difference " << worst);
  REQUIRE(worst <= 1);
}

}  // namespace

// ---- the paths -----------------------------------------------------------------------------
TEST_CASE("lerp: exact endpoints, the midpoint (a + b) / 2, the points of the segment",
          "[interpolate]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (const int dim : {1, 2, 3, 17, 64}) {
    INFO("dim " << dim);
    const std::vector<float> a = random_latent(rng, dim, 3.0), b = random_latent(rng, dim, 3.0);
    std::vector<float> out(static_cast<size_t>(dim));
    test::poison(out);
    lerp_latent(out.data(), a.data(), b.data(), dim, 0.0);
    REQUIRE(same_bits(out.data(), a.data(), size_t(dim)));
    test::poison(out);
    lerp_latent(out.data(), a.data(), b.data(), dim, 1.0);
    REQUIRE(same_bits(out.data(), b.data(), size_t(dim)));
    test::poison(out);
    lerp_latent(out.data(), a.data(), b.data(), dim, 0.5);
    for (int j = 0; j < dim; ++j) {
      const double mid = (double(a[j]) + double(b[j])) / 2.0;
      INFO("j " << j << ": " << out[j] << " vs " << mid);
      REQUIRE(std::abs(double(out[j]) - mid) <= 1e-7 * std::max(std::abs(mid), 1e-30) + 1e-37);
    }
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (int round = 0; round < 8; ++round) {
      const double t = u(rng);
      test::poison(out);
      lerp_latent(out.data(), a.data(), b.data(), dim, t);
      for (int j = 0; j < dim; ++j) {
        const double want = double(a[j]) + t * (double(b[j]) - double(a[j]));
        REQUIRE(std::abs(double(out[j]) - want) <= 1e-6 * (std::abs(a[j]) + std::abs(b[j])));
      }
    }
  }
}

TEST_CASE("slerp: exact endpoints, the norm kept for |a| = |b|, the angle t W in the plane",
          "[interpolate]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (const int dim : {3, 4, 16, 64}) {
    INFO("dim " << dim);
    const std::vector<float> a = random_latent(rng, dim, 2.0);
    std::vector<float> b = random_latent(rng, dim, 2.0);
    const double na = std::sqrt(dot(a.data(), a.data(), dim));
    const double nb0 = std::sqrt(dot(b.data(), b.data(), dim));
    for (float& x : b) x = float(double(x) * na / nb0);  // |b| = |a| up to float rounding
    const double nb = std::sqrt(dot(b.data(), b.data(), dim));
    const double w = std::acos(dot(a.data(), b.data(), dim) / (na * nb));
    // An orthonormal basis (e1, e2) of the plane of a and b, by Gram-Schmidt.
    std::vector<double> e1(static_cast<size_t>(dim)), e2(static_cast<size_t>(dim));
    for (int j = 0; j < dim; ++j) e1[size_t(j)] = a[j] / na;
    double be1 = 0, ne2 = 0;
    for (int j = 0; j < dim; ++j) be1 += b[j] * e1[size_t(j)];
    for (int j = 0; j < dim; ++j) e2[size_t(j)] = b[j] - be1 * e1[size_t(j)];
    for (const double v : e2) ne2 += v * v;
    for (double& v : e2) v /= std::sqrt(ne2);

    std::vector<float> out(static_cast<size_t>(dim));
    test::poison(out);
    slerp_latent(out.data(), a.data(), b.data(), dim, 0.0);
    REQUIRE(same_bits(out.data(), a.data(), size_t(dim)));
    test::poison(out);
    slerp_latent(out.data(), a.data(), b.data(), dim, 1.0);
    REQUIRE(same_bits(out.data(), b.data(), size_t(dim)));
    for (const double t : {0.1, 0.25, 0.5, 0.9, 1.0 / 3.0}) {
      INFO("t " << t);
      test::poison(out);
      slerp_latent(out.data(), a.data(), b.data(), dim, t);
      // On the arc: |z| = |a|, and z = |a| (cos(tW) e1 + sin(tW) e2).
      REQUIRE(std::abs(std::sqrt(dot(out.data(), out.data(), dim)) - na) <= 1e-5 * na);
      for (int j = 0; j < dim; ++j) {
        const double want =
            na * (std::cos(t * w) * e1[size_t(j)] + std::sin(t * w) * e2[size_t(j)]);
        INFO("j " << j << ": " << out[j] << " vs " << want);
        REQUIRE(std::abs(double(out[j]) - want) <= 1e-5 * na);
      }
    }
    // Not the straight line: at t = 0.5 the arc lies farther from 0 than the chord's midpoint.
    slerp_latent(out.data(), a.data(), b.data(), dim, 0.5);
    std::vector<float> mid(static_cast<size_t>(dim));
    lerp_latent(mid.data(), a.data(), b.data(), dim, 0.5);
    REQUIRE(dot(out.data(), out.data(), dim) > dot(mid.data(), mid.data(), dim) * (1 + 1e-6));
  }
}

TEST_CASE("slerp falls back to the straight line for (anti)parallel or zero latents",
          "[interpolate]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int dim = 5;
  const std::vector<float> a = random_latent(rng, dim, 1.0);
  std::vector<float> parallel(a), anti(a), zero(size_t(dim), 0.0f);
  for (float& x : parallel) x *= 3.0f;
  for (float& x : anti) x *= -0.5f;
  for (const auto& [name, b] :
       {std::pair<const char*, const std::vector<float>*>{"parallel", &parallel},
        {"antiparallel", &anti},
        {"zero", &zero}}) {
    INFO(name);
    for (const double t : {0.0, 0.3, 0.5, 1.0}) {
      std::vector<float> got(static_cast<size_t>(dim)), want(static_cast<size_t>(dim));
      test::poison(got);
      slerp_latent(got.data(), a.data(), b->data(), dim, t);
      lerp_latent(want.data(), a.data(), b->data(), dim, t);
      REQUIRE(same_bits(got.data(), want.data(), size_t(dim)));
      test::poison(got);
      slerp_latent(got.data(), b->data(), a.data(), dim, t);  // the zero one first, too
      lerp_latent(want.data(), b->data(), a.data(), dim, t);
      REQUIRE(same_bits(got.data(), want.data(), size_t(dim)));
    }
  }
}

TEST_CASE("step_t: K points from exactly 0 to exactly 1", "[interpolate]") {
  for (const int k_steps : {2, 3, 10, 100}) {
    REQUIRE(step_t(0, k_steps) == 0.0);
    REQUIRE(step_t(k_steps - 1, k_steps) == 1.0);
    for (int k = 1; k < k_steps; ++k)
      REQUIRE(step_t(k, k_steps) - step_t(k - 1, k_steps) ==
              Approx(1.0 / (k_steps - 1)).epsilon(1e-12));
  }
}

// ---- the decoded paths ---------------------------------------------------------------------
TEST_CASE(
    "interpolation: the end steps decode bit for bit to the reconstructions, the others "
    "to the path",
    "[interpolate]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const int count = 12;
  const Dataset data = synthetic_data(rng, count);
  for (const auto& [device, dim, k_steps] : {std::tuple<const char*, int, int>{"cpu-ref", 2, 5},
                                             {"cpu-ref", 3, 2},
                                             {"cpu", 1, 7},
                                             {"cpu", 5, 10}}) {
    INFO(device << ", latent dim " << dim << ", " << k_steps << " steps");
    const ModelDesc desc = make_vae(dim);
    const std::vector<float> params = random_params(desc, seed + uint64_t(dim));
    // `cuvae reconstruct` in runs of their own (engines of their own): of the whole set, and of
    // a set of just the pairs' images, first and second of each, as interpolate encodes them.
    std::uniform_int_distribution<int64_t> index(0, count - 1);
    const std::vector<ImagePair> pairs = {{0, count - 1}, {index(rng), index(rng)}, {5, 5}};
    ImageSet own = data.images;
    own.count = int64_t(2 * pairs.size());
    own.pixels.clear();
    for (const ImagePair& p : pairs)
      for (const int64_t i : {p.first, p.second})
        own.pixels.insert(own.pixels.end(), data.images.pixels.begin() + i * kImagePixels,
                          data.images.pixels.begin() + (i + 1) * kImagePixels);
    const auto all_engine = make_cpu_inference(desc, params, device);
    const std::vector<float> mu_all = encode_means(*all_engine, data.images, count);
    const std::vector<float> rec_all = reconstruction_means(*all_engine, data.images, count);
    const auto own_engine = make_cpu_inference(desc, params, device);
    const std::vector<float> mu_own = encode_means(*own_engine, own, own.count);
    const std::vector<float> rec_own = reconstruction_means(*own_engine, own, own.count);
    const bool batch_exact = std::string(device) == "cpu-ref";

    const auto engine = make_cpu_inference(desc, params, device);
    for (const LatentPath path : {LatentPath::Linear, LatentPath::Slerp}) {
      if (path == LatentPath::Slerp && dim < kMinSlerpDim) continue;
      INFO(latent_path_name(path));
      const Interpolation r = interpolate(*engine, data.images, pairs, k_steps, path);
      REQUIRE(r.z.size() == pairs.size() * size_t(k_steps) * size_t(dim));
      REQUIRE(r.decoded.size() == pairs.size() * size_t(k_steps) * kImagePixels);
      for (size_t p = 0; p < pairs.size(); ++p) {
        INFO("pair " << pairs[p].first << " -> " << pairs[p].second);
        const float* a = &mu_own[2 * p * size_t(dim)];
        const float* b = &mu_own[(2 * p + 1) * size_t(dim)];
        const float* z0 = &r.z[p * size_t(k_steps) * size_t(dim)];
        const float* z_last = z0 + size_t(k_steps - 1) * size_t(dim);
        const float* d0 = &r.decoded[p * size_t(k_steps) * kImagePixels];
        const float* d_last = d0 + size_t(k_steps - 1) * kImagePixels;
        // The reference sums each image on its own, in double: the same bits in any batch. The
        // fast engine's oneDNN kernels depend on the batch size (of the call, or the largest
        // before it), the encoder's and the decoder's, so its results agree to its rounding: z_mean
        // within 1e-4 of its size (with a floor for entries near 0, sums that cancel), the pixels
        // within 1e-4.
        const size_t ia = size_t(pairs[p].first), ib = size_t(pairs[p].second);
        const std::vector<std::tuple<const char*, const float*, const float*, const float*>> ends =
            {{"first step vs reconstruct of the whole set", z0, &mu_all[ia * size_t(dim)],
              &rec_all[ia * kImagePixels]},
             {"last step vs reconstruct of the whole set", z_last, &mu_all[ib * size_t(dim)],
              &rec_all[ib * kImagePixels]},
             {"first step vs reconstruct of the pairs", z0, a, &rec_own[2 * p * kImagePixels]},
             {"last step vs reconstruct of the pairs", z_last, b,
              &rec_own[(2 * p + 1) * kImagePixels]}};
        for (const auto& [what, z, z_want, d_want] : ends) {
          INFO(what);
          const float* d = z == z0 ? d0 : d_last;
          if (batch_exact) {
            REQUIRE(same_bits(z, z_want, size_t(dim)));
            REQUIRE(same_bits(d, d_want, kImagePixels));
          } else {
            for (int q = 0; q < dim; ++q)
              REQUIRE(std::abs(z[q] - z_want[q]) <= 1e-4f * (std::abs(z_want[q]) + 1e-2f));
            REQUIRE_MAX_ABS(test::compare(d, d_want, kImagePixels), what, 1e-4);
          }
        }
        // Every step: z from the documented formula between the path's ends (on the fast engine
        // z_mean as this call encoded it), its image the decoder's sigmoid, called here directly
        // on the pair's path (in a batch of its own, so to the engine's rounding).
        for (int k = 0; k < k_steps; ++k) {
          const double t = double(k) / double(k_steps - 1);
          std::vector<float> want(static_cast<size_t>(dim));
          if (path == LatentPath::Linear)
            for (int j = 0; j < dim; ++j) want[size_t(j)] = float(z0[j] + t * (z_last[j] - z0[j]));
          else
            slerp_latent(want.data(), z0, z_last, dim, t);
          const float* zk = z0 + size_t(k) * size_t(dim);
          for (int j = 0; j < dim; ++j)
            REQUIRE(std::abs(zk[j] - want[size_t(j)]) <=
                    1e-6f * (std::abs(z0[j]) + std::abs(z_last[j]) + 1e-30f));
        }
        std::vector<float> logits(size_t(k_steps) * kImagePixels);
        test::poison(logits);
        all_engine->decode(logits.data(), z0, k_steps);
        for (size_t i = 0; i < logits.size(); ++i) {
          const double pix = 1.0 / (1.0 + std::exp(-double(logits[i])));
          INFO("step " << i / kImagePixels << " pixel " << i % kImagePixels);
          REQUIRE(std::abs(double(d0[i]) - pix) <= 1e-5);
        }
      }
    }
  }
}

TEST_CASE("interpolate refuses bad steps, pairs, indices and slerp below latent dim 3",
          "[interpolate]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const Dataset data = synthetic_data(rng, 6);
  const ModelDesc desc = make_vae(2);
  const auto engine = make_cpu_inference(desc, random_params(desc, seed), "cpu-ref");
  const std::vector<ImagePair> one = {{0, 1}};
  const auto run = [&](const std::vector<ImagePair>& pairs, int steps, LatentPath path) {
    return [&, pairs, steps, path] { interpolate(*engine, data.images, pairs, steps, path); };
  };
  require_input_error(run(one, 1, LatentPath::Linear), "steps");
  require_input_error(run(one, kMaxInterpSteps + 1, LatentPath::Linear), "steps");
  require_input_error(run({}, 3, LatentPath::Linear), "pairs");
  require_input_error(
      run(std::vector<ImagePair>(kMaxInterpPairs + 1, {0, 1}), 3, LatentPath::Linear), "pairs");
  require_input_error(run({{0, 6}}, 3, LatentPath::Linear), "image 6 does not exist");
  require_input_error(run({{-1, 2}}, 3, LatentPath::Linear), "image -1 does not exist");
  require_input_error(run(one, 3, LatentPath::Slerp), "slerp");
}

// ---- the pairs -----------------------------------------------------------------------------
TEST_CASE("draw_pairs: different labels, the documented Philox draws, reproducible by seed",
          "[interpolate]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  LabelSet labels;
  labels.path = "labels";
  const int n = 1 + int(rng() % 500);
  // Skewed: most images of one label, so that a wrong draw of the second image shows.
  for (int i = 0; i < n; ++i) labels.labels.push_back(uint8_t(rng() % 4 == 0 ? rng() % 10 : 7));
  if (n == 1 || std::all_of(labels.labels.begin(), labels.labels.end(),
                            [&](uint8_t l) { return l == labels.labels[0]; }))
    labels.labels.push_back(labels.labels[0] == 3 ? 4 : 3);
  const uint64_t m = labels.labels.size();
  INFO(m << " labels");
  const uint64_t pair_seed = rng();
  const std::vector<ImagePair> pairs = draw_pairs(labels, kMaxInterpPairs, pair_seed);
  REQUIRE(pairs.size() == size_t(kMaxInterpPairs));
  for (size_t p = 0; p < pairs.size(); ++p) {
    INFO("pair " << p << ": " << pairs[p].first << " -> " << pairs[p].second);
    REQUIRE(pairs[p].first >= 0);
    REQUIRE(uint64_t(pairs[p].first) < m);
    REQUIRE(pairs[p].second >= 0);
    REQUIRE(uint64_t(pairs[p].second) < m);
    REQUIRE(labels.labels[size_t(pairs[p].first)] != labels.labels[size_t(pairs[p].second)]);
    // The documented draws: 64 bits of words (2p) and (2p + 1), modulo the candidates; the
    // second the r-th image of another label, counted here by brute force.
    const auto bits = [&](uint32_t i) {
      const Philox4 w = random_words(pair_seed, Stream::Data, kPairStreamTag, i);
      return (uint64_t(w.v[0]) << 32) | w.v[1];
    };
    const uint64_t first = bits(uint32_t(2 * p)) % m;
    REQUIRE(uint64_t(pairs[p].first) == first);
    std::vector<int64_t> others;
    for (size_t i = 0; i < m; ++i)
      if (labels.labels[i] != labels.labels[first]) others.push_back(int64_t(i));
    REQUIRE(pairs[p].second == others[bits(uint32_t(2 * p + 1)) % others.size()]);
  }
  REQUIRE(draw_pairs(labels, kMaxInterpPairs, pair_seed) == pairs);
  REQUIRE(draw_pairs(labels, 3, pair_seed) ==
          std::vector<ImagePair>(pairs.begin(), pairs.begin() + 3));
  // Another seed, other pairs (100 equal pairs by chance: probability below m^-100).
  REQUIRE(draw_pairs(labels, kMaxInterpPairs, pair_seed + 1) != pairs);

  require_input_error([&] { draw_pairs(labels, 0, 0); }, "count");
  require_input_error([&] { draw_pairs(labels, kMaxInterpPairs + 1, 0); }, "count");
  LabelSet same{"same-labels", std::vector<uint8_t>(12, 4)};
  require_input_error([&] { draw_pairs(same, 2, 0); }, "same-labels");
  LabelSet none{"no-labels", {}};
  require_input_error([&] { draw_pairs(none, 2, 0); }, "no-labels");
  // One image of another label: it is in every pair.
  same.labels[9] = 1;
  for (const ImagePair& p : draw_pairs(same, 20, seed))
    REQUIRE(((p.first == 9) != (p.second == 9)));
}

// ---- the picture ---------------------------------------------------------------------------
TEST_CASE("interpolation picture: size from the layout, the steps decoded, the originals framed",
          "[interpolate]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const test::TempDir dir("cuvae_interpolate_");
  const Dataset data = synthetic_data(rng, 12);
  const ModelDesc desc = make_vae(3);
  const auto engine = make_cpu_inference(desc, random_params(desc, seed), "cpu");
  for (const auto& [n_pairs, k_steps] : {std::pair<int, int>{2, 3}, {1, 2}, {2, 45}}) {
    INFO(n_pairs << " pairs x " << k_steps << " steps");
    std::vector<ImagePair> pairs;
    for (int p = 0; p < n_pairs; ++p) pairs.push_back({int64_t(rng() % 12), int64_t(rng() % 12)});
    const Interpolation r = interpolate(*engine, data.images, pairs, k_steps, LatentPath::Slerp);
    const std::string path = dir.file("interp.png");
    write_interpolation(path, r, data, "test");
    const Image img = read_png(path);
    // The layout of interpolate.h, spelled out: rows of at most 20 steps.
    const int cols = std::min(k_steps, 20), lines = (k_steps + 19) / 20;
    REQUIRE(img.width == 2 * 16 + 2 * (56 + 12) + cols * 56 + (cols - 1) * 2);
    REQUIRE(img.height ==
            2 * 16 + 28 + 28 + n_pairs * (24 + lines * 56 + (lines - 1) * 2) + (n_pairs - 1) * 14);
    REQUIRE(interpolation_width(k_steps) == img.width);
    REQUIRE(interpolation_height(n_pairs, k_steps) == img.height);

    const int x_first = 16, x_steps = 16 + 56 + 12, x_second = x_steps + cols * 58 - 2 + 12;
    int y = 16 + 28 + 28;
    for (int p = 0; p < n_pairs; ++p) {
      const int y0 = y + 24, y_last = y0 + (lines - 1) * 58;
      std::vector<float> first(kImagePixels), second(kImagePixels);
      for (int i = 0; i < kImagePixels; ++i) {
        first[size_t(i)] =
            data.images.pixels[size_t(pairs[size_t(p)].first) * kImagePixels + i] / 255.0f;
        second[size_t(i)] =
            data.images.pixels[size_t(pairs[size_t(p)].second) * kImagePixels + i] / 255.0f;
      }
      require_tile(img, x_first, y0, first.data(), "first original");
      require_tile(img, x_second, y_last, second.data(), "second original");
      for (int k = 0; k < k_steps; ++k)
        require_tile(img, x_steps + (k % 20) * 58, y0 + (k / 20) * 58,
                     &r.decoded[(size_t(p) * size_t(k_steps) + size_t(k)) * kImagePixels],
                     "step " + std::to_string(k));
      // The frames: two pixels of orange around each original, none around a step.
      for (const auto& [x, yy] : {std::pair<int, int>{x_first, y0}, {x_second, y_last}})
        for (const int d : {1, 2}) {
          REQUIRE(img.at(x - d, yy - d) == kOriginalColour);
          REQUIRE(img.at(x + 55 + d, yy + 20) == kOriginalColour);
          REQUIRE(img.at(x + 20, yy + 55 + d) == kOriginalColour);
        }
      REQUIRE(img.at(x_steps - 1, y0) == kWhite);
      REQUIRE(img.at(x_steps + 56, y0 + 10) == kWhite);
      y = y0 + lines * 56 + (lines - 1) * 2 + 14;
    }
  }
}
