# Set-up shared by the shell tests of the binary; sourced, not run.
#   cli_setup NAME CUVAE   checks that CUVAE is an executable, makes the scratch folder $TMP
#                          (removed on exit; mktemp: unique per process whatever the seed) and
#                          starts the failure count $fails at 0
#   cli_seed               sets $SEED to CUVAE_TEST_SEED (a replay) or a fresh draw, prints
#                          "seed N" and seeds $RANDOM from it; a test seeds its synthetic
#                          pixels with `idx_seed "$SEED"` (lib/idx.sh)
#   fail MESSAGE...        prints "FAIL: MESSAGE" and counts it
#   $PY                    the Python the scripts' checks run (Debian's, else the one on PATH)

PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

cli_setup() {
  if [ ! -x "$2" ]; then
    echo "FAIL: $2 is not an executable"
    exit 1
  fi
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/cuvae_$1.XXXXXX")
  trap 'rm -rf "$TMP"' EXIT
  fails=0
}

cli_seed() {
  SEED=${CUVAE_TEST_SEED:-$((RANDOM * 32768 + RANDOM))}
  if ! [[ $SEED =~ ^[0-9]{1,18}$ ]]; then
    echo "FAIL: CUVAE_TEST_SEED=$SEED is not a whole number of at most 18 digits"
    exit 1
  fi
  SEED=$((10#$SEED))  # no octal reading of a leading zero
  echo "seed $SEED (CUVAE_TEST_SEED=$SEED replays this run)"
  RANDOM=$((SEED % 32768))
}

fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}
