#!/usr/bin/env bash
# End-to-end check of how `cuvae train` reports broken dataset files: for every kind of
# breakage (truncated, bad magic/type/dims, count mismatch, bad labels, broken gzip, empty,
# missing file or folder, unreadable file) it must exit 2 with exactly one stderr line that
# names the offending file (or folder), and never crash. A valid tiny dataset must train (exit 0).
# Files are made with printf, head and gzip.
# usage: cli_idx_errors.sh <cuvae-binary>
set -u
if [ $# -ne 1 ]; then
  echo "usage: $0 <cuvae-binary>"
  exit 1
fi
CUVAE=$1
source "$(dirname "${BASH_SOURCE[0]}")/lib/cli.sh"
cli_setup idx_errors "$CUVAE"

IMAGES=train-images-idx3-ubyte
LABELS=train-labels-idx1-ubyte

source "$(dirname "${BASH_SOURCE[0]}")/lib/idx.sh"
cli_seed
idx_seed "$SEED"
images() { idx_images "$@"; }  # images COUNT ROWS COLS [PIXEL-BYTES]
labels() { idx_labels "$@"; }  # labels LABEL...
LABELS16=(0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5)

# new_dataset NAME: a folder with a valid 16-image training set (raw files); prints its path.
new_dataset() {
  local d=$TMP/$1
  mkdir -p "$d"
  images 16 28 28 >"$d/$IMAGES"
  labels "${LABELS16[@]}" >"$d/$LABELS"
  echo "$d"
}

# expect_error NAME DATA-DIR PATH-IN-MESSAGE
expect_error() {
  local name=$1 data=$2 path=$3 rc lines
  "$CUVAE" train --device cpu --data "$data" --epochs 1 --limit 16 --batch-size 8 \
    --out "$TMP/run-$name" >"$TMP/out" 2>"$TMP/err"
  rc=$?
  lines=$(wc -l <"$TMP/err")
  local why=""
  [ "$rc" -eq 2 ] || why="exit $rc, expected 2"
  [ "$lines" -eq 1 ] || why="${why:+$why; }$lines stderr lines, expected 1"
  grep -qF -- "$path" "$TMP/err" || why="${why:+$why; }stderr does not name $path"
  head -n 1 "$TMP/err" | grep -q '^cuvae: error: ' || why="${why:+$why; }no 'cuvae: error: ' prefix"
  if grep -qiE 'terminate called|core dumped|segmentation fault|aborted|sanitizer' \
    "$TMP/err" "$TMP/out"; then
    why="${why:+$why; }crashed"
  fi
  if [ -n "$why" ]; then
    echo "FAIL: $name: $why; stderr:"
    cat "$TMP/err"
    fails=$((fails + 1))
  else
    echo "ok: $name -> $(cat "$TMP/err")"
  fi
}

d=$(new_dataset truncated-payload)
images 16 28 28 5000 >"$d/$IMAGES"
expect_error truncated-payload "$d" "$d/$IMAGES"

d=$(new_dataset truncated-header)
images 16 28 28 | head -c 10 >"$d/$IMAGES"
expect_error truncated-header "$d" "$d/$IMAGES"

d=$(new_dataset wrong-magic)
{ printf '\22\64\10\3'; be32 16; be32 28; be32 28; idx_bytes 12544; } >"$d/$IMAGES"
expect_error wrong-magic "$d" "$d/$IMAGES"

d=$(new_dataset wrong-type)
{ printf '\0\0\15\3'; be32 16; be32 28; be32 28; idx_bytes 12544; } >"$d/$IMAGES"
expect_error wrong-type-float "$d" "$d/$IMAGES"

d=$(new_dataset wrong-dims)
labels "${LABELS16[@]}" >"$d/$IMAGES"
expect_error labels-as-images "$d" "$d/$IMAGES"

d=$(new_dataset images-as-labels)
images 16 28 28 >"$d/$LABELS"
expect_error images-as-labels "$d" "$d/$LABELS"

d=$(new_dataset huge-dims-overflow)
images 4294967295 4294967295 4294967295 100 >"$d/$IMAGES"
expect_error huge-dims-overflow "$d" "$d/$IMAGES"

d=$(new_dataset huge-dims-tiny-file)
images 1000000 28 28 100 >"$d/$IMAGES"
expect_error huge-dims-tiny-file "$d" "$d/$IMAGES"

d=$(new_dataset huge-dims-gzip)
images 2000000 28 28 100 | gzip -c >"$d/$IMAGES.gz"
rm "$d/$IMAGES"
expect_error huge-dims-gzip "$d" "$d/$IMAGES.gz"

d=$(new_dataset zero-dim)
images 16 0 28 0 >"$d/$IMAGES"
expect_error zero-dim "$d" "$d/$IMAGES"

d=$(new_dataset trailing-bytes)
{ images 16 28 28; printf 'xyz'; } >"$d/$IMAGES"
expect_error trailing-bytes "$d" "$d/$IMAGES"

d=$(new_dataset count-mismatch)
labels 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 >"$d/$LABELS"
expect_error count-mismatch "$d" "$d/$LABELS"

d=$(new_dataset not-28x28)
images 16 32 32 >"$d/$IMAGES"
expect_error not-28x28 "$d" "$d/$IMAGES"

d=$(new_dataset label-out-of-range)
labels 0 1 2 3 4 5 6 7 8 12 0 1 2 3 4 5 >"$d/$LABELS"
expect_error label-out-of-range "$d" "$d/$LABELS"

d=$(new_dataset gzip-cut-short)
images 16 28 28 | gzip -c | head -c 3000 >"$d/$IMAGES.gz"
rm "$d/$IMAGES"
expect_error gzip-cut-short "$d" "$d/$IMAGES.gz"

d=$(new_dataset gzip-bad-crc)
labels "${LABELS16[@]}" | gzip -c >"$TMP/labels.gz"
size=$(wc -c <"$TMP/labels.gz")
# Flip the CRC-32 of the gzip trailer (its first byte is 8 bytes from the end).
{ head -c $((size - 8)) "$TMP/labels.gz"; printf '\377\377'; tail -c 6 "$TMP/labels.gz"; } \
  >"$d/$LABELS.gz"
rm "$d/$LABELS"
expect_error gzip-bad-crc "$d" "$d/$LABELS.gz"

d=$(new_dataset gzip-garbage)
{ printf '\37\213'; idx_bytes 500; } >"$d/$IMAGES.gz"
rm "$d/$IMAGES"
expect_error gzip-garbage "$d" "$d/$IMAGES.gz"

d=$(new_dataset empty-file)
: >"$d/$IMAGES"
expect_error empty-file "$d" "$d/$IMAGES"

d=$(new_dataset a-directory)
rm "$d/$IMAGES"
mkdir "$d/$IMAGES"
expect_error directory-for-file "$d" "$d/$IMAGES"

d=$(new_dataset missing-file)
rm "$d/$LABELS"
expect_error missing-file "$d" "$d"
grep -qF "$LABELS" "$TMP/err" || { echo "FAIL: missing-file: $LABELS not named"; fails=$((fails + 1)); }

expect_error missing-folder "$TMP/no-such-folder" "$TMP/no-such-folder"

# The header cut at every byte (images 1..15, labels 1..7) and the label payload cut short.
for len in $(seq 1 15); do
  d=$(new_dataset "images-header-cut-$len")
  images 16 28 28 | head -c "$len" >"$d/$IMAGES"
  expect_error "images-header-cut-$len" "$d" "$d/$IMAGES"
done
for len in $(seq 1 7); do
  d=$(new_dataset "labels-header-cut-$len")
  labels "${LABELS16[@]}" | head -c "$len" >"$d/$LABELS"
  expect_error "labels-header-cut-$len" "$d" "$d/$LABELS"
done
d=$(new_dataset labels-payload-cut)
labels "${LABELS16[@]}" | head -c 20 >"$d/$LABELS"
expect_error labels-payload-cut "$d" "$d/$LABELS"

d=$(new_dataset labels-wrong-magic)
{ printf '\1\0\10\1'; be32 16; printf '\0%.0s' $(seq 16); } >"$d/$LABELS"
expect_error labels-wrong-magic "$d" "$d/$LABELS"
d=$(new_dataset labels-wrong-type)
{ printf '\0\0\14\1'; be32 16; printf '\0%.0s' $(seq 16); } >"$d/$LABELS"
expect_error labels-wrong-type-int "$d" "$d/$LABELS"

# 2^32 - 1 in one dimension: over the size limit, refused before anything is allocated.
for dims in "4294967295 28 28" "16 4294967295 28" "16 28 4294967295"; do
  d=$(new_dataset "dim-2^32-1-${dims// /x}")
  # shellcheck disable=SC2086
  images $dims 100 >"$d/$IMAGES"
  expect_error "dim-2^32-1-${dims// /x}" "$d" "$d/$IMAGES"
done
d=$(new_dataset labels-2^32-1)
{ printf '\0\0\10\1'; be32 4294967295; printf '\0%.0s' $(seq 16); } >"$d/$LABELS"
expect_error labels-count-2^32-1 "$d" "$d/$LABELS"

d=$(new_dataset more-labels-than-images)
labels 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 >"$d/$LABELS"
expect_error more-labels-than-images "$d" "$d/$LABELS"

d=$(new_dataset label-255-gzip)
labels 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 255 | gzip -c >"$d/$LABELS.gz"
rm "$d/$LABELS"
expect_error label-255-gzip "$d" "$d/$LABELS.gz"

d=$(new_dataset labels-trailing-bytes)
{ labels "${LABELS16[@]}"; printf '\0'; } >"$d/$LABELS"
expect_error labels-trailing-bytes "$d" "$d/$LABELS"

d=$(new_dataset gzip-trailing-junk)
{ images 16 28 28 | gzip -c; printf 'junk'; } >"$d/$IMAGES.gz"
rm "$d/$IMAGES"
expect_error gzip-trailing-junk "$d" "$d/$IMAGES.gz"

d=$(new_dataset gzip-images-bad-crc)
images 16 28 28 | gzip -c >"$TMP/images.gz"
size=$(wc -c <"$TMP/images.gz")
{ head -c $((size - 8)) "$TMP/images.gz"; printf '\0\0\0\0'; tail -c 4 "$TMP/images.gz"; } \
  >"$d/$IMAGES.gz"
rm "$d/$IMAGES"
expect_error gzip-images-bad-crc "$d" "$d/$IMAGES.gz"

d=$(new_dataset gzip-second-member-cut)
{ images 16 28 28 | head -c 100 | gzip -c; images 16 28 28 | tail -c +101 | gzip -c | head -c 50; } \
  >"$d/$IMAGES.gz"
rm "$d/$IMAGES"
expect_error gzip-second-member-cut "$d" "$d/$IMAGES.gz"

# Files that cannot be read. Root reads a chmod 000 file anyway, so that case runs only for
# other users; a symlink loop, a dangling symlink and a file whose read(2) fails (EIO from
# /proc/self/mem) are unreadable for everyone.
d=$(new_dataset unreadable)
chmod 000 "$d/$IMAGES"
if [ "$(id -u)" -ne 0 ]; then
  expect_error unreadable-chmod-000 "$d" "$d/$IMAGES"
else
  echo "skip: unreadable-chmod-000 (running as root, which reads the file anyway)"
fi
d=$(new_dataset symlink-loop)
rm "$d/$IMAGES"
ln -s "$IMAGES" "$d/$IMAGES"
expect_error symlink-loop "$d" "$d/$IMAGES"
d=$(new_dataset dangling-symlink)
rm "$d/$LABELS"
ln -s no-such-file "$d/$LABELS"
expect_error dangling-symlink "$d" "$d/$LABELS"
if [ -e /proc/self/mem ]; then
  d=$(new_dataset read-error)
  rm "$d/$IMAGES"
  ln -s /proc/self/mem "$d/$IMAGES"
  expect_error read-error "$d" "$d/$IMAGES"
fi

# Not a regular file: a named pipe nobody writes to (opening it would block for ever) and a
# device file are refused at once, before they are opened. timeout stands guard against a hang.
d=$(new_dataset fifo)
rm "$d/$IMAGES"
mkfifo "$d/$IMAGES"
REAL_CUVAE=$CUVAE
CUVAE=$TMP/cuvae-with-timeout
printf '#!/bin/sh\nexec timeout 20 "%s" "$@"\n' "$REAL_CUVAE" >"$CUVAE"
chmod +x "$CUVAE"
expect_error fifo "$d" "$d/$IMAGES"
grep -q "named pipe" "$TMP/err" || fail "fifo: the message does not say it is a named pipe"
d=$(new_dataset device-file)
rm "$d/$IMAGES"
ln -s /dev/zero "$d/$IMAGES"
expect_error device-file "$d" "$d/$IMAGES"
CUVAE=$REAL_CUVAE

# A valid tiny dataset trains, raw and gzip.
for form in raw gz; do
  d=$(new_dataset "valid-$form")
  if [ "$form" = gz ]; then gzip "$d/$IMAGES" "$d/$LABELS"; fi
  "$CUVAE" train --device cpu --data "$d" --epochs 1 --limit 16 --batch-size 8 \
    --out "$TMP/run-valid-$form" >"$TMP/out" 2>"$TMP/err"
  rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "FAIL: valid $form dataset: exit $rc; stderr:"
    cat "$TMP/err"
    fails=$((fails + 1))
  else
    echo "ok: valid $form dataset trains (exit 0)"
  fi
done

if [ "$fails" -ne 0 ]; then
  echo "cli_idx_errors: $fails failed"
  exit 1
fi
echo "cli_idx_errors: all passed"
