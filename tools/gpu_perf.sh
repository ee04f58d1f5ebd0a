#!/usr/bin/env bash
# Everything that needs the GPU, in one run, every result in one folder:
#   tools/gpu_perf.sh --out DIR [--data DIR] [--phases check,bench,ncu,nsys] [--full]
#                     [--no-sanitizer]
# 1. tools/gpu_check.sh --full: build for this GPU (build-gpu/, installed into build-gpu/prefix),
#    every GPU test, the MNIST GPU tests, compute-sanitizer's four tools on every GPU test,
#    two 3-epoch trainings, GPU/CPU eval, a short bench   -> DIR/gpu_check.log, DIR/gpu_check/
# 2. tools/bench/bench.py against PyTorch, writing DIR/BENCHMARKS.md (a copy of the repo's
#    file with the GPU section replaced) and every run's JSON and log -> DIR/bench/
#    Default: batch 128 and 4096, fp32, TF32 and bf16 mixed precision (with --bf16's accuracy
#    cost), PyTorch eager and torch.compile 'default', 1 warm-up + 3 timed epochs, cuvae's
#    ablations; --full: bench.py's defaults (batch 128/1024/4096, every compile mode, 2 + 5
#    epochs; much longer).
# 3. Nsight Compute on training steps 200-201 (--no-cuda-graph, so every kernel runs under its
#    layer's NVTX range), exported as CSV by kernel name and by range -> DIR/ncu-steps*.csv
# 4. Nsight Systems on steps 200-210 as they run by default (CUDA graph, node tracing), its
#    kernel summary as CSV                                             -> DIR/nsys-*.csv
# --phases runs a subset (a phase that needs build-gpu/ builds it when check is not run);
# --no-sanitizer leaves compute-sanitizer out of the check (it is the slow part). Each phase
# has a time limit and may fail without stopping the others; a summary table ends the run
# (DIR/summary.txt). Exit 0 only if every phase that ran passed.
set -uo pipefail
cd "$(dirname "$0")/.."

out=""
data=${CUVAE_MNIST_DIR:-data/mnist}
full=0
phases=check,bench,ncu,nsys
check_flags=(--full)
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --full) full=1; shift ;;
    --phases) phases=$2; shift 2 ;;
    --no-sanitizer) check_flags=(--no-sanitizer); shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_perf.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for p in ${phases//,/ }; do
  case "$p" in
    check|bench|ncu|nsys) ;;
    *) echo "gpu_perf.sh: --phases: unknown phase '$p' (check, bench, ncu, nsys)" >&2; exit 2 ;;
  esac
done
wants() { [[ ",$phases," == *",$1,"* ]]; }
if [ -z "$out" ]; then
  echo "gpu_perf.sh: --out DIR is required (see --help)" >&2
  exit 2
fi
if ! ls "$data"/train-images-idx3-ubyte* >/dev/null 2>&1; then
  echo "gpu_perf.sh: no MNIST training images in $data (--data DIR or tools/fetch_mnist.sh)" >&2
  exit 2
fi
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
data=$(cd "$data" && pwd)
export CUVAE_MNIST_DIR=$data
build=build-gpu
cuvae=$build/cuvae

rows=()
failed=0
phase() {  # name status details
  rows+=("$(printf "%-26s %-6s %s" "$1" "$2" "$3")")
  [ "$2" != FAIL ] || failed=1
  echo "gpu_perf.sh: $1: $2 $3" >&2
}

if wants check; then
  if timeout 4500 tools/gpu_check.sh --data "$data" --out "$out/gpu_check" "${check_flags[@]}" \
       >"$out/gpu_check.log" 2>&1; then
    phase "build, tests, sanitizer" PASS "gpu_check.log"
  else
    phase "build, tests, sanitizer" FAIL "gpu_check.log (exit $?)"
  fi
elif [ ! -x "$cuvae" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=native \
    >"$out/build.log" 2>&1 && cmake --build "$build" >>"$out/build.log" 2>&1 ||
    { phase "build" FAIL "build.log"; }
fi
if [ ! -x "$cuvae" ]; then
  phase "bench, profiles" SKIP "no $cuvae"
else
  if wants bench; then
  cp BENCHMARKS.md "$out/BENCHMARKS.md"
  bench=(tools/bench/bench.py --cuvae "$cuvae" --data "$data" --out "$out/BENCHMARKS.md"
         --work-dir "$out/bench")
  [ "$full" -eq 1 ] ||
    bench+=(--batches 128,4096 --precisions fp32,tf32,bf16 --modes eager,default --warmup 1
            --epochs 3)
  if timeout 2400 "${bench[@]}" >"$out/bench.log" 2>&1; then
    phase "bench (cuvae vs PyTorch)" PASS "BENCHMARKS.md, bench.log"
  else
    phase "bench (cuvae vs PyTorch)" FAIL "bench.log (exit $?)"
  fi
  fi

  train=(train --data "$data" --limit 32000 --epochs 1 --test-limit 1 --overwrite)
  ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  if ! wants ncu; then
    :
  elif [ -x "$ncu" ]; then
    if timeout 900 "$ncu" --profile-from-start off --nvtx --set full -f -o "$out/ncu-steps" \
         "$cuvae" "${train[@]}" --out "$out/run-ncu" --profile-steps 200:201 --no-cuda-graph \
         >"$out/ncu.log" 2>&1 &&
       "$ncu" --import "$out/ncu-steps.ncu-rep" --page raw --csv \
         >"$out/ncu-steps.csv" 2>>"$out/ncu.log" &&
       "$ncu" --import "$out/ncu-steps.ncu-rep" --page raw --csv --print-nvtx-rename kernel \
         >"$out/ncu-steps-by-range.csv" 2>>"$out/ncu.log"; then
      phase "ncu, steps 200-201" PASS "ncu-steps.ncu-rep, ncu-steps{,-by-range}.csv"
    else
      phase "ncu, steps 200-201" FAIL "ncu.log"
    fi
  else
    phase "ncu, steps 200-201" SKIP "ncu not found"
  fi
  nsys=$(command -v nsys || true)
  if ! wants nsys; then
    :
  elif [ -n "$nsys" ]; then
    if timeout 600 "$nsys" profile --capture-range=cudaProfilerApi --trace=cuda,nvtx \
         --cuda-graph-trace=node -f true -o "$out/nsys-steps" \
         "$cuvae" "${train[@]}" --out "$out/run-nsys" --profile-steps 200:210 \
         >"$out/nsys.log" 2>&1 &&
       "$nsys" stats --report cuda_gpu_kern_sum --format csv -o "$out/nsys" \
         "$out/nsys-steps.nsys-rep" >>"$out/nsys.log" 2>&1; then
      phase "nsys, steps 200-210" PASS "nsys-steps.nsys-rep, nsys-*.csv"
    else
      phase "nsys, steps 200-210" FAIL "nsys.log"
    fi
  else
    phase "nsys, steps 200-210" SKIP "nsys not found"
  fi
  rm -rf "$out/run-ncu" "$out/run-nsys"
fi

{
  echo
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1
  printf '%-26s %-6s %s\n' "phase" "result" "output in $out"
  printf '%s\n' "${rows[@]}"
} | tee "$out/summary.txt"
exit $failed
