#!/usr/bin/env bash
# The exit codes of the test executables' mains (tests/test_support.h run_or_skip), through a
# probe built on the same main (tests/exit_probe.cpp): 77 failed assertions exit 1 (Catch2 v2
# returns the failure count, and CTest reads 77 as "skipped"), a pass exits 0, and only the
# explicit skip path exits 77.
# usage: test_exit_codes.sh <exit_probe-binary>
set -u
# shellcheck source=lib/cli.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/cli.sh"
cli_setup exit_codes "$1"
PROBE=$1

"$PROBE" "77 failing assertions" >"$TMP/fail.out" 2>&1
rc=$?
[ "$rc" -eq 1 ] || fail "77 failed assertions: exit $rc, expected 1"
grep -q "77 failed" "$TMP/fail.out" || fail "the probe did not fail 77 assertions: $(tail -2 "$TMP/fail.out")"

"$PROBE" "one passing assertion" >"$TMP/pass.out" 2>&1
rc=$?
[ "$rc" -eq 0 ] || fail "a passing test: exit $rc, expected 0"

CUVAE_PROBE_SKIP="no such device" "$PROBE" "77 failing assertions" >"$TMP/skip.out" 2>&1
rc=$?
[ "$rc" -eq 77 ] || fail "the skip path: exit $rc, expected 77"
[ "$(cat "$TMP/skip.out")" = "skipped: no such device" ] ||
  fail "the skip path printed '$(cat "$TMP/skip.out")'"
# A listing (CTest's test discovery) never skips: it lists the tests.
CUVAE_PROBE_SKIP="no such device" "$PROBE" --list-test-names-only >"$TMP/list.out" 2>&1
grep -q "^77 failing assertions$" "$TMP/list.out" && grep -q "^one passing assertion$" "$TMP/list.out" ||
  fail "--list-test-names-only with a skip reason printed: $(cat "$TMP/list.out")"

if [ "$fails" -gt 0 ]; then
  echo "$fails failure(s)"
  exit 1
fi
echo "exit codes: 77 failures -> 1, pass -> 0, skip -> 77; a listing lists"
