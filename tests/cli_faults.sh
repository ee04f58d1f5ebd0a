#!/usr/bin/env bash
# Faults during `cuvae train` (CPU, a small synthetic IDX set), end to end:
#   1. SIGINT and SIGTERM at a random moment of the second epoch: exit 130 / 143, a message saying
#      how to resume, and a checkpoint from which `--resume` ends bit-identical to a straight run.
#   2. kill -9 at random moments, again and again, each time resuming from what is on disk:
#      every resume loads the checkpoint, the end result is bit-identical to a straight run,
#      and no temporary file is left behind.
#   3. A state whose weights overflow the forward pass: exit 3, one line naming the step and
#      a tensor, and the checkpoint on disk untouched.
#   4. A checkpoint write that fails (the file size limit stands in for a full disk): exit 2,
#      one line naming the file and the reason, the previous checkpoint untouched and
#      resumable; an unwritable --out is refused before training.
# The random delays come from a seed printed first (CUVAE_TEST_SEED replays it).
# usage: cli_faults.sh <cuvae-binary> <python3>
set -u
set -m  # background jobs get SIGINT like a terminal's (a script's would ignore it)
if [ $# -ne 2 ]; then
  echo "usage: $0 <cuvae-binary> <python3>"
  exit 1
fi
CUVAE=$1
PYTHON=$2
source "$(dirname "${BASH_SOURCE[0]}")/lib/cli.sh"
cli_setup faults "$CUVAE"
source "$(dirname "${BASH_SOURCE[0]}")/lib/idx.sh"

SEED=${CUVAE_TEST_SEED:-$((RANDOM * 32768 + RANDOM))}
echo "seed $SEED"
RANDOM=$((SEED % 32768))
DATA=$TMP/data
make_mnist_dir "$DATA" 300 20  # batch 16: 18 full batches and one of 12, 19 steps an epoch
COMMON=(--device cpu --data "$DATA" --batch-size 16 --test-limit 20 --seed "$SEED")

"$CUVAE" train "${COMMON[@]}" --epochs 2 --out "$TMP/straight" >"$TMP/straight.out" 2>&1 ||
  { cat "$TMP/straight.out"; fail "the straight run failed"; exit 1; }
# start NAME ARGS...: cuvae train in the background (pid in $PID), output in $TMP/NAME.*;
# returns once training is about to start (the device line is printed) or the process ended.
start() {
  local name=$1
  shift
  "$CUVAE" train "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  PID=$!
  while kill -0 "$PID" 2>/dev/null && ! grep -qs '^cuvae: device' "$TMP/$name.out"; do
    sleep 0.05
  done
}
# wait_epoch1 NAME: waits until the run's first epoch line is printed (or the process ended)
# and sets EPOCH1_TENTHS to that epoch's time (the "(1.4 s)" ending the line) in tenths.
wait_epoch1() {
  while kill -0 "$PID" 2>/dev/null && ! grep -qs '^epoch 1/' "$TMP/$1.out"; do
    sleep 0.05
  done
  EPOCH1_TENTHS=$(grep -m1 '^epoch 1/' "$TMP/$1.out" | grep -oE '\([0-9.]+ s\)$' | tr -d '()s ' |
    awk '{ printf "%d", $1 * 10 }')
}
# A random delay of 0 to $1 tenths of a second.
pause() { local t=$((RANDOM % ($1 + 1))); sleep "$((t / 10)).$((t % 10))"; }

same_model() {  # same_model RUN WHAT [STRAIGHT]
  local straight=${3:-$TMP/straight}
  if cmp -s "$straight/model.safetensors" "$1/model.safetensors" &&
     cmp -s "$straight/train_state.safetensors" "$1/train_state.safetensors"; then
    echo "ok: $2: model and state bit-identical to the straight run"
  else
    fail "$2: the resumed run differs from the straight run"
  fi
}

# ---- 1. SIGINT and SIGTERM ------------------------------------------------------------------
for sig in INT TERM; do
  want=$((128 + $(kill -l "$sig")))
  run=$TMP/sig$sig
  start "sig$sig" "${COMMON[@]}" --epochs 2 --out "$run"
  # Inside the second epoch whether the machine is fast or busy: it takes about as long as
  # the first, and the signal comes within half of that (never in the final pictures).
  wait_epoch1 "sig$sig"
  pause $((${EPOCH1_TENTHS:-0} / 2))
  kill -s "$sig" "$PID"
  wait "$PID"
  rc=$?
  if [ "$rc" -ne "$want" ] || ! grep -q "resume with: cuvae train --resume $run" "$TMP/sig$sig.err"; then
    cat "$TMP/sig$sig.out" "$TMP/sig$sig.err"
    fail "SIG$sig: exit $rc (want $want) or no resume hint"
    continue
  fi
  echo "ok: SIG$sig -> exit $rc: $(grep 'stopped' "$TMP/sig$sig.err")"
  "$CUVAE" train --resume "$run" --device cpu >"$TMP/sig$sig.resume" 2>&1 ||
    { cat "$TMP/sig$sig.resume"; fail "SIG$sig: the resume failed"; continue; }
  same_model "$run" "SIG$sig then --resume"
done

# ---- 2. kill -9, repeatedly -----------------------------------------------------------------
# Short epochs (96 images: 6 steps), so that the kills land in steps, in checkpoint writes
# and in the pictures alike; each round resumes from whatever the last one left.
make_mnist_dir "$TMP/data96" 96 20
KILL=(--device cpu --data "$TMP/data96" --batch-size 16 --test-limit 20 --seed "$SEED" --epochs 4)
"$CUVAE" train "${KILL[@]}" --out "$TMP/straight96" >"$TMP/straight96.out" 2>&1 ||
  { cat "$TMP/straight96.out"; fail "the straight 96-image run failed"; }
run=$TMP/killed
kills=0
finished=0
broken=0
resume() {  # resume NAME: continue the killed run, or start it when nothing was saved yet
  if [ -f "$run/train_state.safetensors" ]; then
    start "$1" --resume "$run" --device cpu
  else
    start "$1" "${KILL[@]}" --out "$run"
  fi
}
for round in 1 2 3 4 5 6 7 8; do
  resume "kill$round"
  pause 40
  kill -9 "$PID" 2>/dev/null && kills=$((kills + 1))
  wait "$PID"
  rc=$?
  case $rc in
    137) ;;  # killed
    0) finished=1; break ;;
    # Killed while the final pictures were drawn: the run had finished, nothing to resume.
    2) if grep -q "has finished its 4 epochs" "$TMP/kill$round.err"; then finished=1; break; fi
       cat "$TMP/kill$round.out" "$TMP/kill$round.err"
       fail "round $round: exit 2 after the previous kill (the checkpoint did not load?)"
       broken=1
       break ;;
    *) cat "$TMP/kill$round.out" "$TMP/kill$round.err"
       fail "round $round: exit $rc after the previous kill (the checkpoint did not load?)"
       broken=1
       break ;;
  esac
done
if [ "$finished" -eq 0 ] && [ "$broken" -eq 0 ]; then
  resume final
  wait "$PID"
  rc=$?
  # A kill while the final pictures were drawn leaves a finished run: nothing to resume.
  if [ "$rc" -ne 0 ] && ! grep -q "has finished its 4 epochs" "$TMP/final.err"; then
    cat "$TMP/final.out" "$TMP/final.err"
    fail "the resume after $kills kills failed (exit $rc)"
  fi
fi
echo "ok: $kills kill -9 rounds, each followed by a resume that loaded the checkpoint"
same_model "$run" "kill -9 x$kills then --resume" "$TMP/straight96"
if ls "$run" | grep -q '\.tmp\.'; then fail "temporary files left in the run folder: $(ls "$run")"; fi

# ---- 3. a diverging state -------------------------------------------------------------------
run=$TMP/nan
cp -r "$TMP/straight" "$run"
# encoder.conv1.weight = 3e38 everywhere: the first layer's output overflows to infinity at the
# next step for any image with a 3x3 patch summing above 1.2 (the synthetic pixels average 0.5),
# whatever the trained state, and an infinity reaches the gradients for certain.
"$PYTHON" - "$run/train_state.safetensors" <<'PY' || fail "could not craft the diverging state"
import json, struct, sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
a, b = header["encoder.conv1.weight"]["data_offsets"]
data[8 + n + a:8 + n + b] = struct.pack("<f", 3e38) * ((b - a) // 4)
open(path, "wb").write(data)
PY
cp "$run/train_state.safetensors" "$TMP/nan_state.before"
"$CUVAE" train --resume "$run" --device cpu --epochs 3 >"$TMP/nan.out" 2>"$TMP/nan.err"
rc=$?
# Which tensor is named first depends on how the infinities travel (a ReLU turns the NaN of
# inf - inf into 0, so the loss can stay finite and a gradient be the first bad tensor); the
# naming itself is tested at the library level (test_faults.cpp). Here: some tensor is named.
if [ "$rc" -ne 3 ] || [ "$(wc -l <"$TMP/nan.err")" -ne 1 ] ||
   ! grep -q "diverged at step 39 (epoch 3)" "$TMP/nan.err" ||
   ! grep -Eq "(encoder|decoder)\.(conv1|conv2|fc|mu|logvar|deconv1|deconv2|out)" "$TMP/nan.err" ||
   ! grep -q "after epoch 2" "$TMP/nan.err"; then
  cat "$TMP/nan.err"
  fail "diverging state: exit $rc (want 3, one line naming step 39 and a tensor)"
else
  echo "ok: diverging state -> exit 3: $(cat "$TMP/nan.err")"
fi
cmp -s "$run/train_state.safetensors" "$TMP/nan_state.before" ||
  fail "the diverged run changed the last good checkpoint"

# ---- 4. a failing checkpoint write; an unwritable --out ---------------------------------------
run=$TMP/full
cp -r "$TMP/straight" "$run"
cp "$run/train_state.safetensors" "$TMP/full_state.before"
# Files may not grow past 1 MiB: the 1.6 MB training state cannot be written. SIGXFSZ is
# ignored so that the write fails with EFBIG, as it does with ENOSPC on a full disk.
(trap '' XFSZ; ulimit -f 1024; exec "$CUVAE" train --resume "$run" --device cpu --epochs 3) \
  >"$TMP/full.out" 2>"$TMP/full.err"
rc=$?
if [ "$rc" -ne 2 ] || [ "$(wc -l <"$TMP/full.err")" -ne 1 ] ||
   ! grep -q "train_state.safetensors" "$TMP/full.err"; then
  cat "$TMP/full.err"
  fail "failing checkpoint write: exit $rc (want 2, one line naming train_state.safetensors)"
else
  echo "ok: failing checkpoint write -> exit 2: $(cat "$TMP/full.err")"
fi
cmp -s "$run/train_state.safetensors" "$TMP/full_state.before" ||
  fail "the failed write damaged the previous checkpoint"
if ls "$run" | grep -q '\.tmp\.'; then fail "the failed write left a temporary file"; fi
"$CUVAE" train --resume "$run" --device cpu --epochs 3 >"$TMP/full.resume" 2>&1 ||
  { cat "$TMP/full.resume"; fail "resuming after the failed write"; }

: >"$TMP/a_file"
"$CUVAE" train "${COMMON[@]}" --epochs 1 --out "$TMP/a_file/run" >"$TMP/out.out" 2>"$TMP/out.err"
rc=$?
if [ "$rc" -ne 2 ] || ! grep -q -- "--out $TMP/a_file/run" "$TMP/out.err"; then
  cat "$TMP/out.err"
  fail "an --out below a file: exit $rc (want 2 naming --out)"
else
  echo "ok: unwritable --out -> $(cat "$TMP/out.err")"
fi

if [ "$fails" -ne 0 ]; then
  echo "cli_faults: $fails failed (seed $SEED)"
  exit 1
fi
echo "cli_faults: all passed"
