#!/usr/bin/env bash
# Installs what cuvae builds with, from Debian packages; safe to run again (only missing
# packages are installed, and the package index is refreshed only when something is missing).
#   tools/setup.sh           build dependencies
#   tools/setup.sh --tests   also PyTorch (CPU) and numpy for the parity tests
# The CUDA toolkit (nvcc, cuBLAS, cuDNN 9) is looked for under /usr/local/cuda or on PATH;
# without it cuvae builds without its GPU engine (the CPU engines only).
set -euo pipefail

packages=(cmake ninja-build g++ pkg-config catch2 libcxxopts-dev nlohmann-json3-dev zlib1g-dev
          libpng-dev libdnnl-dev)
case "${1:-}" in
  "") ;;
  --tests) packages+=(python3 python3-torch python3-numpy) ;;
  -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "setup.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
else
  echo "setup: all ${#packages[@]} Debian packages present"
fi

if ! command -v nvcc >/dev/null 2>&1 && [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "setup: no CUDA toolkit (nvcc) found: cuvae builds without its GPU engine, the CPU" \
       "engines only; for the GPU install CUDA 12.x/13.x with cuBLAS and cuDNN 9, under" \
       "/usr/local/cuda or on PATH"
fi
