#!/bin/sh
# Build every transform module to wasm32-wasip2 components.
# Callable from anywhere; output: transforms/target/wasm32-wasip2/release/*.wasm
set -e
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --manifest-path transforms/Cargo.toml --target wasm32-wasip2 --release "$@"
