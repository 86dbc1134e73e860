#!/usr/bin/env bash
# Build the JavaScript transform (app.js) into a WebAssembly component:
#   examples/js-module/build/klaviyo_js.wasm
# with componentize-js (the version pinned in package.json / package-lock.json).
# Callable from anywhere. Skips the build when the output is newer than
# app.js, the WIT, the lock file and this script (FORCE=1 rebuilds).
#
# componentize-js: ./node_modules (after `npm ci` here), else the copy
# tests/deps.sh installed from the same lock file under $SWITCHYARD_TOOLS_DIR
# (default ~/.cache/switchyard-tools).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/build/klaviyo_js.wasm"

if [ "${FORCE:-}" != 1 ] && [ -f "$out" ] &&
  [ -z "$(find "$here/app.js" "$here/build.sh" "$here/package-lock.json" "$root/wit/v0.1" -newer "$out" -print -quit)" ]; then
  exit 0
fi

tools="${SWITCHYARD_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard-tools}"
lock_hash="$(sha256sum "$here/package-lock.json" | cut -c1-12)"
cjs=""
for d in "$here/node_modules" "$tools/componentize-js-$lock_hash/node_modules"; do
  if [ -x "$d/.bin/componentize-js" ]; then
    cjs="$d/.bin/componentize-js"
    break
  fi
done
if [ -z "$cjs" ]; then
  echo "componentize-js not found: run tests/deps.sh (or npm ci in $here)" >&2
  exit 1
fi

mkdir -p "$here/build"
tmp="$(mktemp "$here/build/.klaviyo_js.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
# -d http fetch-event: without it the component imports wasi:http, which the
# router does not provide (see ../../README.md's module rules).
"$cjs" "$here/app.js" --wit "$root/wit/v0.1" --world-name transformer -d http fetch-event -o "$tmp" >/dev/null
chmod 644 "$tmp"
mv -f "$tmp" "$out"
echo "built $out ($(du -h "$out" | cut -f1))" >&2
