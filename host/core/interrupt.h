// SIGINT and SIGTERM for every command: the first signal sets a flag that long-running work
// polls, a second (of either kind) ends the process at once (the handler gives both back their
// default action), which the atomic file writes make safe (host/io/atomic_file.h).
//
// Training polls interrupt_signal() between steps and writes a checkpoint before it stops;
// everything else (data loading, evaluation, encoding, pictures) calls check_interrupt() between
// chunks of work, which throws Interrupted: unwinding removes the temporary file of any write in
// progress, and main() turns the exception into exit 128 + the signal (130, 143).
#pragma once

#include <string>

#include "host/core/error.h"

namespace cuvae {

// The work in progress was stopped by a signal. Not an Error: nothing failed. what() is the
// line main() prints after "cuvae: ", starting with the signal's name.
class Interrupted : public std::exception {
 public:
  Interrupted(int sig, std::string what);
  int signal() const { return sig_; }
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  int sig_;
  std::string what_;
};

// Installs the handlers of SIGINT and SIGTERM for the life of the process (a process started
// with SIGINT ignored, as background jobs of scripts are, keeps ignoring it), and ignores
// SIGXFSZ so that a write past the file-size limit fails with EFBIG, which the writers report,
// instead of killing the process. The handlers run on a thread of their own, the only one that
// does not block the two signals: call this first in main(), before any other thread starts, so
// that every later thread inherits the blocking mask (the computing threads must never run a
// handler: oneDNN's JIT SGEMM moves the stack pointer into heap memory).
void install_interrupt_handlers();

// The signal that asked the program to stop; 0: none yet.
int interrupt_signal();
// Throws Interrupted once a signal has arrived ("SIGINT: stopped before the end; ...").
void check_interrupt();
// "SIGINT", "SIGTERM" or "signal N".
std::string signal_name(int sig);

// What the handler prints on stderr when the first signal arrives: a string that lives for the
// rest of the process (a literal). The default says the program stops; training sets one that
// says a checkpoint is written after the current step.
void set_interrupt_note(const char* note);
constexpr const char* kDefaultInterruptNote = "\ncuvae: stopping (signal again to quit at once)\n";

}  // namespace cuvae
