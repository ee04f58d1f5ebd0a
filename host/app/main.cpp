// cuvae entry point: the only place that turns an exception into a message and an exit code.
//   InputError (a bad file or flag)  -> "cuvae: error: <message>", exit 2
//   TrainingDiverged (NaN/inf)       -> "cuvae: error: <message>", exit 3
//   (an interrupted `cuvae train` returns 128 + the signal number itself: 130, 143)
//   anything else (internal failure) -> "cuvae: internal error: <message>", exit 1
#include <cstdio>
#include <exception>
#include <string>

#include "host/app/cli.h"
#include "host/core/error.h"

namespace {

// One line, whatever the message holds.
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return cuvae::run_cli(argc, argv);
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
