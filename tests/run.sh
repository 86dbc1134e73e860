#!/usr/bin/env bash
# Runs every test: installs what is missing, builds the WebAssembly transforms,
# then runs the Rust test suites (unit, integration against private Redis and
# Postgres processes, guest SDK docs, transform logic).
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/deps.sh
if [ -x transforms/build.sh ]; then
  bash transforms/build.sh
fi
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked
if [ -f transforms/test.sh ]; then
  bash transforms/test.sh
fi
