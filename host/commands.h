// The subcommands of `cuvae`; each parses its own options and returns the exit code.
#pragma once

namespace cuvae {

int cmd_train(int argc, char** argv);        // cmd_train.cpp
int cmd_parity_dump(int argc, char** argv);  // cmd_parity.cpp

}  // namespace cuvae
