#!/usr/bin/env bash
# Checks the Helm chart, the alert rules and the Dockerfile (see scripts/check_deploy.py for what).
# Installs its tools once into ~/.cache/partner-sync: Helm's library, kubernetes-validate and checkov
# from PyPI in a virtualenv (pinned), and promtool from Debian's `prometheus` package (extracted, not
# installed: no service is set up).
#   bash scripts/check-deploy.sh [path/to/partner-sync]   (default: target/debug/partner-sync)
set -euo pipefail
cd "$(dirname "$0")/.."
BINARY="${1:-target/debug/partner-sync}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/partner-sync"
VENV="$CACHE/deploy-venv"
PROMTOOL_DIR="$CACHE/promtool"
PY_PACKAGES=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 checkov==3.3.30)

stamp="$VENV/.installed-$(echo "${PY_PACKAGES[*]}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "installing into $VENV: ${PY_PACKAGES[*]}"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
  touch "$stamp"
fi

if [ ! -x "$PROMTOOL_DIR/promtool" ]; then
  echo "extracting promtool from Debian's prometheus package into $PROMTOOL_DIR"
  tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus; })
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  mkdir -p "$PROMTOOL_DIR"
  cp "$tmp/x/usr/bin/promtool" "$PROMTOOL_DIR/promtool"
  rm -rf "$tmp"
fi
"$PROMTOOL_DIR/promtool" --version | head -1

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
PATH="$VENV/bin:$PATH" "$VENV/bin/python" scripts/check_deploy.py "$BINARY" "$PROMTOOL_DIR/promtool" "$work"
