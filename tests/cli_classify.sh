#!/usr/bin/env bash
# End to end: `cuvae classify` on a tiny synthetic dataset (64 training images, labels 0..9 in
# turn, 30 test images; lib/idx.sh) with a model trained here for one epoch on the CPU. The
# table on stdout has a row per count and feature set that agrees with the JSON; the JSON holds
# every draw's accuracy, mean and standard deviation (checked against a direct computation),
# the fixed rules at 1 label per class and the choices made by cross-validation above it; the
# pixel kNN on all the labels gives the accuracy of a brute-force kNN in Python on the IDX
# files at the k it chose; the same seed gives the same results; --limit-test scores fewer
# images. Bad flags exit 2 with one line on stderr and write nothing.
# The pixels come from a seed printed first (CUVAE_TEST_SEED replays it).
# usage: cli_classify.sh <cuvae-binary> <repo-root>
set -u
if [ $# -ne 2 ]; then
  echo "usage: $0 <cuvae-binary> <repo-root>"
  exit 1
fi
CUVAE=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib/cli.sh"
cli_setup classify "$CUVAE"

source "$(dirname "${BASH_SOURCE[0]}")/lib/idx.sh"
cli_seed
idx_seed "$SEED"
DATA=$TMP/data
make_mnist_dir "$DATA" 64 30  # classes 0-3: 7 training images each, 4-9: 6

RUN=$TMP/run
if ! "$CUVAE" train --device cpu --data "$DATA" --epochs 1 --batch-size 16 --out "$RUN" \
  >"$TMP/train.log" 2>&1; then
  cat "$TMP/train.log"
  echo "FAIL: training the tiny model failed"
  exit 1
fi
echo "ok: trained a tiny model"

# --- the table and the JSON -----------------------------------------------------------------
args=(classify "$RUN" --data "$DATA" --device cpu --labels-per-class 1,3,all --repeats 2
  --seed "$SEED")
if ! "$CUVAE" "${args[@]}" --json "$TMP/a.json" >"$TMP/a.out" 2>"$TMP/a.err"; then
  fail "cuvae ${args[*]} failed:"
  cat "$TMP/a.err"
else
  cat "$TMP/a.out"
  # The largest k tried, as --help states it.
  MAX_K=$("$CUVAE" classify --help | tr '\n' ' ' | sed -n 's/.*k from the odd 1, 3, \.\.\., \([0-9]*\).*/\1/p')
  if "$PY" - "$TMP/a.out" "$TMP/a.json" "$DATA" "$MAX_K" <<'EOF'; then echo "ok: table and JSON"; else fail "table or JSON"; fi
import json, math, re, struct, sys
table, j, data = open(sys.argv[1]).read().splitlines(), json.load(open(sys.argv[2])), sys.argv[3]
max_k = int(sys.argv[4])
assert table[0] == "test accuracy on 30 test images (mean ± standard deviation over the draws)", table[0]
assert len(table) == 2 + 3 * 2, table
assert j["test_images"] == 30 and j["test_split_images"] == 30 and j["train_images"] == 64, j
assert j["device"] == "cpu" and j["latent_dim"] == 2 and j["repeats"] == 2, j
res = j["results"]
assert [r["labels_per_class"] for r in res] == [1, 3, "all"], res
assert [r["labelled"] for r in res] == [10, 30, 64] and [r["draws"] for r in res] == [2, 2, 1]
rows = iter(table[2:])
for r in res:
    for feat in ("z_mean", "pixels"):
        cells = next(rows)
        assert cells.split()[:4] == [str(r["labels_per_class"]), str(r["labelled"]),
                                     str(r["draws"]), feat], cells
        shown = [float(v) for v in re.findall(r"(\d+\.\d\d)(?: ± \d+\.\d\d)?%", cells)]
        for name, key in (("knn", "k"), ("logreg", "lambda")):
            s = r[feat][name]
            acc = s["accuracy"]
            assert len(acc) == r["draws"] == len(s[key]) == len(s["choice"]), s
            for a in acc:  # a count of correct images out of 30
                assert 0 <= a <= 1 and abs(a * 30 - round(a * 30)) < 1e-9, a
            mean = sum(acc) / len(acc)
            assert abs(s["mean"] - mean) < 1e-12, s
            if len(acc) > 1:
                sd = math.sqrt(sum((a - mean) ** 2 for a in acc) / (len(acc) - 1))
                assert abs(s["std"] - sd) < 1e-12, s
            else:
                assert s["std"] is None, s
            for c in s["choice"]:
                if r["labels_per_class"] == 1:  # the fixed rules
                    assert c.get("k", 1) == 1 and c.get("lambda", 0.01) == 0.01, c
                    assert c["grid"] == [] and c["cv_accuracy"] == [], c
                else:
                    assert len(c["grid"]) == len(c["cv_accuracy"]) > 1, c
                    assert c[key] in c["grid"], c
                    assert c[key] == c["grid"][c["cv_accuracy"].index(max(c["cv_accuracy"]))], c
                    if key == "k":  # odd k up to the labelled images - 1
                        assert c["grid"] == list(range(1, min(max_k, r["labelled"] - 1) + 1, 2)), c
        assert abs(shown[0] - 100 * r[feat]["knn"]["mean"]) <= 0.005 + 1e-9, (cells, r[feat])
        assert abs(shown[1] - 100 * r[feat]["logreg"]["mean"]) <= 0.005 + 1e-9, (cells, r[feat])

# The pixel kNN on all 64 labels, by brute force: squared distances of x / 255, nearest by
# (distance, index), the vote's tie to the nearest tied class.
def idx(name, header):
    b = open(f"{data}/{name}", "rb").read()
    n = struct.unpack(">I", b[4:8])[0]
    return b[header:], n
tr, ntr = idx("train-images-idx3-ubyte", 16)
te, nte = idx("t10k-images-idx3-ubyte", 16)
ytr, _ = idx("train-labels-idx1-ubyte", 8)
yte, _ = idx("t10k-labels-idx1-ubyte", 8)
k = res[2]["pixels"]["knn"]["k"][0]
# cuvae's float distances (of x / 255) may order two images whose integer distances differ by a
# few units either way: such a query is ambiguous and may go either way.
correct = ambiguous = 0
for q in range(nte):
    qx = te[q * 784:(q + 1) * 784]
    d = sorted((sum((qx[p] - tr[i * 784 + p]) ** 2 for p in range(784)), i) for i in range(ntr))
    ambiguous += any(d[t + 1][0] - d[t][0] < 8 for t in range(min(k, ntr - 1)))
    votes = {}
    for _, i in d[:k]:
        votes[ytr[i]] = votes.get(ytr[i], 0) + 1
    top = max(votes.values())
    guess = next(ytr[i] for _, i in d[:k] if votes[ytr[i]] == top)
    correct += guess == yte[q]
got = round(res[2]["pixels"]["knn"]["accuracy"][0] * nte)
assert abs(got - correct) <= ambiguous, (k, correct, ambiguous, res[2])
print(f"  pixel kNN on all labels, k = {k}: {correct}/{nte} by brute force ({ambiguous} near ties), "
      f"cuvae {got}/{nte}")
EOF
fi

# --- the same seed gives the same results; --limit-test ---------------------------------------
"$CUVAE" "${args[@]}" --json "$TMP/b.json" >/dev/null 2>"$TMP/b.err" || fail "second run failed"
if "$PY" - "$TMP/a.json" "$TMP/b.json" <<'EOF'; then echo "ok: same seed, same results"; else fail "same seed, other results"; fi
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for ra, rb in zip(a["results"], b["results"]):
    for f in ("z_mean", "pixels"):
        for c, key in (("knn", "k"), ("logreg", "lambda")):
            assert ra[f][c]["accuracy"] == rb[f][c]["accuracy"], (f, c)
            assert ra[f][c][key] == rb[f][c][key], (f, c)
EOF
if "$CUVAE" classify "$RUN" --data "$DATA" --device cpu --labels-per-class 2 --repeats 1 \
  --limit-test 7 >"$TMP/c.out" 2>"$TMP/c.err" &&
  head -n 1 "$TMP/c.out" | grep -q "^test accuracy on 7 test images"; then
  echo "ok: --limit-test 7"
else
  fail "--limit-test 7:"
  cat "$TMP/c.out" "$TMP/c.err"
fi

# --- bad flags: exit 2, one line naming the problem, nothing written -------------------------
expect_error() {  # expect_error <word that must appear> <args...>
  local word=$1
  shift
  rm -f "$TMP/bad.json"
  "$CUVAE" "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$? lines
  lines=$(wc -l <"$TMP/err")
  if [ "$rc" -ne 2 ] || [ "$lines" -ne 1 ] || ! grep -q -- "$word" "$TMP/err" ||
    [ -e "$TMP/bad.json" ] || [ -s "$TMP/out" ]; then
    fail "cuvae $* -> exit $rc, $lines stderr lines (want 2, 1 line with '$word', nothing written):"
    cat "$TMP/err"
  else
    echo "ok: cuvae $* -> $(cat "$TMP/err")"
  fi
}
base=(classify "$RUN" --data "$DATA" --device cpu --json "$TMP/bad.json")
expect_error --labels-per-class "${base[@]}" --labels-per-class 0
expect_error --labels-per-class "${base[@]}" --labels-per-class abc
expect_error --labels-per-class "${base[@]}" --labels-per-class 1,,2
expect_error --labels-per-class "${base[@]}" --labels-per-class 1,
expect_error --labels-per-class "${base[@]}" --labels-per-class 3,3
expect_error --labels-per-class "${base[@]}" --labels-per-class all,all
expect_error "class 4 has only 6" "${base[@]}" --labels-per-class 7
expect_error --repeats "${base[@]}" --repeats 0
expect_error --repeats "${base[@]}" --repeats 2x
expect_error --seed "${base[@]}" --seed -1
expect_error --limit-test "${base[@]}" --limit-test -1
expect_error --device "${base[@]}" --device tpu
expect_error split "${base[@]}" --split test
expect_error --json classify "$RUN" --data "$DATA" --device cpu --json "$TMP"
expect_error "RUN" classify --data "$DATA" --device cpu
expect_error "$TMP/nothing" classify "$TMP/nothing" --data "$DATA" --device cpu
expect_error "$TMP/nodata" classify "$RUN" --data "$TMP/nodata" --device cpu

if [ "$fails" -ne 0 ]; then
  echo "$fails check(s) failed"
  exit 1
fi
echo "all classify checks passed"
