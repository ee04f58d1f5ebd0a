#!/usr/bin/env bash
# End-to-end check of `cuvae interpolate` on models trained here (latent dims 2 and 3) on a tiny
# synthetic MNIST-format dataset: the PNG has the width and height of the layout in
# host/eval/interpolate.h (read from its IHDR chunk) for the default 8 pairs x 10 steps, one
# pair, two steps and a wrapped row; stdout is the one summary line; the --json file holds the
# pairs (different labels with --pairs, the labels of the label file), t = k / (K - 1), and
# latent paths that follow the linear or spherical formula from their end points, which are
# the z_mean `cuvae encode` writes for those images; the same --seed gives the same picture,
# another seed other pairs. Every bad flag, RUN or data folder exits 2 with one stderr line and
# writes nothing.
# The pixels and the seeds come from a seed printed first (CUVAE_TEST_SEED replays it).
# usage: cli_interpolate.sh <cuvae-binary> <python3> <repo-root>
set -u
if [ $# -ne 3 ]; then
  echo "usage: $0 <cuvae-binary> <python3> <repo-root>"
  exit 1
fi
CUVAE=$1
PYTHON=$2
source "$(dirname "${BASH_SOURCE[0]}")/lib/cli.sh"
cli_setup interpolate "$CUVAE"
source "$(dirname "${BASH_SOURCE[0]}")/lib/idx.sh"
cli_seed
idx_seed "$SEED"
DATA=$TMP/data
N_TRAIN=64 N_TEST=30
make_mnist_dir "$DATA" $N_TRAIN $N_TEST  # labels cycle 0..9: image i has label i % 10

for dim in 2 3; do
  if ! "$CUVAE" train --device cpu --data "$DATA" --limit $N_TRAIN --batch-size 32 --epochs 1 \
    --latent-dim $dim --seed "$SEED" --out "$TMP/run$dim" >"$TMP/train.log" 2>&1; then
    cat "$TMP/train.log"
    echo "FAIL: cuvae train --latent-dim $dim on the synthetic dataset"
    exit 1
  fi
done
RUN=$TMP/run2 RUN3=$TMP/run3

# ---- the layout of host/eval/interpolate.h (pixels) ---------------------------------------
PAD=16 TITLE_BAND=28 KEY_BAND=28 TILE=56 GAP=2 ORIGINAL_GAP=12 CAPTION=24 PAIR_GAP=14 LINE=20
interp_size() {  # interp_size PAIRS STEPS
  local cols=$(($2 < LINE ? $2 : LINE)) lines=$((($2 + LINE - 1) / LINE))
  echo "$((2 * PAD + 2 * (TILE + ORIGINAL_GAP) + cols * TILE + (cols - 1) * GAP))" \
    "$((2 * PAD + TITLE_BAND + KEY_BAND + $1 * (CAPTION + lines * TILE + (lines - 1) * GAP) + ($1 - 1) * PAIR_GAP))"
}

# "WIDTH HEIGHT" from the IHDR chunk (bytes 16-23, big-endian), or nothing if not a PNG.
png_size() {
  local sig
  sig=$(od -An -tx1 -N8 "$1" | tr -d ' \n')
  [ "$sig" = 89504e470d0a1a0a ] || return 1
  od -An -tu1 -j16 -N8 "$1" |
    awk '{ print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4, $5 * 16777216 + $6 * 65536 + $7 * 256 + $8 }'
}

# expect_picture FILE "W H" "SUMMARY" ARGS...: the command exits 0, stdout is exactly the line
# "cuvae: wrote FILE: SUMMARY", and FILE is a PNG of that size.
expect_picture() {
  local file=$1 size=$2 summary=$3
  shift 3
  rm -f "$file"
  "$CUVAE" interpolate "$@" --out "$file" >"$TMP/out" 2>"$TMP/err"
  local rc=$? got
  if [ "$rc" -ne 0 ]; then
    fail "cuvae interpolate $* -> exit $rc:"
    cat "$TMP/err"
    return 1
  fi
  [ -s "$file" ] || { fail "cuvae interpolate $* did not write $file"; return 1; }
  if [ "$(cat "$TMP/out")" != "cuvae: wrote $file: $summary" ]; then
    fail "cuvae interpolate $*: stdout is not the summary line 'cuvae: wrote $file: $summary':"
    cat "$TMP/out"
  fi
  got=$(png_size "$file") || { fail "$file is not a PNG"; return 1; }
  if [ "$got" != "$size" ]; then
    fail "cuvae interpolate $*: $file is $got, expected $size"
  else
    echo "ok: cuvae interpolate $* -> $got"
  fi
}

# check_json FILE PAIRS STEPS DIM PATH DEVICE ENCODE_CSV [FROM TO]: the JSON's pairs, labels, t
# and paths; the paths' ends against the z_mean of `cuvae encode` (ENCODE_CSV): the same bits on
# cpu-ref (each image on its own), within 1e-4 on cpu (oneDNN's kernels depend on the batch size).
check_json() {
  "$PYTHON" - "$@" <<'EOF'
import json, math, struct, sys
args = sys.argv[1:]
path, n, k, d, kind, device, encode_csv = args[:7]
n, k, d = int(n), int(k), int(d)
given = [int(a) for a in args[7:]]
j = json.load(open(path))
f32 = lambda v: struct.unpack("f", struct.pack("f", v))[0]
assert j["steps"] == k and j["latent_dim"] == d and j["path"] == kind, (j["steps"], j["path"])
assert j["split"] == "test" and j["device"] == device, (j["split"], j["device"])
assert len(j["t"]) == k and j["t"][0] == 0 and j["t"][-1] == 1, j["t"]
assert all(abs(t - i / (k - 1)) < 1e-15 for i, t in enumerate(j["t"])), j["t"]
assert len(j["pairs"]) == n, len(j["pairs"])
z_mean = {}
for row in list(open(encode_csv))[1:]:
    cells = row.split(",")
    z_mean[int(cells[0])] = [f32(float(c)) for c in cells[2:2 + d]]
for p in j["pairs"]:
    a, b = p["first"], p["second"]
    for im in (a, b):
        assert im["label"] == im["index"] % 10, im  # the synthetic labels cycle 0..9
    if given:
        assert [a["index"], b["index"]] == given, (a, b)
    else:
        assert a["label"] != b["label"], (a, b)
    z = p["z"]
    assert len(z) == k and all(len(row) == d for row in z), z
    # The end points are the images' z_mean, as `cuvae encode` writes them.
    for got, want in ((z[0], z_mean[a["index"]]), (z[-1], z_mean[b["index"]])):
        if device == "cpu-ref":
            assert got == want, (got, want)
        else:
            assert all(abs(g - w) <= 1e-4 * (abs(w) + 1e-2) for g, w in zip(got, want)), (got, want)
    za, zb = z[0], z[-1]
    na, nb = math.sqrt(sum(x * x for x in za)), math.sqrt(sum(x * x for x in zb))
    cos = max(-1.0, min(1.0, sum(x * y for x, y in zip(za, zb)) / (na * nb)))
    w = math.acos(cos)
    for i, row in enumerate(z):
        t = i / (k - 1)
        if kind == "slerp" and math.sin(w) > 1e-6:
            ca, cb = math.sin((1 - t) * w) / math.sin(w), math.sin(t * w) / math.sin(w)
        else:
            ca, cb = 1 - t, t
        want = [ca * x + cb * y for x, y in zip(za, zb)]
        scale = sum(abs(x) + abs(y) for x, y in zip(za, zb))
        assert all(abs(g - e) <= 1e-6 * scale for g, e in zip(row, want)), (i, row, want)
print("pairs", [(p["first"]["index"], p["second"]["index"]) for p in j["pairs"]])
EOF
}

for run in "$RUN cpu" "$RUN cpu-ref" "$RUN3 cpu-ref"; do
  set -- $run
  "$CUVAE" encode "$1" --device "$2" --data "$DATA" --csv "$TMP/encode-$(basename "$1")-$2.csv" \
    >/dev/null 2>&1 || fail "cuvae encode $1 --device $2"
done

expect_picture "$TMP/a.png" "$(interp_size 8 10)" "8 pairs x 10 steps, linear, test split (device cpu)" \
  "$RUN" --device cpu --data "$DATA" --json "$TMP/a.json"
check_json "$TMP/a.json" 8 10 2 linear cpu "$TMP/encode-run2-cpu.csv" ||
  fail "the JSON of the default run"
expect_picture "$TMP/b.png" "$(interp_size 1 2)" "1 pair x 2 steps, linear, test split (device cpu-ref)" \
  "$RUN" --device cpu-ref --data "$DATA" --from 3 --to 17 --steps 2 --json "$TMP/b.json"
check_json "$TMP/b.json" 1 2 2 linear cpu-ref "$TMP/encode-run2-cpu-ref.csv" 3 17 ||
  fail "the JSON of --from 3 --to 17"
expect_picture "$TMP/c.png" "$(interp_size 3 45)" "3 pairs x 45 steps, slerp, test split (device cpu-ref)" \
  "$RUN3" --device cpu-ref --data "$DATA" --pairs 3 --steps 45 --slerp --seed 5 --json "$TMP/c.json"
check_json "$TMP/c.json" 3 45 3 slerp cpu-ref "$TMP/encode-run3-cpu-ref.csv" ||
  fail "the JSON of --slerp --steps 45"
expect_picture "$TMP/d.png" "$(interp_size 2 20)" "2 pairs x 20 steps, linear, train split (device cpu)" \
  "$RUN/model.safetensors" --device cpu --data "$DATA" --split train --pairs 2 --steps 20

# The same seed, the same picture; another seed, other pairs.
expect_picture "$TMP/s1.png" "$(interp_size 4 5)" "4 pairs x 5 steps, linear, test split (device cpu)" \
  "$RUN" --device cpu --data "$DATA" --pairs 4 --steps 5 --seed 11 --json "$TMP/s1.json"
expect_picture "$TMP/s2.png" "$(interp_size 4 5)" "4 pairs x 5 steps, linear, test split (device cpu)" \
  "$RUN" --device cpu --data "$DATA" --pairs 4 --steps 5 --seed 11 --json "$TMP/s2.json"
expect_picture "$TMP/s3.png" "$(interp_size 4 5)" "4 pairs x 5 steps, linear, test split (device cpu)" \
  "$RUN" --device cpu --data "$DATA" --pairs 4 --steps 5 --seed 12 --json "$TMP/s3.json"
cmp -s "$TMP/s1.png" "$TMP/s2.png" || fail "--seed 11 twice gave different pictures"
p1=$(check_json "$TMP/s1.json" 4 5 2 linear cpu "$TMP/encode-run2-cpu.csv") ||
  fail "the JSON of --seed 11"
p3=$(check_json "$TMP/s3.json" 4 5 2 linear cpu "$TMP/encode-run2-cpu.csv") ||
  fail "the JSON of --seed 12"
if [ -n "$p1" ] && [ "$p1" = "$p3" ]; then
  fail "--seed 11 and --seed 12 drew the same pairs: $p1"
else
  echo "ok: --seed 11 and --seed 12 draw other pairs ($p1; $p3)"
fi

# ---- errors --------------------------------------------------------------------------------
# expect_error <word that must appear> ARGS...: exit 2, one stderr line with the word and the
# "cuvae: error: " prefix, no crash, nothing on stdout, and nothing written into $TMP/bad.
mkdir -p "$TMP/bad" "$TMP/empty-run"
mkdir -p "$TMP/one-label"
cp "$DATA"/t10k-images-idx3-ubyte "$TMP/one-label/"
idx_labels $(for ((i = 0; i < N_TEST; i++)); do echo 4; done) >"$TMP/one-label/t10k-labels-idx1-ubyte"
expect_error() {
  local word=$1
  shift
  "$CUVAE" interpolate "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$? lines why=""
  lines=$(wc -l <"$TMP/err")
  [ "$rc" -eq 2 ] || why="exit $rc, expected 2"
  [ "$lines" -eq 1 ] || why="${why:+$why; }$lines stderr lines, expected 1"
  [ ! -s "$TMP/out" ] || why="${why:+$why; }wrote to stdout"
  grep -qF -- "$word" "$TMP/err" || why="${why:+$why; }stderr does not mention '$word'"
  head -n 1 "$TMP/err" | grep -q '^cuvae: error: ' || why="${why:+$why; }no 'cuvae: error: ' prefix"
  if grep -qiE 'terminate called|core dumped|segmentation fault|aborted' "$TMP/err" "$TMP/out"; then
    why="${why:+$why; }crashed"
  fi
  [ -z "$(ls -A "$TMP/bad")" ] || why="${why:+$why; }wrote $(ls -A "$TMP/bad")"
  if [ -n "$why" ]; then
    fail "cuvae interpolate $*: $why; stderr:"
    cat "$TMP/err"
  else
    echo "ok: cuvae interpolate $* -> $(cat "$TMP/err")"
  fi
}
out=(--device cpu --data "$DATA" --out "$TMP/bad/x.png" --json "$TMP/bad/x.json")
expect_error --steps "$RUN" "${out[@]}" --steps 1
expect_error --steps "$RUN" "${out[@]}" --steps 101
expect_error --steps "$RUN" "${out[@]}" --steps 5x
expect_error --pairs "$RUN" "${out[@]}" --pairs 0
expect_error --pairs "$RUN" "${out[@]}" --pairs 101
expect_error --pairs "$RUN" "${out[@]}" --pairs -2
expect_error --seed "$RUN" "${out[@]}" --seed -1
expect_error --to "$RUN" "${out[@]}" --from 3
expect_error --from "$RUN" "${out[@]}" --to 3
expect_error --to "$RUN" "${out[@]}" --from 3 --to 3
expect_error --from "$RUN" "${out[@]}" --from -1 --to 3
expect_error --from "$RUN" "${out[@]}" --from $N_TEST --to 3
expect_error --to "$RUN" "${out[@]}" --from 0 --to 1000000
expect_error --pairs "$RUN" "${out[@]}" --from 1 --to 2 --pairs 3
expect_error --seed "$RUN" "${out[@]}" --from 1 --to 2 --seed 3
expect_error --slerp "$RUN" "${out[@]}" --slerp
expect_error --split "$RUN" "${out[@]}" --split val
expect_error --device "$RUN" --data "$DATA" --out "$TMP/bad/x.png" --device tpu
expect_error --out "$RUN" --device cpu --data "$DATA"
expect_error --out "$RUN" --device cpu --data "$DATA" --out "$TMP/bad"
expect_error "$TMP/no-such-folder" "$RUN" --device cpu --data "$DATA" --out "$TMP/no-such-folder/x.png"
expect_error "$TMP/no-such-folder" "$RUN" --device cpu --data "$DATA" --out "$TMP/bad/x.png" \
  --json "$TMP/no-such-folder/x.json"
expect_error --json "$RUN" --device cpu --data "$DATA" --out "$TMP/bad/x.png" --json "$TMP/bad/x.png"
expect_error RUN "${out[@]}"
expect_error "$TMP/empty-run" "$TMP/empty-run" "${out[@]}"
expect_error "$TMP/no-such-run" "$TMP/no-such-run" "${out[@]}"
expect_error "$TMP/no-data" "$RUN" --device cpu --data "$TMP/no-data" --out "$TMP/bad/x.png"
expect_error "label 4" "$RUN" --device cpu --data "$TMP/one-label" --out "$TMP/bad/x.png"
expect_error no-such-flag "$RUN" "${out[@]}" --no-such-flag
expect_error "unexpected argument" "$RUN" "$RUN" "${out[@]}"

# ---- the device policy and help ------------------------------------------------------------
if "$CUVAE" --version 2>/dev/null | grep -q '^GPU: none usable'; then
  expect_error "--device gpu: no usable CUDA device" "$RUN" --data "$DATA" --device gpu \
    --out "$TMP/bad/x.png"
  "$CUVAE" interpolate "$RUN" --data "$DATA" --pairs 1 --steps 2 --out "$TMP/f.png" \
    >"$TMP/out" 2>"$TMP/err"
  if grep -q '^cuvae: no usable GPU (.*); running on the CPU (--device cpu)$' "$TMP/err" &&
    grep -q '(device cpu)$' "$TMP/out" && [ "$(wc -l <"$TMP/out")" -eq 1 ]; then
    echo "ok: interpolate without --device falls back to the CPU, its note on stderr"
  else
    fail "interpolate without --device: no fallback to the CPU with its note on stderr"
    cat "$TMP/out" "$TMP/err"
  fi
else
  echo "skip: the no-GPU device policy (this machine has a GPU)"
fi
if "$CUVAE" interpolate --help >"$TMP/out" 2>&1 && grep -q -- --slerp "$TMP/out" &&
  grep -q RUN "$TMP/out" && "$CUVAE" --help | grep -q '^  interpolate '; then
  echo "ok: cuvae interpolate --help, and the command in cuvae --help"
else
  fail "cuvae interpolate --help"
fi

if [ "$fails" -ne 0 ]; then
  echo "cli_interpolate: $fails failed"
  exit 1
fi
echo "cli_interpolate: all passed"
