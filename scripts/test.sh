#!/usr/bin/env bash
# The one test command (README: "bash scripts/test.sh"); CI's .ci/run calls exactly this.
# It installs what it needs itself: today only Rust crates, fetched and built by cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== build (all targets, so benchmarks keep compiling)"
cargo build --locked --all-targets

echo "== tests: unit, scenario, property, schema and CLI"
cargo test --locked

echo "== scenario files through the command integrators use"
cargo run --locked --quiet -- test-scenarios tests/scenarios
