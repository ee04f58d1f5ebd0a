#!/usr/bin/env bash
# End to end: `cuvae anomaly` on tiny synthetic data with a model trained here for one epoch on
# the CPU. The inliers are one synthetic folder, the outliers a second one (other pixels, another
# count). Its summary line, PNG (the size of host/eval/anomaly.h) and JSON; the AUC, the
# thresholds and TPRs at 1% and 5% FPR and the medians recomputed from `cuvae encode`'s scores
# of the same images with the same seed (a direct pair count and a search of the threshold's
# definition, python3's standard library); the outlier folder being a copy of the inliers gives
# AUC 0.5 and TPR = FPR; --limit and the default picture in the run folder; every bad flag or
# file exits 2 with one stderr line and writes nothing.
# The pixels come from a seed printed first (CUVAE_TEST_SEED replays it).
# usage: cli_anomaly.sh <cuvae-binary> <repo-root>
set -u
if [ $# -ne 2 ]; then
  echo "usage: $0 <cuvae-binary> <repo-root>"
  exit 1
fi
CUVAE=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib/cli.sh"
cli_setup anomaly "$CUVAE"
source "$(dirname "${BASH_SOURCE[0]}")/lib/idx.sh"
cli_seed
idx_seed "$SEED"

IN=$TMP/in
OUT=$TMP/out
N_IN=40
N_OUT=27
make_mnist_dir "$IN" 64 $N_IN
make_mnist_dir "$OUT" 8 $N_OUT
SAME=$TMP/same  # the inliers again
mkdir -p "$SAME"
cp "$IN"/t10k-* "$SAME"/

RUN=$TMP/run
if ! "$CUVAE" train --device cpu --data "$IN" --epochs 1 --batch-size 16 --out "$RUN" \
  >"$TMP/train.log" 2>&1; then
  cat "$TMP/train.log"
  echo "FAIL: training the tiny model failed"
  exit 1
fi
echo "ok: trained a tiny model"
ANOMALY_SEED=$((RANDOM % 1000))

# "WIDTH HEIGHT" from the IHDR chunk, or nothing if not a PNG.
png_size() {
  [ "$(od -An -tx1 -N8 "$1" | tr -d ' \n')" = 89504e470d0a1a0a ] || return 1
  od -An -tu1 -j16 -N8 "$1" |
    awk '{ print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4, $5 * 16777216 + $6 * 65536 + $7 * 256 + $8 }'
}
# The layout of host/eval/anomaly.h: kAxesLeft + kAnomalyHistW + kAxesLeft + kAnomalyPlotH +
# kAxesRight by kAnomalyTop + kAnomalyPlotH + kAxesBottom.
PNG_SIZE="$((140 + 520 + 140 + 400 + 48)) $((104 + 400 + 72))"

# run_anomaly NAME ARGS...: exit 0, exactly one stdout line of the summary's form, the PNG of
# the documented size at $TMP/NAME.png and the JSON at $TMP/NAME.json.
run_anomaly() {
  local name=$1
  shift
  rm -f "$TMP/$name.png" "$TMP/$name.json"
  "$CUVAE" anomaly "$RUN" --device cpu --seed "$ANOMALY_SEED" --png "$TMP/$name.png" \
    --json "$TMP/$name.json" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    fail "anomaly $*: exit $rc"
    cat "$TMP/$name.err"
    return 1
  fi
  local pattern='^anomaly: ROC AUC [01]\.[0-9]{4}; at 1% FPR: TPR [0-9.]+% \(threshold -?[0-9.]+, FPR [0-9.]+%\); at 5% FPR: TPR [0-9.]+% \(threshold -?[0-9.]+, FPR [0-9.]+%\); in [^:]+: [0-9,]+ test images, median [0-9.]+; out [^:]+: [0-9,]+ test images, median [0-9.]+; device cpu$'
  if [ "$(wc -l <"$TMP/$name.out")" -ne 1 ] || ! [[ "$(cat "$TMP/$name.out")" =~ $pattern ]]; then
    fail "anomaly $*: stdout is not one summary line:"
    cat "$TMP/$name.out"
  else
    echo "  $(cat "$TMP/$name.out")"
  fi
  local got
  got=$(png_size "$TMP/$name.png") || { fail "anomaly $*: no PNG"; return 1; }
  [ "$got" = "$PNG_SIZE" ] || fail "anomaly $*: PNG is $got, expected $PNG_SIZE"
  [ -s "$TMP/$name.json" ] || { fail "anomaly $*: no JSON"; return 1; }
}

# encode_scores DIR FILE [LIMIT]: the neg_elbo column of cuvae encode with the same seed.
encode_scores() {
  "$CUVAE" encode "$RUN" --device cpu --seed "$ANOMALY_SEED" --data "$1" --csv "$TMP/enc.csv" \
    --limit "${3:-0}" >/dev/null 2>"$TMP/enc.err" || { cat "$TMP/enc.err"; return 1; }
  awk -F, 'NR > 1 { print $NF }' "$TMP/enc.csv" >"$2"
}

# check_json NAME IN_SCORES OUT_SCORES: the JSON's figures against the scores from encode.
check_json() {
  "$PY" - "$TMP/$1.json" "$2" "$3" <<'EOF'
import json, math, sys
j = json.load(open(sys.argv[1]))
ins = [float(l) for l in open(sys.argv[2])]
outs = [float(l) for l in open(sys.argv[3])]
def close(a, b, what, rel=1e-8):
    assert abs(a - b) <= rel * max(1.0, abs(b)), (what, a, b)
# encode writes 10 significant digits: the scores agree to that.
assert j["in"]["images"] == len(ins) and j["out"]["images"] == len(outs), j
u = sum(1.0 if o > i else 0.5 if o == i else 0.0 for o in outs for i in ins)
close(j["auc"], u / (len(ins) * len(outs)), "auc", 1e-12)
def median(v):
    s = sorted(v); n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
close(j["in"]["median"], median(ins), "in median")
close(j["out"]["median"], median(outs), "out median")
points = j["at_fpr"]
assert [p["target_fpr"] for p in points] == [0.01, 0.05], points
for p, (num, den) in zip(points, [(1, 100), (5, 100)]):
    # The smallest score t with #{in > t} / n_in <= num / den, searched over every score.
    t = min(c for c in ins + outs if sum(i > c for i in ins) * den <= num * len(ins))
    close(p["threshold"], t, "threshold")
    assert p["in_above"] == sum(i > t for i in ins), (p, t)
    assert p["out_above"] == sum(o > t for o in outs), (p, t)
    close(p["fpr"], p["in_above"] / len(ins), "fpr", 1e-15)
    close(p["tpr"], p["out_above"] / len(outs), "tpr", 1e-15)
    assert p["fpr"] <= num / den
labels = j["out"]["by_label"]
assert sum(l["images"] for l in labels) == len(outs), labels
print("auc %.6f, thresholds %s" % (j["auc"], [round(p["threshold"], 3) for p in points]))
EOF
}

encode_scores "$IN" "$TMP/in.scores" || fail "encode of the inliers"
encode_scores "$OUT" "$TMP/out.scores" || fail "encode of the outliers"
if run_anomaly full --data "$IN" --against "$OUT"; then
  if check_json full "$TMP/in.scores" "$TMP/out.scores"; then
    echo "ok: AUC, thresholds, TPRs and medians match encode's scores"
  else
    fail "the JSON disagrees with encode's scores"
  fi
fi

# --limit: the first N of each.
encode_scores "$IN" "$TMP/in10.scores" 10 && encode_scores "$OUT" "$TMP/out10.scores" 10 ||
  fail "encode --limit 10"
if run_anomaly lim --data "$IN" --against "$OUT" --limit 10; then
  if check_json lim "$TMP/in10.scores" "$TMP/out10.scores"; then
    echo "ok: --limit 10 scores the first 10 of each"
  else
    fail "--limit 10: the JSON disagrees with encode's scores"
  fi
fi

# The inliers against themselves: the same images with the same noise score the same.
if run_anomaly same --data "$IN" --against "$SAME"; then
  if "$PY" - "$TMP/same.json" <<'EOF'; then echo "ok: a copy of the inliers gives AUC 0.5, TPR = FPR"; else fail "inliers against a copy"; fi
import json, sys
j = json.load(open(sys.argv[1]))
assert j["auc"] == 0.5, j["auc"]
for p in j["at_fpr"]:
    assert p["tpr"] == p["fpr"] and p["in_above"] == p["out_above"], p
assert j["in"]["median"] == j["out"]["median"], j
EOF
fi

# The default picture goes into the run folder; no JSON unless asked.
rm -f "$RUN/anomaly.png"
if "$CUVAE" anomaly "$RUN" --device cpu --data "$IN" --against "$OUT" >"$TMP/def.out" 2>"$TMP/def.err" &&
  [ "$(png_size "$RUN/anomaly.png")" = "$PNG_SIZE" ] && grep -qF "wrote $RUN/anomaly.png" "$TMP/def.err" &&
  [ "$(wc -l <"$TMP/def.out")" -eq 1 ]; then
  echo "ok: the default picture is RUN/anomaly.png"
else
  fail "anomaly without --png did not write $RUN/anomaly.png"
  cat "$TMP/def.err"
fi

# ---- errors --------------------------------------------------------------------------------
mkdir -p "$TMP/bad" "$TMP/empty-run" "$TMP/small"
idx_images 5 14 14 >"$TMP/small/t10k-images-idx3-ubyte"
idx_labels_cycle 5 >"$TMP/small/t10k-labels-idx1-ubyte"
expect_error() {
  local word=$1
  shift
  "$CUVAE" anomaly "$@" >"$TMP/err.out" 2>"$TMP/err.err"
  local rc=$? why=""
  [ "$rc" -eq 2 ] || why="exit $rc, expected 2"
  [ "$(wc -l <"$TMP/err.err")" -eq 1 ] || why="${why:+$why; }$(wc -l <"$TMP/err.err") stderr lines"
  grep -qF -- "$word" "$TMP/err.err" || why="${why:+$why; }stderr does not mention '$word'"
  head -n 1 "$TMP/err.err" | grep -q '^cuvae: error: ' || why="${why:+$why; }no 'cuvae: error: ' prefix"
  [ -s "$TMP/err.out" ] && why="${why:+$why; }wrote to stdout"
  [ -z "$(ls -A "$TMP/bad")" ] || why="${why:+$why; }wrote $(ls -A "$TMP/bad")"
  if [ -n "$why" ]; then
    fail "cuvae anomaly $*: $why; stderr:"
    cat "$TMP/err.err"
  else
    echo "ok: cuvae anomaly $* -> $(cat "$TMP/err.err")"
  fi
}
o=(--device cpu --png "$TMP/bad/a.png" --json "$TMP/bad/a.json")
expect_error --against "$RUN" "${o[@]}" --data "$IN"
expect_error --against "$RUN" "${o[@]}" --data "$IN" --against ""
expect_error "$TMP/nowhere" "$RUN" "${o[@]}" --data "$IN" --against "$TMP/nowhere"
expect_error "$TMP/nowhere" "$RUN" "${o[@]}" --data "$TMP/nowhere" --against "$OUT"
expect_error "expected 28x28" "$RUN" "${o[@]}" --data "$IN" --against "$TMP/small"
expect_error --data "$RUN" "${o[@]}" --data "" --against "$OUT"
expect_error --limit "$RUN" "${o[@]}" --data "$IN" --against "$OUT" --limit -1
expect_error --limit "$RUN" "${o[@]}" --data "$IN" --against "$OUT" --limit 3x
expect_error --seed "$RUN" "${o[@]}" --data "$IN" --against "$OUT" --seed -1
expect_error --device "$RUN" --png "$TMP/bad/a.png" --data "$IN" --against "$OUT" --device tpu
expect_error --png "$RUN" --device cpu --data "$IN" --against "$OUT" --png "$TMP/bad"
expect_error --png "$RUN" --device cpu --data "$IN" --against "$OUT" --png "$TMP/no-dir/a.png"
expect_error --json "$RUN" --device cpu --data "$IN" --against "$OUT" --png "$TMP/bad/a.png" \
  --json "$TMP/no-dir/a.json"
expect_error RUN "${o[@]}" --data "$IN" --against "$OUT"
expect_error "$TMP/empty-run" "$TMP/empty-run" "${o[@]}" --data "$IN" --against "$OUT"
expect_error "$TMP/no-run" "$TMP/no-run" "${o[@]}" --data "$IN" --against "$OUT"
expect_error no-such-flag "$RUN" "${o[@]}" --data "$IN" --against "$OUT" --no-such-flag
expect_error "unexpected argument" "$RUN" "$RUN" "${o[@]}" --data "$IN" --against "$OUT"
expect_error --split "$RUN" "${o[@]}" --data "$IN" --against "$OUT" --split train

if "$CUVAE" anomaly --help >"$TMP/help" 2>&1 && grep -q -- --against "$TMP/help" &&
  grep -q -- --json "$TMP/help" && grep -q "ties" "$TMP/help"; then
  echo "ok: cuvae anomaly --help"
else
  fail "cuvae anomaly --help"
fi

if [ "$fails" -ne 0 ]; then
  echo "cli_anomaly: $fails failed"
  exit 1
fi
echo "cli_anomaly: all passed"
