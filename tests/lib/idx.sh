# Synthetic MNIST-format (IDX) files for the shell tests; sourced, not run.
#   idx_seed SEED                           seeds the pixels: after it, the same SEED gives the
#                                           same files, call for call
#   idx_bytes N                             N pseudo-random bytes, a new stream at each call
#   be32 N                                  N as a big-endian 32-bit integer
#   idx_images COUNT [ROWS COLS [BYTES]]    an IDX3 file of random pixels (28x28 by default;
#                                           BYTES overrides the payload length)
#   idx_labels L...                         an IDX1 file holding the given labels
#   idx_labels_cycle COUNT                  an IDX1 file with labels 0..9 repeating
#   make_mnist_dir DIR TRAIN TEST           DIR with the four raw files of TRAIN and TEST images
# All write to stdout except make_mnist_dir and idx_seed. Call idx_bytes, idx_images and
# make_mnist_dir in the test's own shell (redirected, not inside $(...) or a pipeline): each
# call counts towards the next call's stream, and a subshell's count is lost, so the next call
# would repeat its bytes. A test that never calls idx_seed gets a seed drawn at the first call
# (CUVAE_TEST_SEED when set), named on stderr.

IDX_SEED=
IDX_STREAM=0

idx_seed() {
  IDX_SEED=$((10#$1))  # decimal digits only; a leading zero is not octal
  IDX_STREAM=0
}

# Park-Miller's generator x <- 48271 x mod (2^31 - 1), whose products stay below 2^47, exact in
# awk's doubles, so mawk, gawk and busybox awk give the same bytes (checked), the top 8 of x's
# 31 bits each. Stream k of seed S starts from a 64-bit mix of (S, k) and drops its first 16
# values, so near seeds and near streams share no leading bytes. About 4 MB/s with mawk: 0.1 s
# for the 436 images of cli_faults.sh.
idx_bytes() {
  if [ -z "$IDX_SEED" ]; then
    idx_seed "${CUVAE_TEST_SEED:-$((RANDOM * 32768 + RANDOM))}"
    echo "idx.sh: pixel seed $IDX_SEED (the test set none; CUVAE_TEST_SEED replays it)" >&2
  fi
  IDX_STREAM=$((IDX_STREAM + 1))
  local x=$(((IDX_SEED * 0x9E3779B97F4A7C15 + IDX_STREAM * 0xBF58476D1CE4E5B9) >> 33))
  x=$(((x & 0x7fffffff) % 2147483647))
  [ "$x" -ne 0 ] || x=1
  LC_ALL=C awk -v x="$x" -v n="$1" 'BEGIN {
    for (i = 0; i < 16; i++) x = (x * 48271) % 2147483647
    for (i = 0; i < n; i++) {
      x = (x * 48271) % 2147483647
      printf "%c", int(x / 8388608)
    }
  }'
}

be32() {
  printf '%b' "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) \
    $(($1 >> 8 & 255)) $(($1 & 255)))"
}

idx_images() {
  local count=$1 rows=${2:-28} cols=${3:-28}
  printf '\0\0\10\3'
  be32 "$count"
  be32 "$rows"
  be32 "$cols"
  idx_bytes "${4:-$((count * rows * cols))}"
}

idx_labels() {
  printf '\0\0\10\1'
  be32 $#
  local l
  for l in "$@"; do printf '%b' "$(printf '\\x%02x' "$l")"; done
}

idx_labels_cycle() {
  printf '\0\0\10\1'
  be32 "$1"
  local i
  for ((i = 0; i < $1; i++)); do printf '%b' "$(printf '\\x%02x' $((i % 10)))"; done
}

make_mnist_dir() {
  mkdir -p "$1"
  idx_images "$2" >"$1/train-images-idx3-ubyte"
  idx_labels_cycle "$2" >"$1/train-labels-idx1-ubyte"
  idx_images "$3" >"$1/t10k-images-idx3-ubyte"
  idx_labels_cycle "$3" >"$1/t10k-labels-idx1-ubyte"
}
