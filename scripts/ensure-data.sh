#!/usr/bin/env bash
# Make sure Fashion-MNIST is on disk: the Debian package dataset-fashion-mnist puts it in
# /usr/share/datasets/fashion-mnist. Installs it when missing and we can (root + apt-get); otherwise says how.
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ] || [ -n "${DISTILL_DATA:-}" ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Fashion-MNIST (Debian package dataset-fashion-mnist) ..."
  if ! apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; then
    apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null
  fi
  exit 0
fi
cat >&2 <<MSG
Fashion-MNIST was not found in $dir and cannot be installed here (needs root and apt-get).
Either: sudo apt-get install dataset-fashion-mnist
    or: export DISTILL_DATA=/path/to/dir-with-the-IDX-files   (or pass --set data.root=DIR)
    or: add --set data.download=true to let torchvision download it (needs internet)
MSG
exit 0  # not fatal here: the run itself stops with the same advice if the data is still missing
