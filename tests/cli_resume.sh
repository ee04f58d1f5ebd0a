#!/usr/bin/env bash
# End-to-end check of `cuvae train --resume` on a tiny synthetic IDX dataset (train and t10k
# files made with printf): `--epochs 2` then `--resume --epochs 4` must give bit-identical
# model.safetensors and train_state.safetensors to `--epochs 4` straight, with 4 consistent
# rows in metrics.csv (test_loss filled in). Refusals, each exit 2 with one stderr line:
# a conflicting --latent-dim, a corrupted train_state (left untouched), a missing one, a run
# already at its total, other training data, and a new run into an existing run folder
# without --overwrite. No progress line ('\r') when stdout is not a terminal. With beta 0, 0.5
# and 4 (0.5 through a resume), every metrics.csv row has loss = reconstruction + beta * kl,
# and the last test_loss is what `cuvae eval` finds on the test split.
# The pixels and the training seed come from a seed printed first (CUVAE_TEST_SEED replays it).
# usage: cli_resume.sh <cuvae-binary> <repo-root>
set -u
if [ $# -ne 2 ]; then
  echo "usage: $0 <cuvae-binary> <repo-root>"
  exit 1
fi
CUVAE=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib/cli.sh"
cli_setup resume "$CUVAE"

source "$(dirname "${BASH_SOURCE[0]}")/lib/idx.sh"
cli_seed
idx_seed "$SEED"

DATA=$TMP/data
make_mnist_dir "$DATA" 40 12  # batch 16: 16 + 16 + a remainder of 8
# The seed replays the pixels (what CUVAE_TEST_SEED promises) and another seed gives others;
# seeding again with $SEED last leaves the pixel streams where they were.
idx_seed $((SEED + 1))
make_mnist_dir "$TMP/seed+1" 40 12
idx_seed "$SEED"
make_mnist_dir "$TMP/replay" 40 12
for f in train-images-idx3-ubyte t10k-images-idx3-ubyte; do
  if ! cmp -s "$DATA/$f" "$TMP/replay/$f"; then
    fail "seed $SEED made two different $f"
  elif cmp -s "$DATA/$f" "$TMP/seed+1/$f"; then
    fail "seeds $SEED and $((SEED + 1)) made the same $f"
  else
    echo "ok: seed $SEED makes the same $f again, seed $((SEED + 1)) another"
  fi
done
COMMON=(--device cpu --data "$DATA" --batch-size 16 --seed "$SEED" --lr 0.003)

# run NAME ARGS...: cuvae train, stdout/stderr kept in $TMP/NAME.out/.err; sets rc.
run() {
  local name=$1
  shift
  "$CUVAE" train "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
  rc=$?
  if grep -qiE 'terminate called|core dumped|segmentation fault|aborted|sanitizer' \
    "$TMP/$name.out" "$TMP/$name.err"; then
    fail "$name crashed"
    cat "$TMP/$name.err"
  fi
}
# expect_ok NAME ARGS...
expect_ok() {
  local name=$1
  run "$@"
  if [ "$rc" -ne 0 ]; then
    fail "$name: exit $rc, expected 0"
    cat "$TMP/$name.err"
  else
    echo "ok: $name"
  fi
}
# expect_refused NAME WORDS ARGS...: exit 2, one stderr line holding WORDS.
expect_refused() {
  local name=$1 words=$2
  shift 2
  run "$name" "$@"
  local lines why=""
  lines=$(wc -l <"$TMP/$name.err")
  [ "$rc" -eq 2 ] || why="exit $rc, expected 2"
  [ "$lines" -eq 1 ] || why="${why:+$why; }$lines stderr lines, expected 1"
  grep -q '^cuvae: error: ' "$TMP/$name.err" || why="${why:+$why; }no 'cuvae: error: ' prefix"
  grep -qF -- "$words" "$TMP/$name.err" || why="${why:+$why; }stderr does not say '$words'"
  if [ -n "$why" ]; then
    fail "$name: $why; stderr:"
    cat "$TMP/$name.err"
  else
    echo "ok: $name -> $(cat "$TMP/$name.err")"
  fi
}

# 2 epochs, then resume to a total of 4; and 4 straight.
expect_ok two "${COMMON[@]}" --epochs 2 --out "$TMP/a"
expect_ok resume --resume "$TMP/a" --epochs 4 --device cpu
expect_ok four "${COMMON[@]}" --epochs 4 --out "$TMP/b"
for f in model.safetensors train_state.safetensors; do
  if cmp -s "$TMP/a/$f" "$TMP/b/$f"; then
    echo "ok: $f of 2 + resume to 4 epochs is bit-identical to 4 epochs straight"
  else
    fail "$f differs between 2 + resume to 4 epochs and 4 epochs straight"
  fi
done
grep -q "resuming $TMP/a after epoch 2" "$TMP/resume.out" || fail "the resume does not say where it starts"

# metrics.csv: the header, 4 rows numbered 1..4, test_loss filled in, and the same numbers
# (all but the timing columns) as the straight run.
header=epoch,loss,reconstruction,kl,test_loss,images,steps,images_per_s,seconds
[ "$(head -n 1 "$TMP/a/metrics.csv")" = "$header" ] || fail "metrics.csv header: $(head -n 1 "$TMP/a/metrics.csv")"
awk -F, 'NR > 1 {
    n++
    if ($1 != n) { print "FAIL: row " n " has epoch " $1; bad = 1 }
    if ($5 == "" || $5 + 0 <= 0) { print "FAIL: epoch " $1 " has test_loss \"" $5 "\""; bad = 1 }
    if ($6 != 40 || $7 != 3) { print "FAIL: epoch " $1 ": " $6 " images in " $7 " steps"; bad = 1 }
  }
  END {
    if (n != 4) { print "FAIL: " n " rows in metrics.csv, expected 4"; exit 1 }
    exit bad
  }' "$TMP/a/metrics.csv" || fails=$((fails + 1))
if [ "$(cut -d, -f1-7 "$TMP/a/metrics.csv")" = "$(cut -d, -f1-7 "$TMP/b/metrics.csv")" ]; then
  echo "ok: metrics.csv rows match the straight run"
else
  fail "metrics.csv rows differ from the straight run"
  paste -d'\n' "$TMP/a/metrics.csv" "$TMP/b/metrics.csv"
fi
grep -q 'test_loss' "$TMP/four.out" || fail "the per-epoch line has no test_loss"
if grep -q $'\r' "$TMP/two.out" "$TMP/resume.out" "$TMP/four.out"; then
  fail "a progress line ('\\r') was written to a pipe"
fi

# beta != 1 (nothing else checks that the epoch loss weighs the KL by beta): every row has
# loss = reconstruction + beta * kl. metrics.csv keeps 9 significant digits, each value off by
# up to 5e-9 of itself, the difference by about 1e-8 of the loss: the tolerance, 1e-7 of the
# loss, leaves 10x. The check is worth something only if a loss that ignored beta (recon + kl)
# would fail it, so some row must have |1 - beta| * kl above 3x the tolerance (the KL of epoch 1
# on these random pixels is 0.008 to 0.08: 15x and more above). The last test_loss must be
# `cuvae eval`'s training_loss (recon + beta * kl, beta read from the model) on the test split
# with the run's seed: the same evaluation. beta 0.5 runs 1 epoch and resumes to 2, whose row
# must use the saved beta.
TOL=1e-7
for beta in 0 0.5 4; do
  b=$TMP/beta$beta
  if [ "$beta" = 0.5 ]; then
    expect_ok "beta-$beta" "${COMMON[@]}" --beta "$beta" --epochs 1 --out "$b"
    expect_ok "beta-$beta-resumed" --resume "$b" --epochs 2 --device cpu
  else
    expect_ok "beta-$beta" "${COMMON[@]}" --beta "$beta" --epochs 2 --out "$b"
  fi
  awk -F, -v beta="$beta" -v tol="$TOL" 'NR > 1 {
      n++
      d = $2 - ($3 + beta * $4); if (d < 0) d = -d
      if (d > tol * $2) {
        print "FAIL: beta " beta ", epoch " $1 ": loss " $2 " != reconstruction " $3 " + " beta " * kl " $4
        bad = 1
      }
      s = (1 - beta) * $4; if (s < 0) s = -s
      if (s > 3 * tol * $2) sensitive = 1
      if ($5 == "" || $5 + 0 <= 0) { print "FAIL: beta " beta ", epoch " $1 ": test_loss \"" $5 "\""; bad = 1 }
      last_test = $5
    }
    END {
      if (n != 2) { print "FAIL: beta " beta ": " n " rows in metrics.csv, expected 2"; exit 1 }
      if (!sensitive) {
        print "FAIL: beta " beta ": no row has a KL large enough for a loss that ignored beta to show"
        bad = 1
      }
      if (!bad) print "ok: beta " beta ": loss = reconstruction + " beta " * kl in both rows"
      exit bad
    }' "$b/metrics.csv" || fails=$((fails + 1))
  if "$CUVAE" eval "$b" --data "$DATA" --device cpu --split test --iw-samples 0 --seed "$SEED" \
    --json "$TMP/beta$beta.json" >/dev/null 2>"$TMP/beta$beta.eval.err"; then
    got=$(awk -F, 'END { print $5 }' "$b/metrics.csv")
    want=$(grep -oE '"training_loss": [-+.0-9eE]+' "$TMP/beta$beta.json" | cut -d' ' -f2)
    saved=$(grep -oE '"beta": [-+.0-9eE]+' "$TMP/beta$beta.json" | cut -d' ' -f2)
    if awk -v a="$got" -v b="$want" -v tol="$TOL" -v s="$saved" -v beta="$beta" \
      'BEGIN { d = a - b; if (d < 0) d = -d; exit !(b != "" && d <= tol * b && s == beta) }'; then
      echo "ok: beta $beta: the last test_loss, $got, is eval's recon + $beta * kl on the test split"
    else
      fail "beta $beta: the last test_loss $got, eval's recon + beta * kl $want (eval's beta $saved)"
    fi
  else
    fail "beta $beta: cuvae eval failed"
    cat "$TMP/beta$beta.eval.err"
  fi
done

# Refusals.
cp -r "$TMP/a" "$TMP/c"
expect_refused conflicting-latent-dim "--latent-dim 3" --resume "$TMP/c" --epochs 6 --latent-dim 3 --device cpu
expect_refused same-latent-dim-but-lr "--lr" --resume "$TMP/c" --epochs 6 --latent-dim 2 --lr 0.1 --device cpu
expect_refused already-finished "has already completed 4 epochs" --resume "$TMP/c" --epochs 4 --device cpu
expect_refused finished-no-total "finished its 4 epochs" --resume "$TMP/c" --device cpu
cmp -s "$TMP/a/model.safetensors" "$TMP/c/model.safetensors" || fail "a refused resume changed the model"

size=$(wc -c <"$TMP/c/train_state.safetensors")
head -c $((size - 100)) "$TMP/a/train_state.safetensors" >"$TMP/c/train_state.safetensors"
cp "$TMP/c/train_state.safetensors" "$TMP/corrupt.copy"
expect_refused corrupt-state "$TMP/c/train_state.safetensors" --resume "$TMP/c" --epochs 6 --device cpu
cmp -s "$TMP/c/train_state.safetensors" "$TMP/corrupt.copy" || fail "the corrupt train_state was modified"
rm "$TMP/c/train_state.safetensors"
expect_refused missing-state "$TMP/c/train_state.safetensors" --resume "$TMP/c" --epochs 6 --device cpu

make_mnist_dir "$TMP/other" 48 12
expect_refused other-data "48 training images" --resume "$TMP/a" --epochs 6 --data "$TMP/other" --device cpu
make_mnist_dir "$TMP/same-size" 40 12
expect_refused same-size-other-data "training images differ" --resume "$TMP/a" --epochs 6 --data "$TMP/same-size" --device cpu

expect_refused new-run-into-a-run "--overwrite" "${COMMON[@]}" --epochs 1 --out "$TMP/b"
cmp -s "$TMP/a/model.safetensors" "$TMP/b/model.safetensors" || fail "a refused new run changed the old one"
expect_ok overwrite "${COMMON[@]}" --epochs 1 --out "$TMP/b" --overwrite
awk 'END { if (NR != 2) exit 1 }' "$TMP/b/metrics.csv" || fail "--overwrite kept the old metrics rows"

if [ "$fails" -ne 0 ]; then
  echo "cli_resume: $fails failed"
  exit 1
fi
echo "cli_resume: all passed"
