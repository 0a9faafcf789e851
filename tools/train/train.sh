#!/usr/bin/env bash
# Trains SpecEdge's default model pair and, with --install, puts it into models/.
#
#   tools/train/train.sh OUT_DIR [--install] [train.py options…]
#
# Needs Debian's python3-torch, libopenblas0-pthread and bible-kjv (see tools/train/README.md).
# Python is used here only: nothing at run time or in CI needs it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

if [[ $# -lt 1 || "$1" == -* ]]; then
  echo "usage: tools/train/train.sh OUT_DIR [--install] [train.py options…]" >&2
  exit 2
fi
out="$1"; shift
install=false
args=()
for a in "$@"; do
  if [[ "$a" == "--install" ]]; then install=true; else args+=("$a"); fi
done

missing=()
/usr/bin/python3 -c "import torch, numpy" 2>/dev/null || missing+=(python3-torch)
/usr/bin/python3 -c "import matplotlib" 2>/dev/null || missing+=(python3-matplotlib)
[[ -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 || -e /usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3 ]] || missing+=(libopenblas0-pthread)
if ! command -v bible >/dev/null && [[ ! " ${args[*]-} " == *" --corpus "* ]]; then missing+=(bible-kjv); fi
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "train.sh: error: missing Debian packages: ${missing[*]} (apt-get install ${missing[*]})" >&2
  exit 1
fi

# Without OMP_NUM_THREADS the reference BLAS runs one thread: about 20 times slower per step here.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
/usr/bin/python3 "$here/train.py" --out "$out" "${args[@]}"

if $install; then
  "$here/install.sh" "$out"
fi
