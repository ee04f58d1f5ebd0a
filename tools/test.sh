#!/usr/bin/env bash
# Sets up, builds and runs every test (CTest). Tests that need the real MNIST files read the
# folder in $CUVAE_MNIST_DIR, else data/mnist, and are reported skipped when neither exists;
# GPU tests are reported skipped on a machine without a usable GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh --tests
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
ctest --test-dir build --output-on-failure -j "$(nproc)"
