#!/usr/bin/env bash
# A model saved by `cuvae train` is the same model in PyTorch: trains a tiny model on the CPU
# on a synthetic IDX dataset for one epoch, writes one batch with `cuvae eval --dump-batch`,
# and runs tools/parity/check_model.py, which loads model.safetensors into CuvaeVAE with
# load_state_dict(strict=True) and recomputes cuvae's loss in float64 on the same images and
# noise (agreement within 1e-6 relative). The checker must also fail where it should: another
# model's weights, another latent size, a file with a tensor missing, a file that is no batch.
# A fresh seed is drawn per run and printed; CUVAE_PARITY_SEED replays one.
# usage: model_torch_test.sh <cuvae-binary> <python> <repo-root>
# Exit status: 0 pass, 1 failure, 2 usage, 77 PyTorch not importable by <python> (skip).
set -u
if [ "$#" -ne 3 ]; then
  echo "usage: $0 <cuvae-binary> <python> <repo-root>" >&2
  exit 2
fi
CUVAE=$1
PYTHON=$2
ROOT=$3
CHECK=$ROOT/tools/parity/check_model.py
if ! "$PYTHON" -c 'import torch, numpy' >/dev/null 2>&1; then
  echo "skipped: PyTorch (with numpy) not available to $PYTHON"
  exit 77
fi
[ -x "$CUVAE" ] || { echo "FAIL: $CUVAE is not an executable"; exit 1; }
[ -f "$CHECK" ] || { echo "FAIL: $CHECK not found"; exit 1; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cuvae_model_torch.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
SEED=${CUVAE_PARITY_SEED:-$(((RANDOM << 15 | RANDOM) ^ ($(date +%s) & 0x3fffffff)))}
echo "seed $SEED (rerun with CUVAE_PARITY_SEED=$SEED)"
fails=0
fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}

source "$(dirname "${BASH_SOURCE[0]}")/lib/idx.sh"
DATA=$TMP/data
make_mnist_dir "$DATA" 32 24

train() {  # train OUT LATENT-DIM SEED
  "$CUVAE" train --device cpu --data "$DATA" --epochs 1 --batch-size 8 --latent-dim "$2" \
    --seed "$3" --out "$1" >"$TMP/train.log" 2>&1 || {
    cat "$TMP/train.log"
    echo "FAIL: cuvae train --out $1 failed"
    exit 1
  }
}
train "$TMP/a" 3 "$SEED"
train "$TMP/b" 3 $((SEED + 1))
train "$TMP/c" 2 "$SEED"

BATCH=$TMP/batch.safetensors
if ! "$CUVAE" eval "$TMP/a" --data "$DATA" --device cpu --iw-samples 0 --seed "$SEED" \
  --dump-batch "$BATCH" --dump-images 12; then
  echo "FAIL: cuvae eval --dump-batch failed"
  exit 1
fi

expect() {  # expect NAME EXIT-CODE ARGS...
  local name=$1 want=$2 rc
  shift 2
  echo "\$ check_model.py $*"
  "$PYTHON" "$CHECK" "$@"
  rc=$?
  if [ "$rc" -eq "$want" ]; then echo "ok: $name (exit $rc)"; else fail "$name: exit $rc, expected $want"; fi
}
expect "run folder" 0 "$TMP/a" "$BATCH"
expect "model file" 0 "$TMP/a/model.safetensors" "$BATCH"
expect "another model's weights" 1 "$TMP/b" "$BATCH"
expect "another latent size" 1 "$TMP/c" "$BATCH"

# A file with one tensor dropped must not load (strict=True is really in force).
"$PYTHON" - "$ROOT/tools/parity" "$TMP/a/model.safetensors" "$TMP/partial.safetensors" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
from cuvae_torch import load_safetensors, save_safetensors
t, meta = load_safetensors(sys.argv[2])
del t["decoder.out.bias"]
save_safetensors(sys.argv[3], t, meta)
EOF
expect "a tensor missing" 1 "$TMP/partial.safetensors" "$BATCH"
expect "not a batch file" 2 "$TMP/a" "$TMP/a/model.safetensors"
expect "no such model" 2 "$TMP/none" "$BATCH"

if [ "$fails" -ne 0 ]; then
  echo "model_torch_test: $fails failed (seed $SEED)"
  exit 1
fi
echo "model_torch_test: all passed (seed $SEED)"
