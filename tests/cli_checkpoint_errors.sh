#!/usr/bin/env bash
# End-to-end check of how cuvae reports broken checkpoints. A tiny CPU run (256 synthetic
# images, one epoch) is trained once; then for every kind of breakage (cut short, header
# length beyond the file, header not JSON, offsets out of bounds / overlapping / leaving a
# hole / bytes after the last tensor, wrong dtype or shape, a missing or an extra tensor, an
# empty file, a folder) of model.safetensors, `cuvae eval RUN` and
# `cuvae sample RUN` must exit 2 with one stderr line "cuvae: error: <file>: <reason>", and
# the same for train_state.safetensors with `cuvae train --resume RUN`; never a crash, and the
# broken file is left as it was. The files are broken with python3's standard library.
# usage: cli_checkpoint_errors.sh <cuvae-binary>
set -u
if [ $# -ne 1 ]; then
  echo "usage: $0 <cuvae-binary>"
  exit 1
fi
CUVAE=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib/cli.sh"
cli_setup ckpt_errors "$CUVAE"

source "$(dirname "${BASH_SOURCE[0]}")/lib/idx.sh"
DATA=$TMP/data
make_mnist_dir "$DATA" 256 16
RUN=$TMP/run
if ! "$CUVAE" train --device cpu --data "$DATA" --limit 256 --epochs 1 --batch-size 64 \
  --test-limit 16 --out "$RUN" >"$TMP/train.log" 2>&1; then
  cat "$TMP/train.log"
  echo "FAIL: training the tiny model failed"
  exit 1
fi
echo "ok: trained a tiny model"

# break.py SRC DST MODE: DST is SRC broken in the way MODE says.
cat >"$TMP/break.py" <<'EOF'
import json, struct, sys

src, dst, mode = sys.argv[1:4]
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
tensors = sorted((k for k in header if k != "__metadata__"),
                 key=lambda k: header[k]["data_offsets"][0])
first, last = tensors[0], tensors[-1]


def pack(h, d):
    text = json.dumps(h, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + d


def repack(h, blobs):
    """A well-formed file of the named tensor bytes, offsets laid out anew."""
    out, at = b"", 0
    for k, blob in blobs:
        h[k]["data_offsets"] = [at, at + len(blob)]
        out += blob
        at += len(blob)
    return pack(h, out)


def blobs_of(h):
    return [(k, data[h[k]["data_offsets"][0]:h[k]["data_offsets"][1]]) for k in tensors]


if mode == "cut-in-data":
    out = raw[:len(raw) - len(data) // 2]
elif mode == "cut-in-header":
    out = raw[:8 + n // 2]
elif mode == "cut-in-length":
    out = raw[:5]
elif mode == "empty":
    out = b""
elif mode == "header-length-beyond":
    out = struct.pack("<Q", len(raw)) + raw[8:]
elif mode == "header-not-json":
    out = raw[:8] + b"[" + raw[9:]
elif mode == "offsets-out-of-bounds":
    b, e = header[last]["data_offsets"]
    header[last]["data_offsets"] = [b + 8, e + 8]
    out = pack(header, data)
elif mode == "offsets-overlap":
    b, e = header[last]["data_offsets"]
    header[last]["data_offsets"] = [0, e - b]
    out = pack(header, data)
elif mode == "offsets-hole":
    b, e = header[last]["data_offsets"]
    header[last]["data_offsets"] = [b + 8, e + 8]
    out = pack(header, data[:b] + bytes(8) + data[b:])
elif mode == "trailing-data":
    out = pack(header, data + bytes(8))
elif mode == "dtype-span":  # F64 in the header, F32-sized data
    header[first]["dtype"] = "F64"
    out = pack(header, data)
elif mode == "wrong-dtype":  # F32 [n] as F64 [n/2]: the same bytes, the wrong dtype
    name = "encoder.fc.bias"
    header[name]["dtype"] = "F64"
    header[name]["shape"] = [header[name]["shape"][0] // 2]
    out = pack(header, data)
elif mode == "wrong-shape":  # the same element count under another shape
    name = "encoder.conv1.weight"
    header[name]["shape"] = list(reversed(header[name]["shape"]))
    out = pack(header, data)
elif mode == "missing-tensor":
    blobs = [(k, v) for k, v in blobs_of(header) if k != "decoder.out.bias"]
    del header["decoder.out.bias"]
    out = repack(header, blobs)
elif mode == "extra-tensor":
    blobs = blobs_of(header) + [("encoder.extra.weight", bytes(16))]
    header["encoder.extra.weight"] = {"dtype": "F32", "shape": [4]}
    out = repack(header, blobs)
else:
    sys.exit("unknown mode " + mode)
open(dst, "wb").write(out)
EOF

# expect_refused NAME FILE WORDS CMD...: exit 2, one stderr line "cuvae: error: FILE: ..."
# holding WORDS, no crash, FILE unchanged.
expect_refused() {
  local name=$1 file=$2 words=$3 rc lines why=""
  shift 3
  cp "$file" "$TMP/before" 2>/dev/null
  "$@" >"$TMP/out" 2>"$TMP/err"
  rc=$?
  lines=$(wc -l <"$TMP/err")
  [ "$rc" -eq 2 ] || why="exit $rc, expected 2"
  [ "$lines" -eq 1 ] || why="${why:+$why; }$lines stderr lines, expected 1"
  grep -qF -- "cuvae: error: $file: " "$TMP/err" ||
    why="${why:+$why; }stderr does not lead with $file"
  grep -qF -- "$words" "$TMP/err" || why="${why:+$why; }stderr does not say '$words'"
  if grep -qiE 'terminate called|core dumped|segmentation fault|aborted|sanitizer' \
    "$TMP/err" "$TMP/out"; then
    why="${why:+$why; }crashed"
  fi
  if [ -f "$file" ] && ! cmp -s "$file" "$TMP/before"; then why="${why:+$why; }$file changed"; fi
  if [ -n "$why" ]; then
    echo "FAIL: $name: $why; stderr:"
    cat "$TMP/err"
    fails=$((fails + 1))
  else
    echo "ok: $name -> $(cat "$TMP/err")"
  fi
}

# mode and the words its message must hold
cases=(
  "cut-in-data|outside the data area"
  "cut-in-header|runs past the end of the file"
  "cut-in-length|too short for a safetensors file"
  "empty|too short for a safetensors file"
  "header-length-beyond|runs past the end of the file"
  "header-not-json|header is not valid JSON"
  "offsets-out-of-bounds|lie outside the data area"
  "offsets-overlap|tensor data ranges overlap"
  "offsets-hole|of the data area belong to no tensor"
  "trailing-data|bytes after the last tensor's data"
  "dtype-span|but dtype and shape need"
  "wrong-dtype|tensor 'encoder.fc.bias' has dtype F64, expected F32"
  "wrong-shape|tensor 'encoder.conv1.weight' has shape [3, 3, 1, 32], expected [32, 1, 3, 3]"
  "missing-tensor|missing tensor 'decoder.out.bias'"
  "extra-tensor|unexpected tensor 'encoder.extra.weight'"
)
for c in "${cases[@]}"; do
  mode=${c%%|*}
  words=${c#*|}
  for file in model train_state; do
    run=$TMP/$file-$mode
    rm -rf "$run"
    cp -r "$RUN" "$run"
    if ! "$PY" "$TMP/break.py" "$RUN/$file.safetensors" "$run/$file.safetensors" "$mode"; then
      echo "FAIL: could not make $file-$mode"
      fails=$((fails + 1))
      continue
    fi
    f=$run/$file.safetensors
    if [ "$file" = model ]; then
      expect_refused "eval $file $mode" "$f" "$words" \
        "$CUVAE" eval "$run" --data "$DATA" --device cpu --iw-samples 0 --limit 4
      expect_refused "sample $file $mode" "$f" "$words" "$CUVAE" sample "$run" --device cpu
    else
      expect_refused "resume $file $mode" "$f" "$words" \
        "$CUVAE" train --resume "$run" --epochs 2 --device cpu
    fi
  done
done

# A folder where the file should be.
for file in model train_state; do
  run=$TMP/$file-folder
  cp -r "$RUN" "$run"
  f=$run/$file.safetensors
  rm "$f"
  mkdir "$f"
  if [ "$file" = model ]; then
    expect_refused "eval $file folder" "$f" "is a directory" \
      "$CUVAE" eval "$run" --data "$DATA" --device cpu --iw-samples 0 --limit 4
  else
    expect_refused "resume $file folder" "$f" "is a directory" \
      "$CUVAE" train --resume "$run" --epochs 2 --device cpu
  fi
done

# The intact run still evaluates.
if "$CUVAE" eval "$RUN" --data "$DATA" --device cpu --iw-samples 0 --limit 4 >/dev/null \
  2>"$TMP/err"; then
  echo "ok: the intact run evaluates"
else
  echo "FAIL: the intact run does not evaluate:"
  cat "$TMP/err"
  fails=$((fails + 1))
fi

if [ "$fails" -ne 0 ]; then
  echo "cli_checkpoint_errors: $fails failed"
  exit 1
fi
echo "cli_checkpoint_errors: all passed"
