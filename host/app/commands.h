// The subcommands of `cuvae`; each parses its own options and returns the exit code.
#pragma once

namespace cuvae {

int cmd_train(int argc, char** argv);        // cmd_train.cpp
int cmd_parity_dump(int argc, char** argv);  // cmd_parity.cpp
int cmd_grid(int argc, char** argv);         // cmd_pictures.cpp
int cmd_scatter(int argc, char** argv);      // cmd_pictures.cpp
int cmd_reconstruct(int argc, char** argv);  // cmd_pictures.cpp
int cmd_sample(int argc, char** argv);       // cmd_pictures.cpp
int cmd_eval(int argc, char** argv);         // cmd_eval.cpp
int cmd_encode(int argc, char** argv);       // cmd_encode.cpp
int cmd_interpolate(int argc, char** argv);  // cmd_interpolate.cpp
int cmd_classify(int argc, char** argv);     // cmd_classify.cpp
int cmd_bench(int argc, char** argv);        // cmd_bench.cpp
int cmd_anomaly(int argc, char** argv);      // cmd_anomaly.cpp
int cmd_curves(int argc, char** argv);       // cmd_curves.cpp

}  // namespace cuvae
