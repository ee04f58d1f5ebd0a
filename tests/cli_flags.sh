#!/usr/bin/env bash
# End-to-end flag validation of `cuvae train` and the other subcommands: every nonsense value
# (zero, negative, huge, NaN, infinity, garbage, unknown words) exits 2 with one line on
# stderr naming the flag, before any data is read or any file written.
# usage: cli_flags.sh <cuvae-binary>
set -u
CUVAE=$(realpath "$1")
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cuvae_flags.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1  # a binary that took "-" for a file name would write it here
fails=0

expect_error() {  # expect_error <word that must appear> <args...>
  local word=$1
  shift
  "$CUVAE" "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$? lines
  lines=$(wc -l <"$TMP/err")
  if [ "$rc" -ne 2 ] || [ "$lines" -ne 1 ] || ! grep -q -- "$word" "$TMP/err"; then
    echo "FAIL: cuvae $* -> exit $rc, $lines stderr lines (want 2, 1 line with '$word'):"
    cat "$TMP/err"
    fails=$((fails + 1))
  else
    echo "ok: cuvae $* -> $(cat "$TMP/err")"
  fi
}

run=(train --device cpu --data "$TMP/nodata" --out "$TMP/run")
expect_error --batch-size "${run[@]}" --batch-size 0
expect_error --batch-size "${run[@]}" --batch-size -5
expect_error --batch-size "${run[@]}" --batch-size 12abc
expect_error --epochs "${run[@]}" --epochs 0
expect_error --epochs "${run[@]}" --epochs 100000000
expect_error --lr "${run[@]}" --lr -0.001
expect_error --lr "${run[@]}" --lr 0
expect_error --lr "${run[@]}" --lr nan
expect_error --lr "${run[@]}" --lr inf
expect_error --latent-dim "${run[@]}" --latent-dim 0
expect_error --latent-dim "${run[@]}" --latent-dim 1000000
expect_error --beta "${run[@]}" --beta -1
expect_error --beta "${run[@]}" --beta NaN
expect_error --beta-warmup "${run[@]}" --beta-warmup -1
expect_error --beta-warmup "${run[@]}" --beta-warmup 1.5
expect_error --beta-warmup "${run[@]}" --beta-warmup 100001
expect_error --seed "${run[@]}" --seed -1
expect_error --limit "${run[@]}" --limit -3
expect_error "--device: expected 'gpu', 'cpu' or 'cpu-ref', got 'tpu'" "${run[@]}" --device tpu
expect_error "--device: expected 'gpu', 'cpu' or 'cpu-ref', got 'CPU'" "${run[@]}" --device CPU
# cpu-ref is a device: the error is then about the data folder, not the flag.
expect_error "$TMP/nodata" train --device cpu-ref --data "$TMP/nodata" --out "$TMP/run"
expect_error --profile-steps "${run[@]}" --profile-steps 5
expect_error --profile-steps "${run[@]}" --profile-steps 5:2
expect_error --profile-steps "${run[@]}" --profile-steps a:b
expect_error --profile-steps "${run[@]}" --profile-steps 0:3
expect_error --lr "${run[@]}" --lr 1e999
expect_error --beta "${run[@]}" --beta 2e6
expect_error --batch-size "${run[@]}" --batch-size 1e3
expect_error --batch-size "${run[@]}" --batch-size 99999999999999999999
expect_error --limit "${run[@]}" --limit nan
expect_error --test-limit "${run[@]}" --test-limit -1
expect_error --snapshot-every "${run[@]}" --snapshot-every -2
expect_error --seed "${run[@]}" --seed 18446744073709551616
expect_error --algo "${run[@]}" --algo quick
expect_error "no-such-flag" "${run[@]}" --no-such-flag
expect_error "--bf16: cannot be combined with --tf32" "${run[@]}" --bf16 --tf32
expect_error "--layout: expected 'nchw', 'nhwc' or 'auto', got 'NHWC'" "${run[@]}" --layout NHWC
expect_error "--layout: missing its value" "${run[@]}" --layout
expect_error "--train-split: expected 'train' or 'train+test', got 'test'" "${run[@]}" --train-split test
expect_error "--train-split: expected 'train' or 'train+test', got 'train+test '" "${run[@]}" --train-split 'train+test '
expect_error "--train-split: missing its value" "${run[@]}" --train-split
# The other subcommands' numbers, before any file is read.
bench=(bench --device cpu --data "$TMP/nodata")
expect_error --epochs "${bench[@]}" --epochs 0
expect_error "--bf16: cannot be combined with --tf32" "${bench[@]}" --tf32 --bf16
expect_error "--bf16: cannot be combined with --no-fusion" "${bench[@]}" --bf16 --no-fusion
expect_error "--layout: expected 'nchw', 'nhwc' or 'auto', got 'chw'" "${bench[@]}" --layout chw
expect_error --warmup-epochs "${bench[@]}" --warmup-epochs -1
expect_error --batch-size "${bench[@]}" --batch-size 0
expect_error --latent-dim "${bench[@]}" --latent-dim 0
expect_error --lr "${bench[@]}" --lr NaN
expect_error --device "${bench[@]}" --device fpga
expect_error --n grid "$TMP/norun" --n 0
expect_error --n grid "$TMP/norun" --n 1000000
expect_error --extent grid "$TMP/norun" --extent -1
expect_error --extent grid "$TMP/norun" --extent inf
expect_error --dims grid "$TMP/norun" --dims 0,x
expect_error --rows sample "$TMP/norun" --rows 0
expect_error --cols sample "$TMP/norun" --cols -4
expect_error --seed sample "$TMP/norun" --seed abc
expect_error --count reconstruct "$TMP/norun" --count 0
expect_error --limit scatter "$TMP/norun" --limit -1
expect_error --iw-samples eval "$TMP/norun" --iw-samples -1
expect_error --iw-samples eval "$TMP/norun" --iw-samples 1e9
expect_error --limit eval "$TMP/norun" --limit NaN
expect_error --split eval "$TMP/norun" --split validation
expect_error --limit encode "$TMP/norun" --csv "$TMP/z.csv" --limit -7
expect_error --steps interpolate "$TMP/norun" --out "$TMP/i.png" --steps 1
expect_error --pairs interpolate "$TMP/norun" --out "$TMP/i.png" --pairs 0
expect_error --batch-size parity-dump --out "$TMP/p.safetensors" --batch-size 0
expect_error --beta parity-dump --out "$TMP/p.safetensors" --beta -0.5
expect_error "unknown command" fly
expect_error "--epochs" "${run[@]}" --epochs
# A real setting that float stores as 0 or a subnormal is refused: the run could not resume it.
expect_error "the smallest normal float" "${run[@]}" --lr 1e-50
expect_error "the smallest normal float" "${run[@]}" --beta 1e-40
expect_error "the smallest normal float" "${bench[@]}" --beta 1e-45
expect_error "the smallest normal float" parity-dump --out "$TMP/p.safetensors" --beta 1e-39
# A PNG or .safetensors output is a file: "-" (stdout, for the text results) is refused.
expect_error "--out -: standard output takes only text results" interpolate "$TMP/norun" --out -
expect_error "--dump-batch -: standard output takes only text results" eval "$TMP/norun" \
  --dump-batch -
expect_error "--out -: standard output takes only text results" parity-dump --out -
# The unknown command's message names every command of `cuvae --help`.
"$CUVAE" fly 2>"$TMP/err"
for cmd in $("$CUVAE" --help | awk '/^commands:/ {on = 1; next} on && /^$/ {on = 0} on && /^  [a-z]/ {print $1}'); do
  grep -qE "[ (]$cmd[,)]" "$TMP/err" || { echo "FAIL: 'cuvae fly' does not list $cmd"; fails=$((fails + 1)); }
done
# Each --help states a default once (cxxopts appends "(default: X)" to an option with one).
for cmd in train eval encode anomaly classify grid scatter reconstruct sample interpolate curves \
  bench parity-dump; do
  # One entry per option (its wrapped lines joined), from the first option to the blank line.
  twice=$("$CUVAE" $cmd --help | awk 'done {next}
    /^  +-/ {if (n > 1) print entry; entry = $0; n = 0; on = 1}
    !on {next} /^$/ {done = 1; next} !/^  +-/ {entry = entry " " $0}
    {n += gsub(/[Dd]efault/, "&")} END {if (n > 1) print entry}')
  [ -z "$twice" ] || { echo "FAIL: cuvae $cmd --help states a default twice: $twice"; fails=$((fails + 1)); }
done
# A missing data folder is reported by name; nothing is created in the run folder.
expect_error "$TMP/nodata" "${run[@]}"
if [ -e "$TMP/run" ]; then
  echo "FAIL: the run folder was created although the data folder is missing"
  fails=$((fails + 1))
fi
# Help and version succeed.
"$CUVAE" train --help >"$TMP/out" 2>&1 && grep -q -- "--batch-size" "$TMP/out" || {
  echo "FAIL: train --help"; fails=$((fails + 1)); }
"$CUVAE" --version >/dev/null || { echo "FAIL: --version"; fails=$((fails + 1)); }

if [ "$fails" -ne 0 ]; then
  echo "cli_flags: $fails failed"
  exit 1
fi
echo "cli_flags: all passed"
