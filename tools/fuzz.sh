#!/usr/bin/env bash
# Builds the libFuzzer targets of the file parsers (tests/fuzz, CMake option CUVAE_FUZZ: clang
# with -fsanitize=fuzzer,address,undefined, no CUDA) in their own build folder and runs each
# for a set time, one after the other. Prints one line per target (runs, coverage, corpus,
# findings) and exits 1 if any target found a crash, leak, timeout, out-of-memory or undefined
# behaviour; the reproducing input is kept in <build>/fuzz/<target>/artifacts/ (replay it with
# `<build>/<target> <file>`).
#
# usage: tools/fuzz.sh [--seconds N] [--build-dir DIR] [--no-build] [target...]
#   targets: idx, safetensors (or fuzz_idx, fuzz_safetensors); default both
#   --seconds N     time per target (default 600)
#   --build-dir DIR the fuzz build folder (default build-fuzz)
#   --no-build      use the targets already built there; exit 77 (skipped) if they are missing
# Seeds (a tiny valid IDX image and label file, raw and gzip; tiny safetensors files with
# cuvae checkpoint metadata) are written fresh to <build>/fuzz/<target>/seeds; what libFuzzer
# finds is kept in <build>/fuzz/<target>/corpus and grows from run to run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

seconds=600
build=$ROOT/build-fuzz
do_build=1
targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --seconds)
      seconds=${2:?--seconds needs a value}
      shift 2
      ;;
    --build-dir)
      build=${2:?--build-dir needs a value}
      shift 2
      ;;
    --no-build)
      do_build=0
      shift
      ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    idx | fuzz_idx) targets+=(fuzz_idx); shift ;;
    safetensors | fuzz_safetensors) targets+=(fuzz_safetensors); shift ;;
    *)
      echo "fuzz.sh: unknown argument '$1' (targets: idx, safetensors)" >&2
      exit 2
      ;;
  esac
done
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "fuzz.sh: --seconds must be a positive integer, got '$seconds'" >&2
  exit 2
fi
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_idx fuzz_safetensors)

if [ "$do_build" = 1 ]; then
  cxx=${CUVAE_FUZZ_CXX:-clang++}
  if ! command -v "$cxx" >/dev/null; then
    echo "fuzz.sh: $cxx not found; libFuzzer needs clang (set CUVAE_FUZZ_CXX)" >&2
    exit 2
  fi
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  cmake -S "$ROOT" -B "$build" "${generator[@]}" -DCUVAE_FUZZ=ON -DCMAKE_CXX_COMPILER="$cxx" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build.configure.log" 2>&1 ||
    { cat "$build.configure.log"; exit 2; }
  rm -f "$build.configure.log"
  cmake --build "$build" --target "${targets[@]}" -- >/dev/null ||
    { echo "fuzz.sh: build failed" >&2; exit 2; }
fi
for t in "${targets[@]}"; do
  if [ ! -x "$build/$t" ]; then
    echo "fuzz.sh: $build/$t is not built (run without --no-build); skipped"
    exit 77
  fi
done

# ---- seed inputs ---------------------------------------------------------------------------
be32() {
  printf '%b' "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) \
    $(($1 >> 8 & 255)) $(($1 & 255)))"
}
le64() {
  local i out=""
  for i in 0 1 2 3 4 5 6 7; do out+=$(printf '\\x%02x' $(($1 >> (8 * i) & 255))); done
  printf '%b' "$out"
}
# safetensors HEADER-JSON DATA-BYTES: the file, header padded with spaces to a multiple of 8.
safetensors() {
  local header=$1 pad
  pad=$(((8 - ${#header} % 8) % 8))
  header+=$(printf '%*s' "$pad" '')
  le64 "${#header}"
  printf '%s' "$header"
  head -c "$2" /dev/zero
}

seeds_fuzz_idx() {
  local d=$1
  { printf '\0\0\10\3'; be32 2; be32 3; be32 2; printf '\0\1\2\3\4\5\6\7\10\11\12\377'; } \
    >"$d/images"
  { printf '\0\0\10\1'; be32 5; printf '\0\1\2\11\5'; } >"$d/labels"
  gzip -n -c "$d/images" >"$d/images.gz"
  gzip -n -c "$d/labels" >"$d/labels.gz"
  { head -c 9 "$d/images" | gzip -n -c; tail -c +10 "$d/images" | gzip -n -c; } >"$d/images-2.gz"
}

# meta KEY=VALUE...: a "__metadata__" entry.
meta() {
  local kv out=""
  for kv in "$@"; do out+="${out:+,}\"${kv%%=*}\":\"${kv#*=}\""; done
  printf '"__metadata__":{%s}' "$out"
}
# tensor NAME DTYPE SHAPE BEGIN END: a tensor entry.
tensor() {
  printf '"%s":{"dtype":"%s","shape":%s,"data_offsets":[%s,%s]}' "$@"
}

seeds_fuzz_safetensors() {
  local d=$1
  local common=(format_version=1 architecture=cuvae-conv-vae-keras latent_dim=2 beta=1)
  safetensors "{$(tensor a F32 '[2]' 0 8),$(tensor b U8 '[0]' 8 8)}" 8 >"$d/plain"
  safetensors "{$(meta format=cuvae-model-1 "${common[@]}"),$(tensor encoder.conv1.bias F32 \
    '[32]' 0 128)}" 128 >"$d/model"
  safetensors "{$(meta format=cuvae-train-state "${common[@]}" batch_size=128 lr=0.001 \
    adam_beta1=0.9 adam_beta2=0.999 adam_eps=1e-07 seed=0 epochs=2 data=d limit=0 \
    train_images=256 train_crc32=0123abcd test_limit=0),$(tensor step I64 '[1]' 0 8),$(tensor \
    epoch I64 '[1]' 8 16)}" 16 >"$d/train-state"
}

# ---- runs ----------------------------------------------------------------------------------
max_len_fuzz_idx=4096
max_len_fuzz_safetensors=8192
dict_fuzz_idx=$ROOT/tests/fuzz/idx.dict
dict_fuzz_safetensors=$ROOT/tests/fuzz/safetensors.dict

findings=0
for t in "${targets[@]}"; do
  work=$build/fuzz/$t
  rm -rf "$work/seeds"
  mkdir -p "$work/seeds" "$work/corpus" "$work/artifacts"
  "seeds_$t" "$work/seeds"
  max_len_var=max_len_$t
  dict_var=dict_$t
  before=$(find "$work/artifacts" -type f | wc -l)
  log=$work/last.log
  start=$(date +%s)
  set +e
  # -malloc_limit_mb: any single allocation this large is a finding (inputs are <= 8 KiB).
  "$build/$t" -max_total_time="$seconds" -max_len="${!max_len_var}" -dict="${!dict_var}" \
    -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" "$work/corpus" "$work/seeds" >"$log" 2>&1
  rc=$?
  set -e
  took=$(($(date +%s) - start))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  status=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
  corpus=$(find "$work/corpus" -type f | wc -l)
  new=$(($(find "$work/artifacts" -type f | wc -l) - before))
  line="$t: ${took} s, ${runs:-?} runs, cov ${cov:-?}, ft ${ft:-?}, corpus $corpus inputs"
  if [ "$rc" -ne 0 ] || [ "$new" -gt 0 ]; then
    findings=$((findings + 1))
    kind=$(grep -oE 'ERROR: [A-Za-z]+: [a-zA-Z -]+' "$log" | head -n 1)
    unit=$(sed -n 's/.*Test unit written to //p' "$log" | head -n 1)
    echo "$line, FINDING (exit $rc${kind:+, $kind}): ${unit:-no input saved}; log $log"
  else
    echo "$line, findings 0"
  fi
done
[ "$findings" -eq 0 ] || exit 1
