#!/usr/bin/env bash
# Runs every test: installs what is missing, builds the WebAssembly transforms
# (host-side tests load the built .wasm), then runs the Rust test suites:
# router unit + integration tests (private Redis/Postgres per test), guest SDK
# (incl. its README example), and the transforms' own logic tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/deps.sh
bash transforms/build.sh
cargo test --workspace --locked
cargo test --manifest-path transforms/Cargo.toml --locked
