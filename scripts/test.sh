#!/usr/bin/env bash
# The one test command (README: "bash scripts/test.sh"); CI's .ci/run calls exactly this.
# It installs what it needs itself: the C libraries librdkafka builds against (if missing), the
# Kafka-protocol test broker (Tansu, built once and cached), and the Rust crates (cargo).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== system libraries for librdkafka (OpenSSL, pkg-config; zlib is built in, statically)"
missing=()
for pkg in libssl-dev pkg-config make; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

echo "== test broker (Tansu)"
TANSU_BIN="$(bash scripts/broker.sh install)"
export TANSU_BIN
echo "$TANSU_BIN"

echo "== formatting (cargo fmt --check)"
if ! cargo fmt --version >/dev/null 2>&1; then
  rustup component add rustfmt
fi
cargo fmt --check

echo "== lints (cargo clippy, warnings fail)"
if ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add clippy
fi
cargo clippy --locked --all-targets --quiet -- -D warnings

echo "== build (all targets, so benchmarks keep compiling)"
cargo build --locked --all-targets

echo "== docs (private items included, as they are read; broken links fail)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --document-private-items --quiet

echo "== tests: unit, scenario, property, schema, CLI, registry and Kafka integration"
cargo test --locked

echo "== scenario files through the command integrators use"
cargo run --locked --quiet -- test-scenarios tests/scenarios

echo "== deployment: Helm chart (rendered, schema-validated, checkov), alert rules (promtool), Dockerfile"
bash scripts/check-deploy.sh target/debug/partner-sync

echo "== the image's runtime: the binary starts among the distroless packages, as UID 65532"
bash scripts/check-image.sh target/debug/partner-sync
