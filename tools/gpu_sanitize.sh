#!/usr/bin/env bash
# The GPU tests under compute-sanitizer, on a machine with an NVIDIA GPU:
#   tools/gpu_sanitize.sh [--build DIR | --bin FILE] [--tools memcheck,racecheck,initcheck,synccheck]
#                         [--filter 'CATCH TEST SPEC'] [--logs DIR] [--limit SECONDS]
# Runs a GPU test executable (--bin FILE, e.g. an installed libexec/cuvae/cuvae_gpu_tests; by
# default DIR/tests/cuvae_gpu_tests, building DIR (default build-gpu, CMAKE_CUDA_ARCHITECTURES=
# native) when it has none) on every GPU test, or those of --filter, under each tool with
# --error-exitcode, one log per tool in --logs DIR (default the build folder) as
# sanitizer-<tool>.log, each tool's run time-boxed by --limit (default none), and prints one
# line per tool: "<tool> PASS|FAIL <summary> (<seconds>s)". memcheck also reports leaked
# device allocations. Exit 0 only if every tool found nothing and the tests themselves passed
# (a test that skips, exit 77, counts as a failure here: there is no GPU to check).
set -uo pipefail
build="build-gpu"
bin=""
logs=""
limit=0
tools=memcheck,racecheck,initcheck,synccheck
filter=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --tools) tools=$2; shift 2 ;;
    --filter) filter=$2; shift 2 ;;
    --logs) logs=$2; shift 2 ;;
    --limit) limit=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_sanitize.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
cs=$(command -v compute-sanitizer || true)
for d in "${CUDA_HOME:-}" /usr/local/cuda; do
  [ -z "$cs" ] && [ -n "$d" ] && [ -x "$d/bin/compute-sanitizer" ] && cs=$d/bin/compute-sanitizer
done
if [ -z "$cs" ]; then
  echo "gpu_sanitize.sh: compute-sanitizer not found (PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin)" >&2
  exit 2
fi
if [ -z "$bin" ]; then
  cd "$(dirname "$0")/.." || exit 2
  bin=$build/tests/cuvae_gpu_tests
  if [ ! -x "$bin" ]; then
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=native \
      >/dev/null && cmake --build "$build" --target cuvae_gpu_tests || exit 1
  fi
fi
[ -x "$bin" ] || { echo "gpu_sanitize.sh: no test executable at $bin" >&2; exit 2; }
logs=${logs:-$build}
mkdir -p "$logs" || exit 2
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
  log=$logs/sanitizer-$tool.log
  args=()
  [ -n "$filter" ] && args=("$filter")
  start=$(date +%s)
  timeout=()
  [ "$limit" -gt 0 ] && timeout=(timeout --kill-after=10 "$limit")
  "${timeout[@]}" "$cs" --tool "$tool" "${extra[@]}" --error-exitcode 99 "$bin" "${args[@]}" \
    >"$log" 2>&1
  rc=$?
  summary=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | tail -1)
  tests=$(grep -E '^(All tests passed|test cases:)' "$log" | tail -1)
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    printf '%-10s FAIL  timed out after %ss: %s (see %s)\n' "$tool" "$limit" "$tests" "$log"
    failed=1
  elif [ "$rc" -eq 0 ] && [[ $tests == "All tests passed"* ]]; then
    printf '%-10s PASS  %s; %s (%ss)\n' "$tool" "${summary:-no summary}" "$tests" "$(($(date +%s) - start))"
  else
    printf '%-10s FAIL  exit %s: %s; %s (see %s)\n' "$tool" "$rc" "${summary:-no summary}" "$tests" "$log"
    failed=1
  fi
done
exit $failed
