#!/usr/bin/env bash
# The installed package, as a GPU node would get it: `cmake --install` into a temporary prefix,
# moved elsewhere (relocatable: $ORIGIN-relative RUNPATH), then
#   - the layout: bin/, libexec/cuvae/ (the test executables), share/cuvae/ (the GPU check and
#     the Python tools), lib/ (libpng, zlib, libgomp, oneDNN: every non-CUDA library outside the C/C++
#     runtime resolves there, no CUDA library is copied, no RUNPATH names an absolute folder,
#     no executable needs the shared CUDA runtime);
#   - the installed `cuvae --version` (this project's version, the build line, a GPU line) and
#     a short CPU training;
#   - share/cuvae/gpu_check.sh: one line and exit 77 where the installed cuvae sees no GPU
#     (on a machine with one, its --help and argument checks only: the check itself is the
#     GPU session's);
#   - share/cuvae/cuda_libs.sh finds a missing library in $CUDA_HOME and in a Python's nvidia-*
#     wheel folders, and names it when it is nowhere;
#   - the cpack .tar.gz: under 50 MB, and its cuvae runs once unpacked.
# A build without CUDA (CUVAE_CUDA=OFF) installs no GPU test executables, and its --version says
# so on the build and libraries lines.
# usage: test_install.sh <build-dir> <project-version> <repo-root> <cuda|no-cuda>
set -u
BUILD=$1
VERSION=$2
ROOT=$3
CUDA=$4
# shellcheck source=lib/cli.sh
. "$ROOT/tests/lib/cli.sh"
# shellcheck source=lib/idx.sh
. "$ROOT/tests/lib/idx.sh"
cli_setup install "$BUILD/cuvae"

if ! cmake --install "$BUILD" --prefix "$TMP/staging" >"$TMP/install.log" 2>&1; then
  cat "$TMP/install.log"
  echo "FAIL: cmake --install"
  exit 1
fi
mv "$TMP/staging" "$TMP/moved"  # what was installed must not depend on where
P=$TMP/moved

# ---- layout --------------------------------------------------------------------------------
gpu_tests=()
[ "$CUDA" = cuda ] && gpu_tests=(libexec/cuvae/cuvae_gpu_tests libexec/cuvae/cuvae_gpu_data_tests)
for f in bin/cuvae libexec/cuvae/cuvae_tests libexec/cuvae/cuvae_data_tests "${gpu_tests[@]}" \
         share/cuvae/gpu_check.sh share/cuvae/gpu_sanitize.sh share/cuvae/cuda_libs.sh \
         share/cuvae/tools/bench/bench.py share/cuvae/tools/bench/torch_vae.py \
         share/cuvae/tools/parity/check_model.py lib/libpng16.so.16 lib/libz.so.1 lib/libgomp.so.1 \
         lib/libdnnl.so.2; do
  [ -e "$P/$f" ] || fail "$f missing from the installed tree"
done
for exe in "$P/bin/cuvae" "$P"/libexec/cuvae/*; do
  name=${exe#"$P"/}
  [ -x "$exe" ] || { fail "$name is not executable"; continue; }
  runpath=$(readelf -d "$exe" | sed -n 's/.*R\(UN\)\{0,1\}PATH.*\[\(.*\)\]/\2/p')
  case $runpath in
    '$ORIGIN/../lib' | '$ORIGIN/../../lib') ;;
    *) fail "$name: RUNPATH '$runpath', expected \$ORIGIN/../lib or \$ORIGIN/../../lib" ;;
  esac
  # The CUDA runtime is linked in statically, once (CMAKE_CUDA_RUNTIME_LIBRARY): no libcudart.
  readelf -d "$exe" | grep -q 'NEEDED.*libcudart' && fail "$name needs the shared libcudart"
  ldd "$exe" >"$TMP/ldd" 2>&1
  grep -q 'not found' "$TMP/ldd" && fail "$name: $(grep 'not found' "$TMP/ldd" | tr -s ' \t\n' ' ')"
  for lib in libpng16.so.16 libz.so.1 libgomp.so.1 libdnnl.so.2; do
    where=$(awk -v l="$lib" '$1 == l { print $3 }' "$TMP/ldd")
    [ -z "$where" ] && continue  # not every executable needs each
    case $where in
      "$P/"*) ;;
      *) fail "$name: $lib resolves to $where, not inside the installed lib/" ;;
    esac
  done
done
for lib in "$P"/lib/*; do
  case ${lib##*/} in
    libcud* | libcublas* | libnv*) fail "a CUDA library was copied into lib/: ${lib##*/}" ;;
  esac
done
grep -rqs "$ROOT" "$P/share/cuvae" && fail "share/cuvae names the source folder $ROOT"

# ---- the installed cuvae -------------------------------------------------------------------
"$P/bin/cuvae" --version >"$TMP/version" 2>&1 || fail "cuvae --version exited $?"
[ "$(sed -n 1p "$TMP/version")" = "cuvae $VERSION" ] ||
  fail "--version's first line '$(sed -n 1p "$TMP/version")', expected 'cuvae $VERSION'"
if [ "$CUDA" = cuda ]; then
  build_re='^build: CUDA [0-9]+\.[0-9]+ runtime \(linked statically\); GPU code for sm_'
  libs_re='^libraries: cuBLAS [0-9]+\.[0-9]+\.[0-9]+, cuDNN 9\.[0-9]+\.[0-9]+; '
else
  build_re='^build: no CUDA: the CPU engines only$'
  libs_re='^libraries: no cuBLAS, no cuDNN; '
  grep -q '^GPU: none usable (this build has no CUDA' "$TMP/version" ||
    fail "--version of a build without CUDA does not say so on its GPU line: $(cat "$TMP/version")"
fi
grep -qE "$build_re" "$TMP/version" || fail "--version has no build line: $(cat "$TMP/version")"
grep -qE "$libs_re" "$TMP/version" || fail "--version has no libraries line: $(cat "$TMP/version")"
gpu_line=$(grep '^GPU: ' "$TMP/version")
[ -n "$gpu_line" ] || fail "--version has no GPU line"

make_mnist_dir "$TMP/data" 96 16
if "$P/bin/cuvae" train --device cpu --data "$TMP/data" --epochs 1 --batch-size 32 \
     --test-limit 16 --out "$TMP/run" >"$TMP/train.log" 2>&1; then
  [ -s "$TMP/run/model.safetensors" ] || fail "the installed cuvae's run has no model.safetensors"
  rows=$(awk -F, 'NR > 1 && $6 == 96' "$TMP/run/metrics.csv" | wc -l)
  [ "$rows" -eq 1 ] || fail "metrics.csv of the installed cuvae's run: $(cat "$TMP/run/metrics.csv")"
else
  fail "the installed cuvae train --device cpu: $(tail -1 "$TMP/train.log")"
fi

# ---- the GPU check -------------------------------------------------------------------------
check=$P/share/cuvae/gpu_check.sh
"$check" --help >"$TMP/help" 2>&1 || fail "gpu_check.sh --help exited $?"
grep -q -- '--prebuilt PREFIX' "$TMP/help" || fail "gpu_check.sh --help does not show its usage"
"$check" --only nothing >"$TMP/bad" 2>&1
rc=$?
[ "$rc" -eq 2 ] && grep -q "unknown step 'nothing'" "$TMP/bad" ||
  fail "gpu_check.sh --only nothing: exit $rc, '$(cat "$TMP/bad")'"
case $gpu_line in
  "GPU: none usable"*)
    "$check" >"$TMP/check" 2>&1
    rc=$?
    lines=$(wc -l <"$TMP/check")
    [ "$rc" -eq 77 ] || fail "gpu_check.sh without a GPU exited $rc, expected 77: $(cat "$TMP/check")"
    [ "$lines" -eq 1 ] && grep -q '^gpu_check.sh: no usable GPU here' "$TMP/check" ||
      fail "gpu_check.sh without a GPU printed $lines lines: $(cat "$TMP/check")"
    # From the source tree, --prebuilt names the same tree.
    "$ROOT/tools/gpu_check.sh" --prebuilt "$P" >/dev/null 2>&1
    rc=$?
    [ "$rc" -eq 77 ] || fail "tools/gpu_check.sh --prebuilt without a GPU exited $rc, expected 77"
    ;;
  *) echo "note: a GPU is here ($gpu_line): gpu_check.sh's run is not part of this test" ;;
esac

# ---- cuda_libs.sh --------------------------------------------------------------------------
# A stand-in for a CUDA library the system does not have: an executable needing
# libcudnn.so.99, found first in $CUDA_HOME, then in a Python's nvidia/*/lib wheel folder.
mkdir -p "$TMP/fake/src" "$TMP/fake/home/lib64" "$TMP/fake/site/nvidia/cudnn/lib" \
         "$TMP/fake/site/nvidia/cu99/lib"
echo 'int cuvae_fake(void) { return 42; }' >"$TMP/fake/src/lib.c"
printf 'int cuvae_fake(void);\nint main(void) { return cuvae_fake() == 42 ? 0 : 1; }\n' \
  >"$TMP/fake/src/main.c"
if ! { cc -shared -fPIC -Wl,-soname,libcudnn.so.99 -o "$TMP/fake/src/libcudnn.so.99" \
         "$TMP/fake/src/lib.c" &&
       cc -o "$TMP/fake/app" "$TMP/fake/src/main.c" "$TMP/fake/src/libcudnn.so.99"; } 2>"$TMP/cc.log"; then
  fail "could not build the stand-in library: $(cat "$TMP/cc.log")"
else
  cp "$TMP/fake/src/libcudnn.so.99" "$TMP/fake/site/nvidia/cudnn/lib/"
  # shellcheck source=../tools/cuda_libs.sh
  . "$P/share/cuvae/cuda_libs.sh"
  found() {  # label: runs cuvae_cuda_libs in a subshell, prints "rc|CUVAE_CUDA_LIBS|runs"
    (
      cuvae_cuda_libs "$TMP/fake/app" python3
      r=$?
      "$TMP/fake/app" 2>/dev/null && ran=yes || ran=no
      echo "$r|$CUVAE_CUDA_LIBS|$ran"
    )
  }
  out=$(unset CUDA_PATH; CUDA_HOME=$TMP/fake/nowhere PYTHONPATH=$TMP/fake/site found)
  [ "$out" = "0|libcudnn.so.99 $TMP/fake/site/nvidia/cudnn/lib (python wheel)|yes" ] ||
    fail "cuda_libs.sh, wheel: '$out'"
  cp "$TMP/fake/src/libcudnn.so.99" "$TMP/fake/home/lib64/"
  out=$(unset CUDA_PATH; CUDA_HOME=$TMP/fake/home PYTHONPATH=$TMP/fake/site found)
  [ "$out" = "0|libcudnn.so.99 $TMP/fake/home/lib64 (CUDA toolkit)|yes" ] ||
    fail "cuda_libs.sh, CUDA_HOME: '$out'"
  out=$(unset CUDA_PATH; CUDA_HOME=$TMP/fake/nowhere found)
  case $out in
    "1|not found: libcudnn.so.99 (searched"*"|no") ;;
    *) fail "cuda_libs.sh, missing: '$out'" ;;
  esac
fi

# ---- the .tar.gz -----------------------------------------------------------------------------
if cpack -G TGZ --config "$BUILD/CPackConfig.cmake" -B "$TMP/pkg" >"$TMP/cpack.log" 2>&1; then
  tgz=$(ls "$TMP"/pkg/cuvae-"$VERSION"-linux-*.tar.gz 2>/dev/null | head -1)
  if [ -z "$tgz" ]; then
    fail "cpack wrote no cuvae-$VERSION-linux-*.tar.gz: $(ls "$TMP/pkg")"
  else
    size=$(stat -c %s "$tgz")
    echo "package $(basename "$tgz"): $size bytes"
    [ "$size" -lt $((50 * 1000 * 1000)) ] || fail "the package is $size bytes, over 50 MB"
    mkdir -p "$TMP/unpacked"
    tar -xzf "$tgz" -C "$TMP/unpacked"
    unpacked=$(ls -d "$TMP"/unpacked/*/ | head -1)
    "${unpacked}bin/cuvae" --version >/dev/null 2>&1 || fail "the unpacked package's cuvae --version"
    [ -x "${unpacked}share/cuvae/gpu_check.sh" ] || fail "the package has no share/cuvae/gpu_check.sh"
  fi
else
  fail "cpack: $(tail -3 "$TMP/cpack.log")"
fi

if [ "$fails" -gt 0 ]; then
  echo "$fails failure(s)"
  exit 1
fi
echo "install tree and package: all checks passed"
