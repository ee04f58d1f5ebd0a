// libFuzzer target: the safetensors parser (host/io/safetensors.h) and, on what it accepts, the
// checkpoint checks of host/io/checkpoint.h (model file and training state), on arbitrary bytes.
//
// The contract checked: either a file whose every tensor holds exactly dtype size x shape
// product bytes, or a cuvae::InputError with a one-line message "<name>: <reason>". Anything
// else (another exception, a crash, a leak, undefined behaviour) is a finding.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "host/core/error.h"
#include "host/io/checkpoint.h"
#include "host/io/safetensors.h"

namespace {

// Aborts (a libFuzzer finding) when an invariant does not hold.
void require(bool ok) {
  if (!ok) std::abort();
}

void check_message(const cuvae::InputError& e, const std::string& name) {
  const std::string msg = e.what();
  require(msg.rfind(name + ": ", 0) == 0);
  require(msg.size() > name.size() + 2);
  require(msg.find('\n') == std::string::npos && msg.find('\r') == std::string::npos);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string name = "input.safetensors";
  cuvae::SafetensorsFile f;
  try {
    f = cuvae::parse_safetensors(name, data, size);
  } catch (const cuvae::InputError& e) {
    check_message(e, name);
    return 0;
  }
  uint64_t total = 0;
  for (const auto& [tensor, t] : f.tensors) {
    require(t.bytes.size() == t.numel() * cuvae::dtype_size(t.dtype));
    total += t.bytes.size();
  }
  require(total <= size);
  try {
    const cuvae::LoadedModel m = cuvae::model_from_safetensors(f);
    require(m.params.size() == m.desc.num_params);
  } catch (const cuvae::InputError& e) {
    check_message(e, name);
  }
  try {
    const cuvae::LoadedTrainState s = cuvae::train_state_from_safetensors(f);
    require(s.state.params.size() == s.desc.num_params);
  } catch (const cuvae::InputError& e) {
    check_message(e, name);
  }
  return 0;
}
