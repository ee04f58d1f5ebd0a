# shellcheck shell=bash disable=SC2034
# Finds the CUDA libraries that a cuvae executable loads (cuBLAS, cuBLASLt, cuDNN; the CUDA
# runtime is linked in) and puts their folders on LD_LIBRARY_PATH. Sourced, not run:
#   . cuda_libs.sh; cuvae_cuda_libs BINARY [PYTHON]
# Where it looks, in this order, for each library the dynamic linker does not find already:
#   1. the system (ldconfig's cache, LD_LIBRARY_PATH as it is): nothing to add;
#   2. $CUDA_HOME, $CUDA_PATH and /usr/local/cuda: lib64/, lib/, targets/x86_64-linux/lib/;
#   3. the nvidia-* wheels in PYTHON's site-packages (PyTorch installs them): nvidia/*/lib/
#      (nvidia/cu13/lib holds cuBLAS, nvidia/cudnn/lib cuDNN). When a wheel folder is taken,
#      every nvidia/*/lib folder of that Python joins it: cuDNN loads its engines' own
#      dependencies (NVRTC, nvJitLink) at run time, by name.
# Sets CUVAE_CUDA_LIBS to one line saying which library came from where, and returns 1 when a
# library is still missing (CUVAE_CUDA_LIBS then names it).

# The libraries BINARY needs that the dynamic linker cannot find now, one per line.
cuvae_missing_libs() {
  ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 == "not" { print $1 }'
}

# The nvidia/*/lib folders of PYTHON's nvidia-* wheels, one per line (none without that Python).
cuvae_wheel_lib_dirs() {
  command -v "$1" >/dev/null 2>&1 || return 0
  "$1" - <<'EOF' 2>/dev/null
import glob, importlib.util, os
spec = importlib.util.find_spec("nvidia")
for root in (spec.submodule_search_locations if spec else []):
    for d in sorted(glob.glob(os.path.join(root, "*", "lib"))):
        print(d)
EOF
}

cuvae_cuda_libs() {
  local bin=$1 py=${2:-python3}
  local missing d lib found
  missing=$(cuvae_missing_libs "$bin")
  local added=()
  if [ -n "$missing" ]; then
    local toolkit=()
    for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
      [ -n "$d" ] && toolkit+=("$d/lib64" "$d/lib" "$d/targets/x86_64-linux/lib")
    done
    local wheels=()
    mapfile -t wheels < <(cuvae_wheel_lib_dirs "$py")
    local from_wheel=0
    for lib in $missing; do
      found=""
      for d in "${toolkit[@]}"; do
        if [ -e "$d/$lib" ]; then found=$d; break; fi
      done
      if [ -z "$found" ]; then
        for d in "${wheels[@]}"; do
          if [ -e "$d/$lib" ]; then found=$d; from_wheel=1; break; fi
        done
      fi
      [ -n "$found" ] && added+=("$found")
    done
    [ "$from_wheel" -eq 1 ] && added+=("${wheels[@]}")
    local path="" seen=" "
    for d in "${added[@]}"; do
      case $seen in *" $d "*) continue ;; esac
      seen+="$d "
      path+="${path:+:}$d"
    done
    if [ -n "$path" ]; then
      LD_LIBRARY_PATH="$path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      export LD_LIBRARY_PATH
    fi
    missing=$(cuvae_missing_libs "$bin")
  fi
  if [ -n "$missing" ]; then
    CUVAE_CUDA_LIBS="not found: ${missing//$'\n'/ } (searched the system, \$CUDA_HOME, /usr/local/cuda and the nvidia-* wheels of $py)"
    return 1
  fi
  # Which file each CUDA library resolved to, and whether this function added its folder.
  CUVAE_CUDA_LIBS=$(ldd "$bin" 2>/dev/null | awk -v added=" ${added[*]} " '
    $1 ~ /^lib(cublas|cublasLt|cudnn)\.so/ {
      dir = $3; sub(/\/[^\/]*$/, "", dir)
      how = index(added, " " dir " ") ? (dir ~ /\/nvidia\// ? "python wheel" : "CUDA toolkit") : "system"
      printf "%s%s %s (%s)", (n++ ? ", " : ""), $1, dir, how
    }')
  return 0
}
