#!/usr/bin/env bash
# Make sure the data the tests and demos use can be had:
# * Fashion-MNIST: the Debian package dataset-fashion-mnist puts it in /usr/share/datasets/fashion-mnist;
# * espeak-ng (Debian package espeak-ng), which speaks the synthetic speech-commands corpus (make speech-data).
# Installs what is missing when we can (root + apt-get); otherwise says how.
set -euo pipefail
can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
apt_install() {  # quietly, refreshing the package lists once if the first try fails
  apt-get install -y -q "$@" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
}

dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ] || [ -n "${DISTILL_DATA:-}" ]; then
  :
elif can_apt; then
  echo "Installing Fashion-MNIST (Debian package dataset-fashion-mnist) ..."
  apt_install dataset-fashion-mnist
else
  cat >&2 <<MSG
Fashion-MNIST was not found in $dir and cannot be installed here (needs root and apt-get).
Either: sudo apt-get install dataset-fashion-mnist
    or: export DISTILL_DATA=/path/to/dir-with-the-IDX-files   (or pass --set data.root=DIR)
    or: add --set data.download=true to let torchvision download it (needs internet)
MSG
fi

if command -v espeak-ng >/dev/null 2>&1; then
  :
elif can_apt; then
  echo "Installing espeak-ng (Debian package espeak-ng, for the synthetic speech corpus) ..."
  apt_install espeak-ng || echo "could not install espeak-ng; the speech tests will be skipped" >&2
else
  cat >&2 <<MSG
espeak-ng was not found and cannot be installed here (needs root and apt-get); it speaks the synthetic
speech-commands corpus (make speech-data), and the tests that need it are skipped without it.
Install it with: sudo apt-get install espeak-ng   (macOS: brew install espeak-ng)
MSG
fi
exit 0  # not fatal here: a run stops with the same advice if its data is still missing
