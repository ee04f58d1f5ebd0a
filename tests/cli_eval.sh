#!/usr/bin/env bash
# End to end: `cuvae eval` and `cuvae encode` on a tiny synthetic dataset with a model trained
# for one epoch on the CPU. eval prints its summary line and a valid JSON object (stdout or
# --json FILE), K = 0 skips IWAE, --dump-batch writes its file; encode writes a CSV with the
# right header and one row per image, atomically; bad flags and files exit 2 with one line.
# IDX files are made with printf and seeded pixels (lib/idx.sh; the seed is printed first and
# CUVAE_TEST_SEED replays it); JSON and CSV are checked with python3's standard library (no
# PyTorch needed).
# usage: cli_eval.sh <cuvae-binary> <repo-root>
set -u
if [ $# -ne 2 ]; then
  echo "usage: $0 <cuvae-binary> <repo-root>"
  exit 1
fi
CUVAE=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib/cli.sh"
cli_setup eval "$CUVAE"

source "$(dirname "${BASH_SOURCE[0]}")/lib/idx.sh"
cli_seed
idx_seed "$SEED"
DATA=$TMP/data
N_TEST=21
make_mnist_dir "$DATA" 16 $N_TEST

RUN=$TMP/run
if ! "$CUVAE" train --device cpu --data "$DATA" --epochs 1 --batch-size 8 --out "$RUN" \
  >"$TMP/train.log" 2>&1; then
  cat "$TMP/train.log"
  echo "FAIL: training the tiny model failed"
  exit 1
fi
echo "ok: trained a tiny model"

# --- eval: the line, then JSON on stdout -----------------------------------------------------
"$CUVAE" eval "$RUN" --data "$DATA" --device cpu --iw-samples 4 >"$TMP/eval.out" 2>"$TMP/eval.err"
rc=$?
if [ "$rc" -ne 0 ]; then
  fail "eval exited $rc"
  cat "$TMP/eval.err"
else
  line=$(head -n 1 "$TMP/eval.out")
  echo "  $line"
  pattern='^test: negative ELBO [0-9]+\.[0-9]{2} nats/image \(reconstruction [0-9]+\.[0-9]{2}, KL [0-9]+\.[0-9]{2}\), IWAE\(K=4\) -log p\(x\) <= [0-9]+\.[0-9]{2} ± [0-9]+\.[0-9]{2}, 21 images, device cpu$'
  if [[ "$line" =~ $pattern ]]; then echo "ok: eval summary line"; else fail "eval line: $line"; fi
  tail -n +2 "$TMP/eval.out" >"$TMP/eval.json"
  if "$PY" - "$TMP/eval.json" <<'EOF'; then echo "ok: eval JSON"; else fail "eval JSON"; fi
import json, math, sys
j = json.load(open(sys.argv[1]))
assert j["split"] == "test" and j["images"] == 21 and j["split_images"] == 21, j
assert j["iw_samples"] == 4 and j["device"] == "cpu" and j["latent_dim"] == 2, j
for k in ("neg_elbo", "reconstruction", "kl", "iwae", "iwae_std_error", "neg_elbo_std_error"):
    assert isinstance(j[k], float) and math.isfinite(j[k]), (k, j[k])
assert abs(j["neg_elbo"] - (j["reconstruction"] + j["kl"])) <= 1e-9 * j["neg_elbo"], j
assert j["kl"] >= 0 and j["iwae_std_error"] > 0, j
EOF
fi

# --- K = 0, --json FILE, --limit, --split train, a .safetensors path --------------------------
"$CUVAE" eval "$RUN/model.safetensors" --data "$DATA" --device cpu --iw-samples 0 --limit 5 \
  --split train --seed 7 --json "$TMP/out.json" >"$TMP/eval0.out" 2>"$TMP/eval0.err"
rc=$?
if [ "$rc" -ne 0 ]; then
  fail "eval --iw-samples 0 exited $rc"
  cat "$TMP/eval0.err"
else
  lines=$(wc -l <"$TMP/eval0.out")
  line=$(head -n 1 "$TMP/eval0.out")
  [ "$lines" -eq 1 ] || fail "with --json FILE stdout should hold only the line, got $lines lines"
  [[ "$line" == train:* && "$line" == *"5 of 16 images"* && "$line" != *IWAE* ]] ||
    fail "eval K=0 line: $line"
  if "$PY" -c '
import json, sys
j = json.load(open(sys.argv[1]))
assert j["iwae"] is None and j["iw_samples"] == 0 and j["images"] == 5 and j["seed"] == 7, j
assert j["split"] == "train", j
' "$TMP/out.json"; then echo "ok: eval --iw-samples 0 --json FILE"; else fail "--json FILE content"; fi
  ls "$TMP" | grep -q '\.tmp\.' && fail "a temporary file was left behind"
fi

# The engines' defaults (the fast CPU engine: K = 100, every image; the reference, cpu-ref: K = 50,
# the first 1000) and the same result for the same seed.
"$CUVAE" eval "$RUN" --data "$DATA" --device cpu --json "$TMP/d1.json" >/dev/null 2>"$TMP/d.err" &&
  "$CUVAE" eval "$RUN" --data "$DATA" --device cpu --iw-samples 100 --limit 0 \
    --json "$TMP/d2.json" >/dev/null 2>>"$TMP/d.err" &&
  "$CUVAE" eval "$RUN" --data "$DATA" --device cpu-ref --json "$TMP/r1.json" >/dev/null \
    2>>"$TMP/d.err" &&
  "$CUVAE" eval "$RUN" --data "$DATA" --device cpu-ref --iw-samples 50 --limit 1000 \
    --json "$TMP/r2.json" >/dev/null 2>>"$TMP/d.err"
rc=$?
if [ "$rc" -ne 0 ]; then
  fail "eval with the CPU defaults exited $rc"
  cat "$TMP/d.err"
elif "$PY" -c '
import json, sys
a, b, r, s = (json.load(open(p)) for p in sys.argv[1:5])
assert a["iw_samples"] == 100 and a["images"] == 21 and a["device"] == "cpu", a
assert r["iw_samples"] == 50 and r["images"] == 21 and r["device"] == "cpu-ref", r
for k in ("neg_elbo", "iwae", "iwae_std_error"):
    assert a[k] == b[k], (k, a[k], b[k])
    assert r[k] == s[k], (k, r[k], s[k])
# The two engines score the same model on the same noise: the ELBO to fp32 rounding.
assert abs(a["neg_elbo"] - r["neg_elbo"]) <= 1e-4 * r["neg_elbo"], (a["neg_elbo"], r["neg_elbo"])
' "$TMP/d1.json" "$TMP/d2.json" "$TMP/r1.json" "$TMP/r2.json" &&
  grep -q "cpu-ref defaults: --iw-samples 50 --limit 1000" "$TMP/d.err"; then
  echo "ok: CPU defaults (cpu K=100 all images, cpu-ref K=50 first 1000), reproducible"
else
  fail "CPU defaults or reproducibility"
  cat "$TMP/d.err"
fi

# The means and standard errors against a direct computation over the images. neg_elbo per
# image comes from `cuvae encode` (the same noise as eval's for one seed); IWAE per image from
# eval's means at --limit 1..5 (x_n = n m_n - (n - 1) m_(n-1): the noise is keyed by image and
# sample, so a limit does not change an image's figure).
ok=1
for n in 1 2 3 4 5; do
  "$CUVAE" eval "$RUN" --data "$DATA" --device cpu --iw-samples 4 --seed 3 --limit "$n" \
    --json "$TMP/se$n.json" >/dev/null 2>>"$TMP/se.err" || ok=0
done
"$CUVAE" encode "$RUN" --data "$DATA" --device cpu --seed 3 --limit 5 --csv "$TMP/se.csv" \
  >/dev/null 2>>"$TMP/se.err" || ok=0
if [ "$ok" -eq 0 ]; then
  cat "$TMP/se.err"
  fail "eval/encode for the standard-error check"
elif "$PY" - "$TMP" <<'EOF'; then echo "ok: eval's means and standard errors = direct"; else fail "eval's standard errors"; fi
import csv, json, math, sys
d = sys.argv[1]
runs = [json.load(open("%s/se%d.json" % (d, n))) for n in range(1, 6)]
def mean_se(v):
    m = sum(v) / len(v)
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1) / len(v))
elbo = [float(r[-1]) for r in list(csv.reader(open(d + "/se.csv")))[1:]]
iwae = [runs[0]["iwae"]] + [(n + 1) * runs[n]["iwae"] - n * runs[n - 1]["iwae"] for n in range(1, 5)]
j = runs[4]
assert j["images"] == 5 and len(elbo) == 5, (j["images"], elbo)
for key, values in (("neg_elbo", elbo), ("iwae", iwae)):
    m, se = mean_se(values)
    assert abs(j[key] - m) <= 1e-5 * abs(m), (key, j[key], m)
    assert se > 0 and abs(j[key + "_std_error"] - se) <= 1e-4 * se, (key, j[key + "_std_error"], se)
EOF

# --dump-batch writes a safetensors file.
if "$CUVAE" eval "$RUN" --data "$DATA" --device cpu --iw-samples 0 --dump-batch "$TMP/b.safetensors" \
  --dump-images 5 >/dev/null 2>"$TMP/dump.err" && [ -s "$TMP/b.safetensors" ] &&
  grep -q cuvae-eval-batch-1 "$TMP/b.safetensors"; then
  echo "ok: eval --dump-batch"
else
  fail "eval --dump-batch"
  cat "$TMP/dump.err"
fi

# --- encode -----------------------------------------------------------------------------------
check_csv() {  # check_csv FILE ROWS
  "$PY" - "$1" "$2" <<'EOF'
import csv, math, sys
rows = list(csv.reader(open(sys.argv[1])))
want = ["index", "label", "z_mean_0", "z_mean_1", "z_log_var_0", "z_log_var_1", "neg_elbo"]
assert rows[0] == want, rows[0]
body = rows[1:]
assert len(body) == int(sys.argv[2]), len(body)
for i, r in enumerate(body):
    assert len(r) == len(want) and int(r[0]) == i and int(r[1]) == i % 10, r
    v = [float(x) for x in r[2:]]
    assert all(math.isfinite(x) for x in v) and v[-1] > 0, r
EOF
}
if "$CUVAE" encode "$RUN" --data "$DATA" --device cpu --csv "$TMP/z.csv" >"$TMP/enc.out" \
  2>"$TMP/enc.err" && check_csv "$TMP/z.csv" $N_TEST; then
  echo "ok: encode CSV ($N_TEST rows): $(cat "$TMP/enc.out")"
else
  fail "encode CSV"
  cat "$TMP/enc.err"
fi
if "$CUVAE" encode "$RUN" --data "$DATA" --device cpu --csv "$TMP/z8.csv" --limit 8 \
  >/dev/null 2>"$TMP/enc.err" && check_csv "$TMP/z8.csv" 8; then
  echo "ok: encode --limit 8"
else
  fail "encode --limit 8"
  cat "$TMP/enc.err"
fi
# The scores are eval's one-sample negative ELBO: their mean is eval's figure.
"$CUVAE" eval "$RUN" --data "$DATA" --device cpu --iw-samples 0 --json "$TMP/e.json" \
  >/dev/null 2>&1
if "$PY" -c '
import csv, json, sys
s = [float(r["neg_elbo"]) for r in csv.DictReader(open(sys.argv[1]))]
j = json.load(open(sys.argv[2]))
assert abs(sum(s) / len(s) - j["neg_elbo"]) <= 1e-7 * j["neg_elbo"], (sum(s) / len(s), j)
' "$TMP/z.csv" "$TMP/e.json"; then
  echo "ok: encode scores average to eval's negative ELBO"
else
  fail "encode scores vs eval"
fi
# A failed encode leaves an existing CSV untouched.
cp "$TMP/z8.csv" "$TMP/keep.csv"
"$CUVAE" encode "$RUN" --data "$TMP/nowhere" --device cpu --csv "$TMP/keep.csv" >/dev/null 2>&1
cmp -s "$TMP/z8.csv" "$TMP/keep.csv" || fail "a failed encode changed the existing CSV"

# --- bad flags and files: exit 2, exactly one stderr line ----------------------------------
cp "$RUN/model.safetensors" "$TMP/cut.safetensors"
truncate -s 1000 "$TMP/cut.safetensors"
mkdir -p "$TMP/emptyrun"
expect_error() {  # expect_error NAME TEXT-IN-MESSAGE ARGS...
  local name=$1 text=$2 rc lines
  shift 2
  "$CUVAE" "$@" >"$TMP/out" 2>"$TMP/err"
  rc=$?
  lines=$(wc -l <"$TMP/err")
  local why=""
  [ "$rc" -eq 2 ] || why="exit $rc, expected 2"
  [ "$lines" -eq 1 ] || why="${why:+$why; }$lines stderr lines, expected 1"
  grep -qF -- "$text" "$TMP/err" || why="${why:+$why; }stderr does not mention '$text'"
  head -n 1 "$TMP/err" | grep -q '^cuvae: error: ' || why="${why:+$why; }no 'cuvae: error: ' prefix"
  if [ -n "$why" ]; then
    fail "$name: $why; stderr:"
    cat "$TMP/err"
  else
    echo "ok: $name -> $(cat "$TMP/err")"
  fi
}
E=(--data "$DATA" --device cpu)
expect_error "eval without RUN" "RUN" eval "${E[@]}"
expect_error "eval missing run" "$TMP/none" eval "$TMP/none" "${E[@]}"
expect_error "eval run without model" "$TMP/emptyrun" eval "$TMP/emptyrun" "${E[@]}"
expect_error "eval truncated model" "$TMP/cut.safetensors" eval "$TMP/cut.safetensors" "${E[@]}"
expect_error "eval negative K" "--iw-samples" eval "$RUN" "${E[@]}" --iw-samples -1
expect_error "eval K too large" "--iw-samples" eval "$RUN" "${E[@]}" --iw-samples 100001
expect_error "eval K not a number" "--iw-samples" eval "$RUN" "${E[@]}" --iw-samples 4x
expect_error "eval bad limit" "--limit" eval "$RUN" "${E[@]}" --limit abc
expect_error "eval bad seed" "--seed" eval "$RUN" "${E[@]}" --seed -3
expect_error "eval bad split" "--split" eval "$RUN" "${E[@]}" --split valid
expect_error "eval bad device" "--device" eval "$RUN" --data "$DATA" --device tpu
expect_error "eval unknown flag" "--bogus" eval "$RUN" "${E[@]}" --bogus
expect_error "eval flag without value" "--iw-samples" eval "$RUN" "${E[@]}" --iw-samples
expect_error "eval two runs" "$RUN" eval "$RUN" "$RUN" "${E[@]}"
expect_error "eval missing data" "$TMP/nowhere" eval "$RUN" --data "$TMP/nowhere" --device cpu
expect_error "eval json in missing folder" "--json" eval "$RUN" "${E[@]}" --json "$TMP/no/x.json"
expect_error "eval json is a folder" "--json" eval "$RUN" "${E[@]}" --json "$TMP"
expect_error "eval bad dump size" "--dump-images" eval "$RUN" "${E[@]}" --dump-images 0
expect_error "encode without csv" "--csv" encode "$RUN" "${E[@]}"
expect_error "encode csv in missing folder" "--csv" encode "$RUN" "${E[@]}" --csv "$TMP/no/z.csv"
expect_error "encode bad limit" "--limit" encode "$RUN" "${E[@]}" --csv "$TMP/x.csv" --limit -5
expect_error "encode bad split" "--split" encode "$RUN" "${E[@]}" --csv "$TMP/x.csv" --split dev
expect_error "encode missing run" "$TMP/none" encode "$TMP/none" "${E[@]}" --csv "$TMP/x.csv"
[ -e "$TMP/x.csv" ] && fail "a failed encode created its CSV"

if [ "$fails" -ne 0 ]; then
  echo "cli_eval: $fails failed"
  exit 1
fi
echo "cli_eval: all passed"
