#!/usr/bin/env bash
# Installs the Kafka-protocol broker the tests use (Tansu, Apache-2.0, from crates.io), once per
# machine: the binary is cached under ~/.cache/partner-sync, so only a cold machine pays the build
# (about 11 minutes on 2 cores). Its default features have no storage engine, hence the features.
#   bash scripts/broker.sh install   # build and cache if missing; prints the binary's path
set -euo pipefail
VERSION=0.6.0
ROOT="${HOME}/.cache/partner-sync/tansu-${VERSION}"
BIN="${ROOT}/bin/tansu"
case "${1:-install}" in
  install)
    if [ ! -x "$BIN" ]; then
      echo "Installing the Tansu broker ${VERSION} (cold machine: about 11 minutes)..." >&2
      cargo install tansu --version "$VERSION" --locked --features dynostore,libsql --root "$ROOT" >&2
    fi
    echo "$BIN"
    ;;
  *)
    echo "usage: $0 install" >&2
    exit 2
    ;;
esac
