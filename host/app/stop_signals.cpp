// The stop request of `cuvae train` (stop_signals.h).
#include "host/app/stop_signals.h"

#include <unistd.h>

#include <csignal>

namespace cuvae {
namespace {

// The signal that asked training to stop (0: none). Set by the handler, read between steps.
volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) {
  g_stop_signal = sig;
  static const char msg[] =
      "\ncuvae: stopping after the current step to write a checkpoint (signal again to quit at "
      "once)\n";
  const ssize_t ignored = ::write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)ignored;
}

}  // namespace

StopSignals::StopSignals() {
  g_stop_signal = 0;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;
  // A process started with SIGINT ignored (nohup, a background job of a script) keeps
  // ignoring it, as shells and other tools do.
  sigaction(SIGINT, nullptr, &old_int_);
  if (old_int_.sa_handler != SIG_IGN) sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, &old_term_);
}

StopSignals::~StopSignals() {
  sigaction(SIGINT, &old_int_, nullptr);
  sigaction(SIGTERM, &old_term_, nullptr);
}

int StopSignals::signal() const {
  return g_stop_signal;
}

const char* StopSignals::name(int sig) {
  return sig == SIGINT ? "SIGINT" : "SIGTERM";
}

}  // namespace cuvae
