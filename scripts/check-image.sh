#!/usr/bin/env bash
# Checks that the binary the image holds starts in the image's runtime: a root filesystem made of
# exactly the Debian packages distroless cc-debian12 is built from (its bookworm package lock:
# base-files, ca-certificates, gcc-12-base, libc-bin, libc6, libgcc-s1, libgomp1, libssl3,
# libstdc++6, media-types, netbase, openssl, tzdata), the binary run in it as UID 65532 with
# `--version` and `check-config`. No Docker engine is needed: the packages are fetched with
# apt-get download (once, cached) and unpacked with dpkg-deb; the binary runs under chroot.
#   bash scripts/check-image.sh [path/to/partner-sync]   (default: target/debug/partner-sync)
set -euo pipefail
cd "$(dirname "$0")/.."
BINARY="${1:-target/debug/partner-sync}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/partner-sync/distroless-cc-debian12"
PACKAGES=(base-files ca-certificates gcc-12-base libc-bin libc6 libgcc-s1 libgomp1 libssl3
  libstdc++6 media-types netbase openssl tzdata)

if [ ! -f "$CACHE/.complete" ]; then
  echo "fetching the runtime image's packages into $CACHE"
  rm -rf "$CACHE" && mkdir -p "$CACHE/debs"
  (cd "$CACHE/debs" && { apt-get download "${PACKAGES[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get download "${PACKAGES[@]}"; }; })
  touch "$CACHE/.complete"
fi

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
for deb in "$CACHE"/debs/*.deb; do
  dpkg-deb -x "$deb" "$root"
done
mkdir -p "$root/usr/local/bin" "$root/tmp"
cp "$BINARY" "$root/usr/local/bin/partner-sync"
cp config/default.toml "$root/tmp/config.toml"

fail=0
echo "libraries the binary needs: $(readelf -d "$BINARY" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
if out="$(chroot --userspec=65532:65532 "$root" /usr/local/bin/partner-sync --version 2>&1)"; then
  echo "ok   the binary starts in the runtime image's filesystem as UID 65532: $out"
else
  echo "FAIL the binary does not start in the runtime image's filesystem as UID 65532: $out"
  fail=1
fi
if out="$(chroot --userspec=65532:65532 "$root" /usr/local/bin/partner-sync check-config /tmp/config.toml 2>&1)"; then
  echo "ok   check-config runs there too"
else
  echo "FAIL check-config does not run there: $out"
  fail=1
fi
exit $fail
