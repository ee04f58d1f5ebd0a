#!/usr/bin/env bash
# Every Catch2 test case can be run by its name alone, as CTest runs it: catch_discover_tests
# registers each name and passes it back as a test spec (',', '[' and ']' escaped). A name with
# a ';' (CTest splits the list there) or a leading '-' (read as an option) would select no test
# at all, and without --warn NoTests such a CTest test passes on nothing; a GPU executable's
# names are only ever run on a GPU, so they are checked here, by listing.
# usage: test_names.sh <catch2-executable>...
set -u
fails=0
total=0
for exe in "$@"; do
  [ -x "$exe" ] || { echo "FAIL: $exe is not an executable"; fails=$((fails + 1)); continue; }
  while IFS= read -r name; do
    [ -n "$name" ] || continue
    total=$((total + 1))
    case $name in
      *";"* | -*) echo "FAIL: ${exe##*/}: '$name' has a ';' or starts with '-'"; fails=$((fails + 1))
                  continue ;;
    esac
    spec=$(printf '%s' "$name" | sed 's/\([],[]\)/\\\1/g')
    got=$("$exe" --list-test-names-only "$spec" 2>/dev/null)
    if [ "$got" != "$name" ]; then
      echo "FAIL: ${exe##*/}: the spec of '$name' selects: '${got//$'\n'/ | }'"
      fails=$((fails + 1))
    fi
  done < <("$exe" --list-test-names-only 2>/dev/null)
done
if [ "$total" -eq 0 ]; then
  echo "FAIL: no test names listed"
  exit 1
fi
if [ "$fails" -gt 0 ]; then
  echo "$fails of $total test names cannot be selected by name"
  exit 1
fi
echo "all $total test names select exactly their own test"
