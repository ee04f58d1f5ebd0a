#!/usr/bin/env bash
# A short real CPU training run on MNIST: the parameter count is printed, the per-epoch loss
# falls every epoch, loss = reconstruction + KL in metrics.csv, and the run folder holds the
# model and curves.png. Skips (77) when no MNIST folder is found. The training seed is printed first
# (CUVAE_TEST_SEED replays it).
# usage: cli_train.sh <cuvae-binary> <repo-root>
set -u
if [ $# -ne 2 ]; then
  echo "usage: $0 <cuvae-binary> <repo-root>"
  exit 1
fi
CUVAE=$1
ROOT=$2
source "$(dirname "${BASH_SOURCE[0]}")/lib/cli.sh"
DATA=${CUVAE_MNIST_DIR:-}
[ -n "$DATA" ] && [ -d "$DATA" ] || DATA=$ROOT/data/mnist
if ! ls "$DATA"/train-images-idx3-ubyte* >/dev/null 2>&1; then
  echo "skipped: no MNIST folder (set CUVAE_MNIST_DIR or run tools/fetch_mnist.sh)"
  exit 77
fi
cli_setup train "$CUVAE"
cli_seed

"$CUVAE" train --device cpu --data "$DATA" --limit 640 --batch-size 64 --epochs 3 \
  --seed "$SEED" --out "$TMP/run" | tee "$TMP/log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || { echo "FAIL: cuvae train exited $rc"; exit 1; }
grep -q "134,165 parameters" "$TMP/log" || { echo "FAIL: parameter count 134,165 not printed"; exit 1; }
for f in metrics.csv config.json model.safetensors curves.png; do
  [ -s "$TMP/run/$f" ] || { echo "FAIL: $f missing from the run folder"; exit 1; }
done
/usr/bin/env awk -F, '
  NR == 1 { next }
  {
    n++; loss[n] = $2
    if ($2 != $2 + 0 || $2 <= 0) { print "FAIL: bad loss " $2; bad = 1 }
    d = $2 - ($3 + $4); if (d < 0) d = -d
    if (d > 1e-5 * $2) { print "FAIL: loss " $2 " != reconstruction " $3 " + kl " $4; bad = 1 }
  }
  END {
    if (n != 3) { print "FAIL: expected 3 epochs in metrics.csv, got " n; exit 1 }
    for (i = 2; i <= n; i++) if (loss[i] >= loss[i-1]) { print "FAIL: loss rose at epoch " i; bad = 1 }
    if (loss[n] > 0.8 * loss[1]) { print "FAIL: loss fell too little: " loss[1] " -> " loss[n]; bad = 1 }
    if (bad) exit 1
    print "ok: loss " loss[1] " -> " loss[n]
  }' "$TMP/run/metrics.csv"
