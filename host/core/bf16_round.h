// bf16 rounding on the host, the device's __float2bfloat16_rn bit for bit for every non-NaN
// float: round to nearest, ties to even, on the top 16 bits of the IEEE single; magnitudes
// that round past the largest finite bf16 become +-Inf, -0 stays -0, denormals round like any
// other value. A NaN stays a NaN (quietened; its payload is not kept). The result is returned
// as the float it stands for, so the CPU reference's model of the mixed-precision step
// (cpu_model.h) can hold bf16 values in float tensors.
#pragma once

#include <cstdint>
#include <cstring>

namespace cuvae {

inline float round_bf16(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    u = (u | 0x00400000u) & 0xffff0000u;  // NaN: quiet, truncated, still a NaN
  else
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;  // carries into the exponent as needed
  float r;
  std::memcpy(&r, &u, sizeof r);
  return r;
}

}  // namespace cuvae
