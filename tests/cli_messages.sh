#!/usr/bin/env bash
# What a new user meets, end to end on a tiny synthetic dataset (issue 18):
#  - every run the flags accept resumes from its own checkpoint: --lr and --beta at and beyond
#    the edges of their ranges (values that are 0 or subnormal in float are refused with one
#    line naming the flag; each value accepted trains one epoch and resumes to a second);
#  - "-" is standard output for every text result (eval --json, encode --csv, anomaly --json,
#    interpolate --json, classify --json, bench --json): stdout then holds the result alone,
#    no file named "-" appears; the PNG and .safetensors outputs refuse "-";
#  - the messages: --out naming a file, --resume given the state file or another file, a PNG
#    given as RUN, counts of one in the singular, eval's undefined standard error of one image
#    (n/a, JSON null), the notes on a --limit above the set and on X next to X.gz;
#  - config.json of a CPU run: no GPU settings, Adam's floats in their shortest form.
# IDX files from seeded pixels (lib/idx.sh; the seed is printed first, CUVAE_TEST_SEED replays
# it); JSON and CSV checked with python3's standard library.
# usage: cli_messages.sh <cuvae-binary>
set -u
if [ $# -ne 1 ]; then
  echo "usage: $0 <cuvae-binary>"
  exit 1
fi
CUVAE=$(realpath "$1")
source "$(dirname "${BASH_SOURCE[0]}")/lib/cli.sh"
cli_setup messages "$CUVAE"
source "$(dirname "${BASH_SOURCE[0]}")/lib/idx.sh"
cli_seed
idx_seed "$SEED"
DATA=$TMP/data
make_mnist_dir "$DATA" 24 12
# One step per epoch: --lr 10 then completes its first epoch (and diverges in the second).
TINY=(--device cpu --data "$DATA" --limit 16 --batch-size 16 --test-limit 8 --seed "$SEED")
cd "$TMP" || exit 1  # a file named "-" would appear here

# expect_error WORDS ARGS...: exit 2, one stderr line holding WORDS (fixed text).
expect_error() {
  local words=$1
  shift
  "$CUVAE" "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$? lines
  lines=$(wc -l <"$TMP/err")
  if [ "$rc" -ne 2 ] || [ "$lines" -ne 1 ] || ! grep -qF -- "$words" "$TMP/err"; then
    fail "cuvae $* -> exit $rc, $lines stderr lines (want 2, one line with '$words'): $(cat "$TMP/err")"
  else
    echo "ok: cuvae $* -> $(cat "$TMP/err")"
  fi
}

# --- A: what the flags accept resumes -----------------------------------------------------
# try_resume NAME FLAGS...: when train accepts FLAGS, the run's checkpoint resumes to epoch 2
# (a run that then diverges, as --lr 10 does, must have loaded it: "resuming ... after epoch
# 1"); when it refuses them, with one line naming the flag and the float range.
try_resume() {
  local name=$1 flag=$2
  shift
  "$CUVAE" train "${TINY[@]}" --epochs 1 --out "$TMP/$name" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
  local rc=$?
  if [ "$rc" -eq 2 ]; then
    if [ "$(wc -l <"$TMP/$name.err")" -eq 1 ] && grep -qF -- "$flag: " "$TMP/$name.err" &&
      grep -qF "the smallest normal float" "$TMP/$name.err" && [ ! -e "$TMP/$name" ]; then
      echo "ok: $* refused: $(cat "$TMP/$name.err")"
    else
      fail "$*: refused without naming $flag and its range, or left $TMP/$name: $(cat "$TMP/$name.err")"
    fi
    return
  fi
  [ "$rc" -eq 0 ] || { fail "$*: train exited $rc: $(cat "$TMP/$name.err")"; return; }
  "$CUVAE" train --resume "$TMP/$name" --epochs 2 --device cpu >"$TMP/$name.resume.out" \
    2>"$TMP/$name.resume.err"
  rc=$?
  if [ "$rc" -eq 0 ] && [ "$(grep -c '^epoch 2/2' "$TMP/$name.resume.out")" -eq 1 ]; then
    echo "ok: $* trains and resumes to epoch 2"
  elif grep -qF "resuming $TMP/$name after epoch 1" "$TMP/$name.resume.out" &&
    grep -qF "training diverged" "$TMP/$name.resume.err"; then
    echo "ok: $* resumes (and then diverges, as such a step size does)"
  else
    fail "$*: the run does not resume its own checkpoint (exit $rc): $(cat "$TMP/$name.resume.err")"
  fi
}
i=0
for lr in 1e-50 1e-45 1e-39 1.1754942e-38 1.17549435e-38 10; do
  try_resume "lr$i" --lr "$lr" --beta 1
  i=$((i + 1))
done
for beta in 0 1e-50 1e-41 1.17549435e-38 1e6; do
  try_resume "beta$i" --beta "$beta" --lr 0.001
  i=$((i + 1))
done
expect_error "--beta: 1e-40 is out of range" parity-dump --out "$TMP/p.safetensors" --beta 1e-40
expect_error "--lr: 1e-44 is out of range" bench --device cpu --data "$DATA" --lr 1e-44

# A tiny model for the rest, and its config.json (H).
RUN=$TMP/run
"$CUVAE" train "${TINY[@]}" --epochs 1 --out "$RUN" >"$TMP/train.out" 2>&1 ||
  { cat "$TMP/train.out"; echo "FAIL: training the tiny model"; exit 1; }
if "$PY" - "$RUN/config.json" <<'EOF'; then echo "ok: config.json of a CPU run"; else fail "config.json"; fi
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text)
gpu_only = {"tf32", "bf16", "layout", "cuda_graph", "cudnn_algorithms"} & set(j)
assert not gpu_only, "a CPU run records GPU settings: %s" % sorted(gpu_only)
assert j["device"] == "cpu" and j["precision"] == "fp32", j
for key, value in (("lr", "0.001"), ("adam_beta1", "0.9"), ("adam_beta2", "0.999"),
                   ("adam_eps", "1e-07")):
    assert '"%s": %s,' % (key, value) in text, "%s is not written %s: %s" % (key, value, j[key])
EOF

# --- B: "-" is standard output for the text results ---------------------------------------
# stdout_result NAME KIND ARGS...: cuvae ARGS exits 0 and its stdout is one KIND (json, csv)
# result and nothing else; no file "-" appears.
stdout_result() {
  local name=$1 kind=$2
  shift 2
  rm -f -- "$TMP/-"
  "$CUVAE" "$@" >"$TMP/$name.stdout" 2>"$TMP/$name.stderr"
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    fail "cuvae $* exited $rc: $(tail -n 3 "$TMP/$name.stderr")"
  elif [ -e "$TMP/-" ]; then
    fail "cuvae $* wrote a file named '-'"
  elif "$PY" - "$kind" "$TMP/$name.stdout" <<'EOF'; then
import csv, json, sys
kind, path = sys.argv[1], sys.argv[2]
if kind == "json":
    json.load(open(path))
else:
    rows = list(csv.reader(open(path)))
    assert rows[0][:2] == ["index", "label"] and len(rows) == 9, rows[:2]
    for r in rows[1:]:
        [float(x) for x in r]
EOF
    echo "ok: cuvae $* -> $kind on stdout alone"
  else
    fail "cuvae $*: stdout is not one $kind result: $(head -c 300 "$TMP/$name.stdout")"
  fi
}
stdout_result eval json eval "$RUN" --data "$DATA" --device cpu --iw-samples 2 --limit 8 --json -
stdout_result encode csv encode "$RUN" --data "$DATA" --device cpu --limit 8 --csv -
stdout_result anomaly json anomaly "$RUN" --data "$DATA" --against "$DATA" --device cpu --limit 8 \
  --png "$TMP/a.png" --json -
stdout_result interpolate json interpolate "$RUN" --data "$DATA" --device cpu --out "$TMP/i.png" \
  --json -
stdout_result classify json classify "$RUN" --data "$DATA" --device cpu --labels-per-class all \
  --repeats 1 --json -
stdout_result bench json bench --device cpu --data "$DATA" --limit 8 --warmup-epochs 0 --epochs 1 \
  --json -
grep -q "negative ELBO" "$TMP/eval.stderr" || fail "eval --json -: the summary line is not on stderr"
for args in "interpolate $RUN --data $DATA --out -" "anomaly $RUN --data $DATA --against $DATA --png -" \
  "eval $RUN --data $DATA --dump-batch -" "curves $RUN --out -" "parity-dump --out -" \
  "grid $RUN --out -"; do
  # shellcheck disable=SC2086  # the words of $args are the arguments
  expect_error "-: standard output takes only text results" $args
done

# --- D: messages --------------------------------------------------------------------------
echo "a file" >"$TMP/afile"
expect_error "--out $TMP/afile: is a file, not a folder" train "${TINY[@]}" --out "$TMP/afile"
expect_error "$TMP/afile is a file, not a folder" train "${TINY[@]}" --out "$TMP/afile/run"
"$CUVAE" train --resume "$RUN/train_state.safetensors" --epochs 2 --device cpu \
  >"$TMP/resume_file.out" 2>&1 && grep -qF "resuming $RUN after epoch 1" "$TMP/resume_file.out" &&
  echo "ok: --resume RUN/train_state.safetensors resumes RUN" ||
  fail "--resume given the state file: $(tail -n 2 "$TMP/resume_file.out")"
expect_error "a file; give the run folder" train --resume "$RUN/model.safetensors" --epochs 3
expect_error "not a safetensors file" eval "$RUN/curves.png" --data "$DATA" --device cpu

# Counts of one; the standard error of one image (F).
"$CUVAE" train --device cpu --data "$DATA" --limit 1 --test-limit 1 --epochs 1 --out "$TMP/one" \
  >"$TMP/one.out" 2>&1 || fail "train --limit 1: $(tail -n 2 "$TMP/one.out")"
grep -qF "1 training image" "$TMP/one.out" && ! grep -qF "1 training images" "$TMP/one.out" &&
  grep -qF "the first of 12 test images" "$TMP/one.out" &&
  echo "ok: train --limit 1 --test-limit 1 speaks of 1 training image and the first test image" ||
  fail "train --limit 1: $(head -n 4 "$TMP/one.out")"
"$CUVAE" eval "$RUN" --data "$DATA" --device cpu --iw-samples 2 --limit 1 >"$TMP/one.eval" \
  2>"$TMP/one.eval.err" || fail "eval --limit 1: $(cat "$TMP/one.eval.err")"
head -n 1 "$TMP/one.eval" | grep -qF "± n/a, 1 of 12 images" &&
  echo "ok: eval --limit 1: $(head -n 1 "$TMP/one.eval")" || fail "eval --limit 1: $(head -n 1 "$TMP/one.eval")"
tail -n +2 "$TMP/one.eval" >"$TMP/one.json"
"$PY" -c 'import json, sys; j = json.load(open(sys.argv[1]))
assert j["iwae_std_error"] is None and j["neg_elbo_std_error"] is None, j
assert j["iwae"] is not None' "$TMP/one.json" && echo "ok: eval --limit 1: JSON standard errors null" ||
  fail "eval --limit 1: the JSON standard errors are not null"

# --- E: the silent choices, said ----------------------------------------------------------
"$CUVAE" eval "$RUN" --data "$DATA" --device cpu --iw-samples 0 --limit 50 >/dev/null \
  2>"$TMP/limit.err" || fail "eval --limit 50: $(cat "$TMP/limit.err")"
grep -qF "cuvae: note: --limit 50 is more than the 12 test images of $DATA: using all of them" \
  "$TMP/limit.err" && echo "ok: eval says that --limit 50 keeps all 12 images" ||
  fail "eval --limit 50: no note: $(cat "$TMP/limit.err")"
if grep -qF "cuvae: note: --limit" "$TMP/one.out"; then fail "train --limit 1 notes a clamp"; fi
"$CUVAE" train --device cpu --data "$DATA" --limit 100 --test-limit 4 --epochs 1 --out "$TMP/big" \
  >"$TMP/big.out" 2>&1 || fail "train --limit 100: $(tail -n 2 "$TMP/big.out")"
grep -qF "cuvae: note: --limit 100 is more than the 24 training images: training on all of them" \
  "$TMP/big.out" && echo "ok: train says that --limit 100 trains on all 24 images" ||
  fail "train --limit 100: no note: $(head -n 4 "$TMP/big.out")"
GZ=$TMP/gzdata
mkdir -p "$GZ"
cp "$DATA"/* "$GZ"/
gzip -k "$GZ/t10k-images-idx3-ubyte"
"$CUVAE" eval "$RUN" --data "$GZ" --device cpu --iw-samples 0 >/dev/null 2>"$TMP/gz.err" ||
  fail "eval with X and X.gz: $(cat "$TMP/gz.err")"
grep -qF "cuvae: note: reading $GZ/t10k-images-idx3-ubyte; $GZ/t10k-images-idx3-ubyte.gz is there too and stays unread" \
  "$TMP/gz.err" && echo "ok: eval says which of X and X.gz it reads" ||
  fail "eval with X and X.gz: no note: $(cat "$TMP/gz.err")"
if grep -q "note: reading" "$TMP/limit.err"; then fail "a note on .gz files where there are none"; fi

if [ "$fails" -ne 0 ]; then
  echo "cli_messages: $fails failed"
  exit 1
fi
echo "cli_messages: all passed"
