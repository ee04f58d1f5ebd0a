#!/usr/bin/env bash
# The whole GPU check, in one command, on a machine with an NVIDIA GPU; needs no compiler:
#   gpu_check.sh [--prebuilt PREFIX] [--data DIR] [--out DIR] [--python PY] [--only STEPS]
#                [--full] [--no-sanitizer]
# It runs an installed cuvae (`cmake --install`, or the .tar.gz that cpack makes). The
# installed copy, PREFIX/share/cuvae/gpu_check.sh, checks its own PREFIX. In the source tree,
# --prebuilt PREFIX names an installed tree; without it the script first builds for this GPU
# (build-gpu/, CMAKE_CUDA_ARCHITECTURES=native, which needs the build dependencies) and
# installs into build-gpu/prefix.
# cuBLAS and cuDNN are taken from the system, $CUDA_HOME or the nvidia-* wheels of PY
# (cuda_libs.sh); the summary says which.
# Steps, in this order, each with its time limit in seconds (an H100-class GPU takes well under
# them; all of them under 8 minutes), and one summary table at the end:
#   gpu-tests   every GPU test (libexec/cuvae/cuvae_gpu_tests)                          120
#   data-tests  the GPU tests on MNIST (libexec/cuvae/cuvae_gpu_data_tests)               40
#   memcheck    compute-sanitizer memcheck on the kernel tests ([kernels])                70
#               --full: memcheck, racecheck, initcheck and synccheck on every GPU test,
#               900 each (not counted in the 8 minutes)
#   train       cuvae train, 3 epochs of the whole training split, twice with seed 0:
#               the time per epoch, and the two model files must be the same bytes        80
#   eval        cuvae eval of that model on the GPU and on the CPU (first 500 test images,
#               K = 50 importance samples): the figures must agree to 1e-4                40
#   bench       tools/bench/bench.py against PyTorch: batch 128, fp32, PyTorch eager and
#               torch.compile 'default', 1 warm-up + 2 timed epochs                      130
# --only STEPS runs a comma-separated subset; --no-sanitizer leaves memcheck out.
# MNIST: --data DIR, else $CUVAE_MNIST_DIR, else data/mnist (source tree). Logs and the
# summary (summary.txt) go to --out DIR (default: a new temporary folder, printed).
# Exit: 0 when every step that ran passed; 1 when one failed; 2 for bad arguments or missing
# data; 77, with one line, on a machine without a usable GPU.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
prefix=""
data=${CUVAE_MNIST_DIR:-}
out=""
py=${CUVAE_PYTHON:-python3}
only=gpu-tests,data-tests,memcheck,train,eval,bench
full=0
sanitizer=1
usage() { sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "gpu_check.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --prebuilt) [ $# -ge 2 ] || die "--prebuilt needs a folder"; prefix=$2; shift 2 ;;
    --data) [ $# -ge 2 ] || die "--data needs a folder"; data=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || die "--out needs a folder"; out=$2; shift 2 ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; py=$2; shift 2 ;;
    --only) [ $# -ge 2 ] || die "--only needs a list of steps"; only=$2; shift 2 ;;
    --full) full=1; shift ;;
    --no-sanitizer) sanitizer=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
for s in ${only//,/ }; do
  case $s in
    gpu-tests|data-tests|memcheck|train|eval|bench) ;;
    *) die "--only: unknown step '$s' (gpu-tests, data-tests, memcheck, train, eval, bench)" ;;
  esac
done
wants() { [[ ",$only," == *",$1,"* ]] && { [ "$1" != memcheck ] || [ "$sanitizer" -eq 1 ]; }; }

# ---- the installed tree -----------------------------------------------------------------
source_tree=""
if [ -f "$here/../CMakeLists.txt" ] && [ -d "$here/../cuda" ]; then
  source_tree=$(cd "$here/.." && pwd)
fi
if [ -z "$prefix" ] && [ -z "$source_tree" ]; then
  prefix=$(cd "$here/../.." && pwd)  # PREFIX/share/cuvae/gpu_check.sh
fi
if [ -z "$prefix" ]; then
  # Source tree without --prebuilt: build for this GPU and install, then check that.
  build=$source_tree/build-gpu
  if ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check.sh: no usable GPU here (nvidia-smi finds none): nothing to check"
    exit 77
  fi
  echo "gpu_check.sh: building for this GPU in $build (log: $build.build.log)" >&2
  if ! { cmake -S "$source_tree" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
           -DCMAKE_CUDA_ARCHITECTURES=native && cmake --build "$build" &&
         cmake --install "$build" --prefix "$build/prefix"; } >"$build.build.log" 2>&1; then
    echo "gpu_check.sh: the build failed; see $build.build.log" >&2
    exit 1
  fi
  prefix=$build/prefix
fi
prefix=$(cd "$prefix" 2>/dev/null && pwd) || die "--prebuilt: no folder '$prefix'"
cuvae=$prefix/bin/cuvae
tests=$prefix/libexec/cuvae
share=$prefix/share/cuvae
[ -x "$cuvae" ] || die "no cuvae executable at $cuvae (an installed tree: cmake --install)"

# ---- CUDA libraries and the GPU ---------------------------------------------------------
# shellcheck source=cuda_libs.sh
. "$here/cuda_libs.sh"
if ! cuvae_cuda_libs "$cuvae" "$py"; then
  if ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check.sh: no usable GPU here (no NVIDIA driver answers, and the CUDA libraries" \
         "are missing too): nothing to check"
    exit 77
  fi
  echo "gpu_check.sh: cuBLAS/cuDNN $CUVAE_CUDA_LIBS" >&2
  exit 1
fi
version=$("$cuvae" --version 2>&1) || { echo "gpu_check.sh: $cuvae --version failed: $version" >&2; exit 1; }
gpu_line=$(echo "$version" | grep '^GPU: ')
case $gpu_line in
  "GPU: none usable"*)
    echo "gpu_check.sh: no usable GPU here ${gpu_line#GPU: none usable }: nothing to check"
    exit 77 ;;
  "GPU: "*) ;;
  *) echo "gpu_check.sh: $cuvae --version names no GPU line" >&2; exit 1 ;;
esac

# ---- data and output ----------------------------------------------------------------------
needs_data=0
for s in data-tests train eval bench; do wants "$s" && needs_data=1; done
if [ "$needs_data" -eq 1 ]; then
  [ -n "$data" ] || { [ -n "$source_tree" ] && data=$source_tree/data/mnist; }
  ls "${data:-/nonexistent}"/train-images-idx3-ubyte* >/dev/null 2>&1 ||
    die "no MNIST training images in '${data:-?}' (--data DIR or CUVAE_MNIST_DIR; tools/fetch_mnist.sh fetches them)"
  data=$(cd "$data" && pwd)
  export CUVAE_MNIST_DIR=$data
fi
[ -n "$out" ] || out=$(mktemp -d "${TMPDIR:-/tmp}/cuvae-gpu-check.XXXXXX")
mkdir -p "$out" || die "cannot create --out folder '$out'"
out=$(cd "$out" && pwd)
echo "gpu_check.sh: logs in $out" >&2

rows=()
failed=0
row() {  # step result seconds details
  rows+=("$(printf '%-11s %-6s %6s  %s' "$1" "$2" "$3" "$4")")
  [ "$2" != FAIL ] || failed=1
  printf 'gpu_check.sh: %-11s %-6s %6ss  %s\n' "$1" "$2" "$3" "$4" >&2
}
# timed LIMIT LOG CMD...: runs CMD with a time limit, output to LOG; sets rc and secs.
timed() {
  local limit=$1 log=$2 start
  shift 2
  start=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  rc=$?
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
}
# Why a timed command failed, in a few words.
why() {  # limit log
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "timed out after $1 s; see $2"
  else
    echo "exit $rc: $(grep -v '^\s*$' "$2" | tail -1 | cut -c1-120); see $2"
  fi
}
# A Catch2 run passed when it exited 0 and said so (a skip, exit 77, is not a pass here).
catch_summary() { grep -E '^(All tests passed|test cases:)' "$1" | tail -1; }

gpu_name=${gpu_line#GPU: }
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)
info=("GPU: $gpu_name; driver ${driver:-?}; $(date -u '+%Y-%m-%d %H:%M UTC')"
      "$(echo "$version" | sed -n 1p): $(echo "$version" | sed -n 's/^build: //p')"
      "CUDA libraries: $CUVAE_CUDA_LIBS")

# ---- the steps ----------------------------------------------------------------------------
# catch_step STEP LIMIT EXE: a Catch2 test executable as one step.
catch_step() {
  local log=$out/$1.log
  timed "$2" "$log" "$3"
  if [ "$rc" -eq 0 ] && grep -q '^All tests passed' "$log"; then
    row "$1" PASS "$secs" "$(catch_summary "$log")"
  else
    row "$1" FAIL "$secs" "$(catch_summary "$log"); $(why "$2" "$log")"
  fi
}
wants gpu-tests && catch_step gpu-tests 120 "$tests/cuvae_gpu_tests"
wants data-tests && catch_step data-tests 40 "$tests/cuvae_gpu_data_tests"

if wants memcheck; then
  # gpu_sanitize.sh (installed beside this script) runs the tool and prints one line for it:
  # "<tool> PASS|FAIL <details>".
  if [ "$full" -eq 1 ]; then
    checks=(memcheck racecheck initcheck synccheck) filter=() limit=900 scope="every GPU test"
  else
    checks=(memcheck) filter=(--filter "[kernels]") limit=55 scope="[kernels]"
  fi
  for tool in "${checks[@]}"; do
    timed $((limit + 15)) "$out/sanitize-$tool.out" "$here/gpu_sanitize.sh" \
      --bin "$tests/cuvae_gpu_tests" --logs "$out" --tools "$tool" --limit "$limit" "${filter[@]}"
    line=$(grep -E "^$tool " "$out/sanitize-$tool.out" | tail -1)
    if [ -z "$line" ]; then
      row "$tool" FAIL "$secs" "$(why "$limit" "$out/sanitize-$tool.out")"
    else
      read -r _ result details <<<"$line"
      row "$tool" "$result" "$secs" "$scope: $details"
    fi
  done
fi

run_dir=""
if wants train || wants eval; then
  # Two runs of one seed: the model files must be the same bytes (deterministic algorithms,
  # fixed reduction orders, the noise keyed by step and image).
  ok=1
  details=""
  train_secs=0
  for r in 1 2; do
    rm -rf "$out/train-$r"
    timed 40 "$out/train-$r.log" "$cuvae" train --device gpu --data "$data" --epochs 3 --seed 0 \
      --out "$out/train-$r"
    train_secs=$((train_secs + secs))
    if [ "$rc" -ne 0 ]; then
      ok=0
      details="run $r: $(why 40 "$out/train-$r.log")"
      break
    fi
    epochs=$(awk -F, 'NR > 1 { printf "%s%.2f", (n++ ? "/" : ""), $9 }' "$out/train-$r/metrics.csv")
    loss=$(awk -F, 'END { printf "%.2f", $2 }' "$out/train-$r/metrics.csv")
    details+="run $r: $epochs s per epoch, final loss $loss; "
  done
  if [ "$ok" -eq 1 ]; then
    run_dir=$out/train-1
    if cmp -s "$out/train-1/model.safetensors" "$out/train-2/model.safetensors"; then
      details+="model files identical"
    else
      ok=0
      details+="the two model files DIFFER"
    fi
  fi
  if wants train; then
    if [ "$ok" -eq 1 ]; then result=PASS; else result=FAIL; fi
    row train "$result" "$train_secs" "$details"
  fi
fi

if wants eval; then
  if [ -z "$run_dir" ]; then
    row eval FAIL 0 "no trained model (the train step failed)"
  else
    eval_args=(eval --data "$data" --limit 500 --iw-samples 50 --seed 0)
    timed 15 "$out/eval-gpu.log" "$cuvae" "${eval_args[@]}" --device gpu \
      --json "$out/eval-gpu.json" "$run_dir"
    gpu_rc=$rc gpu_secs=$secs
    timed 25 "$out/eval-cpu.log" "$cuvae" "${eval_args[@]}" --device cpu \
      --json "$out/eval-cpu.json" "$run_dir"
    secs=$((gpu_secs + secs))
    if [ "$gpu_rc" -ne 0 ]; then
      rc=$gpu_rc
      row eval FAIL "$secs" "GPU: $(why 15 "$out/eval-gpu.log")"
    elif [ "$rc" -ne 0 ]; then
      row eval FAIL "$secs" "CPU: $(why 25 "$out/eval-cpu.log")"
    else
      # The same images and the same noise (Philox keyed by image and sample, not by device),
      # fp32 forward passes on both: the figures differ by rounding only, about 1e-6 relative.
      verdict=$("$py" - "$out/eval-gpu.json" "$out/eval-cpu.json" <<'EOF'
import json, sys
g, c = (json.load(open(p)) for p in sys.argv[1:3])
parts, ok = [], True
for key in ("neg_elbo", "iwae"):
    diff = abs(g[key] - c[key])
    ok &= diff <= 1e-4 * abs(c[key])
    parts.append("%s GPU %.4f CPU %.4f (diff %.1e)" % (key, g[key], c[key], diff))
print(("PASS " if ok else "FAIL ") + "; ".join(parts))
EOF
)
      [ -n "$verdict" ] || verdict="FAIL could not read $out/eval-*.json with $py"
      row eval "${verdict%% *}" "$secs" "${verdict#* }"
    fi
  fi
fi

if wants bench; then
  if ! "$py" -c 'import torch' >/dev/null 2>&1; then
    row bench FAIL 0 "$py has no PyTorch (--python PY)"
  else
    timed 130 "$out/bench.log" "$py" "$share/tools/bench/bench.py" --cuvae "$cuvae" --device gpu \
      --data "$data" --batches 128 --precisions fp32 --modes eager,default --warmup 1 --epochs 2 \
      --ablations none --python "$py" --work-dir "$out/bench" --no-write
    if [ "$rc" -eq 0 ]; then
      row bench PASS "$secs" "the table below; runs in $out/bench"
    else
      row bench FAIL "$secs" "$(why 130 "$out/bench.log")"
    fi
  fi
fi

{
  echo
  printf '%s\n' "${info[@]}"
  echo
  printf '%-11s %-6s %6s  %s\n' step result secs details
  printf '%s\n' "${rows[@]}"
  if wants bench && [ -f "$out/bench.log" ]; then
    echo
    grep -E '^\|' "$out/bench.log"
  fi
} | tee "$out/summary.txt"
exit $failed
