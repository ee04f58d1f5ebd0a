// Shared subcommand helpers (cli_util.h).
#include "host/app/cli_util.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <utility>

#include "host/core/error.h"

namespace cuvae {
namespace {

// cxxopts quotes the option name in its messages ("Option \u2018epochs\u2019 ..."); we lead
// with the flag as the user typed it.
std::string flag_of(const std::string& message) {
  const std::string open = "\u2018", close = "\u2019";
  const size_t a = message.find(open);
  const size_t b = a == std::string::npos ? a : message.find(close, a + open.size());
  if (b == std::string::npos) return message;
  const std::string name = message.substr(a + open.size(), b - a - open.size());
  return name.size() == 1 ? "-" + name : "--" + name;
}

}  // namespace

// cxxopts throws its own exceptions for unknown flags and missing values; give them our
// one-line form and exit code.
cxxopts::ParseResult parse_or_throw(cxxopts::Options& options, int argc, char** argv,
                                    bool more_positionals) {
  try {
    cxxopts::ParseResult r = options.parse(argc, argv);
    if (!more_positionals && !r.unmatched().empty())
      throw InputError("unexpected argument " + quote_arg(r.unmatched().front()) + " (see --help)");
    return r;
  } catch (const cxxopts::exceptions::no_such_option& e) {
    throw InputError(flag_of(e.what()) + ": unknown option (see --help)");
  } catch (const cxxopts::exceptions::missing_argument& e) {
    throw InputError(flag_of(e.what()) + ": missing its value (see --help)");
  } catch (const cxxopts::exceptions::exception& e) {
    throw InputError(std::string(e.what()) + " (see --help)");
  }
}

GpuOptions parse_gpu_flags(const cxxopts::ParseResult& r) {
  GpuOptions opts;
  opts.tf32 = r.count("tf32") > 0;
  const std::string algo = r["algo"].as<std::string>();
  if (algo != "deterministic" && algo != "fastest")
    throw InputError("--algo: expected 'deterministic' or 'fastest', got " + quote_arg(algo));
  opts.deterministic = algo == "deterministic";
  opts.cuda_graph = r.count("no-cuda-graph") == 0;
  opts.fused = r.count("no-fusion") == 0;  // a bench flag: 0 where undeclared
  opts.bf16 = r.count("bf16") > 0;
  const std::string layout = r["layout"].as<std::string>();
  if (layout != "nchw" && layout != "nhwc" && layout != "auto")
    throw InputError("--layout: expected 'nchw', 'nhwc' or 'auto', got " + quote_arg(layout));
  opts.nhwc = layout == "nhwc";
  opts.layout_auto = layout == "auto";
  if (opts.bf16 && opts.tf32)
    throw InputError(
        "--bf16: cannot be combined with --tf32 (mixed precision runs the "
        "convolutions in bf16 and keeps the rest in strict fp32)");
  if (opts.bf16 && !opts.fused)
    throw InputError(
        "--bf16: cannot be combined with --no-fusion (mixed precision runs on the "
        "fused loss and latent kernels only)");
  return opts;
}

const char* precision_name(const GpuOptions& opts) {
  return opts.bf16 ? "bf16 mixed precision" : opts.tf32 ? "TF32" : "strict fp32";
}

const char* precision_key(const GpuOptions& opts) {
  return opts.bf16 ? "bf16" : opts.tf32 ? "tf32" : "fp32";
}

const char* layout_key(const GpuOptions& opts) {
  return opts.layout_auto ? "auto" : opts.nhwc ? "nhwc" : "nchw";
}

const char* algo_name(const GpuOptions& opts) {
  return opts.deterministic ? "deterministic" : "fastest";
}

void print_cpu_notes(const std::string& device, const GpuOptions& o, std::ostream& log) {
  if (!is_cpu_device(device)) return;
  const auto note = [&log](const std::string& flag, const char* on_cpu) {
    log << "cuvae: note: " << flag << " applies to the GPU trainer only; " << on_cpu << "\n";
  };
  if (o.tf32) note("--tf32", "the CPU trains in strict fp32");
  if (o.bf16) note("--bf16", "the CPU trains in fp32");
  if (o.nhwc || o.layout_auto)
    note(std::string("--layout ") + layout_key(o), "the CPU computes in NCHW");
  if (!o.deterministic) note("--algo fastest", "the CPU has no cuDNN algorithms to choose");
  if (!o.cuda_graph) note("--no-cuda-graph", "ignored on the CPU");
  if (!o.fused) note("--no-fusion", "ignored on the CPU");
  if (o.profile_first > 0) note("--profile-steps", "ignored on the CPU");
}

std::string required_run(const cxxopts::ParseResult& r, const std::string& cmd) {
  if (!r.count("run"))
    throw InputError("RUN: missing the run folder or model file (usage: cuvae " + cmd +
                     " RUN [options], see --help)");
  return r["run"].as<std::string>();
}

void check_output_path(const std::string& flag, const std::string& path, const std::string& kind) {
  namespace fs = std::filesystem;
  if (path.empty()) throw InputError(flag + ": empty file name");
  if (is_stdout_path(path))
    throw InputError(flag + " -: standard output takes only text results (--json, --csv); give a " +
                     kind + " name (./- for a file named '-')");
  std::error_code ec;
  if (fs::is_directory(path, ec))
    throw InputError(flag + " " + path + ": is a folder, expected a " + kind + " name");
  fs::path dir = fs::path(path).parent_path();
  if (dir.empty()) dir = ".";
  if (!fs::is_directory(dir, ec))
    throw InputError(flag + " " + path + ": the folder " + dir.string() + " does not exist");
  if (::access(dir.c_str(), W_OK) != 0)
    throw InputError(flag + " " + path + ": cannot write in " + dir.string() + ": " +
                     std::strerror(errno));
}

void check_result_path(const std::string& flag, const std::string& path, const std::string& kind) {
  if (!is_stdout_path(path)) check_output_path(flag, path, kind);
}

std::ostream& summary_stream(const std::string& result_path) {
  return is_stdout_path(result_path) ? std::cerr : std::cout;
}

void write_result_text(const std::string& flag, const std::string& path, const std::string& text) {
  ResultFile f(flag, path);
  if (std::fwrite(text.data(), 1, text.size(), f.get()) != text.size())
    throw InputError(flag + " " + path + ": cannot write: " + std::strerror(errno));
  f.commit();
}

ResultFile::ResultFile(std::string flag, const std::string& path) : flag_(std::move(flag)) {
  if (!is_stdout_path(path)) file_ = std::make_unique<AtomicTextFile>(path);
}

ResultFile::~ResultFile() = default;

std::FILE* ResultFile::get() {
  return file_ ? file_->get() : stdout;
}

void ResultFile::commit() {
  if (file_) return file_->commit();
  std::cout.flush();  // what went to std::cout before stays ahead of the result
  if (std::fflush(stdout) != 0 || std::ferror(stdout))
    throw InputError(flag_ + " -: cannot write to standard output: " + std::strerror(errno));
}

Dataset load_dataset_noted(const std::string& dir, Split split, std::ostream& log) {
  Dataset data = load_dataset(dir, split);
  for (const std::string& gz : data.unread_gz)
    log << "cuvae: note: reading " << gz.substr(0, gz.size() - 3) << "; " << gz
        << " is there too and stays unread\n";
  return data;
}

int64_t limited_count(const std::string& flag, int64_t limit, int64_t available,
                      const std::string& noun, const std::string& where, std::ostream& log) {
  if (limit <= 0) return available;
  if (limit <= available) return limit;
  log << "cuvae: note: " << flag << " " << limit << " is more than the " << counted(available, noun)
      << where << ": using " << (available == 1 ? "it" : "all of them") << "\n";
  return available;
}

std::string folder_name(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::path p = fs::path(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  const std::string name = p.filename().string();
  return name.empty() || name == "." || name == ".." ? dir : name;
}

ProgressLine::ProgressLine(Stream stream)
    : os_(stream == Stream::Stdout ? std::cout : std::cerr),
      enabled_(::isatty(::fileno(stream == Stream::Stdout ? stdout : stderr)) == 1) {}

bool ProgressLine::due() const {
  return enabled_ && (shown_ == 0 ||
                      std::chrono::steady_clock::now() - last_ >= std::chrono::milliseconds(200));
}

void ProgressLine::show(const std::string& text) {
  if (!enabled_) return;
  last_ = std::chrono::steady_clock::now();
  os_ << '\r' << text;
  if (text.size() < shown_) os_ << std::string(shown_ - text.size(), ' ');
  os_ << std::flush;
  shown_ = std::max(text.size(), size_t(1));
}

void ProgressLine::clear() {
  if (shown_ == 0) return;
  os_ << '\r' << std::string(shown_, ' ') << '\r' << std::flush;
  shown_ = 0;
}

}  // namespace cuvae
