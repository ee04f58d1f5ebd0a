// `cuvae interpolate`: decoded images along the path between the z_mean of two images of a
// dataset split (host/eval/interpolate.h), one row per pair, as a PNG; optionally the pairs and
// their latent paths as JSON. The pairs are given (--from I --to J) or drawn (--pairs N, of
// different labels, reproducible by --seed). Every flag is checked before anything is loaded,
// the model and the data before the model runs; each problem is one InputError line (exit 2)
// and nothing is written. stdout: one summary line; notes on stderr.
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "host/app/cli.h"
#include "host/app/cli_util.h"
#include "host/app/commands.h"
#include "host/app/model_cmd.h"
#include "host/app/run_folder.h"
#include "host/core/error.h"
#include "host/eval/interpolate.h"
#include "host/io/checkpoint.h"
#include "host/io/idx.h"

namespace cuvae {
namespace {

constexpr int kDefaultPairs = 8;

cxxopts::Options interpolate_options() {
  cxxopts::Options options(
      "cuvae interpolate",
      "Decode the latent path between the z_mean of two images: one row per pair, the first "
      "image, the decoded steps and the second image.");
  add_model_data_options(options);
  // clang-format off
  options.add_options()
    ("out", "PNG file to write (required)", cxxopts::value<std::string>(), "FILE")
    ("from", "index of the first image in the split (with --to)", cxxopts::value<std::string>(), "I")
    ("to", "index of the second image in the split (with --from)", cxxopts::value<std::string>(), "J")
    ("pairs", "draw N pairs of images of different labels (1-" + std::to_string(kMaxInterpPairs) +
                "; the default, with N = " + std::to_string(kDefaultPairs) + ", when --from/--to "
                "are not given)",
       cxxopts::value<std::string>(), "N")
    ("seed", "seed of the --pairs draw (Philox; default 0)", cxxopts::value<std::string>(), "S")
    ("steps", "decoded points per pair, t = 0 .. 1 (" + std::to_string(kMinInterpSteps) + "-" +
                std::to_string(kMaxInterpSteps) + ")",
       cxxopts::value<std::string>()->default_value("10"), "K")
    ("slerp", "spherical instead of linear interpolation (latent dim " +
                std::to_string(kMinSlerpDim) + " or more)")
    ("json", "also write the pairs, their labels and the latent path of each to FILE ('-': "
             "stdout, the summary line then on stderr)",
       cxxopts::value<std::string>(), "FILE")
    ("device", kDeviceOptionHelp, cxxopts::value<std::string>()->default_value("gpu"), "DEV")
    ("h,help", "show this help");
  // clang-format on
  options.parse_positional({"run"});
  options.positional_help("RUN");
  return options;
}

std::string interpolate_help_notes() {
  return "\nStep k of K decodes z(t) at t = k / (K - 1): the first step is decoder(z_mean(first)) "
         "and the\nlast decoder(z_mean(second)), what `cuvae reconstruct` shows for those "
         "images (bit for bit\nwith cpu-ref; the cpu and GPU kernels depend on the batch size, "
         "so there to float rounding).\nLinear: z(t) = (1 - t) a + t b. --slerp: z(t) = "
         "sin((1 - t) W) / sin W a + sin(t W) / sin W b,\ncos W = a.b / (|a| |b|); the straight "
         "line where a or b is 0 or they are (anti)parallel.\nThe originals are framed in "
         "orange; a row of more than " +
         std::to_string(kInterpLineSteps) + " steps wraps onto further lines.\n";
}

// The flags, every one checked before anything is loaded. The indices are checked against the
// split once it is loaded (choose_pairs).
struct InterpFlags {
  std::string run, data_dir, out, json_path, device;
  Split split = Split::Test;
  bool explicit_device = false;
  bool given_pair = false;  // --from/--to; else --pairs
  int64_t from = 0, to = 0;
  int pairs = kDefaultPairs;
  uint64_t seed = 0;
  int steps = 10;
  LatentPath path = LatentPath::Linear;
};

void parse_pair_flags(const cxxopts::ParseResult& r, InterpFlags& f) {
  const bool from = r.count("from") > 0, to = r.count("to") > 0;
  if (from != to)
    throw InputError(std::string(from ? "--from" : "--to") + ": needs " +
                     (from ? "--to" : "--from") + " as well (the two images of the pair)");
  f.given_pair = from;
  if (f.given_pair) {
    if (r.count("pairs")) throw InputError("--pairs: not with --from/--to, which give the pair");
    if (r.count("seed"))
      throw InputError("--seed: only with --pairs (--from/--to give the pair, nothing is drawn)");
    f.from = parse_int_flag("--from", r["from"].as<std::string>(), 0, INT32_MAX);
    f.to = parse_int_flag("--to", r["to"].as<std::string>(), 0, INT32_MAX);
    if (f.from == f.to)
      throw InputError("--to: " + std::to_string(f.to) +
                       " is the --from image too, expected another image");
    return;
  }
  if (r.count("pairs"))
    f.pairs = int(parse_int_flag("--pairs", r["pairs"].as<std::string>(), 1, kMaxInterpPairs));
  if (r.count("seed")) f.seed = parse_seed_flag("--seed", r["seed"].as<std::string>());
}

InterpFlags parse_interp_flags(const cxxopts::ParseResult& r) {
  InterpFlags f;
  f.run = required_run(r, "interpolate");
  f.data_dir = r["data"].as<std::string>();
  if (f.data_dir.empty()) throw InputError("--data: empty folder name");
  f.split = split_of(r["split"].as<std::string>());
  if (!r.count("out")) throw InputError("--out: required (the PNG file to write)");
  f.out = r["out"].as<std::string>();
  check_output_path("--out", f.out, "PNG file");
  if (r.count("json")) {
    f.json_path = r["json"].as<std::string>();
    check_result_path("--json", f.json_path, "JSON file");
    if (f.json_path == f.out) throw InputError("--json: " + f.json_path + " is the --out file too");
  }
  parse_pair_flags(r, f);
  f.steps = int(
      parse_int_flag("--steps", r["steps"].as<std::string>(), kMinInterpSteps, kMaxInterpSteps));
  if (r.count("slerp")) f.path = LatentPath::Slerp;
  f.device = r["device"].as<std::string>();
  check_device_flag(f.device);
  f.explicit_device = r.count("device") > 0;
  return f;
}

// The pairs: --from/--to, checked against the split, or --pairs drawn from its labels.
std::vector<ImagePair> choose_pairs(const InterpFlags& f, const Dataset& data) {
  if (!f.given_pair) {
    try {
      return draw_pairs(data.labels, f.pairs, f.seed);
    } catch (const InputError& e) {  // "pairs: ..." -> "--pairs: ..."
      throw InputError("--" + std::string(e.what()));
    }
  }
  const std::string holds = ": the " + std::string(split_name(f.split)) + " split (" +
                            data.images.path + ") holds " + counted(data.size(), "image") +
                            ", 0.." + std::to_string(data.size() - 1);
  if (f.from >= data.size())
    throw InputError("--from: " + std::to_string(f.from) + " is out of range" + holds);
  if (f.to >= data.size())
    throw InputError("--to: " + std::to_string(f.to) + " is out of range" + holds);
  return {ImagePair{f.from, f.to}};
}

nlohmann::json result_json(const InterpFlags& f, const std::string& model_path,
                           const Interpolation& r, const Dataset& data, const std::string& device) {
  nlohmann::json t = nlohmann::json::array(), pairs = nlohmann::json::array();
  for (int k = 0; k < r.steps; ++k) t.push_back(step_t(k, r.steps));
  const auto image = [&](int64_t i) {
    return nlohmann::json{{"index", i}, {"label", int(data.labels.labels[size_t(i)])}};
  };
  for (size_t p = 0; p < r.pairs.size(); ++p) {
    nlohmann::json z = nlohmann::json::array();
    for (int k = 0; k < r.steps; ++k) {
      const float* zk = &r.z[(p * size_t(r.steps) + size_t(k)) * size_t(r.dim)];
      z.push_back(std::vector<double>(zk, zk + r.dim));
    }
    pairs.push_back({{"first", image(r.pairs[p].first)},
                     {"second", image(r.pairs[p].second)},
                     {"z", std::move(z)}});
  }
  return {{"model", model_path},
          {"data", f.data_dir},
          {"split", split_name(f.split)},
          {"selection", f.given_pair ? "from-to" : "pairs"},
          {"seed", f.given_pair ? nlohmann::json(nullptr) : nlohmann::json(f.seed)},
          {"path", latent_path_name(r.path)},
          {"steps", r.steps},
          {"latent_dim", r.dim},
          {"device", device},
          {"t", std::move(t)},
          {"pairs", std::move(pairs)},
          {"version", kVersion}};
}

}  // namespace

int cmd_interpolate(int argc, char** argv) {
  cxxopts::Options options = interpolate_options();
  const cxxopts::ParseResult r = parse_or_throw(options, argc, argv);
  if (r.count("help")) {
    std::cout << options.help() << interpolate_help_notes();
    return 0;
  }
  const InterpFlags f = parse_interp_flags(r);
  const std::string model_path = find_run_model(f.run).model;
  const LoadedModel m = load_model(model_path);
  if (f.path == LatentPath::Slerp && m.desc.latent_dim < kMinSlerpDim)
    throw InputError("--slerp: needs a latent dim of " + std::to_string(kMinSlerpDim) +
                     " or more, " + model_path + " has latent dim " +
                     std::to_string(m.desc.latent_dim) + " (use the linear path)");
  const Dataset data = load_dataset_noted(f.data_dir, f.split, std::cerr);
  const std::vector<ImagePair> pairs = choose_pairs(f, data);
  const std::unique_ptr<Inference> model = make_engine(m, f.device, f.explicit_device);

  const Interpolation result = interpolate(*model, data.images, pairs, f.steps, f.path);
  write_interpolation(f.out, result, data, split_name(f.split));
  if (!f.json_path.empty()) {
    write_result_text("--json", f.json_path,
                      result_json(f, model_path, result, data, model->device()).dump(2) + "\n");
    if (!is_stdout_path(f.json_path)) std::cerr << "cuvae: wrote " << f.json_path << "\n";
  }
  const size_t n = pairs.size();
  summary_stream(f.json_path) << "cuvae: wrote " << f.out << ": " << n
                              << (n == 1 ? " pair" : " pairs") << " x " << f.steps << " steps, "
                              << latent_path_name(f.path) << ", " << split_name(f.split)
                              << " split (device " << model->device() << ")\n";
  return 0;
}

}  // namespace cuvae
