// The process-wide stop request (interrupt.h).
#include "host/core/interrupt.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>

namespace cuvae {
namespace {

// Written by the handler, read by the polling code.
volatile std::sig_atomic_t g_signal = 0;
// Lock-free, so the handler may read it.
std::atomic<const char*> g_note{kDefaultInterruptNote};
static_assert(std::atomic<const char*>::is_always_lock_free);

extern "C" void on_interrupt(int sig) {
  g_signal = sig;
  const char* note = g_note.load();
  const ssize_t ignored = ::write(STDERR_FILENO, note, std::strlen(note));
  (void)ignored;
}

}  // namespace

Interrupted::Interrupted(int sig, std::string what) : sig_(sig), what_(std::move(what)) {}

void install_interrupt_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  // No SA_RESTART: a read blocked in the kernel returns EINTR and the reader polls.
  sa.sa_flags = SA_RESETHAND;
  struct sigaction old {};
  sigaction(SIGINT, nullptr, &old);
  if (old.sa_handler != SIG_IGN) sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGXFSZ, SIG_IGN);
}

int interrupt_signal() {
  return g_signal;
}

void check_interrupt() {
  if (const int sig = g_signal)
    throw Interrupted(sig, signal_name(sig) +
                               ": stopped before the end; no file is left half-written (those "
                               "already complete stay)");
}

std::string signal_name(int sig) {
  if (sig == SIGINT) return "SIGINT";
  if (sig == SIGTERM) return "SIGTERM";
  return "signal " + std::to_string(sig);
}

void set_interrupt_note(const char* note) {
  g_note.store(note);
}

}  // namespace cuvae
