#!/usr/bin/env bash
# Downloads the four MNIST files (gzip-compressed IDX) into a dataset folder and verifies
# each against the published SHA-256 of its decompressed content, recorded below. Tries
# several public mirrors in order; a download lands under a temporary name and is moved
# into place only once verified. Files already present and verified are skipped.
# `--verify-only DIR` checks a folder without touching the network.
set -euo pipefail

readonly ME="fetch_mnist.sh"
readonly NAMES=(train-images-idx3-ubyte train-labels-idx1-ubyte
                t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
# SHA-256 of the decompressed files: the sums published with the original MNIST files.
declare -A SHA256=(
  [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)
readonly DEFAULT_MIRRORS=(https://ossci-datasets.s3.amazonaws.com/mnist/
                         https://storage.googleapis.com/cvdf-datasets/mnist/
                         http://yann.lecun.com/exdb/mnist/)

usage() {
  cat <<EOF
usage: $ME [--dest DIR]
       $ME --verify-only DIR

Downloads train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz
and t10k-labels-idx1-ubyte.gz into DIR (default: data/mnist in the repository) and checks
the SHA-256 of each decompressed file against the published sum. Files already present and
verified are kept; a download that does not verify is refused (deleted, never moved into
place) and the next mirror is tried.

  --dest DIR          where to put the files (created if needed)
  --verify-only DIR   only check the four files in DIR (NAME.gz, or the uncompressed NAME);
                      no network. Exit 0 when all four verify, 1 otherwise.
  -h, --help          this help

Environment:
  CUVAE_MNIST_MIRRORS  whitespace-separated base URLs to try instead of the defaults:
$(printf '                         %s\n' "${DEFAULT_MIRRORS[@]}")

Exit status: 0 all four files present and verified, 1 a file failed, 2 bad usage.
EOF
}

warn() { echo "$ME: $*" >&2; }
error() { echo "$ME: error: $*" >&2; }
usage_error() {
  echo "$ME: error: $*; see --help" >&2
  exit 2
}

sha256_of_stdin() {
  local out
  if command -v sha256sum >/dev/null 2>&1; then
    out=$(sha256sum) || return 1
  else
    out=$(shasum -a 256) || return 1
  fi
  echo "${out%% *}"
}

# Prints the SHA-256 of a file's content, decompressed first when it starts with the gzip
# magic bytes. Fails (status 1) when the gzip data is broken.
content_sha256() {
  local file=$1 magic
  magic=$(head -c 2 -- "$file" | od -An -tx1 | tr -d ' \n')
  if [ "$magic" = "1f8b" ]; then
    gzip -dc -- "$file" | sha256_of_stdin
  else
    sha256_of_stdin <"$file"
  fi
}

# check_file FILE NAME: 0 when FILE's content has NAME's published sum; otherwise prints a
# one-line error naming FILE (and both sums on a mismatch) and returns 1.
check_file() {
  local file=$1 name=$2 sum
  if [ ! -f "$file" ] || [ ! -r "$file" ]; then
    error "$file: not a readable file"
    return 1
  fi
  if ! sum=$(content_sha256 "$file" 2>/dev/null); then
    error "$file: cannot decompress (broken gzip file)"
    return 1
  fi
  if [ "$sum" != "${SHA256[$name]}" ]; then
    error "$file: sha256 of the decompressed content is $sum, expected ${SHA256[$name]}"
    return 1
  fi
  return 0
}

# The file holding NAME in DIR: NAME.gz, else the uncompressed NAME; empty if neither.
present_file() {
  local dir=$1 name=$2
  if [ -e "$dir/$name.gz" ]; then
    echo "$dir/$name.gz"
  elif [ -e "$dir/$name" ]; then
    echo "$dir/$name"
  fi
}

verify_only() {
  local dir=$1 name file failed=0
  if [ ! -d "$dir" ]; then
    error "$dir: no such folder"
    return 1
  fi
  for name in "${NAMES[@]}"; do
    file=$(present_file "$dir" "$name")
    if [ -z "$file" ]; then
      error "$dir/$name.gz: missing (nor is the uncompressed $name there)"
      failed=1
    elif check_file "$file" "$name"; then
      echo "ok: $file"
    else
      failed=1
    fi
  done
  if [ "$failed" -ne 0 ]; then
    error "$dir: MNIST files failed verification"
    return 1
  fi
  echo "all four MNIST files in $dir verified"
}

download() {  # URL OUT
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --connect-timeout 20 --retry 2 -o "$2" -- "$1"
  else
    wget -q --timeout=20 --tries=3 -O "$2" -- "$1"
  fi
}

CURRENT_TMP=""
cleanup() {
  if [ -n "$CURRENT_TMP" ]; then rm -f -- "$CURRENT_TMP"; fi
}

fetch_all() {
  local dest=$1 name file url tmp mirror sum got failed=() mirror_list=()
  if [ -n "${CUVAE_MNIST_MIRRORS+set}" ]; then
    read -r -d '' -a mirror_list <<<"$CUVAE_MNIST_MIRRORS" || true
    if [ "${#mirror_list[@]}" -eq 0 ]; then usage_error "CUVAE_MNIST_MIRRORS is empty"; fi
  else
    mirror_list=("${DEFAULT_MIRRORS[@]}")
  fi
  if ! command -v curl >/dev/null 2>&1 && ! command -v wget >/dev/null 2>&1; then
    error "neither curl nor wget is installed"
    return 1
  fi
  if ! mkdir -p -- "$dest"; then
    error "$dest: cannot create the folder"
    return 1
  fi
  trap cleanup EXIT
  trap 'cleanup; exit 130' INT TERM
  for name in "${NAMES[@]}"; do
    # An uncompressed copy is what the loader reads first, so it must be right too.
    if [ -e "$dest/$name" ]; then
      if check_file "$dest/$name" "$name"; then
        echo "ok: $dest/$name (already present)"
        continue
      fi
      error "$dest/$name: remove it and run again (the loader prefers it over $name.gz)"
      failed+=("$name")
      continue
    fi
    file="$dest/$name.gz"
    if [ -e "$file" ]; then
      if check_file "$file" "$name"; then
        echo "ok: $file (already present)"
        continue
      fi
      warn "$file: downloading it again; it is replaced only by a verified copy"
    fi
    got=0
    for mirror in "${mirror_list[@]}"; do
      url="${mirror%/}/$name.gz"
      if ! tmp=$(mktemp "$dest/.$name.gz.partial.XXXXXX"); then
        error "$dest: cannot create a temporary file there"
        return 1
      fi
      CURRENT_TMP=$tmp
      echo "downloading $url"
      if ! download "$url" "$tmp"; then
        warn "$url: download failed"
      elif ! sum=$(content_sha256 "$tmp" 2>/dev/null); then
        error "$name.gz from $url: not a valid gzip file; refused"
      elif [ "$sum" != "${SHA256[$name]}" ]; then
        error "$name.gz from $url: sha256 of the decompressed content is $sum," \
              "expected ${SHA256[$name]}; refused"
      else
        if ! mv -f -- "$tmp" "$file"; then
          error "$file: cannot move the verified download into place"
          return 1
        fi
        CURRENT_TMP=""
        echo "ok: $file (verified)"
        got=1
        break
      fi
      rm -f -- "$tmp"
      CURRENT_TMP=""
    done
    if [ "$got" -eq 0 ]; then
      error "$file: no mirror gave a verified copy (tried: ${mirror_list[*]})"
      failed+=("$name")
    fi
  done
  if [ "${#failed[@]}" -ne 0 ]; then
    error "$dest: not fetched: ${failed[*]}"
    return 1
  fi
  echo "all four MNIST files in $dest verified"
}

main() {
  local script_dir dest="" verify_dir="" mode=fetch
  script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
  while [ $# -gt 0 ]; do
    case $1 in
      -h | --help)
        usage
        return 0
        ;;
      --dest)
        [ $# -ge 2 ] || usage_error "--dest needs a folder"
        dest=$2
        shift 2
        ;;
      --dest=*)
        dest=${1#--dest=}
        shift
        ;;
      --verify-only)
        [ $# -ge 2 ] || usage_error "--verify-only needs a folder"
        mode=verify
        verify_dir=$2
        shift 2
        ;;
      --verify-only=*)
        mode=verify
        verify_dir=${1#--verify-only=}
        shift
        ;;
      *) usage_error "unknown argument '$1'" ;;
    esac
  done
  if [ "$mode" = verify ]; then
    [ -z "$dest" ] || usage_error "--dest and --verify-only do not go together"
    [ -n "$verify_dir" ] || usage_error "--verify-only needs a folder"
    verify_only "$verify_dir" || exit 1
    exit 0
  fi
  [ -n "$dest" ] || dest="$(dirname -- "$script_dir")/data/mnist"
  fetch_all "$dest" || exit 1
  exit 0
}

main "$@"
