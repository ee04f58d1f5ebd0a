#!/usr/bin/env bash
# End to end: the training curves. `cuvae train` leaves RUN/curves.png (the size of
# host/eval/curves.h) and redraws it on --resume; a picture that cannot be written is a warning
# that does not cost the run. `cuvae curves RUN` redraws it, `cuvae curves RUN RUN2 --out FILE`
# compares runs (the other size), a hand-written metrics.csv with an extra column and no test
# loss is read; every bad flag or file (a malformed metrics.csv named with its line) exits 2
# with one stderr line and writes nothing.
# The pixels come from a seed printed first (CUVAE_TEST_SEED replays it).
# usage: cli_curves.sh <cuvae-binary> <repo-root>
set -u
if [ $# -ne 2 ]; then
  echo "usage: $0 <cuvae-binary> <repo-root>"
  exit 1
fi
CUVAE=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib/cli.sh"
cli_setup curves "$CUVAE"
source "$(dirname "${BASH_SOURCE[0]}")/lib/idx.sh"
cli_seed
idx_seed "$SEED"
DATA=$TMP/data
make_mnist_dir "$DATA" 48 12

# The layout of host/eval/curves.h: 2 kCurvePanelW + kCurveLegendW wide, kCurveHead + rows
# kCurvePanelH high, kCurvePanelW = kAxesLeft + kCurvePlotW + kCurvePanelRight and kCurvePanelH
# = kCurvePanelTop + kCurvePlotH + kAxesBottom.
PANEL_W=$((140 + 440 + 24)) PANEL_H=$((40 + 320 + 72))
ONE_RUN="$((2 * PANEL_W + 240)) $((54 + PANEL_H))"
RUNS="$((2 * PANEL_W + 240)) $((54 + 2 * PANEL_H))"

png_size() {
  [ "$(od -An -tx1 -N8 "$1" 2>/dev/null | tr -d ' \n')" = 89504e470d0a1a0a ] || return 1
  od -An -tu1 -j16 -N8 "$1" |
    awk '{ print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4, $5 * 16777216 + $6 * 65536 + $7 * 256 + $8 }'
}

train() {  # train OUT EPOCHS [ARGS...]
  local out=$1 epochs=$2
  shift 2
  "$CUVAE" train --device cpu --data "$DATA" --batch-size 16 --epochs "$epochs" --seed "$SEED" \
    --out "$out" "$@" >"$TMP/train.out" 2>"$TMP/train.err"
}

# ---- cuvae train leaves curves.png, also on resume -----------------------------------------
RUN=$TMP/run
if ! train "$RUN" 2; then
  cat "$TMP/train.out" "$TMP/train.err"
  echo "FAIL: training the tiny model failed"
  exit 1
fi
if [ "$(png_size "$RUN/curves.png")" = "$ONE_RUN" ] && grep -q "curves.png too" "$TMP/train.out"; then
  echo "ok: cuvae train wrote curves.png ($ONE_RUN)"
else
  fail "cuvae train: no curves.png of $ONE_RUN in the run folder ($(png_size "$RUN/curves.png"))"
fi
cp "$RUN/curves.png" "$TMP/curves-2.png"
if "$CUVAE" train --resume "$RUN" --device cpu --data "$DATA" --epochs 3 >"$TMP/train.out" 2>&1 &&
  [ "$(png_size "$RUN/curves.png")" = "$ONE_RUN" ] && ! cmp -s "$RUN/curves.png" "$TMP/curves-2.png"; then
  echo "ok: --resume redrew curves.png with the third epoch"
else
  fail "--resume did not redraw curves.png"
  cat "$TMP/train.out"
fi

# A curves.png that cannot be written (a folder stands in its place): a warning, the run intact.
BLOCKED=$TMP/blocked
mkdir -p "$BLOCKED/curves.png"
if train "$BLOCKED" 1 && grep -q "^cuvae: warning: curves.png not drawn (the run is saved): " \
  "$TMP/train.err" && [ -s "$BLOCKED/model.safetensors" ] && [ -s "$BLOCKED/samples.png" ] &&
  ! grep -q "curves.png too" "$TMP/train.out"; then
  echo "ok: a failed curves.png is a warning; the model and the other pictures are written"
else
  fail "a failed curves.png: $(cat "$TMP/train.err")"
fi

# ---- cuvae curves --------------------------------------------------------------------------
rm -f "$RUN/curves.png"
if "$CUVAE" curves "$RUN" >"$TMP/out" 2>"$TMP/err" && [ "$(png_size "$RUN/curves.png")" = "$ONE_RUN" ] &&
  [ "$(cat "$TMP/out")" = "cuvae: wrote $RUN/curves.png (training curves of run, 3 epochs)" ] &&
  [ ! -s "$TMP/err" ]; then
  echo "ok: cuvae curves RUN -> RUN/curves.png"
else
  fail "cuvae curves RUN: $(cat "$TMP/out" "$TMP/err")"
fi

# A hand-written log: columns reordered, an extra one, no test loss, a resumed epoch.
HAND=$TMP/hand
mkdir -p "$HAND"
printf 'epoch,kl_weight,kl,reconstruction,loss,test_loss\r\n1,0.5,3,200,203,\r\n2,0.5,4,180,184,\r\n2,0.5,4.5,179,183.5,\r\n3,1,5,170,175,\r\n' \
  >"$HAND/metrics.csv"
if "$CUVAE" curves "$HAND" >"$TMP/out" 2>&1 && [ "$(png_size "$HAND/curves.png")" = "$ONE_RUN" ] &&
  grep -q "3 epochs" "$TMP/out"; then
  echo "ok: a hand-written metrics.csv (extra column, no test loss, CRLF, a resumed epoch)"
else
  fail "cuvae curves on a hand-written metrics.csv: $(cat "$TMP/out")"
fi

if "$CUVAE" curves "$RUN" "$HAND" "$BLOCKED" --out "$TMP/cmp.png" >"$TMP/out" 2>&1 &&
  [ "$(png_size "$TMP/cmp.png")" = "$RUNS" ] && grep -qF "wrote $TMP/cmp.png (training curves of 3 runs" "$TMP/out"; then
  echo "ok: cuvae curves RUN RUN2 RUN3 --out FILE ($RUNS)"
else
  fail "cuvae curves of three runs: $(cat "$TMP/out")"
fi
# --out before the runs works too.
"$CUVAE" curves --out "$TMP/cmp2.png" "$RUN" "$HAND" >/dev/null 2>&1 &&
  [ "$(png_size "$TMP/cmp2.png")" = "$RUNS" ] || fail "cuvae curves --out FILE RUN RUN2"

# ---- errors --------------------------------------------------------------------------------
mkdir -p "$TMP/bad" "$TMP/no-metrics" "$TMP/broken" "$TMP/header-only"
printf '%s\n1,200,195,5,190,48,3,100,1\n2,1xx,195,5,190,48,3,100,1\n' \
  "epoch,loss,reconstruction,kl,test_loss,images,steps,images_per_s,seconds" >"$TMP/broken/metrics.csv"
printf 'epoch,loss,reconstruction,kl,test_loss,images,steps,images_per_s,seconds\n' \
  >"$TMP/header-only/metrics.csv"
expect_error() {
  local word=$1
  shift
  "$CUVAE" curves "$@" >"$TMP/err.out" 2>"$TMP/err.err"
  local rc=$? why=""
  [ "$rc" -eq 2 ] || why="exit $rc, expected 2"
  [ "$(wc -l <"$TMP/err.err")" -eq 1 ] || why="${why:+$why; }$(wc -l <"$TMP/err.err") stderr lines"
  grep -qF -- "$word" "$TMP/err.err" || why="${why:+$why; }stderr does not mention '$word'"
  head -n 1 "$TMP/err.err" | grep -q '^cuvae: error: ' || why="${why:+$why; }no 'cuvae: error: ' prefix"
  [ -s "$TMP/err.out" ] && why="${why:+$why; }wrote to stdout"
  [ -z "$(ls -A "$TMP/bad")" ] || why="${why:+$why; }wrote $(ls -A "$TMP/bad")"
  local d
  for d in no-metrics broken header-only; do
    [ -e "$TMP/$d/curves.png" ] && why="${why:+$why; }wrote $TMP/$d/curves.png"
  done
  if [ -n "$why" ]; then
    fail "cuvae curves $*: $why; stderr:"
    cat "$TMP/err.err"
  else
    echo "ok: cuvae curves $* -> $(cat "$TMP/err.err")"
  fi
}
expect_error RUN
expect_error RUN --out "$TMP/bad/c.png"
expect_error "--out: required when comparing 2 runs" "$RUN" "$HAND"
expect_error "$TMP/nowhere: no such run folder" "$TMP/nowhere" --out "$TMP/bad/c.png"
expect_error "not a run folder" "$RUN/metrics.csv" --out "$TMP/bad/c.png"
expect_error "$TMP/no-metrics: no metrics.csv" "$TMP/no-metrics"
expect_error "$TMP/broken/metrics.csv: line 3: loss: expected a number, got '1xx'" "$TMP/broken"
expect_error "$TMP/header-only/metrics.csv: no epochs yet" "$TMP/header-only"
expect_error "$TMP/broken/metrics.csv: line 3" "$RUN" "$TMP/broken" --out "$TMP/bad/c.png"
expect_error "at most 10 runs, got 11" "$RUN" "$RUN" "$RUN" "$RUN" "$RUN" "$RUN" "$RUN" "$RUN" \
  "$RUN" "$RUN" "$RUN" --out "$TMP/bad/c.png"
expect_error "--out" "$RUN" --out "$TMP/bad"
expect_error "--out" "$RUN" --out "$TMP/no-dir/c.png"
expect_error "--out" "$RUN" --out
expect_error no-such-flag "$RUN" --out "$TMP/bad/c.png" --no-such-flag
expect_error "RUN: empty path" "" --out "$TMP/bad/c.png"

if "$CUVAE" curves --help >"$TMP/help" 2>&1 && grep -q -- "--out" "$TMP/help" &&
  grep -q "RUN2" "$TMP/help"; then
  echo "ok: cuvae curves --help"
else
  fail "cuvae curves --help"
fi

if [ "$fails" -ne 0 ]; then
  echo "cli_curves: $fails failed"
  exit 1
fi
echo "cli_curves: all passed"
