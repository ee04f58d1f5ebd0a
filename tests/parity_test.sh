#!/usr/bin/env bash
# Parity of cuvae's CPU engines' loss/gradients against PyTorch float64.
#
# usage: parity_test.sh <cuvae-binary> <python> <repo-root>
#
# Runs tools/parity/parity.py --self-test, then for several (batch, latent_dim, beta)
# configurations and each CPU engine (--device cpu-ref, the reference, and cpu, the fast
# engine) writes a dump with `cuvae parity-dump` and checks it with parity.py; both engines
# see the same weights, batch and noise. Results are reported per engine, with the ReLU units
# parity.py aligned to the engine's side of 0.
# A fresh seed is drawn per run and printed; set CUVAE_PARITY_SEED to reproduce a run.
# Exit status: 0 all pass, 1 any failure, 77 PyTorch not importable by <python> (skip), 2 usage.
set -u

if [ "$#" -ne 3 ]; then
  echo "usage: $0 <cuvae-binary> <python> <repo-root>" >&2
  exit 2
fi
CUVAE=$1
PYTHON=$2
ROOT=$3
PARITY="$ROOT/tools/parity/parity.py"

if ! "$PYTHON" -c 'import torch' >/dev/null 2>&1; then
  echo "skipped: PyTorch not available to $PYTHON"
  exit 77
fi
if ! "$PYTHON" -c 'import numpy' >/dev/null 2>&1; then
  echo "skipped: numpy (needed by tools/parity) not available to $PYTHON"
  exit 77
fi
if [ ! -f "$PARITY" ]; then
  echo "FAIL: $PARITY not found" >&2
  exit 1
fi
if [ ! -x "$CUVAE" ]; then
  echo "FAIL: cuvae binary '$CUVAE' is not executable" >&2
  exit 1
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cuvae_parity.XXXXXX") || { echo "FAIL: mktemp" >&2; exit 1; }
trap 'rm -rf "$TMP"' EXIT

echo "== parity.py --self-test"
"$PYTHON" "$PARITY" --self-test
rc=$?
if [ "$rc" -ne 0 ]; then
  echo "FAIL: parity.py --self-test exited $rc" >&2
  exit 1
fi

if [ -n "${CUVAE_PARITY_SEED:-}" ]; then
  SEED=$CUVAE_PARITY_SEED
else
  SEED=$(( (RANDOM << 15 | RANDOM) ^ ($(date +%s) & 0x3fffffff) ))
fi
echo "== parity seed: $SEED (rerun with CUVAE_PARITY_SEED=$SEED)"

# batch latent_dim beta
CONFIGS=(
  "5 2 1"
  "1 1 1"
  "3 17 0.5"
  "4 2 4"
)
# Batches of real MNIST digits as well, when the folder is there: 16, and 256, where a bias
# gradient summed over B x 784 terms in one fp32 accumulator (oneDNN's own, which the fast
# engine no longer uses) drifted 5e-5 from float64.
MNIST=${CUVAE_MNIST_DIR:-$ROOT/data/mnist}
if ls "$MNIST"/t10k-images-idx3-ubyte* >/dev/null 2>&1; then
  CONFIGS+=("16 2 1 $MNIST" "256 2 1 $MNIST")
fi

DEVICES=(cpu-ref cpu)
declare -A failures aligned
for dev in "${DEVICES[@]}"; do
  failures[$dev]=0
  aligned[$dev]=0
done
failed=()
k=0
for cfg in "${CONFIGS[@]}"; do
  read -r B D BETA DATA <<<"$cfg"
  seed=$((SEED + k))
  images=${DATA:+, MNIST test images}
  for dev in "${DEVICES[@]}"; do
    dump="$TMP/dump_${k}_$dev.safetensors"
    label="config $k on $dev (batch $B, latent_dim $D, beta $BETA, seed $seed$images)"
    echo
    echo "== $label"
    cmd=("$CUVAE" parity-dump --device "$dev" --out "$dump" --batch-size "$B" --latent-dim "$D"
         --beta "$BETA" --seed "$seed" ${DATA:+--data "$DATA"})
    echo "\$ ${cmd[*]}"
    "${cmd[@]}"
    rc=$?
    if [ "$rc" -ne 0 ]; then
      echo "FAIL: cuvae parity-dump exited $rc for $label" >&2
      failed+=("$label: parity-dump exited $rc")
      failures[$dev]=$((failures[$dev] + 1))
      continue
    fi
    echo "\$ $PYTHON $PARITY $dump"
    "$PYTHON" "$PARITY" "$dump" >"$TMP/out" 2>&1
    rc=$?
    cat "$TMP/out"
    case "$rc" in
      0) ;;
      1) failed+=("$label: parity mismatch") ;;
      2) failed+=("$label: bad dump") ;;
      *) failed+=("$label: parity.py exited $rc") ;;
    esac
    [ "$rc" -ne 0 ] && failures[$dev]=$((failures[$dev] + 1))
    n=$(sed -n 's/^info: ReLU units aligned.*(\([0-9]*\) in all)$/\1/p' "$TMP/out")
    aligned[$dev]=$((aligned[$dev] + ${n:-0}))
  done
  k=$((k + 1))
done

echo
for dev in "${DEVICES[@]}"; do
  echo "parity_test: $dev: $((k - failures[$dev])) of $k configuration(s) passed," \
       "${aligned[$dev]} ReLU unit(s) aligned in all"
done
if [ "${#failed[@]}" -ne 0 ]; then
  echo "parity_test: ${#failed[@]} run(s) FAILED (seed $SEED):"
  for f in "${failed[@]}"; do
    echo "  $f"
  done
  exit 1
fi
echo "parity_test: all $k configurations passed on ${DEVICES[*]} (seed $SEED)"
exit 0
