#!/usr/bin/env bash
# Make `promtool` available for the alert-rule checks (tests/unit/test_infra.py) by installing
# Debian's `prometheus` package, only when promtool is missing. Idempotent; needs root for apt.
#
# The package's maintainer scripts would start a Prometheus server; CI needs only the binary,
# so service starts are refused for the duration of the install (policy-rc.d exit 101, the
# Debian convention for "action forbidden") and any server the package started anyway is stopped.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
  echo "promtool present: $(promtool --version 2>&1 | head -n1)"
  exit 0
fi

echo "installing promtool (Debian package 'prometheus')..."
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  own_policy=1
fi
cleanup() { if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null

# Belt and braces: with systemd absent and policy-rc.d honoured nothing runs, but a host whose
# init ignores policy-rc.d may have started the server; stop it without touching other processes.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
  systemctl disable prometheus >/dev/null 2>&1 || true
fi

command -v promtool >/dev/null 2>&1 || { echo "promtool still missing after install" >&2; exit 1; }
echo "promtool installed: $(promtool --version 2>&1 | head -n1)"
