#!/usr/bin/env bash
# Installs Debian's Chromium + chromedriver for the report page's browser test (tests/test_report_browser.py).
# Idempotent and non-fatal: when apt cannot install them the browser test skips with the reason.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
lock=/tmp/apt.lock
install() {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
}
if command -v flock >/dev/null 2>&1; then
  export -f install
  flock "$lock" bash -c install || echo "chromium not installable: the report browser test will skip"
else
  install || echo "chromium not installable: the report browser test will skip"
fi
exit 0
