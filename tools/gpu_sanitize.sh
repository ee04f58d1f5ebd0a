#!/usr/bin/env bash
# The GPU tests under compute-sanitizer, on a machine with an NVIDIA GPU:
#   tools/gpu_sanitize.sh [--build DIR] [--tools memcheck,racecheck,initcheck,synccheck]
#                         [--filter 'CATCH TEST SPEC']
# Builds DIR (default build-gpu, CMAKE_CUDA_ARCHITECTURES=native) if it has no GPU test
# binary, then runs tests/cuvae_gpu_tests (every GPU test, or those of --filter) under each
# tool with --error-exitcode, one log per tool in DIR/sanitizer-<tool>.log, and prints one
# line per tool. memcheck also reports leaked device allocations. Exit 0 only if every tool
# found nothing and the tests themselves passed (a test that skips, exit 77, counts as a
# failure here: there is no GPU to check).
set -uo pipefail
cd "$(dirname "$0")/.."
build=build-gpu
tools=memcheck,racecheck,initcheck,synccheck
filter=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --tools) tools=$2; shift 2 ;;
    --filter) filter=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_sanitize.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ ! -x "$cs" ]; then
  echo "gpu_sanitize.sh: compute-sanitizer not found (CUDA toolkit)" >&2
  exit 2
fi
bin=$build/tests/cuvae_gpu_tests
if [ ! -x "$bin" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=native \
    >/dev/null && cmake --build "$build" --target cuvae_gpu_tests || exit 1
fi
failed=0
IFS=, read -r -a list <<<"$tools"
for tool in "${list[@]}"; do
  extra=()
  case $tool in
    memcheck) extra=(--leak-check full) ;;
    racecheck) extra=(--racecheck-report analysis) ;;
    initcheck) ;;
    synccheck) ;;
    *) echo "gpu_sanitize.sh: unknown tool '$tool'" >&2; exit 2 ;;
  esac
  log=$build/sanitizer-$tool.log
  args=()
  [ -n "$filter" ] && args=("$filter")
  start=$(date +%s)
  "$cs" --tool "$tool" "${extra[@]}" --error-exitcode 99 "$bin" "${args[@]}" >"$log" 2>&1
  rc=$?
  summary=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | tail -1)
  tests=$(grep -E '^(All tests passed|test cases:)' "$log" | tail -1)
  if [ "$rc" -eq 0 ]; then
    printf '%-10s PASS  %s; %s (%ss)\n' "$tool" "${summary:-no summary}" "$tests" "$(($(date +%s) - start))"
  else
    printf '%-10s FAIL  exit %s: %s; %s (see %s)\n' "$tool" "$rc" "${summary:-no summary}" "$tests" "$log"
    failed=1
  fi
done
exit $failed
