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
# --train-split train+test trains on the 40 training images followed by the 12 test images:
# 1 epoch + resume to 2 gives the same model bits as 2 epochs on a folder whose training split
# holds those 52 images; --limit cuts the concatenated set; the start-up line, each epoch line
# and config.json say the test loss is on images trained on (and a plain run's do not); the
# resume keeps the split, refuses another, and a state written before the flag (no
# train_split) resumes as train; a missing test split is one line naming --train-split and the
# missing files, exit 2, no run folder made.
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
header=epoch,loss,reconstruction,kl,test_loss,images,steps,images_per_s,seconds,kl_weight
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

# --train-split train+test. CAT: a folder whose training split is DATA's training images
# followed by its test images (the IDX headers say 52; the payloads start at byte 17 of an
# image file and 9 of a label file), with DATA's test split.
CAT=$TMP/concat
mkdir -p "$CAT"
{
  printf '\0\0\10\3'
  be32 52
  be32 28
  be32 28
  tail -c +17 "$DATA/train-images-idx3-ubyte"
  tail -c +17 "$DATA/t10k-images-idx3-ubyte"
} >"$CAT/train-images-idx3-ubyte"
{
  printf '\0\0\10\1'
  be32 52
  tail -c +9 "$DATA/train-labels-idx1-ubyte"
  tail -c +9 "$DATA/t10k-labels-idx1-ubyte"
} >"$CAT/train-labels-idx1-ubyte"
cp "$DATA"/t10k-* "$CAT/"
# expect_line NAME LINE: the output of run NAME holds LINE, whole; expect_end NAME TEXT: a line
# ending in TEXT (a resume names the data folder as the run recorded it, absolute and normal).
expect_line() {
  grep -qxF -- "$2" "$TMP/$1.out" || fail "$1: no line '$2' in its output"
}
expect_end() {
  awk -v t="$2" 'length($0) >= length(t) && substr($0, length($0) - length(t) + 1) == t { f = 1 }
    END { exit !f }' "$TMP/$1.out" || fail "$1: no line ending in '$2' in its output"
}
# expect_config RUN KEY VALUE: RUN/config.json has the line "KEY": VALUE (VALUE as JSON text).
expect_config() {
  grep -qxF -e "  \"$2\": $3," -e "  \"$2\": $3" "$1/config.json" ||
    fail "$1/config.json lacks \"$2\": $3"
}
split_line="cuvae: test loss each epoch on all 12 test images (also trained on: --train-split train+test)"
expect_ok split "${COMMON[@]}" --train-split train+test --epochs 1 --out "$TMP/split"
expect_line split "cuvae: data $DATA: 52 training images (--train-split train+test: 40 from the training split, 12 from the test split)"
expect_line split "$split_line"
grep -qE '^epoch 1/1 .* test_loss [0-9]+\.[0-9]{4} \(seen in training\)  images/s ' "$TMP/split.out" ||
  fail "split: the epoch line does not mark the test loss as seen in training"
expect_config "$TMP/split" train_split '"train+test"'
expect_config "$TMP/split" train_images 52
expect_config "$TMP/split" test_images_trained_on 12
expect_ok split-resume --resume "$TMP/split" --epochs 2 --device cpu
expect_end split-resume ": 52 training images (--train-split train+test: 40 from the training split, 12 from the test split)"
expect_line split-resume "$split_line"
grep -qE '^epoch 2/2 .* \(seen in training\)  images/s ' "$TMP/split-resume.out" ||
  fail "split-resume: the epoch line does not mark the test loss as seen in training"
expect_config "$TMP/split" train_split '"train+test"'
expect_ok concat --device cpu --data "$CAT" --batch-size 16 --seed "$SEED" --lr 0.003 --epochs 2 \
  --out "$TMP/concat-run"
if cmp -s "$TMP/split/model.safetensors" "$TMP/concat-run/model.safetensors"; then
  echo "ok: train+test, 1 epoch + resume to 2, is bit-identical to 2 epochs on the training then the test images"
else
  fail "train+test (1 epoch + resume to 2) differs from 2 epochs on the training then the test images"
fi
[ "$(head -n 1 "$TMP/split/metrics.csv")" = "$header" ] || fail "train+test changed the metrics.csv header"
if [ "$(cut -d, -f1-7 "$TMP/split/metrics.csv")" = "$(cut -d, -f1-7 "$TMP/concat-run/metrics.csv")" ] &&
  [ "$(awk -F, 'NR > 1 && $6 == 52 && $7 == 4' "$TMP/split/metrics.csv" | wc -l)" -eq 2 ]; then
  echo "ok: train+test metrics.csv: 2 rows of 52 images in 4 steps, as the concatenated folder's"
else
  fail "train+test metrics.csv differs from the concatenated folder's run"
  paste -d'\n' "$TMP/split/metrics.csv" "$TMP/concat-run/metrics.csv"
fi
# A plain run's test loss is held out, and says nothing of training.
grep -q 'seen in training\|also trained on' "$TMP/two.out" "$TMP/four.out" &&
  fail "a --train-split train run marks its test loss as seen in training"
expect_config "$TMP/a" train_split '"train"'
expect_config "$TMP/a" test_images_trained_on 0
# --limit takes the first 44 of the 52: all 40 training images and the first 4 test images.
expect_ok split-limit "${COMMON[@]}" --train-split train+test --limit 44 --epochs 1 --out "$TMP/split-limit"
expect_line split-limit "cuvae: data $DATA: 44 training images (--train-split train+test: 40 from the training split, 4 from the test split)"
expect_line split-limit "cuvae: test loss each epoch on all 12 test images (the first 4 also trained on: --train-split train+test)"
grep -qE '^epoch 1/1 .* \(partly seen in training\)  images/s ' "$TMP/split-limit.out" ||
  fail "split-limit: the epoch line does not mark the test loss as partly seen in training"
expect_config "$TMP/split-limit" test_images_trained_on 4
# The split is the run's: another is refused, the same one accepted.
expect_refused split-to-train "--train-split train conflicts with the run in $TMP/split, trained with --train-split train+test" \
  --resume "$TMP/split" --epochs 3 --train-split train --device cpu
expect_refused train-to-split "--train-split train+test conflicts with the run in $TMP/a, trained with --train-split train" \
  --resume "$TMP/a" --epochs 6 --train-split train+test --device cpu
cmp -s "$TMP/split/model.safetensors" "$TMP/concat-run/model.safetensors" || fail "a refused resume changed the train+test run"
expect_ok split-same --resume "$TMP/split" --epochs 3 --train-split train+test --device cpu
expect_line split-same "$split_line"
# A state written before --train-split existed has no train_split: it resumes as train. The
# key renamed in place (same length, so the header stays valid) stands for the missing one.
cp -r "$TMP/a" "$TMP/old"
LC_ALL=C sed -i 's/"train_split":"train"/"xrain_split":"train"/' "$TMP/old/train_state.safetensors"
if grep -qF '"train_split"' "$TMP/old/train_state.safetensors"; then
  fail "could not remove train_split from the copied train_state"
else
  expect_refused old-state-to-split "trained with --train-split train " \
    --resume "$TMP/old" --epochs 5 --train-split train+test --device cpu
  expect_ok old-state --resume "$TMP/old" --epochs 5 --device cpu
  expect_end old-state ": 40 training images"
  expect_config "$TMP/old" train_split '"train"'
fi
# train+test without the test split (labels and all, or the labels only): one line naming the
# flag and the missing files, and nothing written.
NOTEST=$TMP/no-test
mkdir -p "$NOTEST"
cp "$DATA"/train-* "$NOTEST/"
expect_refused split-resume-no-test \
  "--train-split train+test (the run's): $NOTEST has no t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]" \
  --resume "$TMP/split" --epochs 4 --data "$NOTEST" --device cpu
expect_refused split-no-test "--train-split train+test: $NOTEST has no t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]" \
  --device cpu --data "$NOTEST" --train-split train+test --out "$TMP/no-test-run"
[ ! -e "$TMP/no-test-run" ] || fail "split-no-test made $TMP/no-test-run"
cp "$DATA/t10k-images-idx3-ubyte" "$NOTEST/"
expect_refused split-no-test-labels "--train-split train+test: $NOTEST has no t10k-labels-idx1-ubyte[.gz] (" \
  --device cpu --data "$NOTEST" --train-split train+test --out "$TMP/no-test-run"
[ ! -e "$TMP/no-test-run" ] || fail "split-no-test-labels made $TMP/no-test-run"

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

# --beta-warmup 2 (beta 2): the KL weight ramps over epochs 1-2. Every row has loss =
# reconstruction + kl_weight * kl; kl_weight rises in the ramp, stays below beta there and is
# beta in epoch 3; the banner says so. The warm-up is the run's: another value on resume is
# refused, none or the same accepted, and the resumed rows equal a straight run's.
expect_ok warm-straight "${COMMON[@]}" --beta 2 --beta-warmup 2 --epochs 3 --out "$TMP/warm"
grep -q "beta 2 (warm-up over 2 epochs)" "$TMP/warm-straight.out" || fail "warm-straight: the banner does not name the warm-up"
awk -F, -v tol="$TOL" 'NR == 1 { if ($10 != "kl_weight") { print "FAIL: column 10 is " $10; bad = 1 } }
  NR > 1 {
    n++
    d = $2 - ($3 + $10 * $4); if (d < 0) d = -d
    if (d > tol * $2) { print "FAIL: warm-up epoch " $1 ": loss " $2 " != " $3 " + " $10 " * " $4; bad = 1 }
    if ($1 <= 2 && !($10 > prev && $10 < 2)) { print "FAIL: warm-up epoch " $1 ": kl_weight " $10; bad = 1 }
    if ($1 == 3 && $10 != 2) { print "FAIL: epoch 3 after the warm-up: kl_weight " $10; bad = 1 }
    prev = $10
  }
  END {
    if (n != 3) { print "FAIL: " n " warm-up rows, expected 3"; exit 1 }
    if (!bad) print "ok: warm-up rows: loss = reconstruction + kl_weight * kl, the weight ramps to beta"
    exit bad
  }' "$TMP/warm/metrics.csv" || fails=$((fails + 1))
expect_ok warm-first "${COMMON[@]}" --beta 2 --beta-warmup 2 --epochs 1 --out "$TMP/warm1"
expect_refused warm-changed "--beta-warmup 3 conflicts with the run in $TMP/warm1, trained with --beta-warmup 2" \
  --resume "$TMP/warm1" --epochs 3 --beta-warmup 3 --device cpu
expect_ok warm-resumed --resume "$TMP/warm1" --epochs 3 --beta-warmup 2 --device cpu
# --snapshot-every 1: pictures with suffix _epochN after every epoch; the last epoch's are the
# final pictures, drawn once (copied, so byte-identical); a resume adds its own, keeping the
# earlier ones.
PICS=(grid_15 grid_30 scatter reconstructions samples)
expect_ok snap "${COMMON[@]}" --epochs 2 --snapshot-every 1 --out "$TMP/snap"
for p in "${PICS[@]}"; do
  [ -s "$TMP/snap/${p}_epoch1.png" ] || fail "snap: no ${p}_epoch1.png"
  cmp -s "$TMP/snap/${p}_epoch2.png" "$TMP/snap/$p.png" ||
    fail "snap: ${p}_epoch2.png is not the final $p.png"
done
cp "$TMP/snap/grid_15_epoch2.png" "$TMP/snap_grid2.png"
expect_ok snap-resumed --resume "$TMP/snap" --epochs 3 --snapshot-every 1 --device cpu
cmp -s "$TMP/snap/grid_15_epoch3.png" "$TMP/snap/grid_15.png" ||
  fail "snap-resumed: grid_15_epoch3.png is not the final grid_15.png"
cmp -s "$TMP/snap/grid_15_epoch2.png" "$TMP/snap_grid2.png" ||
  fail "snap-resumed: the resume changed grid_15_epoch2.png"
if cmp -s "$TMP/snap/grid_15_epoch3.png" "$TMP/snap_grid2.png"; then
  fail "snap-resumed: epoch 3's grid equals epoch 2's (not redrawn?)"
fi

# --test-limit is the run's too: metrics.csv's test_loss column is over one image count.
expect_refused test-limit-changed "conflicts with the run in $TMP/warm1, trained with --test-limit" \
  --resume "$TMP/warm1" --epochs 4 --test-limit 7 --device cpu
if [ "$(cut -d, -f1-5,10 "$TMP/warm1/metrics.csv")" = "$(cut -d, -f1-5,10 "$TMP/warm/metrics.csv")" ] &&
  cmp -s "$TMP/warm1/model.safetensors" "$TMP/warm/model.safetensors"; then
  echo "ok: a warm-up run resumed after epoch 1 equals the straight run (metrics and weights)"
else
  fail "a warm-up run resumed after epoch 1 differs from the straight run"
fi

if [ "$fails" -ne 0 ]; then
  echo "cli_resume: $fails failed"
  exit 1
fi
echo "cli_resume: all passed"
