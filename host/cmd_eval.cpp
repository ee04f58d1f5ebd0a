// placeholder: being written
#include "host/commands.h"
#include "host/error.h"
namespace cuvae {
int cmd_eval(int, char**) { throw Error("cuvae eval: not implemented yet"); }
int cmd_encode(int, char**) { throw Error("cuvae encode: not implemented yet"); }
}  // namespace cuvae
