#!/usr/bin/env bash
# Parity of cuvae's CPU-reference loss/gradients against PyTorch float64.
#
# usage: parity_test.sh <cuvae-binary> <python> <repo-root>
#
# Runs tools/parity/parity.py --self-test, then for several (batch, latent_dim, beta)
# configurations writes a dump with `cuvae parity-dump` and checks it with parity.py.
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
# One batch of real MNIST digits as well, when the folder is there.
MNIST=${CUVAE_MNIST_DIR:-$ROOT/data/mnist}
if ls "$MNIST"/t10k-images-idx3-ubyte* >/dev/null 2>&1; then
  CONFIGS+=("16 2 1 $MNIST")
fi

failed=()
k=0
for cfg in "${CONFIGS[@]}"; do
  read -r B D BETA DATA <<<"$cfg"
  seed=$((SEED + k))
  dump="$TMP/dump_$k.safetensors"
  label="config $k (batch $B, latent_dim $D, beta $BETA, seed $seed${DATA:+, MNIST test images})"
  echo
  echo "== $label"
  cmd=("$CUVAE" parity-dump --out "$dump" --batch-size "$B" --latent-dim "$D" --beta "$BETA"
       --seed "$seed" ${DATA:+--data "$DATA"})
  echo "\$ ${cmd[*]}"
  "${cmd[@]}"
  rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "FAIL: cuvae parity-dump exited $rc for $label" >&2
    failed+=("$label: parity-dump exited $rc")
    k=$((k + 1))
    continue
  fi
  echo "\$ $PYTHON $PARITY $dump"
  "$PYTHON" "$PARITY" "$dump"
  rc=$?
  case "$rc" in
    0) ;;
    1) failed+=("$label: parity mismatch") ;;
    2) failed+=("$label: bad dump") ;;
    *) failed+=("$label: parity.py exited $rc") ;;
  esac
  k=$((k + 1))
done

echo
if [ "${#failed[@]}" -ne 0 ]; then
  echo "parity_test: ${#failed[@]} of $k configuration(s) FAILED (seed $SEED):"
  for f in "${failed[@]}"; do
    echo "  $f"
  done
  exit 1
fi
echo "parity_test: all $k configurations passed (seed $SEED)"
exit 0
