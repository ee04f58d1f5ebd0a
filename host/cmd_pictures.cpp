// placeholder: being written
#include "host/commands.h"
#include "host/error.h"
namespace cuvae {
int cmd_grid(int, char**) { throw Error("cuvae grid: not implemented yet"); }
int cmd_scatter(int, char**) { throw Error("cuvae scatter: not implemented yet"); }
int cmd_reconstruct(int, char**) { throw Error("cuvae reconstruct: not implemented yet"); }
int cmd_sample(int, char**) { throw Error("cuvae sample: not implemented yet"); }
}  // namespace cuvae
