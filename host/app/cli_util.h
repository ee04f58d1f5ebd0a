// Helpers shared by the subcommands: option parsing with one-line errors, the GPU flags, the RUN
// argument, the check of an output file and the live progress line; with them come the number
// formatting (host/core/text.h) and the device policy (device_policy.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cxxopts.hpp>
#include <memory>
#include <ostream>
#include <string>

#include "host/app/device_policy.h"
#include "host/core/text.h"
#include "host/core/train_types.h"
#include "host/io/atomic_file.h"
#include "host/io/idx.h"

namespace cuvae {

constexpr const char* kVersion = CUVAE_VERSION;  // project(VERSION) in CMakeLists.txt

// Parses argv with cxxopts; unknown options, missing values and stray arguments become
// InputErrors that lead with the flag. With `more_positionals`, the arguments after those the
// positional options take are no error: they stay in the result's unmatched(), in order.
cxxopts::ParseResult parse_or_throw(cxxopts::Options& options, int argc, char** argv,
                                    bool more_positionals = false);

// Shared by train and bench: --tf32, --bf16, --algo (deterministic|fastest), --no-cuda-graph
// and (bench only) --no-fusion become the GPU options. --bf16 with --tf32 or --no-fusion is an
// InputError.
GpuOptions parse_gpu_flags(const cxxopts::ParseResult& r);
const char* algo_name(const GpuOptions& opts);       // "deterministic" or "fastest"
const char* layout_key(const GpuOptions& opts);      // "nchw", "nhwc" or "auto" (as asked)
const char* precision_name(const GpuOptions& opts);  // "strict fp32", "TF32", "bf16 mixed ..."
const char* precision_key(const GpuOptions& opts);   // "fp32", "tf32" or "bf16"
// On a CPU device (train, bench), one note line on `log` for each GPU flag given, which the CPU
// engines ignore: --tf32, --bf16, --layout nhwc|auto, --algo fastest, --no-cuda-graph,
// --no-fusion, --profile-steps. Nothing on the GPU.
void print_cpu_notes(const std::string& device, const GpuOptions& opts, std::ostream& log);

// The positional RUN of eval, encode and the picture commands (find_run_model() in
// run_folder.h looks it up); missing, an InputError with the usage of `cuvae <cmd>`.
std::string required_run(const cxxopts::ParseResult& r, const std::string& cmd);

// An output file named by `flag` (--out, --png, --dump-batch, ...), checked before any work is
// done: not empty, not "-" (standard output takes only the text results below; a file named
// "-" is ./-), not a folder (the message says a `kind` name was expected, e.g. "PNG file"), in a
// folder that exists and can be written. InputErrors lead with the flag.
void check_output_path(const std::string& flag, const std::string& path,
                       const std::string& kind = "file");

// The text results of every command (--json, --csv): "-" means standard output. Where a command
// writes its result there, its summary line goes to stderr (summary_stream), so that stdout
// holds the result alone, ready for a pipe.
inline bool is_stdout_path(const std::string& path) {
  return path == "-";
}
// check_output_path, "-" allowed.
void check_result_path(const std::string& flag, const std::string& path,
                       const std::string& kind = "file");
// std::cerr when the result goes to standard output, else std::cout.
std::ostream& summary_stream(const std::string& result_path);
// The result `text` to standard output ("-") or atomically to the file; `flag` names the
// failure of a write to stdout (a closed pipe, a full disk).
void write_result_text(const std::string& flag, const std::string& path, const std::string& text);
// A text result written piece by piece (encode's CSV): standard output ("-"), else a temporary
// file renamed into place by commit() (AtomicTextFile) and dropped without it.
class ResultFile {
 public:
  ResultFile(std::string flag, const std::string& path);
  ~ResultFile();
  ResultFile(const ResultFile&) = delete;
  ResultFile& operator=(const ResultFile&) = delete;
  std::FILE* get();
  void commit();

 private:
  std::string flag_;
  std::unique_ptr<AtomicTextFile> file_;  // null: standard output
};

// load_dataset (host/io/idx.h), with a note on `log` for each .gz file left unread because
// the raw file is there too ("cuvae: note: ...": stdout for train, stderr for the others).
Dataset load_dataset_noted(const std::string& dir, Split split, std::ostream& log);

// The images a --limit-like flag keeps of `available` (limit 0: all). A limit above the count
// keeps them all, with a note on `log`: "cuvae: note: --limit 20000 is more than the 10,000
// test images of data/mnist: using all of them" (noun "test image", where " of data/mnist").
int64_t limited_count(const std::string& flag, int64_t limit, int64_t available,
                      const std::string& noun, const std::string& where, std::ostream& log);

// A folder's last component, for legends and lines ("data/mnist/" -> "mnist"); the text as
// given when it has none ("/", ".").
std::string folder_name(const std::string& dir);

// The live progress line of every command: on a terminal, one line rewritten in place with
// '\r' at most every 0.2 s; elsewhere (a pipe, a file) nothing at all. train draws it on stdout;
// eval and encode on stderr, as their stdout holds the results. Cleared when it goes away.
class ProgressLine {
 public:
  enum class Stream { Stdout, Stderr };
  explicit ProgressLine(Stream stream = Stream::Stdout);
  ~ProgressLine() { clear(); }
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  bool enabled() const { return enabled_; }
  // Whether an update now would be shown (at most one every 0.2 s).
  bool due() const;
  void show(const std::string& text);
  // Erases the line so that ordinary output starts at column 0.
  void clear();

 private:
  std::ostream& os_;
  bool enabled_;
  size_t shown_ = 0;  // width of what is on screen; 0: nothing
  std::chrono::steady_clock::time_point last_;
};

}  // namespace cuvae
