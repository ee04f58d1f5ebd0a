# Synthetic MNIST-format (IDX) files for the shell tests; sourced, not run.
#   be32 N                                  N as a big-endian 32-bit integer
#   idx_images COUNT [ROWS COLS [BYTES]]    an IDX3 file of random pixels (28x28 by default;
#                                           BYTES overrides the payload length)
#   idx_labels L...                         an IDX1 file holding the given labels
#   idx_labels_cycle COUNT                  an IDX1 file with labels 0..9 repeating
#   make_mnist_dir DIR TRAIN TEST           DIR with the four raw files of TRAIN and TEST images
# All write to stdout except make_mnist_dir.

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
  head -c "${4:-$((count * rows * cols))}" /dev/urandom
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
