#!/usr/bin/env bash
# Verifies the whole GPU path on a machine with an NVIDIA GPU, in one command:
#   tools/gpu_check.sh [--data DIR] [--build DIR] [--no-sanitizer]
# 1. configures and builds for this GPU (CMAKE_CUDA_ARCHITECTURES=native) in build-gpu/,
# 2. runs every CTest test; the GPU tests must run here (skipped counts as a failure),
# 3. runs every GPU test under compute-sanitizer memcheck, racecheck, initcheck and
#    synccheck (tools/gpu_sanitize.sh),
# 4. trains one epoch on DIR's training split (default data/mnist, batch 128), and one with
#    --layout auto (TF32, batch 1024: both convolution layouts timed, the faster kept),
# and prints a summary table. Exit 0 only if every step passed.
# Needs the build dependencies (tools/setup.sh) and, for the data tests, MNIST in
# $CUVAE_MNIST_DIR or data/mnist.
set -uo pipefail
cd "$(dirname "$0")/.."

data=${CUVAE_MNIST_DIR:-data/mnist}
build=build-gpu
sanitizer=1
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --no-sanitizer) sanitizer=0; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -d "$data" ] && export CUVAE_MNIST_DIR=${CUVAE_MNIST_DIR:-$(cd "$data" && pwd)}

rows=()
failed=0
row() { rows+=("$(printf "%-34s %-6s %s" "$1" "$2" "$3")"); [ "$2" != FAIL ] || failed=1; }

gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
row "GPU" INFO "${gpu:-nvidia-smi not found}"

if cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=native \
     >"$build.configure.log" 2>&1 && cmake --build "$build" >"$build.build.log" 2>&1; then
  row "build (native arch)" PASS "$build"
else
  row "build (native arch)" FAIL "see $build.configure.log / $build.build.log"
  printf '%s\n' "${rows[@]}"
  exit 1
fi

ctest_summary() {  # label-args... -> "N passed, M failed, K skipped"
  local log=$1; shift
  ctest --test-dir "$build" --output-on-failure "$@" >"$log" 2>&1
  local rc=$? total fail skip
  total=$(grep -oE 'out of [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')
  fail=$(grep -oE '[0-9]+ tests failed' "$log" | tail -1 | grep -oE '^[0-9]+')
  skip=$(grep -cE '\*\*\*Skipped|Not Run' "$log")
  echo "${total:-0} tests, ${fail:-0} failed, ${skip:-0} skipped (rc $rc, $log)"
  return $rc
}

s=$(ctest_summary "$build/ctest-gpu.log" -L gpu)
if [ $? -eq 0 ] && ! grep -qE '\*\*\*Skipped' "$build/ctest-gpu.log"; then
  row "GPU tests (label gpu)" PASS "$s"
else
  row "GPU tests (label gpu)" FAIL "$s"
fi
s=$(ctest_summary "$build/ctest-rest.log" -LE gpu)
if [ $? -eq 0 ]; then row "all other tests" PASS "$s"; else row "all other tests" FAIL "$s"; fi

if [ "$sanitizer" -eq 1 ]; then
  # Every GPU test under memcheck (with leak checking), racecheck, initcheck and synccheck.
  while IFS= read -r line; do
    case $line in
      gpu_sanitize.sh:*) row "compute-sanitizer" SKIP "${line#gpu_sanitize.sh: }" ;;
      *) row "compute-sanitizer $(echo "$line" | awk '{print $1}')" \
             "$(echo "$line" | awk '{print $2}')" "$(echo "$line" | sed -E 's/^[a-z]+ +[A-Z]+ +//')" ;;
    esac
  done < <(tools/gpu_sanitize.sh --build "$build" 2>&1 |
           grep -E '^(memcheck|racecheck|initcheck|synccheck|gpu_sanitize\.sh:)')
fi

if ls "$data"/train-images-idx3-ubyte* >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  if "$build/cuvae" train --device gpu --data "$data" --epochs 1 --out "$tmp/run" \
       >"$build/train.log" 2>&1; then
    row "train 1 epoch, batch 128" PASS "$(grep -E '^epoch' "$build/train.log" | tail -1)"
  else
    row "train 1 epoch, batch 128" FAIL "$(tail -1 "$build/train.log")"
  fi
  # The layout chosen by measurement (both layouts built and timed), in TF32 at batch 1024.
  if "$build/cuvae" train --device gpu --data "$data" --epochs 1 --batch-size 1024 --tf32 \
       --layout auto --out "$tmp/auto" >"$build/train-auto.log" 2>&1; then
    row "train 1 epoch, --layout auto" PASS \
      "$(grep -o 'NCHW and .* ms in NHWC here; training in [A-Z]*' "$build/train-auto.log")"
  else
    row "train 1 epoch, --layout auto" FAIL "$(tail -1 "$build/train-auto.log")"
  fi
  rm -rf "$tmp"
else
  row "train 1 epoch, batch 128" SKIP "no training data in $data"
fi

echo
printf '%-34s %-6s %s\n' "check" "result" "details"
printf '%s\n' "${rows[@]}"
exit $failed
