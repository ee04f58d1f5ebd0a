// cuvae entry point: the only place that turns an exception into a message and an exit code.
//   InputError (a bad file or flag)  -> "cuvae: error: <message>", exit 2
//   TrainingDiverged (NaN/inf)       -> "cuvae: error: <message>", exit 3
//   Interrupted (SIGINT, SIGTERM)    -> "cuvae: SIGINT: stopped ...", exit 128 + the signal
//   (an interrupted `cuvae train` saves its checkpoint and returns 128 + the signal itself)
//   anything else (internal failure) -> "cuvae: internal error: <message>", exit 1
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

#include "host/app/cli.h"
#include "host/app/run_folder.h"
#include "host/core/error.h"
#include "host/core/interrupt.h"

namespace {

// One line, whatever the message holds.
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  cuvae::install_interrupt_handlers();
  try {
    const int rc = cuvae::run_cli(argc, argv);
    cuvae::note_replaced_run_models(std::cerr);
    // A signal that came as the command finished (its outputs are complete): still reported,
    // so that a script stops at the user's Ctrl-C.
    if (const int sig = cuvae::interrupt_signal(); sig != 0 && rc == 0) {
      std::fprintf(stderr, "cuvae: %s: arrived as the command finished; its output is complete\n",
                   cuvae::signal_name(sig).c_str());
      return 128 + sig;
    }
    return rc;
  } catch (const cuvae::Interrupted& e) {
    std::fprintf(stderr, "cuvae: %s\n", one_line(e.what()).c_str());
    return 128 + e.signal();
  } catch (const cuvae::TooLargeForDevice& e) {
    std::fprintf(stderr, "cuvae: error: %s (try a smaller --batch-size)\n",
                 one_line(e.what()).c_str());
    return 2;
  } catch (const cuvae::InputError& e) {
    std::fprintf(stderr, "cuvae: error: %s\n", one_line(e.what()).c_str());
    return 2;
  } catch (const cuvae::TrainingDiverged& e) {
    std::fprintf(stderr, "cuvae: error: %s\n", one_line(e.what()).c_str());
    return 3;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "cuvae: error: out of host memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cuvae: internal error: %s\n", one_line(e.what()).c_str());
    return 1;
  }
}
