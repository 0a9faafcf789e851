#!/usr/bin/env bash
# Copies a finished training run (tools/train/train.sh OUT_DIR) into models/ and writes the tokenizer test vectors.
#
#   tools/train/install.sh OUT_DIR
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:?usage: tools/train/install.sh OUT_DIR}"

for f in target/config.json target/model.safetensors target/tokenizer.json target/exit_adapters.safetensors \
         draft/config.json draft/model.safetensors draft/tokenizer.json training.json loss_curves.png heldout.txt; do
  [[ -f "$out/$f" ]] || { echo "install.sh: error: '$out/$f' is missing: is '$out' a finished training run?" >&2; exit 1; }
done

mkdir -p "$repo/models"
rm -rf "$repo/models/target" "$repo/models/draft"
cp -r "$out/target" "$out/draft" "$repo/models/"
cp "$out/training.json" "$out/loss_curves.png" "$out/heldout.txt" "$repo/models/"
# Content hashes of the checkpoint files: the default-pair loader refuses an edited or truncated file.
(cd "$repo/models" && sha256sum target/* draft/* > SHA256SUMS)
/usr/bin/python3 "$here/tokenizer_vectors.py" "$repo/models/target/tokenizer.json" "$repo/models/tokenizer-vectors.json"
du -sh "$repo/models"
echo "installed into $repo/models; converted ONNX is rebuilt on first use (cache keyed by content hash)"
