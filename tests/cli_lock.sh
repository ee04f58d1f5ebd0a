#!/usr/bin/env bash
# One training per run folder, and what the readers of a run see, end to end (CPU, synthetic
# IDX files):
#   1. Two `cuvae train --out R` started together (seeds 1 and 2), several times: exactly one
#      exits 0; the other is refused with exit 2 and one line naming R (and the owner's pid
#      when the first was already running); R is wholly the winner's: config.json and the
#      training state have its seed (a resume with --seed of the winner is accepted, the
#      loser's refused) and metrics.csv has one run's rows.
#   2. While a training runs in R, `--resume R` and `--out R --overwrite` are refused naming the
#      owner's pid, and the running training ends normally.
#   3. Two runs without --out started together: two different folders under runs/, each one
#      whole run of its own seed.
#   4. `cuvae eval` of a run whose model.safetensors is replaced while it runs says so; an eval
#      of an unchanged run does not.
#   5. Stale temporaries: a `z.csv.tmp.<pid>` of a dead process is removed by the next
#      `encode --csv z.csv`; that of a live process is kept.
# The pixels come from a seed printed first (CUVAE_TEST_SEED replays it).
# usage: cli_lock.sh <cuvae-binary>
set -u
if [ $# -ne 1 ]; then
  echo "usage: $0 <cuvae-binary>"
  exit 1
fi
CUVAE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")  # the tests below change folder
source "$(dirname "${BASH_SOURCE[0]}")/lib/cli.sh"
cli_setup lock "$CUVAE"
source "$(dirname "${BASH_SOURCE[0]}")/lib/idx.sh"
cli_seed
idx_seed "$SEED"

DATA=$TMP/data
make_mnist_dir "$DATA" 1000 50
COMMON=(--device cpu --data "$DATA" --batch-size 16 --test-limit 50)

# config_seed RUN: the seed config.json records.
config_seed() { "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["seed"])' "$1/config.json"; }
# wait_line FILE PID PATTERN: until FILE has a line matching PATTERN or PID has ended.
wait_line() {
  while kill -0 "$2" 2>/dev/null && ! grep -qs "$3" "$1"; do sleep 0.02; done
}

# ---- 1. two trainings in one --out, started together -----------------------------------------
for round in 1 2 3; do
  R=$TMP/shared$round
  "$CUVAE" train "${COMMON[@]}" --epochs 2 --seed 1 --out "$R" >"$TMP/a.out" 2>"$TMP/a.err" &
  pa=$!
  "$CUVAE" train "${COMMON[@]}" --epochs 2 --seed 2 --out "$R" >"$TMP/b.out" 2>"$TMP/b.err" &
  pb=$!
  wait "$pa"
  ra=$?
  wait "$pb"
  rb=$?
  if [ "$ra" -eq 0 ] && [ "$rb" -eq 2 ]; then
    winner=1 loser=2 lpid=$pa err=$TMP/b.err
  elif [ "$ra" -eq 2 ] && [ "$rb" -eq 0 ]; then
    winner=2 loser=1 lpid=$pb err=$TMP/a.err
  else
    cat "$TMP/a.err" "$TMP/b.err"
    fail "round $round: exits $ra and $rb (want one 0 and one 2)"
    continue
  fi
  if [ "$(wc -l <"$err")" -ne 1 ] || ! grep -q -- "--out $R: " "$err"; then
    cat "$err"
    fail "round $round: the refusal is not one line naming --out $R"
  else
    echo "ok: round $round: seed $winner owns the folder; seed $loser: $(cat "$err")"
  fi
  [ "$(config_seed "$R")" = "$winner" ] || fail "round $round: config.json is not the winner's"
  rows=$(($(wc -l <"$R/metrics.csv") - 1))
  [ "$rows" -eq 2 ] || fail "round $round: metrics.csv has $rows rows (want the winner's 2)"
  if "$CUVAE" train --resume "$R" --seed "$loser" --epochs 3 >/dev/null 2>&1; then
    fail "round $round: the state accepted the loser's seed"
  fi
  "$CUVAE" train --resume "$R" --seed "$winner" --epochs 3 >"$TMP/res.out" 2>&1 ||
    { cat "$TMP/res.out"; fail "round $round: the state does not resume with the winner's seed"; }
done

# ---- 2. --resume and --overwrite while a training runs -----------------------------------------
R=$TMP/busy
"$CUVAE" train "${COMMON[@]}" --epochs 1 --out "$R" >/dev/null 2>&1 || fail "the first run failed"
"$CUVAE" train --resume "$R" --device cpu --epochs 100000 >"$TMP/long.out" 2>"$TMP/long.err" &
plong=$!
wait_line "$TMP/long.out" "$plong" '^cuvae: device'
for args in "--resume $R --device cpu --epochs 100000" "${COMMON[*]} --epochs 1 --out $R --overwrite"; do
  # shellcheck disable=SC2086  # the words of $args are the flags
  "$CUVAE" train $args >"$TMP/second.out" 2>"$TMP/second.err"
  rc=$?
  if [ "$rc" -ne 2 ] || ! grep -q "(pid $plong)" "$TMP/second.err"; then
    cat "$TMP/second.err"
    fail "train ${args%% *} ... while a training runs: exit $rc (want 2 naming pid $plong)"
  else
    echo "ok: train ${args%% *} ... while a training runs: $(cat "$TMP/second.err")"
  fi
done
kill -TERM "$plong"  # a background job of a script ignores SIGINT
wait "$plong"
rc=$?
[ "$rc" -eq 143 ] || { cat "$TMP/long.err"; fail "the running training: exit $rc after SIGTERM (want 143)"; }

# ---- 3. default folder names ----------------------------------------------------------------
mkdir "$TMP/cwd"
(cd "$TMP/cwd" && "$CUVAE" train "${COMMON[@]}" --epochs 1 --seed 1 >"$TMP/d1.out" 2>&1) &
p1=$!
(cd "$TMP/cwd" && "$CUVAE" train "${COMMON[@]}" --epochs 1 --seed 2 >"$TMP/d2.out" 2>&1) &
p2=$!
wait "$p1" && wait "$p2" || { cat "$TMP/d1.out" "$TMP/d2.out"; fail "default --out: a run failed"; }
n=$(find "$TMP/cwd/runs" -mindepth 1 -maxdepth 1 -type d | wc -l)
[ "$n" -eq 2 ] || fail "default --out: $n run folders (want 2)"
for s in 1 2; do
  dir=$(sed -n 's|^cuvae: wrote \(runs/[^,]*\)/model.safetensors.*|\1|p' "$TMP/d$s.out")
  if [ -z "$dir" ] || [ "$(config_seed "$TMP/cwd/$dir")" != "$s" ]; then
    cat "$TMP/d$s.out"
    fail "default --out: the run of seed $s did not write its own folder"
  else
    echo "ok: default --out: seed $s wrote $dir"
  fi
done

# ---- 4. a reader sees the model replaced under it ------------------------------------------------
RUN=$TMP/shared1
[ -d "$TMP/shared1" ] || RUN=$TMP/busy
"$CUVAE" eval "$RUN" --data "$DATA" --device cpu >/dev/null 2>"$TMP/e0.err" ||
  { cat "$TMP/e0.err"; fail "eval of an unchanged run failed"; }
if grep -q "was replaced" "$TMP/e0.err"; then fail "eval of an unchanged run says it was replaced"; fi
# 1,000 images with 10 importance samples each: seconds, time to replace the file under it once
# eval has read it (it reads the model, then the images: once an IDX file is open, or after 2 s).
"$CUVAE" eval "$RUN" --data "$DATA" --split train --device cpu --iw-samples 10 >/dev/null \
  2>"$TMP/e1.err" &
pe=$!
for _ in $(seq 200); do
  kill -0 "$pe" 2>/dev/null || break
  ls -l "/proc/$pe/fd" 2>/dev/null | grep -q -- '-idx[13]-ubyte' && break
  sleep 0.01
done
cp "$TMP/busy/model.safetensors" "$RUN/model.new" && mv "$RUN/model.new" "$RUN/model.safetensors"
still=0
kill -0 "$pe" 2>/dev/null && still=1
wait "$pe" || { cat "$TMP/e1.err"; fail "eval during the replacement failed"; }
if [ "$still" -eq 1 ]; then
  if grep -q "model.safetensors was replaced while this command ran" "$TMP/e1.err"; then
    echo "ok: $(grep "was replaced" "$TMP/e1.err")"
  else
    cat "$TMP/e1.err"
    fail "eval did not say its model was replaced"
  fi
else
  echo "note: eval ended before the model was replaced; not checked this time"
fi

# ---- 5. stale temporaries ------------------------------------------------------------------
dead=$(sh -c 'echo $$')  # a process that has ended
: >"$TMP/z.csv.tmp.$dead"
: >"$TMP/z.csv.tmp.$$"  # this shell: alive
"$CUVAE" encode "$RUN" --data "$DATA" --device cpu --csv "$TMP/z.csv" >/dev/null 2>&1 ||
  fail "encode --csv failed"
[ -e "$TMP/z.csv.tmp.$dead" ] && fail "the temporary of a dead process stayed"
[ -e "$TMP/z.csv.tmp.$$" ] || fail "the temporary of a live process was removed"
[ -s "$TMP/z.csv" ] && echo "ok: encode --csv removed the dead process's z.csv.tmp.$dead"

if [ "$fails" -ne 0 ]; then
  echo "cli_lock: $fails failed (seed $SEED)"
  exit 1
fi
echo "cli_lock: all passed"
