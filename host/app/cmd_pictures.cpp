// `cuvae grid`, `cuvae scatter`, `cuvae reconstruct`, `cuvae sample`: the pictures of
// pictures.h for a trained model.
//
// RUN is a run folder holding model.safetensors (as `cuvae train --out RUN` leaves it) or the
// path of a model file. Each picture goes to --out or, by default, into the run folder (the
// folder of the model file). Every flag, the model and the data are checked before the model
// runs, and every problem is one InputError line (exit 2). One line per file written.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <tuple>
#include <utility>
#include <vector>

#include "host/app/cli.h"
#include "host/app/cli_util.h"
#include "host/app/commands.h"
#include "host/app/model_cmd.h"
#include "host/app/run_folder.h"
#include "host/core/error.h"
#include "host/core/inference.h"
#include "host/eval/pictures.h"
#include "host/io/checkpoint.h"
#include "host/io/idx.h"

namespace cuvae {
namespace {

namespace fs = std::filesystem;

constexpr const char* kRunHelp =
    "\nRUN is a run folder holding model.safetensors (cuvae train --out RUN) or the path of a "
    "model file.\n";

// A picture command's options: RUN (positional) and, for the pictures of images (`with_data`),
// --data DIR and --split as every model command has them (add_model_data_options); the command
// adds its own, then add_common_options() the shared --out, --device and --help.
cxxopts::Options picture_options(const std::string& cmd, const std::string& what,
                                 bool with_data = false) {
  cxxopts::Options options("cuvae " + cmd, what);
  options.positional_help("RUN");
  if (with_data)
    add_model_data_options(options);
  else
    options.add_options()("run", "run folder or model file", cxxopts::value<std::string>(), "RUN");
  options.parse_positional({"run"});
  return options;
}

void add_common_options(cxxopts::Options& options, const std::string& default_out) {
  // clang-format off
  options.add_options()
    ("out", "PNG file to write (default: RUN/" + default_out + ")", cxxopts::value<std::string>(),
       "FILE")
    ("device", kDeviceOptionHelp, cxxopts::value<std::string>()->default_value("gpu"), "DEV")
    ("h,help", "show this help");
  // clang-format on
}

// RUN, looked up as every command that reads a run does (find_run_model).
RunModel locate_run(const cxxopts::ParseResult& r, const std::string& cmd) {
  return find_run_model(required_run(r, cmd));
}

// The --device choice, by the policy every command shares (resolve_device); its note on stdout.
std::string checked_device(const cxxopts::ParseResult& r) {
  return resolve_device(r["device"].as<std::string>(), r.count("device") > 0, std::cout).device;
}

// The output file: --out or RUN/<default_name>, checked before any work is done
// (check_output_path).
std::string checked_out(const cxxopts::ParseResult& r, const RunModel& run,
                        const std::string& default_name) {
  if (!r.count("out")) return (fs::path(run.dir) / default_name).string();
  const std::string out = r["out"].as<std::string>();
  check_output_path("--out", out, "PNG file");
  return out;
}

std::unique_ptr<Inference> open_model(const RunModel& run, const std::string& device) {
  LoadedModel m = load_model(run.model);
  return make_inference(m.desc, m.params, device);
}

void report(const std::string& path, const std::string& what, const Inference& model) {
  std::cout << "cuvae: wrote " << path << " (" << what << ", latent dim " << model.desc().latent_dim
            << ", " << model.device() << ")\n";
}

// --dims "X,Y" (or "X" alone, for a model of latent dimension 1): the dimensions as written,
// checked for form and distinctness; check_dims() checks them against the model.
std::vector<int> parse_dims(const std::string& text) {
  const auto one = [&](const std::string& s) {
    return int(parse_int_flag("--dims", s, 0, kMaxLatentDim - 1));
  };
  const size_t comma = text.find(',');
  if (comma == std::string::npos) return {one(text)};
  const std::vector<int> dims = {one(text.substr(0, comma)), one(text.substr(comma + 1))};
  if (dims[0] == dims[1]) throw InputError("--dims: " + text + ": the two dimensions must differ");
  return dims;
}

// The (x, y) dimensions of --dims for a model of `latent_dim`: the flag's value checked
// against the model, or z[0], z[1] (z[0] alone at latent dim 1) when the flag is not given.
std::pair<int, int> model_dims(const cxxopts::ParseResult& r, int latent_dim) {
  if (!r.count("dims")) return {0, latent_dim > 1 ? 1 : 0};
  const std::vector<int> dims = parse_dims(r["dims"].as<std::string>());
  const std::string dims_text =
      std::to_string(dims[0]) + (dims.size() > 1 ? "," + std::to_string(dims[1]) : "");
  if (latent_dim == 1 && (dims.size() != 1 || dims[0] != 0))
    throw InputError("--dims: the model has latent dim 1, so only '--dims 0' is possible, got " +
                     quote_arg(dims_text));
  if (latent_dim > 1 && dims.size() != 2)
    throw InputError("--dims: expected two latent dimensions 'X,Y', got " + quote_arg(dims_text));
  for (const int d : dims)
    if (d >= latent_dim)
      throw InputError("--dims: dimension " + std::to_string(d) + " does not exist (latent dim " +
                       std::to_string(latent_dim) + ": 0.." + std::to_string(latent_dim - 1) + ")");
  return {dims[0], dims.size() > 1 ? dims[1] : 0};
}

// cxxopts wants long option names of two or more characters, so `--n` is registered as the
// short option -n: these rewrite the user's `--n V` / `--n=V` to it before parsing, and the
// help and the messages back to `--n`.
struct ShortNArgs {
  std::vector<std::string> text;
  std::vector<char*> argv;
  ShortNArgs(int argc, char** argv_in) : text(argv_in, argv_in + argc) {
    for (size_t i = 1; i < text.size(); ++i) {
      if (text[i] == "--n")
        text[i] = "-n";
      else if (text[i].rfind("--n=", 0) == 0)
        text[i] = "-n" + text[i].substr(4);
    }
    for (std::string& t : text) argv.push_back(t.data());
    argv.push_back(nullptr);
  }
  int argc() const { return int(text.size()); }
};

cxxopts::ParseResult parse_with_short_n(cxxopts::Options& options, int argc, char** argv) {
  ShortNArgs args(argc, argv);
  try {
    return parse_or_throw(options, args.argc(), args.argv.data());
  } catch (const InputError& e) {
    const std::string msg = e.what();
    if (msg.rfind("-n:", 0) == 0) throw InputError("-" + msg);
    throw;
  }
}

std::string help_with_long_n(const cxxopts::Options& options) {
  std::string help = options.help();
  // "  -n N     " -> "      --n N": the same width, so the columns stay aligned.
  const size_t at = help.find("  -n N     ");
  if (at != std::string::npos) help.replace(at, 11, "      --n N");
  return help;
}

// --data's folder, checked for form before anything is loaded.
std::string data_dir(const cxxopts::ParseResult& r) {
  const std::string dir = r["data"].as<std::string>();
  if (dir.empty()) throw InputError("--data: empty folder name");
  return dir;
}

}  // namespace

int cmd_grid(int argc, char** argv) {
  cxxopts::Options options = picture_options(
      "grid",
      "Decode a regular grid of two latent dimensions (the Keras example's plot_latent_space).");
  // clang-format off
  options.add_options()
    ("n", "digits per side (1-" + std::to_string(kGridMaxN) + ")",
       cxxopts::value<std::string>()->default_value("15"), "N")
    ("extent", "the grid spans [-X, X] in both dimensions (1e-6 <= X <= 1e6); the axes' end "
       "ticks mark -X and X",
       cxxopts::value<std::string>()->default_value("1"), "X")
    ("dims", "latent dimensions along x and y, 'X,Y' (other dimensions are 0)",
       cxxopts::value<std::string>()->default_value("0,1"), "X,Y");
  // clang-format on
  add_common_options(options, "grid_<n>.png");
  const cxxopts::ParseResult r = parse_with_short_n(options, argc, argv);
  if (r.count("help")) {
    std::cout << help_with_long_n(options) << kRunHelp
              << "Cell (row, col) shows sigmoid(decoder(z)) with z[X] running from -extent "
                 "(left) to +extent (right)\nand z[Y] from +extent (top) to -extent (bottom). A "
                 "model of latent dim 1 gives one row along z[0].\n";
    return 0;
  }
  GridOptions g;
  g.n = int(parse_int_flag("--n", r["n"].as<std::string>(), 1, kGridMaxN));
  g.extent = parse_real_flag("--extent", r["extent"].as<std::string>(), kGridMinExtent,
                             kGridMaxExtent, true);
  parse_dims(r["dims"].as<std::string>());  // its form, before the model is loaded
  const std::string device = checked_device(r);
  const RunModel run = locate_run(r, "grid");
  const std::string out = checked_out(r, run, "grid_" + std::to_string(g.n) + ".png");
  LoadedModel m = load_model(run.model);
  const int dim = m.desc.latent_dim;
  std::tie(g.dim_x, g.dim_y) = model_dims(r, dim);
  check_grid_options(g, dim);
  const std::unique_ptr<Inference> model = make_inference(m.desc, m.params, device);
  write_latent_grid(out, *model, g);
  const std::string range =
      " in [-" + r["extent"].as<std::string>() + ", " + r["extent"].as<std::string>() + "]";
  const std::string what =
      dim == 1 ? (g.n == 1 ? "one digit at z[0] = 0"
                           : "a row of " + std::to_string(g.n) + " digits along z[0]" + range)
               : std::to_string(g.n) + " x " + std::to_string(g.n) + " grid over z[" +
                     std::to_string(g.dim_x) + "], z[" + std::to_string(g.dim_y) + "]" + range;
  report(out, what, *model);
  return 0;
}

int cmd_scatter(int argc, char** argv) {
  cxxopts::Options options = picture_options(
      "scatter", "Plot z_mean of the images of a split, coloured by label (plot_label_clusters).",
      true);
  // clang-format off
  options.add_options()
    ("limit", "plot the first N images only (0: all)",
       cxxopts::value<std::string>()->default_value("0"), "N")
    ("dims", "latent dimensions along x and y, 'I,J' (two different ones, each below the "
       "latent dim)", cxxopts::value<std::string>()->default_value("0,1"), "I,J");
  // clang-format on
  add_common_options(options, "scatter.png");
  const cxxopts::ParseResult r = parse_or_throw(options, argc, argv);
  if (r.count("help")) {
    std::cout << options.help() << kRunHelp
              << "The axes show z[I] and z[J] (z[0] against the label for a model of latent dim "
                 "1) and span the\n0.5th-99.5th percentiles of the points; points outside are "
                 "counted in the title, which names\nthe split. The fewer the points, the bigger "
                 "they are drawn.\n";
    return 0;
  }
  ScatterOptions opt;
  opt.limit = parse_int_flag("--limit", r["limit"].as<std::string>(), 0, INT32_MAX);
  opt.split = split_of(r["split"].as<std::string>());
  parse_dims(r["dims"].as<std::string>());  // its form, before the model is loaded
  const std::string dir = data_dir(r);
  const std::string device = checked_device(r);
  const RunModel run = locate_run(r, "scatter");
  const std::string out = checked_out(r, run, "scatter.png");
  LoadedModel m = load_model(run.model);
  std::tie(opt.dim_x, opt.dim_y) = model_dims(r, m.desc.latent_dim);
  check_scatter_options(opt, m.desc.latent_dim);
  const Dataset data = load_dataset_noted(dir, opt.split, std::cerr);
  opt.limit = limited_count("--limit", opt.limit, data.size(),
                            std::string(split_name(opt.split)) + " image", " of " + dir, std::cerr);
  const std::unique_ptr<Inference> model = make_inference(m.desc, m.params, device);
  write_scatter(out, *model, data, opt);
  report(out, "z_mean of " + with_commas(opt.limit) + " " + split_name(opt.split) + " images",
         *model);
  return 0;
}

int cmd_reconstruct(int argc, char** argv) {
  cxxopts::Options options = picture_options(
      "reconstruct",
      "Show images of a split (the upper line of each pair) above their reconstructions "
      "decoder(z_mean).",
      true);
  // clang-format off
  options.add_options()
    ("count", "how many of the first images (1-" + std::to_string(kMaxReconstructions) + ")",
       cxxopts::value<std::string>()->default_value("10"), "N");
  // clang-format on
  add_common_options(options, "reconstructions.png");
  const cxxopts::ParseResult r = parse_or_throw(options, argc, argv);
  if (r.count("help")) {
    const std::string most = std::to_string(kMaxTilesPerLine);
    std::cout << options.help() << kRunHelp << "Up to " << most
              << " images stand side by side, each above its reconstruction; more wrap onto "
                 "further\nlines of pairs, evened out (--count 30: two lines of 15).\n";
    return 0;
  }
  const int count =
      int(parse_int_flag("--count", r["count"].as<std::string>(), 1, kMaxReconstructions));
  const Split split = split_of(r["split"].as<std::string>());
  const std::string dir = data_dir(r);
  const std::string device = checked_device(r);
  const RunModel run = locate_run(r, "reconstruct");
  const std::string out = checked_out(r, run, "reconstructions.png");
  LoadedModel m = load_model(run.model);
  const Dataset data = load_dataset_noted(dir, split, std::cerr);
  if (count > data.size())
    throw InputError("--count: " + std::to_string(count) + " is more than the " +
                     with_commas(data.size()) + " images of " + data.images.path);
  const std::unique_ptr<Inference> model = make_inference(m.desc, m.params, device);
  write_reconstructions(out, *model, data.images, count, split);
  report(out, std::to_string(count) + " " + split_name(split) + (count == 1 ? " image" : " images"),
         *model);
  return 0;
}

int cmd_sample(int argc, char** argv) {
  cxxopts::Options options =
      picture_options("sample", "Decode latents drawn from the prior z ~ N(0, I).");
  // clang-format off
  options.add_options()
    ("rows", "rows of samples (1-" + std::to_string(kMaxSampleSide) + ")",
       cxxopts::value<std::string>()->default_value("8"), "N")
    ("cols", "columns of samples (1-" + std::to_string(kMaxSampleSide) + ")",
       cxxopts::value<std::string>()->default_value("8"), "N")
    ("seed", "seed of the latent draws (Philox)", cxxopts::value<std::string>()->default_value("0"),
       "N");
  // clang-format on
  add_common_options(options, "samples.png");
  const cxxopts::ParseResult r = parse_or_throw(options, argc, argv);
  if (r.count("help")) {
    std::cout << options.help() << kRunHelp
              << "Each image is sigmoid(decoder(z)); the same seed gives the same samples. A row "
                 "of more than\n"
              << kMaxTilesPerLine
              << " samples wraps onto further lines, evened out (--cols 30: two lines of 15 per "
                 "row).\n";
    return 0;
  }
  const int rows = int(parse_int_flag("--rows", r["rows"].as<std::string>(), 1, kMaxSampleSide));
  const int cols = int(parse_int_flag("--cols", r["cols"].as<std::string>(), 1, kMaxSampleSide));
  const uint64_t seed = parse_seed_flag("--seed", r["seed"].as<std::string>());
  const std::string device = checked_device(r);
  const RunModel run = locate_run(r, "sample");
  const std::string out = checked_out(r, run, "samples.png");
  const std::unique_ptr<Inference> model = open_model(run, device);
  write_samples(out, *model, rows, cols, seed);
  report(out,
         std::to_string(rows) + " x " + std::to_string(cols) + " samples, seed " +
             std::to_string(seed),
         *model);
  return 0;
}

}  // namespace cuvae
