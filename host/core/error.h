// Error types shared by the whole program.
//
// cuvae::Error is the base of everything cuvae throws. cuvae::InputError marks a problem
// with something the user handed us (a file, a flag value): the CLI prints its message as
// one line and exits with code 2; TrainingDiverged exits with 3. Any other exception is an
// internal failure (exit 1).
// Library code never calls exit(); only main() turns an exception into an exit code.
#pragma once

#include <stdexcept>
#include <string>

namespace cuvae {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad user input: the message names the file or flag and says what is wrong.
class InputError : public Error {
 public:
  using Error::Error;
};

// The device cannot hold what was asked of it (GPU memory, cuDNN's tensor-size limits). Bad
// input like any other; the CLI adds that a smaller --batch-size may fit.
class TooLargeForDevice : public InputError {
 public:
  using InputError::InputError;
};

// Training produced a NaN or an infinity: the message names the step and the tensor. The CLI
// prints it as one line and exits with code 3; no checkpoint holds the bad state.
class TrainingDiverged : public Error {
 public:
  using Error::Error;
};

}  // namespace cuvae
