#!/usr/bin/env bash
# The HTML report's browser test drives Debian's headless Chromium. Install it when missing and we can
# (root + apt-get); otherwise the test skips and says why.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Chromium for the report's browser test (Debian packages chromium, chromium-driver) ..."
  apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } \
    || echo "Chromium could not be installed; the browser test will be skipped." >&2
fi
exit 0
