// SIGINT and SIGTERM during `cuvae train`: the first asks training to stop after the current
// step (the trainer polls signal() between steps, then a checkpoint is written); the handler
// resets itself (SA_RESETHAND), so a second signal has its default effect and ends the process
// at once, which the atomic writes make safe.
#pragma once

#include <signal.h>

namespace cuvae {

// Installs the handler while the object lives; the previous handlers come back after.
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  // The signal that asked training to stop; 0: none.
  int signal() const;
  static const char* name(int sig);  // "SIGINT" or "SIGTERM"

 private:
  struct sigaction old_int_ {};  // the handlers before this object
  struct sigaction old_term_ {};
};

}  // namespace cuvae
