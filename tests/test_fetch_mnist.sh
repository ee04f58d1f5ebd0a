#!/usr/bin/env bash
# Tests tools/fetch_mnist.sh without the network, in one of two modes:
#   offline (the default): --verify-only on a copy of the real MNIST files (passes; a changed
#     byte in the decompressed content, a missing file or a broken gzip fails naming the
#     file), downloads from unreachable mirrors (fails cleanly, leaves no partial file),
#     --help and bad usage;
#   mirrors: downloads from local file:// mirrors (a bad copy is refused, a good one is
#     taken). Only curl reads file:// URLs (fetch_mnist.sh falls back to wget otherwise), so
#     without curl this mode is skipped (exit 77), never passed.
# The MNIST .gz files come from $CUVAE_MNIST_DIR, else <repo-root>/data/mnist; without
# them either mode is skipped (exit 77).
# usage: test_fetch_mnist.sh [repo-root [offline|mirrors]]
set -u

ROOT=${1:-$(cd "$(dirname "$0")/.." && pwd)}
MODE=${2:-offline}
case $MODE in
  offline | mirrors) ;;
  *) echo "usage: $0 [repo-root [offline|mirrors]]"; exit 2 ;;
esac
FETCH=$ROOT/tools/fetch_mnist.sh
NAMES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte
       t10k-labels-idx1-ubyte)

has_mnist() {
  local n
  [ -n "$1" ] && [ -d "$1" ] || return 1
  for n in "${NAMES[@]}"; do
    [ -f "$1/$n.gz" ] || [ -f "$1/$n" ] || return 1
  done
}

SRC=${CUVAE_MNIST_DIR:-}
has_mnist "$SRC" || SRC=$ROOT/data/mnist
if ! has_mnist "$SRC"; then
  echo "skipped: no MNIST folder (set CUVAE_MNIST_DIR or run tools/fetch_mnist.sh)"
  exit 77
fi
if [ "$MODE" = mirrors ] && ! command -v curl >/dev/null 2>&1; then
  echo "skipped: no curl (the file:// mirror checks need it; wget cannot read file:// URLs)"
  exit 77
fi
[ -f "$FETCH" ] || { echo "FAIL: $FETCH not found"; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cuvae_fetch_test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
FAILS=0
fail() {
  echo "FAIL: $*"
  FAILS=$((FAILS + 1))
}

# run NAME ARGS...: runs the script, keeps stdout+stderr in $TMP/NAME.log, sets RC.
run() {
  local name=$1
  shift
  bash "$FETCH" "$@" >"$TMP/$name.log" 2>&1
  RC=$?
}

# A fresh copy of the four .gz files (gzip-compressing raw ones when that is all there is).
GOOD=$TMP/good
mkdir -p "$GOOD"
for n in "${NAMES[@]}"; do
  if [ -f "$SRC/$n.gz" ]; then cp "$SRC/$n.gz" "$GOOD/"; else gzip -c "$SRC/$n" >"$GOOD/$n.gz"; fi
done
count_entries() { find "$1" -mindepth 1 -maxdepth 1 | wc -l; }
fresh_copy() {  # DIR
  rm -rf "$1"
  mkdir -p "$1"
  cp "$GOOD"/*.gz "$1/"
}
finish() {
  if [ "$FAILS" -ne 0 ]; then
    echo "test_fetch_mnist.sh $MODE: $FAILS check(s) failed"
    exit 1
  fi
  echo "test_fetch_mnist.sh $MODE: all checks passed"
  exit 0
}

# A copy of t10k-labels-idx1-ubyte.gz with one byte of its decompressed content changed (a
# label set to 255), and the sums of both contents.
BAD_COPY=$TMP/bad-copy/t10k-labels-idx1-ubyte.gz
mkdir -p "$TMP/bad-copy"
gzip -dc "$GOOD/t10k-labels-idx1-ubyte.gz" >"$TMP/labels.raw"
printf '\377' | dd of="$TMP/labels.raw" bs=1 seek=100 conv=notrunc status=none
gzip -c "$TMP/labels.raw" >"$BAD_COPY"
BAD_SUM=$(sha256sum "$TMP/labels.raw" | cut -d' ' -f1)
GOOD_SUM=$(gzip -dc "$GOOD/t10k-labels-idx1-ubyte.gz" | sha256sum | cut -d' ' -f1)
[ "$BAD_SUM" != "$GOOD_SUM" ] || fail "test setup: the corruption did not change the content"

# Mode mirrors: local file:// mirrors (curl only): a mirror with a bad copy is refused (not
# moved into place), the next mirror's good copy is taken.
if [ "$MODE" = mirrors ]; then
  mkdir -p "$TMP/mirror-bad" "$TMP/mirror-good"
  cp "$BAD_COPY" "$TMP/mirror-bad/"
  cp "$GOOD/t10k-labels-idx1-ubyte.gz" "$TMP/mirror-good/"
  fresh_copy "$TMP/dest-mirror"
  rm "$TMP/dest-mirror/t10k-labels-idx1-ubyte.gz"
  CUVAE_MNIST_MIRRORS="file://$TMP/mirror-bad/ file://$TMP/mirror-good/" \
    run mirrors --dest "$TMP/dest-mirror"
  [ "$RC" -eq 0 ] || fail "bad then good mirror: exited $RC: $(cat "$TMP/mirrors.log")"
  grep -q "t10k-labels-idx1-ubyte.gz from file://$TMP/mirror-bad/.*$BAD_SUM.*$GOOD_SUM.*refused" \
    "$TMP/mirrors.log" || fail "the bad mirror copy was not refused: $(cat "$TMP/mirrors.log")"
  cmp -s "$TMP/dest-mirror/t10k-labels-idx1-ubyte.gz" "$GOOD/t10k-labels-idx1-ubyte.gz" ||
    fail "the good mirror copy was not moved into place"
  [ "$(count_entries "$TMP/dest-mirror")" -eq 4 ] ||
    fail "bad then good mirror: unexpected files: $(ls -A "$TMP/dest-mirror")"

  # Only the bad mirror: refused, nothing moved into place, exit 1.
  fresh_copy "$TMP/dest-badonly"
  rm "$TMP/dest-badonly/t10k-labels-idx1-ubyte.gz"
  CUVAE_MNIST_MIRRORS="file://$TMP/mirror-bad/" run badonly --dest "$TMP/dest-badonly"
  [ "$RC" -eq 1 ] || fail "only a bad mirror: exited $RC, expected 1"
  [ ! -e "$TMP/dest-badonly/t10k-labels-idx1-ubyte.gz" ] || fail "a refused copy was moved into place"
  [ "$(count_entries "$TMP/dest-badonly")" -eq 3 ] ||
    fail "only a bad mirror: unexpected files: $(ls -A "$TMP/dest-badonly")"
  finish
fi

# Mode offline from here on.

# 1. The real files verify.
fresh_copy "$TMP/ok"
run verify_ok --verify-only "$TMP/ok"
[ "$RC" -eq 0 ] || fail "--verify-only on the real files exited $RC: $(cat "$TMP/verify_ok.log")"
for n in "${NAMES[@]}"; do
  grep -q "ok: $TMP/ok/$n.gz" "$TMP/verify_ok.log" || fail "no 'ok' line for $n.gz"
done

# 2. Recompressing differently (other level, no name) keeps the content: still verifies.
fresh_copy "$TMP/recompressed"
gzip -dc "$GOOD/t10k-labels-idx1-ubyte.gz" | gzip -9 -n >"$TMP/recompressed/t10k-labels-idx1-ubyte.gz"
run recompressed --verify-only "$TMP/recompressed"
[ "$RC" -eq 0 ] || fail "a recompressed but identical file was refused: $(cat "$TMP/recompressed.log")"

# 3. One byte of the decompressed content changed (a label set to 255): fails, naming the
#    file and both sums.
fresh_copy "$TMP/corrupt"
BAD=$TMP/corrupt/t10k-labels-idx1-ubyte.gz
cp "$BAD_COPY" "$BAD"
run corrupt --verify-only "$TMP/corrupt"
[ "$RC" -eq 1 ] || fail "a corrupted file: --verify-only exited $RC, expected 1"
LINE=$(grep "error: $BAD:" "$TMP/corrupt.log")
[ -n "$LINE" ] || fail "a corrupted file: no error line naming $BAD: $(cat "$TMP/corrupt.log")"
[ "$(printf '%s\n' "$LINE" | wc -l)" -eq 1 ] || fail "a corrupted file: not one error line"
case $LINE in *"$BAD_SUM"*"$GOOD_SUM"*) ;; *) fail "a corrupted file: both sums not named: $LINE" ;; esac
grep -q "error:.*train-images" "$TMP/corrupt.log" && fail "a good file reported as bad"

# 4. A missing file fails, naming it.
fresh_copy "$TMP/missing"
rm "$TMP/missing/train-labels-idx1-ubyte.gz"
run missing --verify-only "$TMP/missing"
[ "$RC" -eq 1 ] || fail "a missing file: --verify-only exited $RC, expected 1"
grep -q "error: $TMP/missing/train-labels-idx1-ubyte.gz: missing" "$TMP/missing.log" ||
  fail "a missing file is not named: $(cat "$TMP/missing.log")"

# 5. A broken (cut short) gzip file fails, naming it.
fresh_copy "$TMP/broken"
head -c 1000 "$GOOD/t10k-images-idx3-ubyte.gz" >"$TMP/broken/t10k-images-idx3-ubyte.gz"
run broken --verify-only "$TMP/broken"
[ "$RC" -eq 1 ] || fail "a broken gzip file: --verify-only exited $RC, expected 1"
grep -q "error: $TMP/broken/t10k-images-idx3-ubyte.gz: cannot decompress" "$TMP/broken.log" ||
  fail "a broken gzip file is not named: $(cat "$TMP/broken.log")"

# 6. A missing folder fails.
run nofolder --verify-only "$TMP/no-such-folder"
[ "$RC" -eq 1 ] || fail "a missing folder: --verify-only exited $RC, expected 1"

# 7. Downloads with every mirror unreachable (port 9 on this machine; nothing leaves it):
#    fails cleanly, leaves nothing behind.
DEST=$TMP/dest-empty
CUVAE_MNIST_MIRRORS="http://127.0.0.1:9/ http://127.0.0.1:9/mirror2/" run unreachable --dest "$DEST"
[ "$RC" -eq 1 ] || fail "unreachable mirrors: exited $RC, expected 1"
[ -z "$(ls -A "$DEST" 2>/dev/null)" ] || fail "unreachable mirrors left files: $(ls -A "$DEST")"
grep -q "terminate\|unbound variable\|syntax error" "$TMP/unreachable.log" &&
  fail "unreachable mirrors: script error: $(cat "$TMP/unreachable.log")"

# 8. All four already present and verified: nothing is downloaded, exit 0, files untouched.
fresh_copy "$TMP/dest-full"
BEFORE=$(cd "$TMP/dest-full" && sha256sum -- *.gz)
CUVAE_MNIST_MIRRORS="http://127.0.0.1:9/" run present --dest "$TMP/dest-full"
[ "$RC" -eq 0 ] || fail "files already present: exited $RC: $(cat "$TMP/present.log")"
grep -q "downloading" "$TMP/present.log" && fail "files already present were downloaded again"
[ "$BEFORE" = "$(cd "$TMP/dest-full" && sha256sum -- *.gz)" ] || fail "present files changed"

# 9. Three present, one missing, mirrors unreachable: fails; the three stay, no partial file.
fresh_copy "$TMP/dest-partial"
rm "$TMP/dest-partial/t10k-images-idx3-ubyte.gz"
CUVAE_MNIST_MIRRORS="http://127.0.0.1:9/" run partial --dest "$TMP/dest-partial"
[ "$RC" -eq 1 ] || fail "one file missing, mirrors unreachable: exited $RC, expected 1"
[ "$(count_entries "$TMP/dest-partial")" -eq 3 ] ||
  fail "one file missing: the folder should hold the 3 good files only: $(ls -A "$TMP/dest-partial")"

# (10., the file:// mirrors, is mode mirrors, above.)

# 11. --help and bad usage.
run help --help
[ "$RC" -eq 0 ] || fail "--help exited $RC"
grep -q "verify-only" "$TMP/help.log" || fail "--help does not describe --verify-only"
run bogus --bogus
[ "$RC" -eq 2 ] || fail "an unknown argument exited $RC, expected 2"

finish
