#!/usr/bin/env bash
# Make Debian's Chromium available for the dashboard's browser tests
# (tests/integration/test_dashboard_browser.py drives /usr/bin/chromium through Playwright;
# Playwright's own browser download is never used: no machine here reaches it).
# Installs the Debian packages chromium and chromium-driver only when /usr/bin/chromium is
# missing. Idempotent; needs root for apt (otherwise it says what to run and fails).
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  echo "chromium present: $(/usr/bin/chromium --version 2>/dev/null | head -n1)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "no /usr/bin/chromium: run 'sudo apt-get install -y chromium chromium-driver' (the browser tests skip without it)" >&2
  exit 1
fi
echo "installing chromium (Debian packages chromium, chromium-driver)..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
echo "chromium installed: $(/usr/bin/chromium --version 2>/dev/null | head -n1)"
