#!/usr/bin/env bash
# The host code under AddressSanitizer + UndefinedBehaviorSanitizer: builds build-asan/ with
# -DCUVAE_SANITIZE=ON and without CUDA (-DCUVAE_CUDA=OFF: the build a machine without the
# toolkit gets, so CI builds and tests it too) and runs the tests that need no GPU (labels cpu,
# cli and data; data tests skip without MNIST) with every report fatal.
#   tools/sanitize.sh [ctest arguments...]     e.g. tools/sanitize.sh -R resume
# The GPU tests under compute-sanitizer: tools/gpu_sanitize.sh (on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCUVAE_SANITIZE=ON -DCUVAE_CUDA=OFF >/dev/null
# Every target: the cpu tests include the test-name and exit-code checks of every test executable.
cmake --build build-asan
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
ctest --test-dir build-asan --output-on-failure -j "$(nproc)" -L 'cpu|cli|data' "$@"
