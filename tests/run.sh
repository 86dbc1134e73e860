#!/usr/bin/env bash
# Runs every test: installs what is missing, builds the WebAssembly transforms
# (host-side tests load the built .wasm), then runs the Rust test suites:
# router unit + integration tests (private Redis/Postgres per test; the Python
# and JavaScript example modules, built by their build.sh, run in tests/it/polyglot.rs), guest SDK
# (incl. its README example), the transforms' own logic tests, and every fuzz
# target for a bounded time (tests/fuzz.sh: FUZZ_SECONDS each, default 30;
# needs the nightly toolchain and fails, saying so, without it). Every
# benchmark binary is built too (dev profile, not run), so a bench that
# stops compiling fails here rather than rotting unnoticed.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/deps.sh
bash transforms/build.sh
bash examples/python-module/build.sh
bash examples/js-module/build.sh
cargo test --workspace --locked
cargo build --workspace --benches --locked
cargo test --manifest-path transforms/Cargo.toml --locked
bash tests/fuzz.sh
