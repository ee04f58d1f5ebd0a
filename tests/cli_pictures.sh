#!/usr/bin/env bash
# End-to-end check of the picture subcommands (grid, scatter, reconstruct, sample) on a model
# trained here on a tiny synthetic MNIST-format dataset (train and t10k files made with
# printf): each writes its PNG (exit 0, one "wrote" line) with the width and height the layout
# of host/eval/pictures.h gives (a row of more than 20 digits wrapped onto evened-out lines),
# read from the PNG's IHDR chunk; every bad flag, a missing RUN and a RUN without a model exit 2
# with one stderr line and write nothing; every --extent out of range gets the same message.
# The pixels come from a seed printed first (CUVAE_TEST_SEED replays it).
# usage: cli_pictures.sh <cuvae-binary> <repo-root>
set -u
if [ $# -ne 2 ]; then
  echo "usage: $0 <cuvae-binary> <repo-root>"
  exit 1
fi
CUVAE=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib/cli.sh"
cli_setup pictures "$CUVAE"

# ---- a tiny dataset ------------------------------------------------------------------------
source "$(dirname "${BASH_SOURCE[0]}")/lib/idx.sh"
cli_seed
idx_seed "$SEED"
DATA=$TMP/data
N_TEST=30
make_mnist_dir "$DATA" 64 $N_TEST

RUN=$TMP/run
if ! "$CUVAE" train --device cpu --data "$DATA" --limit 64 --batch-size 32 --epochs 1 \
  --out "$RUN" >"$TMP/train.log" 2>&1; then
  cat "$TMP/train.log"
  echo "FAIL: cuvae train on the synthetic dataset"
  exit 1
fi
[ -s "$RUN/model.safetensors" ] || { echo "FAIL: no $RUN/model.safetensors"; exit 1; }
rm -f "$RUN"/*.png  # training may write pictures of its own; the commands must make theirs

# ---- the layout of host/eval/pictures.h (pixels) ------------------------------------------------
CELL=28 AXES_LEFT=140 AXES_RIGHT=48 AXES_TOP=48 AXES_BOTTOM=72
SCATTER_PLOT=560 SCATTER_RIGHT=120
PAD=16 TITLE_BAND=28 ROW_LABEL=104 TILE=56 GAP=2 LINE_GAP=12 PER_LINE=20
grid_size() { echo "$((AXES_LEFT + $1 * CELL + AXES_RIGHT)) $((AXES_TOP + $1 * CELL + AXES_BOTTOM))"; }
scatter_size() { echo "$((AXES_LEFT + SCATTER_PLOT + SCATTER_RIGHT)) $((AXES_TOP + SCATTER_PLOT + AXES_BOTTOM))"; }
# A row of N tiles wraps onto LINES = ceil(N / 20) lines of PER = ceil(N / LINES) tiles.
wrap() {
  LINES=$(( ($1 + PER_LINE - 1) / PER_LINE ))
  PER=$(( ($1 + LINES - 1) / LINES ))
}
recon_size() {  # each line of originals above its reconstructions, LINE_GAP between lines
  wrap "$1"
  echo "$((2 * PAD + ROW_LABEL + PER * TILE + (PER - 1) * GAP))" \
    "$((2 * PAD + TITLE_BAND + LINES * (2 * TILE + GAP) + (LINES - 1) * LINE_GAP))"
}
sample_size() {  # sample_size ROWS COLS: each row wraps onto LINES lines
  wrap "$2"
  local lines=$(($1 * LINES))
  echo "$((2 * PAD + PER * TILE + (PER - 1) * GAP)) $((2 * PAD + TITLE_BAND + lines * TILE + (lines - 1) * GAP))"
}

# "WIDTH HEIGHT" from the IHDR chunk (bytes 16-23, big-endian), or nothing if not a PNG.
png_size() {
  local sig
  sig=$(od -An -tx1 -N8 "$1" | tr -d ' \n')
  [ "$sig" = 89504e470d0a1a0a ] || return 1
  od -An -tu1 -j16 -N8 "$1" |
    awk '{ print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4, $5 * 16777216 + $6 * 65536 + $7 * 256 + $8 }'
}

# expect_picture FILE "W H" ARGS...: the command exits 0, names FILE on stdout, and FILE is a
# PNG of that size.
expect_picture() {
  local file=$1 size=$2
  shift 2
  rm -f "$file"
  "$CUVAE" "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$? got
  if [ "$rc" -ne 0 ]; then
    fail "cuvae $* -> exit $rc:"
    cat "$TMP/err"
    return
  fi
  if [ ! -s "$file" ]; then
    fail "cuvae $* did not write $file"
    return
  fi
  grep -qF "wrote $file" "$TMP/out" || fail "cuvae $* did not print 'wrote $file'"
  got=$(png_size "$file") || { fail "$file is not a PNG"; return; }
  if [ "$got" != "$size" ]; then
    fail "cuvae $*: $file is $got, expected $size"
  else
    echo "ok: cuvae $* -> $file ($got)"
  fi
}

expect_picture "$RUN/grid_15.png" "$(grid_size 15)" grid "$RUN" --device cpu
expect_picture "$TMP/g.png" "$(grid_size 4)" grid "$RUN" --device cpu --n 4 --extent 2.5 \
  --dims 1,0 --out "$TMP/g.png"
expect_picture "$RUN/grid_7.png" "$(grid_size 7)" grid "$RUN/model.safetensors" --device cpu --n 7
expect_picture "$RUN/scatter.png" "$(scatter_size)" scatter "$RUN" --device cpu --data "$DATA"
expect_picture "$TMP/s.png" "$(scatter_size)" scatter "$RUN" --device cpu --data "$DATA" \
  --limit 10 --out "$TMP/s.png"
expect_picture "$TMP/s2.png" "$(scatter_size)" scatter "$RUN" --device cpu --data "$DATA" \
  --dims 1,0 --split train --out "$TMP/s2.png"
grep -qF "z_mean of 64 train images" "$TMP/out" || fail "scatter --split train: no '64 train images'"
cmp -s "$TMP/s.png" "$TMP/s2.png" && fail "scatter --dims 1,0 --split train drew the same picture"
expect_picture "$RUN/reconstructions.png" "$(recon_size 10)" reconstruct "$RUN" --device cpu \
  --data "$DATA"
expect_picture "$TMP/r.png" "$(recon_size 3)" reconstruct "$RUN" --device cpu --data "$DATA" \
  --count 3 --out "$TMP/r.png"
expect_picture "$TMP/r25.png" "$(recon_size 25)" reconstruct "$RUN" --device cpu --data "$DATA" \
  --count 25 --out "$TMP/r25.png"
expect_picture "$TMP/r40.png" "$(recon_size 40)" reconstruct "$RUN" --device cpu --data "$DATA" \
  --split train --count 40 --out "$TMP/r40.png"
grep -qF "40 train images" "$TMP/out" || fail "reconstruct --split train: no '40 train images'"
expect_picture "$RUN/samples.png" "$(sample_size 8 8)" sample "$RUN" --device cpu
expect_picture "$TMP/p.png" "$(sample_size 2 5)" sample "$RUN" --device cpu --rows 2 --cols 5 \
  --seed 7 --out "$TMP/p.png"
expect_picture "$TMP/p100.png" "$(sample_size 1 100)" sample "$RUN" --device cpu --rows 1 \
  --cols 100 --out "$TMP/p100.png"
expect_picture "$TMP/p23.png" "$(sample_size 3 23)" sample "$RUN" --device cpu --rows 3 \
  --cols 23 --out "$TMP/p23.png"
# The same seed gives the same samples.
"$CUVAE" sample "$RUN" --device cpu --rows 2 --cols 5 --seed 7 --out "$TMP/p2.png" >/dev/null 2>&1
cmp -s "$TMP/p.png" "$TMP/p2.png" || fail "sample --seed 7 twice gave different files"

# ---- errors --------------------------------------------------------------------------------
# expect_error <word that must appear> ARGS...: exit 2, one stderr line with the word and the
# "cuvae: error: " prefix, no crash, and no picture written into $TMP/bad.
mkdir -p "$TMP/bad" "$TMP/empty-run"
expect_error() {
  local word=$1
  shift
  "$CUVAE" "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$? lines why=""
  lines=$(wc -l <"$TMP/err")
  [ "$rc" -eq 2 ] || why="exit $rc, expected 2"
  [ "$lines" -eq 1 ] || why="${why:+$why; }$lines stderr lines, expected 1"
  grep -qF -- "$word" "$TMP/err" || why="${why:+$why; }stderr does not mention '$word'"
  head -n 1 "$TMP/err" | grep -q '^cuvae: error: ' || why="${why:+$why; }no 'cuvae: error: ' prefix"
  if grep -qiE 'terminate called|core dumped|segmentation fault|aborted' "$TMP/err" "$TMP/out"; then
    why="${why:+$why; }crashed"
  fi
  [ -z "$(ls -A "$TMP/bad")" ] || why="${why:+$why; }wrote $(ls -A "$TMP/bad")"
  if [ -n "$why" ]; then
    fail "cuvae $*: $why; stderr:"
    cat "$TMP/err"
  else
    echo "ok: cuvae $* -> $(cat "$TMP/err")"
  fi
}
out=(--device cpu --out "$TMP/bad/x.png")
expect_error --n grid "$RUN" "${out[@]}" --n 0
expect_error --n grid "$RUN" "${out[@]}" --n 101
expect_error --n grid "$RUN" "${out[@]}" --n 3x
expect_error --extent grid "$RUN" "${out[@]}" --extent -1
expect_error --extent grid "$RUN" "${out[@]}" --extent 0
expect_error --extent grid "$RUN" "${out[@]}" --extent nan
expect_error --extent grid "$RUN" "${out[@]}" --extent inf
expect_error --dims grid "$RUN" "${out[@]}" --dims 0,0
expect_error --dims grid "$RUN" "${out[@]}" --dims 0,2
expect_error --dims grid "$RUN" "${out[@]}" --dims 0
expect_error --dims grid "$RUN" "${out[@]}" --dims a,b
expect_error --dims grid "$RUN" "${out[@]}" --dims 0,1,2
expect_error --device grid "$RUN" --out "$TMP/bad/x.png" --device tpu
expect_error RUN grid --device cpu
expect_error RUN scatter --device cpu --data "$DATA"
expect_error "$TMP/empty-run" grid "$TMP/empty-run" "${out[@]}"
expect_error "$TMP/empty-run" sample "$TMP/empty-run" "${out[@]}"
expect_error "$TMP/no-such-run" reconstruct "$TMP/no-such-run" "${out[@]}" --data "$DATA"
expect_error "$TMP/train.log" grid "$TMP/train.log" "${out[@]}"
expect_error "$TMP/no-such-folder" grid "$RUN" --device cpu --out "$TMP/no-such-folder/g.png"
expect_error "--out" grid "$RUN" --device cpu --out "$TMP/bad"
expect_error --limit scatter "$RUN" "${out[@]}" --data "$DATA" --limit -1
expect_error --dims scatter "$RUN" "${out[@]}" --data "$DATA" --dims 1,1
expect_error --dims scatter "$RUN" "${out[@]}" --data "$DATA" --dims 0,2
expect_error --dims scatter "$RUN" "${out[@]}" --data "$DATA" --dims 0
expect_error --dims scatter "$RUN" "${out[@]}" --data "$DATA" --dims x,1
expect_error --split scatter "$RUN" "${out[@]}" --data "$DATA" --split valid
expect_error --split reconstruct "$RUN" "${out[@]}" --data "$DATA" --split ""
expect_error "$TMP/no-data" scatter "$RUN" "${out[@]}" --data "$TMP/no-data"
expect_error --count reconstruct "$RUN" "${out[@]}" --data "$DATA" --count 0
expect_error --count reconstruct "$RUN" "${out[@]}" --data "$DATA" --count $((N_TEST + 1))
expect_error --rows sample "$RUN" "${out[@]}" --rows 0
expect_error --cols sample "$RUN" "${out[@]}" --cols 1000
expect_error --seed sample "$RUN" "${out[@]}" --seed -1
expect_error no-such-flag sample "$RUN" "${out[@]}" --no-such-flag
expect_error "unexpected argument" sample "$RUN" "$RUN" "${out[@]}"
expect_error "--n" grid "$RUN" "${out[@]}" --n

# Every --extent out of range, however far, gets one message naming the range.
for e in 0 1e-7 -1 2e6; do
  "$CUVAE" grid "$RUN" "${out[@]}" --extent "$e" 2>&1 | sed "s/ $e / X /" >"$TMP/extent_$e"
done
if cmp -s "$TMP/extent_0" "$TMP/extent_1e-7" && cmp -s "$TMP/extent_0" "$TMP/extent_-1" &&
  cmp -s "$TMP/extent_0" "$TMP/extent_2e6"; then
  echo "ok: --extent 0, 1e-7, -1, 2e6 -> $(cat "$TMP/extent_0")"
else
  fail "--extent out of range: different messages"
  cat "$TMP"/extent_*
fi

# ---- the device policy every command shares ------------------------------------------------
# Without a usable GPU: an explicit --device gpu is an error (exit 2, one line, nothing written),
# the default falls back to the fast CPU engine with one note. (With a GPU both run on it.)
if "$CUVAE" --version 2>/dev/null | grep -q '^GPU: none usable'; then
  out=(--out "$TMP/bad/x.png")
  expect_error "--device gpu: no usable CUDA device" grid "$RUN" --device gpu "${out[@]}"
  expect_error "--device gpu: no usable CUDA device" sample "$RUN" --device gpu "${out[@]}"
  expect_error "--device gpu: no usable CUDA device" eval "$RUN" --data "$DATA" --device gpu \
    --iw-samples 0
  expect_picture "$TMP/d.png" "$(grid_size 3)" grid "$RUN" --n 3 --out "$TMP/d.png"
  if grep -q '^cuvae: no usable GPU (.*); running on the CPU (--device cpu)$' "$TMP/out"; then
    echo "ok: grid without --device falls back to the CPU with its note"
  else
    fail "grid without --device: no fallback note on stdout"
  fi
  if "$CUVAE" eval "$RUN" --data "$DATA" --iw-samples 0 >"$TMP/out" 2>"$TMP/err" &&
    grep -q '^cuvae: no usable GPU (.*); running on the CPU (--device cpu)$' "$TMP/err" &&
    grep -q 'device cpu$' "$TMP/out"; then
    echo "ok: eval without --device falls back to the CPU, its note on stderr"
  else
    fail "eval without --device: no fallback to the CPU with its note"
    cat "$TMP/err"
  fi
else
  echo "skip: the no-GPU device policy (this machine has a GPU)"
fi

# ---- help ----------------------------------------------------------------------------------
for cmd in "grid --extent" "scatter --limit" "scatter --dims" "scatter --split" \
  "reconstruct --count" "reconstruct --split" "reconstruct wrap" "sample --seed" "sample wrap"; do
  set -- $cmd
  if "$CUVAE" "$1" --help >"$TMP/out" 2>&1 && grep -q -- "$2" "$TMP/out" && grep -q RUN "$TMP/out"
  then
    echo "ok: cuvae $1 --help"
  else
    fail "cuvae $1 --help"
  fi
done

if [ "$fails" -ne 0 ]; then
  echo "cli_pictures: $fails failed"
  exit 1
fi
echo "cli_pictures: all passed"
