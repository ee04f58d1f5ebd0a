// The `cuvae` command line: subcommands, flag parsing and validation.
//
// Every bad flag value is an InputError whose message names the flag and what is wrong;
// main() prints it as one line and exits with code 2.
#pragma once

#include <cstdint>
#include <string>

#include "host/core/train_types.h"

namespace cuvae {

// Runs the command line; returns the exit code. Throws on errors (main() reports them).
int run_cli(int argc, char** argv);

// Strict flag value parsing (exposed for tests): the whole string must be a number in
// [lo, hi], finite; otherwise InputError "--flag: ...".
int64_t parse_int_flag(const std::string& flag, const std::string& text, int64_t lo, int64_t hi);
uint64_t parse_seed_flag(const std::string& flag, const std::string& text);
double parse_real_flag(const std::string& flag, const std::string& text, double lo, double hi,
                       bool lo_inclusive);
// A run's setting (train_types.h): as above, and a nonzero real value must also be a normal
// float (RealRange::holds), so that what the flag accepts is what the run stores and resumes.
double parse_real_flag(const std::string& flag, const std::string& text, const RealRange& range);
int64_t parse_int_flag(const std::string& flag, const std::string& text, const IntRange& range);

}  // namespace cuvae
