#!/usr/bin/env bash
# Build app.js (+ logic.js) into build/{{name}}.wasm with componentize-js
# (the version pinned in package.json / package-lock.json).
# componentize-js: ./node_modules (after `npm ci` here), else the copy
# Switchyard's tests/deps.sh installed from the same lock file
# (~/.cache/switchyard-tools).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
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
  echo "componentize-js not found: run npm ci in $here" >&2
  exit 1
fi
mkdir -p "$here/build"
# -d http fetch-event: the router provides no wasi:http.
"$cjs" "$here/app.js" --wit "$here/wit" --world-name transformer -d http fetch-event -o "$here/build/{{name}}.wasm" >/dev/null
echo "built $here/build/{{name}}.wasm"
