// The signal handling of install_interrupt_handlers(), in its own executable: the handlers and
// the signal mask are the whole process's, and stay for its life.
//
// Why a thread of its own takes the signals: oneDNN's x86 JIT SGEMM points the stack pointer into
// a heap buffer while it runs, so a handler running on a thread that computes can write its
// signal frame into the heap (glibc then aborts in free()). The kernel delivers a signal sent to
// the process only to a thread that does not block it, so the property checked here (every
// thread but one blocks SIGINT and SIGTERM, the computing threads and those started later
// included) is what keeps the handler off those threads.
#include <omp.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "host/core/interrupt.h"
#include "host/cpu/gemm.h"
#include "tests/test_support.h"

namespace cuvae {
namespace {

// Installs the handlers once per process; returns whether SIGINT was ignored before (as in a
// process started in the background of a script), which the handlers keep.
bool install_once() {
  static std::once_flag once;
  static bool sigint_ignored = false;
  std::call_once(once, [] {
    struct sigaction old {};
    sigaction(SIGINT, nullptr, &old);
    sigint_ignored = old.sa_handler == SIG_IGN;
    install_interrupt_handlers();
  });
  return sigint_ignored;
}

// The action SIGNAL is set to now.
void (*disposition(int signal))(int) {
  struct sigaction now {};
  sigaction(signal, nullptr, &now);
  return now.sa_handler;
}

int64_t this_tid() {
  return int64_t(::syscall(SYS_gettid));
}

// Whether thread `tid` of this process can run no handler of SIGINT and SIGTERM: it blocks
// SIGTERM, and SIGINT unless the process ignores it (an ignored signal runs nothing). From the
// SigBlk mask of its /proc status (bit N-1 for signal N); fails the test when it cannot be read.
bool takes_neither(int64_t tid, bool sigint_ignored) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("SigBlk:", 0) == 0) {
      const uint64_t mask = std::stoull(line.substr(7), nullptr, 16);
      return (sigint_ignored || ((mask >> (SIGINT - 1)) & 1)) && ((mask >> (SIGTERM - 1)) & 1);
    }
  FAIL("no SigBlk line for thread " << tid);
  return false;
}

std::vector<int64_t> all_threads() {
  std::vector<int64_t> tids;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task"))
    tids.push_back(std::stoll(e.path().filename().string()));
  return tids;
}

// c = a b with oneDNN's SGEMM, large enough to run threaded; returns the largest error of a few
// entries against a double-precision dot product.
double gemm_error(int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> a(size_t(n) * n), b(size_t(n) * n), c(size_t(n) * n, std::nanf(""));
  for (float& v : a) v = u(rng);
  for (float& v : b) v = u(rng);
  cpu::GemmShape s;
  s.m = s.n = s.k = n;
  cpu::sgemm(c.data(), a.data(), b.data(), s);
  double worst = 0;
  for (int t = 0; t < 16; ++t) {
    const int i = int(rng() % uint64_t(n)), j = int(rng() % uint64_t(n));
    double want = 0;
    for (int k = 0; k < n; ++k) want += double(a[size_t(i) * n + k]) * double(b[size_t(k) * n + j]);
    const double err = std::fabs(double(c[size_t(i) * n + j]) - want);
    worst = std::isnan(err) ? INFINITY : std::max(worst, err);
  }
  return worst;
}

TEST_CASE("signals: only the signal thread takes SIGINT and SIGTERM, the computing threads never",
          "[signals]") {
  const std::vector<int64_t> at_start = all_threads();
  const std::set<int64_t> before(at_start.begin(), at_start.end());
  const bool sigint_ignored = install_once();
  // OpenMP's team, started after the handlers (as in every command), and oneDNN's SGEMM on it.
  std::set<int64_t> computing{this_tid()};
  std::mutex m;
#pragma omp parallel
  {
    const std::lock_guard<std::mutex> lock(m);
    computing.insert(this_tid());
  }
  CHECK(gemm_error(384, test::fresh_seed()) < 1e-3);
  // A thread started later (by a library, say) inherits the mask as well.
  int64_t later = 0;
  std::thread([&] { later = this_tid(); }).join();
  INFO("OpenMP threads: " << omp_get_max_threads()
                          << ", threads seen computing: " << computing.size());
  for (const int64_t tid : computing) {
    INFO("computing thread " << tid << (tid == this_tid() ? " (main)" : ""));
    CHECK(takes_neither(tid, sigint_ignored));
  }
  // The later thread is gone; its mask came from this thread's, checked above. Exactly one
  // thread of the process does not block them: the signal thread, new since install.
  int takers = 0;
  for (const int64_t tid : all_threads())
    if (!takes_neither(tid, sigint_ignored)) {
      ++takers;
      CHECK(before.count(tid) == 0);
      CHECK(computing.count(tid) == 0);
      CHECK(tid != later);
    }
  CHECK(takers == 1);
}

TEST_CASE(
    "signals: SIGTERM sent while all threads compute sets the stop request, a second would quit",
    "[signals]") {
  const bool sigint_ignored = install_once();
  REQUIRE(interrupt_signal() == 0);
  REQUIRE(disposition(SIGTERM) != SIG_DFL);
  CHECK((disposition(SIGINT) == SIG_IGN) == sigint_ignored);
  const uint64_t seed = test::fresh_seed();
  // Sent from another thread after a random delay, while this one runs SGEMMs on the OpenMP team
  // and allocates and frees around them.
  std::mt19937_64 rng(seed);
  const auto delay = std::chrono::milliseconds(20 + int(rng() % 200));
  std::thread sender([delay] {
    std::this_thread::sleep_for(delay);
    ::kill(::getpid(), SIGTERM);
  });
  int rounds_after = 0;
  double worst = 0;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (rounds_after < 5 && std::chrono::steady_clock::now() < give_up) {
    worst = std::max(worst, gemm_error(256, rng()));
    if (interrupt_signal() != 0) ++rounds_after;
  }
  sender.join();
  CHECK(interrupt_signal() == SIGTERM);
  CHECK(rounds_after == 5);
  CHECK(worst < 1e-3);
  CHECK_THROWS_AS(check_interrupt(), Interrupted);
  // A second signal, of either kind, would end the process: both are back to their default
  // action (SIGINT stays ignored where it was).
  CHECK(disposition(SIGTERM) == SIG_DFL);
  CHECK(disposition(SIGINT) == (sigint_ignored ? SIG_IGN : SIG_DFL));
}

}  // namespace
}  // namespace cuvae
