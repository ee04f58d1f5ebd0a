// The process-wide stop request (interrupt.h).
#include "host/core/interrupt.h"

#include <pthread.h>
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

// Whether the handler took SIGINT too (not when the process started with it ignored).
volatile std::sig_atomic_t g_with_sigint = 0;

// The first of either signal: from now on both take their default action, so a second one,
// of either kind, ends the process at once (and the first one's name stays the reported one).
extern "C" void on_interrupt(int sig) {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(SIGTERM, &dfl, nullptr);
  if (g_with_sigint) sigaction(SIGINT, &dfl, nullptr);
  g_signal = sig;
  const char* note = g_note.load();
  const ssize_t ignored = ::write(STDERR_FILENO, note, std::strlen(note));
  (void)ignored;
}

// The signals the handler takes: SIGTERM, and SIGINT unless the process was started with it
// ignored.
sigset_t handled_signals(bool with_sigint) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  if (with_sigint) sigaddset(&set, SIGINT);
  return set;
}

// The only thread that takes SIGINT and SIGTERM: it runs nothing else, so the handler always
// runs on an ordinary stack. On the threads that compute, a handler could run on memory that is
// not a stack: oneDNN's x86 JIT SGEMM points the stack pointer into a heap buffer while it
// runs, and the kernel would write the signal frame there (heap corruption, found as glibc
// aborting in free() after a Ctrl-C).
extern "C" void* take_signals(void* arg) {
  const sigset_t set = *static_cast<const sigset_t*>(arg);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  for (;;) pause();  // the handler runs here; a second signal ends the process
  return nullptr;
}

}  // namespace

Interrupted::Interrupted(int sig, std::string what) : sig_(sig), what_(std::move(what)) {}

void install_interrupt_handlers() {
  struct sigaction old {};
  sigaction(SIGINT, nullptr, &old);
  const bool with_sigint = old.sa_handler != SIG_IGN;
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  // Both blocked while it runs: the two cannot run it at once on the signal thread.
  sigaddset(&sa.sa_mask, SIGINT);
  sigaddset(&sa.sa_mask, SIGTERM);
  sa.sa_flags = 0;
  g_with_sigint = with_sigint;
  if (with_sigint) sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGXFSZ, SIG_IGN);
  // Blocked here, before any other thread exists, so that every thread started later (OpenMP's,
  // the CUDA runtime's) inherits the mask; only the signal thread unblocks them.
  static sigset_t set = handled_signals(with_sigint);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  bool started = false;
  pthread_attr_t attr;
  if (pthread_attr_init(&attr) == 0) {
    pthread_t thread;
    started = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
              pthread_create(&thread, &attr, take_signals, &set) == 0;
    pthread_attr_destroy(&attr);
  }
  // Without that thread the signals go to this one, as in a single-threaded program.
  if (!started) pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
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
