#!/usr/bin/env bash
# Sets up, fetches MNIST (checksum-verified), builds and trains with the defaults of the
# Keras example (30 epochs, batch 128, latent dim 2, Adam 1e-3). Extra arguments go to
# `cuvae train`, e.g. tools/train.sh --epochs 3 --out runs/quick
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/fetch_mnist.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
exec build/cuvae train "$@"
