#!/usr/bin/env bash
# Build the module into build/{{name}}.wasm (a wasm32-wasip2 component).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --manifest-path "$here/Cargo.toml" --target wasm32-wasip2 --release
target="${CARGO_TARGET_DIR:-$here/target}"
mkdir -p "$here/build"
cp "$target/wasm32-wasip2/release/{{crate}}.wasm" "$here/build/{{name}}.wasm"
echo "built $here/build/{{name}}.wasm"
