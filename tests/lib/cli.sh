# Set-up shared by the shell tests of the binary; sourced, not run.
#   cli_setup NAME CUVAE   checks that CUVAE is an executable, makes the scratch folder $TMP
#                          (removed on exit) and starts the failure count $fails at 0
#   fail MESSAGE...        prints "FAIL: MESSAGE" and counts it

cli_setup() {
  if [ ! -x "$2" ]; then
    echo "FAIL: $2 is not an executable"
    exit 1
  fi
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/cuvae_$1.XXXXXX")
  trap 'rm -rf "$TMP"' EXIT
  fails=0
}

fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}
